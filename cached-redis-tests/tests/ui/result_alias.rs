use cached_redis::cached;

#[derive(Debug)]
pub struct ApiError;

type ApiResult<T> = Result<T, ApiError>;
type Maybe<T> = Option<T>;

// `Result` under another name: `#[cached]` cannot see that `Err` must not
// be cached, and says how to tell it.
#[cached]
fn user_name(id: u32) -> ApiResult<String> {
    Ok(id.to_string())
}

// The same for an `Option` alias.
#[cached]
fn nickname(id: u32) -> Maybe<String> {
    Some(id.to_string())
}

// `returns` that does not match the return type.
#[cached(returns = "result")]
fn not_a_result(id: u32) -> u32 {
    id
}

fn main() {
    let _ = user_name(1);
    let _ = nickname(1);
    let _ = not_a_result(1);
}
