//! The publishing commands of `binfarm` (`promote`, `rollback`, `snapshots list|diff|import`,
//! `publish`, `resign`, `gc`, `client-config`): argument structs for clap and functions that
//! return the text to print. `main.rs` only parses and prints.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use crate::profile::Profile;
use crate::sign::SigningKey;
use crate::store::{unix_now, Db, SnapshotOrigin, Store};

use super::channel::{self, PublishOutcome};
use super::config::PublishConfig;
use super::{
    client, diff, gc, mirrors, resign as resign_mod, snapshot, LinkMode, PublishError, Publisher,
    SnapshotId,
};

/// Where the farm's state and trees are: farm.toml, or flags overriding it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FarmArgs {
    /// farm.toml (default: the embedded defaults, paths relative to the current directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// State directory (database and blobs); overrides [state] dir.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Root of the local mirror trees; overrides [mirror] root.
    #[arg(long)]
    pub mirror_root: Option<PathBuf>,
    /// hw-profile directory; overrides [profiles] dir.
    #[arg(long)]
    pub profiles_dir: Option<PathBuf>,
}

impl FarmArgs {
    fn settings(&self) -> Result<PublishConfig, PublishError> {
        let mut c = PublishConfig::load(self.config.as_deref())?;
        if let Some(d) = &self.state_dir {
            c.state_dir = d.clone();
        }
        if let Some(d) = &self.mirror_root {
            c.mirror_root = d.clone();
        }
        if let Some(d) = &self.profiles_dir {
            c.profiles_dir = d.clone();
        }
        Ok(c)
    }

