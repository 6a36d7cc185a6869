use cached_redis::cached;

#[cached(ttl: 300)]
fn colon(x: u32) -> u32 {
    x
}

#[cached(300)]
fn bare(x: u32) -> u32 {
    x
}

// Every mistake of the attribute at once: the bad value and both bad
// options, not only the first syntax error.
#[cached(ttl = 0, prefix "x", lock = true,, skip = [x])]
fn several(x: u32) -> u32 {
    x
}

// A trailing comma is fine.
#[cached(ttl = 5,)]
fn trailing(x: u32) -> u32 {
    x
}

fn main() {}
