use cached_redis::cached;

#[cached(ttl = 60)]
const fn double(x: u32) -> u32 {
    x * 2
}

const FOUR: u32 = double(2);

fn main() {
    let _ = FOUR;
}
