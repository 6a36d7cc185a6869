use cached_redis::cached;

#[cached(ttl = 60)]
struct Config {
    ttl: u64,
}

trait Repo {
    #[cached]
    fn find(&self, id: u32) -> String;
}

#[cached]
type Handler = fn(u32) -> u32;

fn main() {
    let _ = Config { ttl: 1 }.ttl;
}
