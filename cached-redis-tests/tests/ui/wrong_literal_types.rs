use cached_redis::cached;

#[cached(ttl = "300")]
fn ttl_string(id: u32) -> u32 {
    id
}

#[cached(prefix = 42)]
fn prefix_int(id: u32) -> u32 {
    id
}

#[cached(refresh = 1)]
fn refresh_int(id: u32) -> u32 {
    id
}

#[cached(skip = conn)]
fn skip_ident(conn: u32, id: u32) -> u32 {
    conn + id
}

#[cached(crate = cached_redis)]
fn crate_path(id: u32) -> u32 {
    id
}

#[cached(ttl = 1000u8, local = 300i8)]
fn suffixed(id: u32) -> u32 {
    id
}

fn main() {
    ttl_string(1);
    prefix_int(1);
    refresh_int(1);
    skip_ident(1, 2);
    crate_path(1);
    suffixed(1);
}
