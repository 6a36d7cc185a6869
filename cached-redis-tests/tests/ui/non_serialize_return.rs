use cached_redis::cached;

/// Neither `Serialize` nor `Deserialize`.
#[derive(Clone)]
struct Page {
    body: String,
}

#[derive(Debug)]
struct DbError;

#[cached]
async fn page(id: u32) -> Result<Page, DbError> {
    Ok(Page {
        body: id.to_string(),
    })
}

#[cached]
fn maybe_page(id: u32) -> Option<Page> {
    Some(Page {
        body: id.to_string(),
    })
}

#[cached(local = 10)]
fn plain_page(id: u32) -> Page {
    Page {
        body: id.to_string(),
    }
}

#[cached(returns = "result")]
fn aliased(id: u32) -> ApiResult<Page> {
    Ok(Page {
        body: id.to_string(),
    })
}

type ApiResult<T> = Result<T, DbError>;

fn main() {
    let _ = page(1);
    let _ = maybe_page(1);
    let _ = plain_page(1);
    let _ = aliased(1);
}
