use cached_redis::cached;

#[cached]
fn first_word(text: &str) -> &str {
    text.split(' ').next().unwrap_or("")
}

#[cached]
fn words<'a>(text: &'a str) -> Vec<std::borrow::Cow<'a, str>> {
    text.split(' ').map(Into::into).collect()
}

fn main() {
    first_word("a b");
    words("a b");
}
