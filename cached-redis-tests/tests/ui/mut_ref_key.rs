use cached_redis::cached;

pub struct Conn;

// A hit would skip the body, and `counter` would silently not be bumped.
#[cached]
fn bump(counter: &mut u32) -> u32 {
    *counter += 1;
    *counter
}

// Anywhere in the type, and skipping another parameter does not help.
#[cached(skip = "conn")]
fn fill(conn: &mut Conn, out: Option<&mut Vec<u8>>, id: u32) -> u32 {
    let _ = (conn, out);
    id
}

fn main() {
    let mut n = 0;
    let _ = bump(&mut n);
    let _ = fill(&mut Conn, None, 1);
}
