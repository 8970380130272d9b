//! Turning per-profile changes into ordered waves of hosts.
//!
//! Order, and why:
//! 1. disruptive waves, one per member number: wave k takes member k of every farm, so a farm
//!    never has more than one member down;
//! 2. the online wave: every changed host, batched. It comes after the disruptive waves so that
//!    an online package cannot drag a newer disruptive dependency (glibc for tar) onto every
//!    host at once: by then those are already installed, one member at a time;
//! 3. slot switches, again one member per farm at a time (switching PHP restarts it), once the
//!    new slot is installed everywhere;
//! 4. removal of the old slots, which nothing runs from any more, batched.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::diff::{Impact, ProfileDiff};
use super::inventory::{HostRef, Inventory};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaveKind {
    Disruptive,
    Online,
    SlotSwitch,
    SlotRemoval,
}

impl WaveKind {
    pub fn label(self) -> &'static str {
        match self {
            WaveKind::Disruptive => "disruptive",
            WaveKind::Online => "online",
            WaveKind::SlotSwitch => "slot-switch",
            WaveKind::SlotRemoval => "slot-removal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedHost {
    pub host: String,
    pub site: String,
    pub farm: String,
    pub member: u32,
    pub profile: String,
}

impl PlannedHost {
    fn from_ref(host: &HostRef<'_>) -> PlannedHost {
        PlannedHost {
            host: host.member.host.clone(),
            site: host.site.to_string(),
            farm: host.farm.to_string(),
            member: host.member.member,
            profile: host.member.profile.clone(),
        }
    }

