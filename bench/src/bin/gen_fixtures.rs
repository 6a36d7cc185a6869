//! Writes `bench/fixtures/*.json` from the deterministic generator in
//! `cached_redis_bench::fixtures`. The files are committed; running this
//! again rewrites them byte for byte the same.

use cached_redis_bench::fixtures;

fn main() -> std::io::Result<()> {
    let dir = fixtures::dir();
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in fixtures::to_files(&fixtures::generate()) {
        std::fs::write(dir.join(name), &bytes)?;
        println!("{:>9} bytes  {}", bytes.len(), dir.join(name).display());
    }
    Ok(())
}
