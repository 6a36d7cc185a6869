use cached_redis::cached;

#[cached(ttl = 0)]
fn zero_ttl(id: u32) -> u32 {
    id
}

#[cached(ttl = -5)]
fn negative_ttl(id: u32) -> u32 {
    id
}

#[cached(ttl = 18446744073709551615)]
fn endless_ttl(id: u32) -> u32 {
    id
}

#[cached(prefix = "")]
fn empty_prefix(id: u32) -> u32 {
    id
}

#[cached(prefix = "users:v2")]
fn colon_prefix(id: u32) -> u32 {
    id
}

#[cached(prefix = "user profiles")]
fn space_prefix(id: u32) -> u32 {
    id
}

#[cached(crate = "not a path")]
fn bad_crate(id: u32) -> u32 {
    id
}

#[cached(refresh)]
fn no_value(id: u32) -> u32 {
    id
}

fn main() {
    zero_ttl(1);
    negative_ttl(1);
    endless_ttl(1);
    empty_prefix(1);
    colon_prefix(1);
    space_prefix(1);
    bad_crate(1);
    no_value(1);
}
