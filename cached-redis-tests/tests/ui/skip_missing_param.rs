use cached_redis::cached;

struct Client;

#[cached(skip = "client, loger")]
fn search(client: &Client, logger: u8, query: String) -> Vec<String> {
    let _ = (client, logger);
    vec![query]
}

impl Client {
    #[cached(skip = "self")]
    fn get(&self, id: u32) -> u32 {
        id
    }
}

fn main() {
    search(&Client, 0, String::new());
    Client.get(1);
}
