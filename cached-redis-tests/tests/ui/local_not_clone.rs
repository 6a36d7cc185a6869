use cached_redis::cached;

#[derive(serde::Serialize, serde::Deserialize)]
struct Page {
    body: String,
}

#[cached(local = 100)]
fn page(id: u32) -> Page {
    Page {
        body: id.to_string(),
    }
}

fn main() {
    page(1);
}
