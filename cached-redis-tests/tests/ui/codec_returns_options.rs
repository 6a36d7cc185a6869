use cached_redis::cached;

#[cached(codec = "cbor")]
fn codec_unknown(id: u32) -> u32 {
    id
}

#[cached(codec = json)]
fn codec_ident(id: u32) -> u32 {
    id
}

#[cached(returns = "either")]
fn returns_unknown(id: u32) -> u32 {
    id
}

#[cached(returns = "plain")]
fn returns_nothing(id: u32) {
    let _ = id;
}

fn main() {
    codec_unknown(1);
    codec_ident(1);
    returns_unknown(1);
    returns_nothing(1);
}
