use cached_redis::cached;

#[cached]
fn evens(limit: u32) -> impl Iterator<Item = u32> {
    (0..limit).filter(|n| n % 2 == 0)
}

fn main() {
    let _ = evens(10).count();
}
