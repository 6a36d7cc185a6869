use cached_redis::cached;

/// Not `Serialize`.
struct Connection;

#[cached]
fn user_name(conn: &Connection, id: u64) -> String {
    let _ = conn;
    id.to_string()
}

fn main() {
    user_name(&Connection, 1);
}
