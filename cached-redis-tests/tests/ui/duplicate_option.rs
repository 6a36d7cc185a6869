use cached_redis::cached;

#[cached(ttl = 60, prefix = "users", ttl = 120)]
fn user(id: u32) -> u32 {
    id
}

fn main() {
    user(1);
}
