//! Channels: per profile, a named pointer at one snapshot (`testing`, `stable`, any name),
//! with the history of its moves. Moving a pointer then publishes the local mirror tree
//! `<root>/<profile>/<channel>`; the database pointer is the truth, and [`sync_channel`]
//! brings a tree back in line after a failed publish.

use crate::store::{ChannelAction, Db, Rollback};

use super::local::{publish_tree, TreeReport};
use super::{check_name, PublishError, Publisher, SnapshotId};

/// The channel every new snapshot goes to.
pub const TESTING: &str = "testing";
/// The channel production nodes follow.
pub const STABLE: &str = "stable";

/// A pointer move and the tree publish that followed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishOutcome {
    pub profile: String,
    pub channel: String,
    /// Where the channel pointed before (None: it is new).
    pub previous: Option<SnapshotId>,
    pub snapshot: SnapshotId,
    pub tree: TreeReport,
}

fn snapshot_of_profile(
    db: &Db,
    id: SnapshotId,
    profile: Option<&str>,
) -> Result<String, PublishError> {
    let row = db
        .snapshot(id)?
        .ok_or(PublishError::NoSuchSnapshot { id })?;
    if let Some(expected) = profile {
        if row.profile != expected {
            return Err(PublishError::WrongProfile {
                id,
                actual: row.profile,
                expected: expected.to_string(),
            });
        }
    }
    Ok(row.profile)
}

fn move_and_publish(
    publisher: &Publisher,
    db: &mut Db,
    profile: &str,
    channel: &str,
    snapshot: SnapshotId,
    action: ChannelAction,
    now: i64,
) -> Result<PublishOutcome, PublishError> {
    check_name("channel", channel)?;
    let previous = db.point_channel(profile, channel, snapshot, action, now)?;
    let tree = publish_tree(publisher, db, profile, channel, snapshot, now)?;
    Ok(PublishOutcome {
        profile: profile.to_string(),
        channel: channel.to_string(),
        previous,
        snapshot,
        tree,
    })
}

/// Points `channel` of the snapshot's profile at a (new) snapshot and publishes its tree.
/// New snapshots go to [`TESTING`] this way.
pub fn publish_snapshot_to(
    publisher: &Publisher,
    db: &mut Db,
    snapshot: SnapshotId,
    channel: &str,
    now: i64,
) -> Result<PublishOutcome, PublishError> {
    let profile = snapshot_of_profile(db, snapshot, None)?;
    move_and_publish(
        publisher,
        db,
        &profile,
        channel,
        snapshot,
        ChannelAction::Publish,
        now,
    )
}

/// `binfarm promote --profile P [--snapshot ID] --to CHANNEL`: points `to` at the snapshot
/// (default: the one `testing` points at) and publishes the tree.
pub fn promote(
    publisher: &Publisher,
    db: &mut Db,
    profile: &str,
    snapshot: Option<SnapshotId>,
    to: &str,
    now: i64,
) -> Result<PublishOutcome, PublishError> {
    check_name("profile", profile)?;
    let snapshot = match snapshot {
        Some(id) => id,
        None => {
            db.channel(profile, TESTING)?
                .ok_or_else(|| PublishError::NoChannel {
                    profile: profile.to_string(),
                    channel: TESTING.to_string(),
                })?
                .snapshot_id
        }
    };
    snapshot_of_profile(db, snapshot, Some(profile))?;
    move_and_publish(
        publisher,
        db,
        profile,
        to,
        snapshot,
        ChannelAction::Promote,
        now,
    )
}

/// `binfarm rollback --profile P --channel C`: moves the channel back to the snapshot it
/// pointed at before its last move (again: one move further back), and publishes the tree.
pub fn rollback(
    publisher: &Publisher,
    db: &mut Db,
    profile: &str,
    channel: &str,
    now: i64,
) -> Result<PublishOutcome, PublishError> {
    check_name("profile", profile)?;
    check_name("channel", channel)?;
    let error = |message: String| PublishError::Rollback {
        profile: profile.to_string(),
        channel: channel.to_string(),
        message,
    };
    match db.rollback_channel(profile, channel, now)? {
        Rollback::Moved { from, to } => {
            let tree = publish_tree(publisher, db, profile, channel, to, now)?;
            Ok(PublishOutcome {
                profile: profile.to_string(),
                channel: channel.to_string(),
                previous: Some(from),
                snapshot: to,
                tree,
            })
        }
        Rollback::NothingEarlier { current } => Err(error(format!(
            "it points at snapshot {current} and has no earlier snapshot to go back to"
        ))),
        Rollback::TargetRemoved { from, to } => Err(error(format!(
            "the snapshot before {from} was {to}, which GC has removed; promote a retained \
             snapshot instead (binfarm snapshots list --profile {profile})"
        ))),
        Rollback::NoChannel => Err(PublishError::NoChannel {
            profile: profile.to_string(),
            channel: channel.to_string(),
        }),
    }
}

/// Publishes the tree of a channel again (after a failed or killed publish): the pointer
/// does not move.
pub fn sync_channel(
    publisher: &Publisher,
    db: &mut Db,
    profile: &str,
    channel: &str,
    now: i64,
) -> Result<TreeReport, PublishError> {
    check_name("profile", profile)?;
    let current = db
        .channel(profile, channel)?
        .ok_or_else(|| PublishError::NoChannel {
            profile: profile.to_string(),
            channel: channel.to_string(),
        })?;
    publish_tree(publisher, db, profile, channel, current.snapshot_id, now)
}

/// What publishing a finished request did.
#[derive(Debug, Clone)]
pub enum RequestPublication {
    /// A new snapshot, now in `testing`.
    Published(PublishOutcome),
    /// The request's packages are exactly those of the snapshot `testing` points at:
    /// no snapshot is made and nothing moves (recorded with the request).
    Unchanged {
        profile: String,
        snapshot: SnapshotId,
    },
}

/// What the coordinator calls when a request of `profile` finishes: the request's snapshot
/// ([`super::snapshot_for_request_if_changed`]), published to [`TESTING`].
pub fn publish_request(
    publisher: &Publisher,
    db: &mut Db,
    profile: &crate::profile::Profile,
    request_id: i64,
    options: &super::RequestSnapshotOptions,
    now: i64,
) -> Result<RequestPublication, PublishError> {
    let snapshot =
        super::snapshot_for_request_if_changed(publisher, db, profile, request_id, options, now)?;
    match snapshot {
        super::RequestSnapshot::New(snapshot) => {
            publish_snapshot_to(publisher, db, snapshot, TESTING, now)
                .map(RequestPublication::Published)
        }
        super::RequestSnapshot::SameAsTesting(snapshot) => {
            db.mark_request_unchanged(request_id, snapshot)?;
            Ok(RequestPublication::Unchanged {
                profile: profile.name.clone(),
                snapshot,
            })
        }
    }
}
