// All the mistakes of one attribute and its function are reported at once,
// each at its own token, and nothing else: the function itself is kept, so
// its caller compiles.
use cached_redis::cached;

#[cached(ttl = "60", prefix = "a:b", refresh = yes, skip = "conn, nope", colour = "red")]
const fn lookup(conn: u32, (a, b): (u32, u32)) -> &'static str {
    let _ = (conn, a, b);
    "x"
}

fn main() {
    let _: &str = lookup(1, (2, 3));
}
