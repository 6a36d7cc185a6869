use cached_redis::cached;

#[cached(cache_none = 60)]
fn not_an_option(id: u32) -> u32 {
    id
}

#[cached(stale = 0, lock = "yes", early = 1, cache_none = "60")]
fn bad_values(id: u32) -> Option<u32> {
    Some(id)
}

#[cached(local = 0)]
fn no_local_entries(id: u32) -> u32 {
    id
}

fn main() {
    not_an_option(1);
    bad_values(1);
    no_local_entries(1);
}
