//! Build-script helper that stamps the git commit into the salt of every
//! key, so a new deploy never reads entries written by an old one.

use std::process::Command;

/// Call from the `build.rs` of a crate that uses `#[cached]`:
///
/// ```ignore
/// // build.rs
/// fn main() {
///     cached_redis::build::emit_git_sha();
/// }
/// ```
///
/// It sets `CACHED_REDIS_GIT_SHA` for the crate's compilation to the
/// commit `git rev-parse HEAD` reports, with `-dirty-` and a hash of the
/// uncommitted changes (`git diff HEAD`) appended when the work tree has
/// any: two different uncommitted trees do not share keys, nor share them
/// with the commit. An already-set `CACHED_REDIS_GIT_SHA` (e.g. from CI)
/// wins. Outside a git checkout (a container build without `.git`, say) it
/// sets nothing, keys are salted without a commit, and cargo prints a
/// warning saying so: set `CACHED_REDIS_GIT_SHA` there.
///
/// Cargo runs it again when HEAD moves and when the crate's `src/` or
/// `Cargo.toml` change, so the dirty mark follows edits of the crate (and
/// a crate that became clean again loses it). Edits elsewhere in the
/// repository (another crate of the workspace, data files) are seen at
/// the crate's next rebuild, not before.
pub fn emit_git_sha() {
    println!("cargo:rerun-if-env-changed=CACHED_REDIS_GIT_SHA");
    // Edits of the crate: they may make the tree dirty, or clean again.
    // Only paths that exist: cargo takes a missing one for a change, and
    // would rebuild the crate every time.
    for path in ["src", "Cargo.toml"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Ok(sha) = std::env::var("CACHED_REDIS_GIT_SHA") {
        println!("cargo:rustc-env=CACHED_REDIS_GIT_SHA={sha}");
        return;
    }
    let Some(sha) = git(&["rev-parse", "HEAD"]) else {
        println!(
            "cargo:warning=cached-redis: no git checkout and no CACHED_REDIS_GIT_SHA: \
             keys are not salted with a commit, so a new deploy may read an old one's entries"
        );
        return;
    };
    // `--no-optional-locks`: a plain `git diff` refreshes the index, and a
    // rewritten index would be one more thing for cargo to see changed.
    let changes = git(&["--no-optional-locks", "diff", "HEAD"]).unwrap_or_default();
    println!(
        "cargo:rustc-env=CACHED_REDIS_GIT_SHA={}",
        stamp(&sha, &changes)
    );
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
}

/// The commit `sha`, with `-dirty-` and the first 12 hex digits of the
/// BLAKE3 hash of `changes` (the uncommitted diff) when there are any.
fn stamp(sha: &str, changes: &str) -> String {
    if changes.is_empty() {
        return sha.to_owned();
    }
    let hash = blake3::hash(changes.as_bytes()).to_hex();
    format!("{sha}-dirty-{}", &hash[..12])
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::stamp;

    #[test]
    fn uncommitted_changes_stamp_the_commit_with_their_hash() {
        assert_eq!(stamp("abc", ""), "abc");
        let one = stamp("abc", "+a line");
        let other = stamp("abc", "+another line");
        assert!(one.starts_with("abc-dirty-"), "{one}");
        assert_eq!(one.len(), "abc-dirty-".len() + 12);
        assert_ne!(one, other, "two uncommitted trees share a salt");
        assert_eq!(one, stamp("abc", "+a line"), "the same tree, the same salt");
    }
}
