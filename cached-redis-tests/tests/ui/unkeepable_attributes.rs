use cached_redis::cached;

// A parameter that may not exist: the key and the companions name it.
#[cached]
fn scaled(#[cfg(any())] factor: u32, x: u32) -> u32 {
    x
}

// The same, given by a `cfg_attr`.
#[cached]
fn shifted(#[cfg_attr(all(), cfg(any()))] by: u32, x: u32) -> u32 {
    x
}

// Caller tracking cannot pass into the cache's call.
#[cached]
#[track_caller]
fn here(x: u32) -> String {
    format!("{x} {}", std::panic::Location::caller())
}

// Nothing to cache.
#[cached]
fn never(x: u32) -> ! {
    panic!("{x}")
}

fn main() {
    scaled(1);
    shifted(1);
    here(1);
}
