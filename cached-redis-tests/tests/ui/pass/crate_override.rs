//! `crate = "..."`: a crate re-exporting cached-redis under another name
//! points the expansion at it.

use cached_redis as my_cache;

mod support {
    pub use cached_redis as reexported;
}

#[my_cache::cached(crate = "my_cache", ttl = 30)]
fn renamed(id: u32) -> u32 {
    id + 1
}

#[support::reexported::cached(crate = "crate::support::reexported")]
async fn nested(id: u32) -> Option<u32> {
    Some(id)
}

fn main() {
    assert_eq!(renamed(1), 2);
    assert!(renamed_cache_key(1).is_ok());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(nested(1).await, Some(1));
        assert!(nested_invalidate(1).await.is_ok());
    });
}
