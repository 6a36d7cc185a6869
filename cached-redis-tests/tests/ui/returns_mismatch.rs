use cached_redis::cached;

#[cached(returns = "option")]
fn parsed(x: u32) -> Result<u32, String> {
    Ok(x)
}

#[cached(returns = "result")]
async fn found(x: u32) -> Option<u32> {
    Some(x)
}

fn main() {}
