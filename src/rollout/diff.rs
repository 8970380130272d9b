//! What changed in one profile between two snapshots, and which changes are disruptive.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::inventory::Classifier;
use super::patterns::PackageRef;
use super::snapshot::Entry;
use super::RolloutError;
use crate::atom::{Cpv, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// A package that was not in the old snapshot at all.
    Added,
    /// A package that is gone from the new snapshot (every slot). Listed, not uninstalled.
    Removed,
    Upgraded,
    Downgraded,
    /// Same version, new build (BUILD_ID or BUILD_TIME).
    Rebuilt,
    /// A new slot of a package that already had another one (PHP 8.3 beside 8.2).
    SlotAdded,
    /// A slot that is gone while the package stays in another slot.
    SlotRemoved,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Upgraded => "upgraded",
            ChangeKind::Downgraded => "downgraded",
            ChangeKind::Rebuilt => "rebuilt",
            ChangeKind::SlotAdded => "slot-added",
            ChangeKind::SlotRemoved => "slot-removed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    /// Needs a service or host restart: one member per farm at a time.
    Disruptive,
    /// Safe while the host serves.
    Online,
}

/// One side of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Build {
    pub cpv: String,
    pub version: String,
    pub slot: String,
    pub build_id: Option<u64>,
    pub build_time: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageChange {
    pub kind: ChangeKind,
    /// `category/name`.
    pub package: String,
    /// Main slot (no sub-slot).
    pub slot: String,
    pub from: Option<Build>,
    pub to: Option<Build>,
    pub impact: Impact,
    /// The inventory pattern that decided `impact`; none when no pattern matched (disruptive
    /// by default).
    pub matched: Option<String>,
}

impl PackageChange {
    /// The exact atom that installs the new side (`=dev-lang/php-8.3.10`); none for removals.
    pub fn install_atom(&self) -> Option<String> {
        match self.kind {
            ChangeKind::Removed | ChangeKind::SlotRemoved => None,
            _ => self.to.as_ref().map(|to| format!("={}", to.cpv)),
        }
    }
}

/// A slotted package whose set of slots changed: after the new slot is installed everywhere
/// it becomes the active one, then the old slots are removed.
#[derive(Debug, Clone, Serialize)]
pub struct SlotChange {
    pub package: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The slot of the highest version in the new snapshot: the one to switch to.
    pub active: String,
    pub impact: Impact,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileDiff {
    pub profile: String,
    pub from: String,
    pub to: String,
    /// Sorted by package, then slot.
    pub changes: Vec<PackageChange>,
    pub slot_changes: Vec<SlotChange>,
}

impl ProfileDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn count(&self, kind: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }

    /// The install atoms of the changes with this impact.
    pub fn install_atoms(&self, impact: Impact) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| c.impact == impact)
            .filter_map(PackageChange::install_atom)
            .collect()
    }
}

struct Parsed<'a> {
    entry: &'a Entry,
    cpv: Cpv,
}

/// Per (package, main slot), the entry a client would install: the highest version, then the
/// highest BUILD_ID and BUILD_TIME (what Portage picks among several builds).
fn best_by_slot<'a>(
    entries: &'a [Entry],
    profile: &str,
    snapshot: &str,
) -> Result<BTreeMap<(String, String), Parsed<'a>>, RolloutError> {
    let mut best: BTreeMap<(String, String), Parsed<'a>> = BTreeMap::new();
    for entry in entries {
        let cpv = Cpv::parse(&entry.cpv).map_err(|err| RolloutError::BadPackage {
            profile: profile.to_string(),
            snapshot: snapshot.to_string(),
            message: err.to_string(),
        })?;
        let key = (cpv.cp(), entry.main_slot().to_string());
        let candidate = Parsed { entry, cpv };
        match best.get(&key) {
            Some(current) if !is_better(&candidate, current) => {}
            _ => {
                best.insert(key, candidate);
            }
        }
    }
    Ok(best)
}

fn is_better(candidate: &Parsed<'_>, current: &Parsed<'_>) -> bool {
    let rank = |p: &Parsed<'_>| (p.entry.build_id, p.entry.build_time);
    match candidate.cpv.version().cmp(current.cpv.version()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => rank(candidate) > rank(current),
    }
}

fn build_of(parsed: &Parsed<'_>) -> Build {
    Build {
        cpv: parsed.entry.cpv.clone(),
        version: parsed.cpv.version().as_str().to_string(),
        slot: parsed.entry.slot.clone(),
        build_id: parsed.entry.build_id,
        build_time: parsed.entry.build_time,
    }
}

