use cached_redis::cached;

#[cached(ttl: 300)]
fn colon(x: u32) -> u32 {
    x
}

#[cached(300)]
fn bare(x: u32) -> u32 {
    x
}

fn main() {}
