//! `binfarm resign --profile P`: after a key rotation, the snapshot a channel points at is
//! signed again with the current farm key. Names are never reused for other bytes, so every
//! package gets a new BUILD_ID (file name and top directory) and the result is a NEW
//! snapshot, published to `testing` like any other; promote it when it is validated.

use std::fs::File;

use crate::binpkg::restamp_and_sign;
use crate::profile::Profile;
use crate::sign::SigningKey;
use crate::store::{Db, SnapshotOrigin};

use super::channel::{publish_snapshot_to, PublishOutcome, TESTING};
use super::snapshot::{create_snapshot, SnapshotOptions};
use super::{PublishError, Publisher};

/// Re-signs the snapshot `channel` of `profile` points at into a new snapshot (new
/// BUILD_IDs, signed with `key`) and publishes it to `testing`.
pub fn resign(
    publisher: &Publisher,
    db: &mut Db,
    profile: &Profile,
    channel: &str,
    key: &SigningKey,
    now: i64,
) -> Result<PublishOutcome, PublishError> {
    super::check_name("profile", &profile.name)?;
    let current = db
        .channel(&profile.name, channel)?
        .ok_or_else(|| PublishError::NoChannel {
            profile: profile.name.clone(),
            channel: channel.to_string(),
        })?;
    let entries = db.snapshot_entries(current.snapshot_id)?;
    let staging_root = publisher.staging_dir();
    std::fs::create_dir_all(&staging_root).map_err(PublishError::io(&staging_root))?;
    let staging = tempfile::Builder::new()
        .prefix("resign-")
        .tempdir_in(&staging_root)
        .map_err(PublishError::io(&staging_root))?;
    let mut blobs = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let build_id = db.next_build_id(&profile.name, &entry.cpv)?;
        let src = publisher.store.blobs().path_of(&entry.blob)?;
        let out = staging.path().join(format!("{i}.gpkg.tar"));
        restamp_and_sign(&src, &out, build_id as u64, key)?;
        let file = File::open(&out).map_err(PublishError::io(&out))?;
        let stored = publisher.store.blobs().put_stream(file, None, u64::MAX)?;
        db.record_blob(&stored.sha512, stored.size, "binpkg", now)?;
        std::fs::remove_file(&out).map_err(PublishError::io(&out))?;
        blobs.push(stored.sha512);
    }
    let id = create_snapshot(
        publisher,
        db,
        profile,
        &blobs,
        &SnapshotOptions {
            origin: SnapshotOrigin::Resign,
            request_id: None,
            based_on: Some(current.snapshot_id),
            note: Some(format!(
                "snapshot {} ({channel}) re-signed with key {}",
                current.snapshot_id,
                key.fingerprint()
            )),
        },
        now,
    )?;
    publish_snapshot_to(publisher, db, id, TESTING, now)
}