fn is_rebuild(old: &Entry, new: &Entry) -> bool {
    match (old.build_id, new.build_id) {
        (Some(a), Some(b)) if a != b => true,
        (None, Some(_)) | (Some(_), None) => true,
        _ => matches!((old.build_time, new.build_time), (Some(a), Some(b)) if a != b),
    }
}

impl Classifier {
    /// Disruptive when a disruptive pattern matches either side; online when only online
    /// patterns match; disruptive when nothing matches (the safe default).
    pub fn classify(&self, sides: &[(&Cpv, &str)]) -> (Impact, Option<String>) {
        let refs: Vec<PackageRef<'_>> = sides
            .iter()
            .map(|&(cpv, slot)| PackageRef { cpv, slot })
            .collect();
        let first_match = |patterns: &[super::patterns::Pattern]| {
            patterns
                .iter()
                .find(|p| refs.iter().any(|r| p.matches(*r)))
                .map(|p| p.as_str().to_string())
        };
        if let Some(pattern) = first_match(&self.disruptive) {
            return (Impact::Disruptive, Some(pattern));
        }
        if let Some(pattern) = first_match(&self.online) {
            return (Impact::Online, Some(pattern));
        }
        (Impact::Disruptive, None)
    }
}

/// Compares the package lists of two snapshots of one profile.
pub fn diff_snapshots(
    profile: &str,
    from_name: &str,
    from: &[Entry],
    to_name: &str,
    to: &[Entry],
    classifier: &Classifier,
) -> Result<ProfileDiff, RolloutError> {
    let old = best_by_slot(from, profile, from_name)?;
    let new = best_by_slot(to, profile, to_name)?;
    let slots_of = |map: &BTreeMap<(String, String), Parsed<'_>>| {
        let mut slots: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (cp, slot) in map.keys() {
            slots.entry(cp.clone()).or_default().insert(slot.clone());
        }
        slots
    };
    let (old_slots, new_slots) = (slots_of(&old), slots_of(&new));
    let keys: BTreeSet<&(String, String)> = old.keys().chain(new.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let (cp, slot) = key;
        let (before, after) = (old.get(key), new.get(key));
        let kind = match (before, after) {
            (Some(b), Some(a)) => match a.cpv.version().cmp(b.cpv.version()) {
                std::cmp::Ordering::Greater => ChangeKind::Upgraded,
                std::cmp::Ordering::Less => ChangeKind::Downgraded,
                std::cmp::Ordering::Equal if is_rebuild(b.entry, a.entry) => ChangeKind::Rebuilt,
                std::cmp::Ordering::Equal => continue,
            },
            (None, Some(_)) if old_slots.contains_key(cp) => ChangeKind::SlotAdded,
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), None) if new_slots.contains_key(cp) => ChangeKind::SlotRemoved,
            (Some(_), None) => ChangeKind::Removed,
            (None, None) => continue,
        };
        let sides: Vec<(&Cpv, &str)> = before
            .iter()
            .chain(after.iter())
            .map(|p| (&p.cpv, p.entry.slot.as_str()))
            .collect();
        let (impact, matched) = classifier.classify(&sides);
        changes.push(PackageChange {
            kind,
            package: cp.clone(),
            slot: slot.clone(),
            from: before.map(build_of),
            to: after.map(build_of),
            impact,
            matched,
        });
    }
    let slot_changes = slot_changes(&changes, &new);
    Ok(ProfileDiff {
        profile: profile.to_string(),
        from: from_name.to_string(),
        to: to_name.to_string(),
        changes,
        slot_changes,
    })
}

fn slot_changes(
    changes: &[PackageChange],
    new: &BTreeMap<(String, String), Parsed<'_>>,
) -> Vec<SlotChange> {
    let mut by_package: BTreeMap<&str, SlotChange> = BTreeMap::new();
    for change in changes {
        let is_added = change.kind == ChangeKind::SlotAdded;
        if !is_added && change.kind != ChangeKind::SlotRemoved {
            continue;
        }
        let slot_change = by_package
            .entry(&change.package)
            .or_insert_with(|| SlotChange {
                package: change.package.clone(),
                added: Vec::new(),
                removed: Vec::new(),
                active: active_slot(new, &change.package),
                impact: Impact::Online,
            });
        if is_added {
            slot_change.added.push(change.slot.clone());
        } else {
            slot_change.removed.push(change.slot.clone());
        }
        slot_change.impact = slot_change.impact.min(change.impact);
    }
    by_package.into_values().collect()
}

