//! `binfarm snapshots diff A B`: what changes for a node that goes from snapshot A to B.
//!
//! Packages are matched by category/PN and SLOT (without sub-slot). Within a match: a higher
//! version is an upgrade, a lower one a downgrade (PMS version order, [`crate::atom`]), the
//! same CPV with another BUILD_ID a rebuild; unmatched packages are added or removed.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::atom::Cpv;
use crate::store::{Db, SnapshotEntry};

use super::{PublishError, SnapshotId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Upgraded,
    Downgraded,
    Removed,
    /// Same CPV, new BUILD_ID (rebuilt, or re-signed).
    Rebuilt,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Upgraded => "upgraded",
            ChangeKind::Downgraded => "downgraded",
            ChangeKind::Removed => "removed",
            ChangeKind::Rebuilt => "rebuilt",
        }
    }
}

/// A package version with its build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Build {
    pub cpv: String,
    pub build_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// `category/pn`.
    pub cp: String,
    /// SLOT without sub-slot.
    pub slot: String,
    pub old: Option<Build>,
    pub new: Option<Build>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotDiff {
    pub from: SnapshotId,
    pub to: SnapshotId,
    /// By category/PN, slot.
    pub changes: Vec<Change>,
    /// Packages identical in both (same CPV and BUILD_ID).
    pub unchanged: usize,
}

fn parse(entry: &SnapshotEntry) -> (String, String, Option<Cpv>) {
    let cpv = Cpv::parse(&entry.cpv).ok();
    let cp = cpv
        .as_ref()
        .map(|c| c.cp())
        .unwrap_or_else(|| entry.cpv.clone());
    let slot = entry.slot.split('/').next().unwrap_or("0").to_string();
    (cp, slot, cpv)
}

fn compare_versions(a: &SnapshotEntry, b: &SnapshotEntry) -> Ordering {
    match (Cpv::parse(&a.cpv), Cpv::parse(&b.cpv)) {
        (Ok(x), Ok(y)) => x.version().vercmp(y.version()),
        _ => a.cpv.cmp(&b.cpv),
    }
}

fn build(e: &SnapshotEntry) -> Build {
    Build {
        cpv: e.cpv.clone(),
        build_id: e.build_id,
    }
}

type Groups<'a> = BTreeMap<(String, String), Vec<&'a SnapshotEntry>>;

fn group_entries(list: &[SnapshotEntry]) -> Groups<'_> {
    let mut groups: Groups<'_> = BTreeMap::new();
    for e in list {
        let (cp, slot, _) = parse(e);
        groups.entry((cp, slot)).or_default().push(e);
    }
    groups
}

/// Compares two package lists.
pub fn diff_entries(old: &[SnapshotEntry], new: &[SnapshotEntry]) -> (Vec<Change>, usize) {
    let old_groups = group_entries(old);
    let new_groups = group_entries(new);
    let mut keys: Vec<&(String, String)> = old_groups.keys().chain(new_groups.keys()).collect();
    keys.sort();
    keys.dedup();

    let mut changes = Vec::new();
    let mut unchanged = 0;
    for key in keys {
        let mut olds: Vec<&SnapshotEntry> = old_groups.get(key).cloned().unwrap_or_default();
        let mut news: Vec<&SnapshotEntry> = new_groups.get(key).cloned().unwrap_or_default();
        let change = |kind, o: Option<&SnapshotEntry>, n: Option<&SnapshotEntry>| Change {
            kind,
            cp: key.0.clone(),
            slot: key.1.clone(),
            old: o.map(build),
            new: n.map(build),
        };
        // Same CPV on both sides: unchanged or rebuilt.
        let mut i = 0;
        while i < olds.len() {
            if let Some(j) = news.iter().position(|n| n.cpv == olds[i].cpv) {
                let (o, n) = (olds.remove(i), news.remove(j));
                if o.build_id == n.build_id && o.blob == n.blob {
                    unchanged += 1;
                } else {
                    changes.push(change(ChangeKind::Rebuilt, Some(o), Some(n)));
                }
            } else {
                i += 1;
            }
        }
        // Different versions: pair them in version order.
        olds.sort_by(|a, b| compare_versions(a, b));
        news.sort_by(|a, b| compare_versions(a, b));
        let pairs = olds.len().min(news.len());
        for (o, n) in olds.iter().zip(news.iter()).take(pairs) {
            let kind = match compare_versions(o, n) {
                Ordering::Less => ChangeKind::Upgraded,
                Ordering::Greater => ChangeKind::Downgraded,
                // Equal versions with different CPV spellings (1.0 vs 1.00).
                Ordering::Equal => ChangeKind::Rebuilt,
            };
            changes.push(change(kind, Some(o), Some(n)));
        }
        for o in olds.iter().skip(pairs) {
            changes.push(change(ChangeKind::Removed, Some(o), None));
        }
        for n in news.iter().skip(pairs) {
            changes.push(change(ChangeKind::Added, None, Some(n)));
        }
    }
    (changes, unchanged)
}

