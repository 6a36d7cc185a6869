use cached_redis::cached;

#[cached(ttl = 60, tll = 5)]
fn misspelled(id: u32) -> u32 {
    id
}

#[cached(lock = true)]
fn not_implemented_yet(id: u32) -> u32 {
    id
}

fn main() {
    misspelled(1);
    not_implemented_yet(1);
}
