use cached_redis::cached;

/// Not `Serialize`.
struct Connection;

#[cached]
fn user_name(conn: &Connection, id: u64) -> String {
    let _ = conn;
    id.to_string()
}

fn main() {
    use_them();
    user_name(&Connection, 1);
}

// One error per argument that is not `Serialize`, whatever its position.
#[cached]
async fn several(id: u64, conn: &Connection, other: Connection, name: &str) -> String {
    let _ = (conn, other);
    format!("{name}{id}")
}

// A generic parameter without `Serialize` in its bounds.
#[cached]
fn generic<T: Clone>(value: T) -> u8 {
    let _ = value.clone();
    0
}

fn use_them() {
    let _ = several(1, &Connection, Connection, "n");
    generic(1_u8);
}