/// Compares snapshot `from` with snapshot `to` (any profiles, normally the same one).
pub fn diff_snapshots(
    db: &Db,
    from: SnapshotId,
    to: SnapshotId,
) -> Result<SnapshotDiff, PublishError> {
    for id in [from, to] {
        if db.snapshot(id)?.is_none() {
            return Err(PublishError::NoSuchSnapshot { id });
        }
    }
    let (changes, unchanged) = diff_entries(&db.snapshot_entries(from)?, &db.snapshot_entries(to)?);
    Ok(SnapshotDiff {
        from,
        to,
        changes,
        unchanged,
    })
}

impl SnapshotDiff {
    /// One line per change (`upgraded  app-misc/hello:0  1.0 (build 3) -> 1.1 (build 4)`),
    /// then a summary line.
    pub fn render(&self) -> String {
        let describe = |b: &Option<Build>| -> String {
            match b {
                Some(b) => {
                    let version = b.cpv.rsplit_once('/').map(|(_, pf)| pf).unwrap_or(&b.cpv);
                    format!("{version} (build {})", b.build_id)
                }
                None => "-".into(),
            }
        };
        let mut out = format!("snapshot {} -> snapshot {}\n", self.from, self.to);
        for c in &self.changes {
            let what = format!("{}:{}", c.cp, c.slot);
            let detail = match c.kind {
                ChangeKind::Added => describe(&c.new),
                ChangeKind::Removed => describe(&c.old),
                _ => format!("{} -> {}", describe(&c.old), describe(&c.new)),
            };
            out.push_str(&format!("{:<10} {what:<40} {detail}\n", c.kind.as_str()));
        }
        let count = |k: ChangeKind| self.changes.iter().filter(|c| c.kind == k).count();
        out.push_str(&format!(
            "{} added, {} upgraded, {} downgraded, {} removed, {} rebuilt, {} unchanged\n",
            count(ChangeKind::Added),
            count(ChangeKind::Upgraded),
            count(ChangeKind::Downgraded),
            count(ChangeKind::Removed),
            count(ChangeKind::Rebuilt),
            self.unchanged
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(cpv: &str, slot: &str, build_id: i64) -> SnapshotEntry {
        SnapshotEntry {
            path: format!("{cpv}-{build_id}.gpkg.tar"),
            cpv: cpv.into(),
            slot: slot.into(),
            build_id,
            blob: format!("{cpv}#{build_id}"),
            size: 1,
        }
    }

    #[test]
    fn every_kind_of_change() {
        let old = vec![
            e("app-misc/hello-1.0", "0", 1),
            e("app-misc/greeter-2.0", "0", 1),
            e("dev-libs/libhello-1.0", "0/1", 1),
            e("app-misc/gone-1", "0", 1),
            e("dev-lang/minilang-8.2.5", "8.2", 1),
            e("app-misc/same-1", "0", 7),
        ];
        let new = vec![
            e("app-misc/hello-1.0_p1", "0", 2),
            e("app-misc/greeter-1.9", "0", 5),
            e("dev-libs/libhello-1.0", "0/1", 2),
            e("app-misc/new-3", "0", 1),
            e("dev-lang/minilang-8.2.5", "8.2", 1),
            e("dev-lang/minilang-8.3.1", "8.3", 1),
            e("app-misc/same-1", "0", 7),
        ];
        let (changes, unchanged) = diff_entries(&old, &new);
        let got: Vec<(ChangeKind, String)> = changes
            .iter()
            .map(|c| (c.kind, format!("{}:{}", c.cp, c.slot)))
            .collect();
        assert_eq!(
            got,
            vec![
                (ChangeKind::Removed, "app-misc/gone:0".into()),
                (ChangeKind::Downgraded, "app-misc/greeter:0".into()),
                (ChangeKind::Upgraded, "app-misc/hello:0".into()),
                (ChangeKind::Added, "app-misc/new:0".into()),
                (ChangeKind::Added, "dev-lang/minilang:8.3".into()),
                (ChangeKind::Rebuilt, "dev-libs/libhello:0".into()),
            ]
        );
        assert_eq!(unchanged, 2);
    }
}