    /// `site/farm`: farm names are unique within a site only.
    pub fn farm_id(&self) -> String {
        format!("{}/{}", self.site, self.farm)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Wave {
    /// From 1, in execution order.
    pub number: usize,
    pub kind: WaveKind,
    /// The member number every host of the wave has (disruptive and slot-switch waves).
    pub member: Option<u32>,
    /// Sorted by site, farm, host.
    pub hosts: Vec<PlannedHost>,
    /// Host names in the order they run, `max_parallel` at a time.
    pub batches: Vec<Vec<String>>,
}

impl Wave {
    /// The Ansible group of the wave's hosts: `wave_03_disruptive_member_3`.
    pub fn group_name(&self, width: usize) -> String {
        let kind = self.kind.label().replace('-', "_");
        match self.member {
            Some(member) => format!("wave_{:0width$}_{kind}_member_{member}", self.number),
            None => format!("wave_{:0width$}_{kind}", self.number),
        }
    }

    pub fn title(&self) -> String {
        match (self.kind, self.member) {
            (WaveKind::Disruptive, Some(m)) => {
                format!("disruptive changes, member {m} of every farm")
            }
            (WaveKind::SlotSwitch, Some(m)) => {
                format!("switch to the new slots, member {m} of every farm")
            }
            (WaveKind::Online, _) => "online changes".to_string(),
            (WaveKind::SlotRemoval, _) => "remove the old slots".to_string(),
            (kind, None) => kind.label().to_string(),
        }
    }
}

/// What each host of a profile runs; the same for every host of the profile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProfileActions {
    /// Exact atoms installed in the disruptive waves.
    pub disruptive: Vec<String>,
    /// Exact atoms installed in the online wave.
    pub online: Vec<String>,
    /// `category/name:slot` of new slots, recorded in the world file before switching.
    pub select: Vec<String>,
    /// Shell commands that make the new slot active.
    pub switch: Vec<String>,
    /// `category/name:slot` of old slots, deselected and depcleaned at the end.
    pub remove: Vec<String>,
}

impl ProfileActions {
    pub fn is_empty(&self) -> bool {
        self.disruptive.is_empty()
            && self.online.is_empty()
            && self.select.is_empty()
            && self.switch.is_empty()
            && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedHost {
    #[serde(flatten)]
    pub host: PlannedHost,
    pub reason: String,
}

/// The whole rollout: changes per profile, what each profile's hosts run, and the waves.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub max_parallel: usize,
    pub profiles: Vec<ProfileDiff>,
    pub actions: BTreeMap<String, ProfileActions>,
    pub waves: Vec<Wave>,
    pub skipped: Vec<SkippedHost>,
    /// Things the operator should know (a slot change without a switch command).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Hosts that run at least one wave.
    pub fn planned_hosts(&self) -> BTreeSet<&str> {
        self.waves
            .iter()
            .flat_map(|w| w.hosts.iter().map(|h| h.host.as_str()))
            .collect()
    }
}

fn actions_for(diff: &ProfileDiff, inventory: &Inventory) -> ProfileActions {
    let mut actions = ProfileActions {
        disruptive: diff.install_atoms(Impact::Disruptive),
        online: diff.install_atoms(Impact::Online),
        ..ProfileActions::default()
    };
    for change in &diff.slot_changes {
        for slot in &change.added {
            actions.select.push(format!("{}:{slot}", change.package));
        }
        for slot in &change.removed {
            actions.remove.push(format!("{}:{slot}", change.package));
        }
        for switch in inventory
            .slot_switch
            .iter()
            .filter(|s| s.package == change.package)
        {
            for command in &switch.commands {
                actions
                    .switch
                    .push(command.replace("{slot}", &change.active));
            }
        }
    }
    actions
}

fn slot_warnings(diff: &ProfileDiff, inventory: &Inventory) -> Vec<String> {
    diff.slot_changes
        .iter()
        .filter(|change| {
            !inventory
                .slot_switch
                .iter()
                .any(|s| s.package == change.package)
        })
        .map(|change| {
            format!(
                "profile {}: {} changes slots (added: {}; removed: {}) but has no [[slot_switch]] \
                 commands; the plan records and removes slots without switching",
                diff.profile,
                change.package,
                list_or_none(&change.added),
                list_or_none(&change.removed)
            )
        })
        .collect()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Builds the waves for the profiles in `diffs` (one diff per profile). Hosts of other
/// profiles are not part of the plan; hosts whose profile has nothing to do are skipped.
pub fn build_plan(inventory: &Inventory, diffs: Vec<ProfileDiff>, max_parallel: usize) -> Plan {
    let max_parallel = max_parallel.max(1);
    let mut actions = BTreeMap::new();
    let mut warnings = Vec::new();
    for diff in &diffs {
        actions.insert(diff.profile.clone(), actions_for(diff, inventory));
        warnings.extend(slot_warnings(diff, inventory));
    }
    let mut hosts: Vec<PlannedHost> = inventory
        .hosts()
        .filter(|h| actions.contains_key(&h.member.profile))
        .map(|h| PlannedHost::from_ref(&h))
        .collect();
    hosts.sort_by(|a, b| (&a.site, &a.farm, &a.host).cmp(&(&b.site, &b.farm, &b.host)));

    let mut skipped = Vec::new();
    let mut disruptive: BTreeMap<u32, Vec<PlannedHost>> = BTreeMap::new();
    let mut online = Vec::new();
    let mut switch: BTreeMap<u32, Vec<PlannedHost>> = BTreeMap::new();
    let mut removal = Vec::new();
    for host in hosts {
        let Some(todo) = actions.get(&host.profile) else {
            continue;
        };
        if todo.is_empty() {
            let diff = diffs.iter().find(|d| d.profile == host.profile);
            let reason = match diff {
                Some(d) if !d.is_empty() => {
                    "profile changes need no action on hosts (removals only)"
                }
                _ => "profile unchanged",
            };
            skipped.push(SkippedHost {
                host,
                reason: reason.to_string(),
            });
            continue;
        }
        if !todo.disruptive.is_empty() {
            disruptive
                .entry(host.member)
                .or_default()
                .push(host.clone());
        }
        if !todo.online.is_empty() {
            online.push(host.clone());
        }
        if !todo.select.is_empty() || !todo.switch.is_empty() {
            switch.entry(host.member).or_default().push(host.clone());
        }
        if !todo.remove.is_empty() {
            removal.push(host);
        }
    }

    let mut waves = Vec::new();
    let mut push = |kind: WaveKind, member: Option<u32>, hosts: Vec<PlannedHost>| {
        if hosts.is_empty() {
            return;
        }
        let batches = hosts
            .chunks(max_parallel)
            .map(|chunk| chunk.iter().map(|h| h.host.clone()).collect())
            .collect();
        waves.push(Wave {
            number: waves.len() + 1,
            kind,
            member,
            hosts,
            batches,
        });
    };
    for (member, hosts) in disruptive {
        push(WaveKind::Disruptive, Some(member), hosts);
    }
    push(WaveKind::Online, None, online);
    for (member, hosts) in switch {
        push(WaveKind::SlotSwitch, Some(member), hosts);
    }
    push(WaveKind::SlotRemoval, None, removal);

    Plan {
        max_parallel,
        profiles: diffs,
        actions,
        waves,
        skipped,
        warnings,
    }
}
