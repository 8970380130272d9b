//! After a channel's local tree changed, the farm's FTP mirrors (farm.toml `[[ftp]]`) get
//! the same tree under `<profile>/<channel>`: blobs first, index last on each server
//! ([`FtpTarget::publish_tree`]). Nodes following an `ftp://` binhost see a promote or a
//! rollback only once this ran, so every command that moves a channel calls it.

use std::path::Path;

use super::ftp::{FtpReport, FtpTarget, FtpTargetError};
use super::PublishError;

/// What one FTP mirror did with a tree.
#[derive(Debug)]
pub struct MirrorPush {
    /// `host:port` of the target.
    pub host: String,
    pub result: Result<FtpReport, FtpTargetError>,
}

/// Copies `<mirror_root>/<profile>/<channel>` to every target, all targets at once.
pub async fn push_tree(
    targets: &[FtpTarget],
    mirror_root: &Path,
    profile: &str,
    channel: &str,
) -> Vec<MirrorPush> {
    let tree = mirror_root.join(profile).join(channel);
    let remote_dir = format!("{profile}/{channel}");
    let pushes = targets.iter().map(|target| {
        let (tree, remote_dir) = (&tree, &remote_dir);
        async move {
            MirrorPush {
                host: target.host_label(),
                result: target.publish_tree(tree, remote_dir).await,
            }
        }
    });
    futures_util::future::join_all(pushes).await
}

/// [`push_tree`] for commands that have no runtime (the CLI). Ok holds one line per
/// target; any failure is an error that names each failed target, says the local tree is
/// published, and how to retry.
pub fn push_tree_blocking(
    targets: &[FtpTarget],
    mirror_root: &Path,
    profile: &str,
    channel: &str,
) -> Result<String, PublishError> {
    if targets.is_empty() {
        return Ok(String::new());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(PublishError::io(mirror_root))?;
    let pushes = runtime.block_on(push_tree(targets, mirror_root, profile, channel));
    render(&pushes, profile, channel)
}

/// One line per target; Err if any target failed.
pub fn render(pushes: &[MirrorPush], profile: &str, channel: &str) -> Result<String, PublishError> {
    let mut done = String::new();
    let mut failed = Vec::new();
    for push in pushes {
        match &push.result {
            Ok(r) => done.push_str(&format!(
                "ftp {}: {} files uploaded ({} bytes), {} already there, index {}\n",
                push.host,
                r.uploaded,
                r.uploaded_bytes,
                r.already_present,
                if r.index_updated.is_empty() {
                    "unchanged".to_string()
                } else {
                    format!("replaced ({})", r.index_updated.join(", "))
                }
            )),
            Err(e) => failed.push(format!("{}: {e}", push.host)),
        }
    }
    if failed.is_empty() {
        Ok(done)
    } else {
        Err(PublishError::Mirrors {
            profile: profile.to_string(),
            channel: channel.to_string(),
            failures: failed.join("; "),
        })
    }
}