/// The slot that holds the package's highest version.
fn active_slot(new: &BTreeMap<(String, String), Parsed<'_>>, package: &str) -> String {
    let mut best: Option<(&Version, &str)> = None;
    for ((cp, slot), parsed) in new.range((package.to_string(), String::new())..) {
        if cp != package {
            break;
        }
        let is_higher = match best {
            Some((version, _)) => parsed.cpv.version() > version,
            None => true,
        };
        if is_higher {
            best = Some((parsed.cpv.version(), slot));
        }
    }
    best.map(|(_, slot)| slot.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::patterns::Pattern;

    fn entry(cpv: &str, slot: &str, build_id: u64) -> Entry {
        Entry {
            cpv: cpv.into(),
            slot: slot.into(),
            build_id: Some(build_id),
            build_time: None,
        }
    }

    fn classifier() -> Classifier {
        Classifier {
            disruptive: vec![Pattern::parse("dev-lang/php").unwrap()],
            online: vec![
                Pattern::parse("app-arch/*").unwrap(),
                Pattern::parse("sys-apps/man-db").unwrap(),
            ],
        }
    }

    #[test]
    fn finds_every_kind_of_change() {
        let from = vec![
            entry("app-arch/tar-1.34", "0", 1),
            entry("app-arch/zstd-1.5.6", "0/1", 1),
            entry("app-arch/xz-utils-5.6.2", "0", 1),
            entry("dev-lang/php-8.1.29", "8.1", 1),
            entry("dev-lang/php-8.2.20", "8.2", 1),
            entry("sys-apps/man-db-2.12.1", "0", 1),
            entry("sys-apps/which-2.21", "0", 1),
            entry("www-servers/nginx-1.26.1", "0", 1),
        ];
        let to = vec![
            entry("app-arch/tar-1.35", "0", 1),
            entry("app-arch/zstd-1.5.6", "0/1", 2),
            entry("app-arch/xz-utils-5.4.6", "0", 1),
            entry("dev-lang/php-8.2.20", "8.2", 1),
            entry("dev-lang/php-8.3.10", "8.3", 1),
            entry("sys-apps/man-db-2.12.1", "0", 1),
            entry("sys-apps/findutils-4.10.0", "0", 1),
            entry("www-servers/nginx-1.26.1", "0", 1),
            // An older build of the same version that clients would not pick.
            entry("www-servers/nginx-1.26.1", "0", 0),
        ];
        let diff = diff_snapshots("p", "a", &from, "b", &to, &classifier()).unwrap();
        let summary: Vec<(String, &str, ChangeKind, Impact)> = diff
            .changes
            .iter()
            .map(|c| (c.package.clone(), c.slot.as_str(), c.kind, c.impact))
            .collect();
        let expect = |p: &str, s: &'static str, k, i| (p.to_string(), s, k, i);
        assert_eq!(
            summary,
            vec![
                expect("app-arch/tar", "0", ChangeKind::Upgraded, Impact::Online),
                expect(
                    "app-arch/xz-utils",
                    "0",
                    ChangeKind::Downgraded,
                    Impact::Online
                ),
                expect("app-arch/zstd", "0", ChangeKind::Rebuilt, Impact::Online),
                expect(
                    "dev-lang/php",
                    "8.1",
                    ChangeKind::SlotRemoved,
                    Impact::Disruptive
                ),
                expect(
                    "dev-lang/php",
                    "8.3",
                    ChangeKind::SlotAdded,
                    Impact::Disruptive
                ),
                expect(
                    "sys-apps/findutils",
                    "0",
                    ChangeKind::Added,
                    Impact::Disruptive
                ),
                expect(
                    "sys-apps/which",
                    "0",
                    ChangeKind::Removed,
                    Impact::Disruptive
                ),
            ]
        );
        assert_eq!(
            diff.changes[5].matched, None,
            "unmatched means disruptive by default"
        );
        assert_eq!(diff.slot_changes.len(), 1);
        let php = &diff.slot_changes[0];
        assert_eq!(
            (php.added.clone(), php.removed.clone()),
            (vec!["8.3".to_string()], vec!["8.1".to_string()])
        );
        assert_eq!(php.active, "8.3");
        assert_eq!(
            diff.install_atoms(Impact::Disruptive),
            vec!["=dev-lang/php-8.3.10", "=sys-apps/findutils-4.10.0"]
        );
    }

    #[test]
    fn identical_snapshots_have_no_changes() {
        let list = vec![
            entry("app-arch/tar-1.34", "0", 1),
            entry("dev-lang/php-8.2.20", "8.2", 3),
        ];
        let diff = diff_snapshots("p", "a", &list, "a", &list, &classifier()).unwrap();
        assert!(diff.is_empty() && diff.slot_changes.is_empty());
    }

    #[test]
    fn a_bad_cpv_names_profile_and_snapshot() {
        let list = vec![entry("not-a-cpv", "0", 1)];
        let err = diff_snapshots("amd64-v3", "s1", &list, "s2", &[], &classifier()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("amd64-v3") && text.contains("s1") && text.contains("not-a-cpv"),
            "{text}"
        );
    }
}
