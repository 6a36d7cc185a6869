use cached_redis::cached;

#[cached(ttl = 60, prefix = "users", ttl = 120)]
fn user(id: u32) -> u32 {
    id
}

// Reported even when the first value was refused.
#[cached(ttl = 0, ttl = 5)]
fn order(id: u32) -> u32 {
    id
}

fn main() {
    user(1);
    order(1);
}
