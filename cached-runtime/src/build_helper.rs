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
/// commit `git rev-parse HEAD` reports (with `-dirty` appended when the
/// work tree has uncommitted changes), and asks cargo to rebuild when HEAD
/// moves. An already-set `CACHED_REDIS_GIT_SHA` (e.g. from CI) wins. Outside
/// a git checkout it sets nothing, and keys are salted without a commit.
pub fn emit_git_sha() {
    println!("cargo:rerun-if-env-changed=CACHED_REDIS_GIT_SHA");
    if let Ok(sha) = std::env::var("CACHED_REDIS_GIT_SHA") {
        println!("cargo:rustc-env=CACHED_REDIS_GIT_SHA={sha}");
        return;
    }
    let Some(sha) = git(&["rev-parse", "HEAD"]) else {
        return;
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let suffix = if dirty { "-dirty" } else { "" };
    println!("cargo:rustc-env=CACHED_REDIS_GIT_SHA={sha}{suffix}");
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