    fn open(&self) -> Result<(PublishConfig, Publisher, Db), PublishError> {
        let settings = self.settings()?;
        let store = Store::open(&settings.state_dir)?;
        let db = store.connect()?;
        let mut publisher = Publisher::new(store, settings.mirror_root.clone());
        publisher.ttl = (settings.ttl > 0).then_some(settings.ttl);
        publisher.retention = settings.retention;
        Ok((settings, publisher, db))
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    #[arg(long)]
    pub profile: String,
    /// The snapshot to promote (default: the one `testing` points at).
    #[arg(long)]
    pub snapshot: Option<SnapshotId>,
    /// The channel to move.
    #[arg(long, default_value = channel::STABLE)]
    pub to: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    #[arg(long)]
    pub profile: String,
    #[arg(long, default_value = channel::STABLE)]
    pub channel: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    #[arg(long)]
    pub profile: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    pub from: SnapshotId,
    pub to: SnapshotId,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    #[arg(long)]
    pub profile: String,
    /// The channel the new snapshot goes to.
    #[arg(long, default_value = channel::TESTING)]
    pub channel: String,
    #[arg(long)]
    pub note: Option<String>,
    /// Signed gpkg files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    #[arg(long)]
    pub profile: String,
    #[arg(long)]
    pub channel: String,
    /// Copy package files instead of hard-linking them from the blob store.
    #[arg(long)]
    pub copy: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ResignArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    #[arg(long)]
    pub profile: String,
    /// The channel whose snapshot is re-signed.
    #[arg(long, default_value = channel::STABLE)]
    pub channel: String,
    /// The (new) farm key, ASCII-armored secret key; overrides [signing] key_file.
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GcArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ClientConfigArgs {
    #[command(flatten)]
    pub farm: FarmArgs,
    #[arg(long)]
    pub profile: String,
    #[arg(long, default_value = channel::STABLE)]
    pub channel: String,
    /// The mirror root URL (the tree is URL/<profile>/<channel>).
    #[arg(long)]
    pub mirror: String,
    /// The node's configuration root (for nodes living in a directory).
    #[arg(long, default_value = "/")]
    pub config_root: PathBuf,
    /// binrepos.conf priority.
    #[arg(long, default_value_t = 10)]
    pub priority: i32,
    /// The farm's secret key (its public part is printed); overrides [signing] key_file.
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

fn outcome_text(verb: &str, o: &PublishOutcome) -> String {
    let moved = match o.previous {
        Some(p) if p == o.snapshot => format!("already points at snapshot {p}"),
        Some(p) => format!("now points at snapshot {} (was snapshot {p})", o.snapshot),
        None => format!("now points at snapshot {} (was nothing)", o.snapshot),
    };
    format!(
        "{verb}: {}/{} {moved}\n\
         published {}: {} packages ({} linked, {} copied, {} already there), index TIMESTAMP {}\n",
        o.profile,
        o.channel,
        o.tree.tree.display(),
        o.tree.packages,
        o.tree.linked,
        o.tree.copied,
        o.tree.already_present,
        o.tree.index_timestamp
    )
}

/// After a channel's local tree changed: the same tree to every FTP mirror of farm.toml.
/// Returns `text` with a line per mirror.
fn and_mirrors(
    settings: &PublishConfig,
    publisher: &Publisher,
    profile: &str,
    channel: &str,
    text: String,
) -> Result<String, PublishError> {
    let pushed = mirrors::push_tree_blocking(
        &settings.ftp,
        &publisher.mirror_root,
        profile,
        channel,
        &publisher.progress,
    )?;
    Ok(text + &pushed)
}

fn load_profile(settings: &PublishConfig, name: &str) -> Result<Profile, PublishError> {
    Ok(Profile::find(name, &settings.profiles_dir)?)
}

fn load_key(
    settings: &PublishConfig,
    key: &Option<PathBuf>,
    passphrase: &Option<PathBuf>,
) -> Result<SigningKey, PublishError> {
    let path = key.clone().unwrap_or_else(|| settings.key_file.clone());
    let pass = passphrase
        .clone()
        .or_else(|| settings.passphrase_file.clone());
    Ok(SigningKey::from_armored_file(&path, pass.as_deref())?)
}

pub fn promote(args: &PromoteArgs) -> Result<String, PublishError> {
    let (settings, publisher, mut db) = args.farm.open()?;
    let o = channel::promote(
        &publisher,
        &mut db,
        &args.profile,
        args.snapshot,
        &args.to,
        unix_now(),
    )?;
    let text = outcome_text("promote", &o);
    and_mirrors(&settings, &publisher, &o.profile, &o.channel, text)
}

pub fn rollback(args: &RollbackArgs) -> Result<String, PublishError> {
    let (settings, publisher, mut db) = args.farm.open()?;
    let o = channel::rollback(
        &publisher,
        &mut db,
        &args.profile,
        &args.channel,
        unix_now(),
    )?;
    let text = outcome_text("rollback", &o);
    and_mirrors(&settings, &publisher, &o.profile, &o.channel, text)
}

/// `YYYY-MM-DD HH:MM` (UTC) of Unix seconds.
fn utc(seconds: i64) -> String {
    crate::utc::UtcTime::from_unix(seconds).minutes()
}

pub fn snapshots_list(args: &ListArgs) -> Result<String, PublishError> {
    let (_, _, db) = args.farm.open()?;
    let snapshots = db.list_snapshots(args.profile.as_deref())?;
    let mut pointers: BTreeMap<SnapshotId, Vec<String>> = BTreeMap::new();
    for ch in db.list_channels(args.profile.as_deref())? {
        pointers.entry(ch.snapshot_id).or_default().push(ch.name);
    }
    if args.json {
        let rows: Vec<serde_json::Value> = snapshots
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["channels"] = serde_json::json!(pointers.get(&s.id).cloned().unwrap_or_default());
                v
            })
            .collect();
        return serde_json::to_string_pretty(&rows)
            .map(|t| t + "\n")
            .map_err(|e| PublishError::Config {
                path: PathBuf::from("--json"),
                message: e.to_string(),
            });
    }
    let mut out = format!(
        "{:>6}  {:<16} {:<16} {:<8} {:>7} {:>8} {:>12}  {}\n",
        "ID",
        "PROFILE",
        "CREATED (UTC)",
        "ORIGIN",
        "REQUEST",
        "PACKAGES",
        "BYTES",
        "CHANNELS / NOTE"
    );
    for s in &snapshots {
        let channels = pointers.get(&s.id).map(|c| c.join(",")).unwrap_or_default();
        let note = s.note.clone().unwrap_or_default();
        let tail = match (channels.is_empty(), note.is_empty()) {
            (false, false) => format!("{channels}  {note}"),
            (false, true) => channels,
            (true, _) => note,
        };
        out.push_str(&format!(
            "{:>6}  {:<16} {:<16} {:<8} {:>7} {:>8} {:>12}  {}\n",
            s.id,
            s.profile,
            utc(s.created_at),
            s.origin.as_str(),
            s.request_id.map(|r| r.to_string()).unwrap_or("-".into()),
            s.packages,
            s.total_size,
            tail
        ));
    }
    Ok(out)
}

pub fn snapshots_diff(args: &DiffArgs) -> Result<String, PublishError> {
    let (_, _, db) = args.farm.open()?;
    let d = diff::diff_snapshots(&db, args.from, args.to)?;
    if args.json {
        return serde_json::to_string_pretty(&d)
            .map(|t| t + "\n")
            .map_err(|e| PublishError::Config {
                path: PathBuf::from("--json"),
                message: e.to_string(),
            });
    }
    Ok(d.render())
}

/// Stores the given gpkg files as blobs, makes a snapshot of them and publishes it.
pub fn snapshots_import(args: &ImportArgs) -> Result<String, PublishError> {
    let (settings, publisher, mut db) = args.farm.open()?;
    let profile = load_profile(&settings, &args.profile)?;
    let now = unix_now();
    let mut blobs = Vec::new();
    for path in &args.files {
        let file = File::open(path).map_err(PublishError::io(path))?;
        let stored = publisher.store.blobs().put_stream(file, None, u64::MAX)?;
        db.record_blob(&stored.sha512, stored.size, "binpkg", now)?;
        blobs.push(stored.sha512);
    }
    let id = snapshot::create_snapshot(
        &publisher,
        &mut db,
        &profile,
        &blobs,
        &snapshot::SnapshotOptions {
            origin: SnapshotOrigin::Import,
            note: args.note.clone(),
            ..Default::default()
        },
        now,
    )?;
    let o = channel::publish_snapshot_to(&publisher, &mut db, id, &args.channel, now)?;
    let text = format!(
        "snapshot {id}: {} packages\n{}",
        blobs.len(),
        outcome_text("publish", &o)
    );
    and_mirrors(&settings, &publisher, &o.profile, &o.channel, text)
}

/// `binfarm publish --profile P --channel C`: publishes the tree of a channel again, locally
/// and to the FTP mirrors; `progress` hears of the files placed and the bytes uploaded.
pub fn publish(
    args: &SyncArgs,
    progress: crate::progress::Progress,
) -> Result<String, PublishError> {
    let (settings, mut publisher, mut db) = args.farm.open()?;
    publisher.progress = progress;
    if args.copy {
        publisher.link_mode = LinkMode::Copy;
    }
    let r = channel::sync_channel(
        &publisher,
        &mut db,
        &args.profile,
        &args.channel,
        unix_now(),
    )?;
    let text = format!(
        "published snapshot {} to {}: {} packages ({} linked, {} copied, {} already there), index TIMESTAMP {}, {:?}\n",
        r.snapshot_id,
        r.tree.display(),
        r.packages,
        r.linked,
        r.copied,
        r.already_present,
        r.index_timestamp,
        r.elapsed
    );
    and_mirrors(&settings, &publisher, &args.profile, &args.channel, text)
}

pub fn resign(args: &ResignArgs) -> Result<String, PublishError> {
    let (settings, publisher, mut db) = args.farm.open()?;
    let profile = load_profile(&settings, &args.profile)?;
    let key = load_key(&settings, &args.key, &args.passphrase_file)?;
    let o = resign_mod::resign(
        &publisher,
        &mut db,
        &profile,
        &args.channel,
        &key,
        unix_now(),
    )?;
    let text = format!(
        "{}re-signed with key {}; promote it with: binfarm promote --profile {} --snapshot {} --to {}\n",
        outcome_text("resign", &o),
        key.fingerprint(),
        args.profile,
        o.snapshot,
        args.channel
    );
    and_mirrors(&settings, &publisher, &o.profile, &o.channel, text)
}

pub fn gc(args: &GcArgs) -> Result<String, PublishError> {
    let (settings, publisher, mut db) = args.farm.open()?;
    let remotes: Vec<&dyn gc::RemoteCleaner> = settings
        .ftp
        .iter()
        .map(|t| t as &dyn gc::RemoteCleaner)
        .collect();
    let report = gc::run_gc(&publisher, &mut db, args.dry_run, unix_now(), &remotes)?;
    Ok(report.render())
}

pub fn client_config(args: &ClientConfigArgs) -> Result<String, PublishError> {
    let settings = args.farm.settings()?;
    let profile = load_profile(&settings, &args.profile)?;
    let key = load_key(&settings, &args.key, &args.passphrase_file)?;
    client::client_config(
        &profile,
        &args.channel,
        &args.mirror,
        &key.public_key_armored()?,
        &key.fingerprint(),
        &client::ClientConfigOptions {
            config_root: args.config_root.clone(),
            priority: args.priority,
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(super::utc(1_795_708_374), "2026-11-26 15:52");
    }
}
