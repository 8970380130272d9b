//! The rollout inventory (TOML): sites, farms and their numbered members, which package
//! changes are disruptive, and how the generated Ansible playbook runs. See
//! `examples/inventory.toml` for a commented example.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::patterns::Pattern;
use super::RolloutError;

/// The inventory as written in the TOML file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default)]
    pub rollout: RolloutSettings,
    #[serde(default)]
    pub health_check: HealthCheck,
    #[serde(default)]
    pub ansible: AnsibleSettings,
    pub packages: PackageGroups,
    /// Commands that make a new slot the active one (`eselect php set fpm php{slot}`).
    #[serde(default)]
    pub slot_switch: Vec<SlotSwitch>,
    #[serde(default)]
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSettings {
    /// At most this many hosts are upgraded at once (Ansible `serial`), in every wave.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: usize,
    /// The command that installs packages (argv prefix); `emerge` on production nodes.
    #[serde(default = "default_emerge_command")]
    pub emerge_command: Vec<String>,
    /// Options for installing a wave's packages. `--oneshot` keeps the world file as the
    /// hw-profile defines it; `--rebuilt-binaries` picks up same-version rebuilds.
    #[serde(default = "default_emerge_options")]
    pub emerge_options: Vec<String>,
    /// Shell commands run on a host before its disruptive upgrade (drain it from the load balancer).
    #[serde(default)]
    pub before_disruptive: Vec<String>,
    /// Shell commands run on a host after its disruptive upgrade (restart services, undrain).
    #[serde(default)]
    pub after_disruptive: Vec<String>,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            max_parallel: default_max_parallel(),
            emerge_command: default_emerge_command(),
            emerge_options: default_emerge_options(),
            before_disruptive: Vec::new(),
            after_disruptive: Vec::new(),
        }
    }
}

fn default_max_parallel() -> usize {
    25
}

fn default_emerge_command() -> Vec<String> {
    vec!["emerge".to_string()]
}

fn default_emerge_options() -> Vec<String> {
    [
        "--getbinpkgonly",
        "--update",
        "--oneshot",
        "--rebuilt-binaries",
    ]
    .map(String::from)
    .to_vec()
}

/// How a host proves it serves again after its wave; checked on every host of a wave before
/// the next wave starts. With neither `url` nor `command`, the host only has to answer Ansible.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Fetched from the host itself (`ansible.builtin.uri`), e.g. `http://127.0.0.1/health`.
    pub url: Option<String>,
    /// Expected HTTP status of `url`.
    #[serde(default = "default_status_code")]
    pub status_code: u16,
    /// A shell command run on the host; exit status 0 means healthy.
    pub command: Option<String>,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds between tries.
    #[serde(default = "default_delay")]
    pub delay: u32,
}

fn default_status_code() -> u16 {
    200
}

fn default_retries() -> u32 {
    10
}

fn default_delay() -> u32 {
    6
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnsibleSettings {
    /// Run the plays with privilege escalation (`become: true`).
    #[serde(default)]
    #[serde(rename = "become")]
    pub use_become: bool,
    /// Variables for every host in the generated Ansible inventory (`ansible_user`, ...).
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
}

/// Which package changes may happen while a host serves.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackageGroups {
    /// Changes that need a service or host restart (kernel, libc, openssl, web server, PHP).
    #[serde(default)]
    pub disruptive: Vec<String>,
    /// Changes that are safe while serving (man, findutils, tar). A change matching neither
    /// group is disruptive, and one matching both is disruptive too: a needless member wave
    /// costs minutes, a restart of a whole farm costs the service.
    #[serde(default)]
    pub online: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSwitch {
    /// `category/name` of a slotted package.
    pub package: String,
    /// Shell commands; `{slot}` is replaced by the slot to make active.
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    #[serde(default)]
    pub farms: Vec<Farm>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Farm {
    pub name: String,
    #[serde(default)]
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The Ansible inventory hostname.
    pub host: String,
    /// Position in the farm, from 1: disruptive wave k takes member k of every farm.
    pub member: u32,
    /// The hw-profile whose binary packages the host installs.
    pub profile: String,
    /// Extra Ansible host variables (`ansible_host`, `ansible_port`, ...).
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
}

/// A member with its place: what the wave planner works on.
#[derive(Debug, Clone, Copy)]
pub struct HostRef<'a> {
    pub site: &'a str,
    pub farm: &'a str,
    pub member: &'a Member,
}

/// One thing wrong with an inventory; each displays as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryProblem {
    UnknownProfile {
        host: String,
        farm: String,
        profile: String,
        known: Vec<String>,
    },
    HostInTwoFarms {
        host: String,
        first_farm: String,
        second_farm: String,
    },
    HostTwiceInFarm {
        host: String,
        farm: String,
    },
    DuplicateMember {
        farm: String,
        member: u32,
        first_host: String,
        second_host: String,
    },
    MemberZero {
        host: String,
        farm: String,
    },
    DuplicateName {
        what: &'static str,
        name: String,
    },
    EmptyName {
        what: &'static str,
        place: String,
    },
    BadPattern {
        group: &'static str,
        index: usize,
        message: String,
    },
    BadSetting {
        key: &'static str,
        message: String,
    },
}

impl fmt::Display for InventoryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InventoryProblem::UnknownProfile {
                host,
                farm,
                profile,
                known,
            } => write!(
                f,
                "host {host} (farm {farm}): unknown hw-profile {profile:?} (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
            InventoryProblem::HostInTwoFarms {
                host,
                first_farm,
                second_farm,
            } => write!(
                f,
                "host {host} is in two farms: {first_farm} and {second_farm}"
            ),
            InventoryProblem::HostTwiceInFarm { host, farm } => {
                write!(f, "host {host} is listed twice in farm {farm}")
            }
            InventoryProblem::DuplicateMember {
                farm,
                member,
                first_host,
                second_host,
            } => write!(
                f,
                "farm {farm}: member number {member} is used by both {first_host} and {second_host}"
            ),
            InventoryProblem::MemberZero { host, farm } => {
                write!(f, "host {host} (farm {farm}): member numbers start at 1")
            }
            InventoryProblem::DuplicateName { what, name } => {
                write!(f, "{what} {name} is defined twice")
            }
            InventoryProblem::EmptyName { what, place } => {
                write!(f, "{place}: {what} must not be empty")
            }
            InventoryProblem::BadPattern {
                group,
                index,
                message,
            } => write!(f, "packages.{group}[{index}]: {message}"),
            InventoryProblem::BadSetting { key, message } => write!(f, "{key}: {message}"),
        }
    }
}

/// The inventory's package groups, parsed.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub disruptive: Vec<Pattern>,
    pub online: Vec<Pattern>,
}

impl Inventory {
    /// Reads and parses an inventory file (TOML syntax and field names only; see [`Inventory::validate`]).
    pub fn load(path: &Path) -> Result<Inventory, RolloutError> {
        let text = fs::read_to_string(path).map_err(|source| RolloutError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Inventory::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Inventory, RolloutError> {
        toml::from_str(text).map_err(|err| RolloutError::InventorySyntax {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Every member with its site and farm, in file order.
    pub fn hosts(&self) -> impl Iterator<Item = HostRef<'_>> {
        self.sites.iter().flat_map(|site| {
            site.farms.iter().flat_map(move |farm| {
                farm.members.iter().map(move |member| HostRef {
                    site: &site.name,
                    farm: &farm.name,
                    member,
                })
            })
        })
    }

    /// The hw-profiles the inventory's hosts use, sorted.
    pub fn profiles(&self) -> BTreeSet<String> {
        self.hosts().map(|h| h.member.profile.clone()).collect()
    }

    /// Everything wrong with the inventory; empty when it can be planned.
    /// `known_profiles` are the hw-profile names that exist (see [`known_profiles`]).
    pub fn problems(&self, known_profiles: &BTreeSet<String>) -> Vec<InventoryProblem> {
        let mut problems = Vec::new();
        if self.rollout.max_parallel == 0 {
            problems.push(InventoryProblem::BadSetting {
                key: "rollout.max_parallel",
                message: "must be at least 1".into(),
            });
        }
        if self.rollout.emerge_command.is_empty() {
            problems.push(InventoryProblem::BadSetting {
                key: "rollout.emerge_command",
                message: "must name a command".into(),
            });
        }
        if self.health_check.url.is_some() && self.health_check.command.is_some() {
            problems.push(InventoryProblem::BadSetting {
                key: "health_check",
                message: "give either url or command, not both".into(),
            });
        }
        for switch in &self.slot_switch {
            let valid = switch
                .package
                .split_once('/')
                .is_some_and(|(c, n)| !c.is_empty() && !n.is_empty() && !n.contains('/'));
            if !valid {
                problems.push(InventoryProblem::BadSetting {
                    key: "slot_switch.package",
                    message: format!("{:?} is not category/name", switch.package),
                });
            }
        }
        if let Err(mut bad) = self.classifier() {
            problems.append(&mut bad);
        }
        let known: Vec<String> = known_profiles.iter().cloned().collect();
        let mut sites = BTreeSet::new();
        let mut farm_of_host: HashMap<&str, String> = HashMap::new();
        for site in &self.sites {
            if site.name.is_empty() {
                problems.push(InventoryProblem::EmptyName {
                    what: "site name",
                    place: "sites".into(),
                });
            }
            if !sites.insert(site.name.as_str()) {
                problems.push(InventoryProblem::DuplicateName {
                    what: "site",
                    name: site.name.clone(),
                });
            }
            let mut farms = BTreeSet::new();
            for farm in &site.farms {
                let farm_id = format!("{}/{}", site.name, farm.name);
                if farm.name.is_empty() {
                    problems.push(InventoryProblem::EmptyName {
                        what: "farm name",
                        place: format!("site {}", site.name),
                    });
                }
                if !farms.insert(farm.name.as_str()) {
                    problems.push(InventoryProblem::DuplicateName {
                        what: "farm",
                        name: farm_id.clone(),
                    });
                }
                let mut member_numbers: HashMap<u32, &str> = HashMap::new();
                for member in &farm.members {
                    if member.host.is_empty() {
                        problems.push(InventoryProblem::EmptyName {
                            what: "host",
                            place: format!("farm {farm_id}"),
                        });
                    }
                    match farm_of_host.get(member.host.as_str()) {
                        Some(first) if *first == farm_id => {
                            problems.push(InventoryProblem::HostTwiceInFarm {
                                host: member.host.clone(),
                                farm: farm_id.clone(),
                            })
                        }
                        Some(first) => problems.push(InventoryProblem::HostInTwoFarms {
                            host: member.host.clone(),
                            first_farm: first.clone(),
                            second_farm: farm_id.clone(),
                        }),
                        None => {
                            farm_of_host.insert(&member.host, farm_id.clone());
                        }
                    }
                    if member.member == 0 {
                        problems.push(InventoryProblem::MemberZero {
                            host: member.host.clone(),
                            farm: farm_id.clone(),
                        });
                    } else if let Some(first) = member_numbers.insert(member.member, &member.host) {
                        problems.push(InventoryProblem::DuplicateMember {
                            farm: farm_id.clone(),
                            member: member.member,
                            first_host: first.to_string(),
                            second_host: member.host.clone(),
                        });
                    }
                    if !known_profiles.contains(&member.profile) {
                        problems.push(InventoryProblem::UnknownProfile {
                            host: member.host.clone(),
                            farm: farm_id.clone(),
                            profile: member.profile.clone(),
                            known: known.clone(),
                        });
                    }
                }
            }
        }
        problems
    }

    /// [`Inventory::problems`] as an error naming the file.
    pub fn validate(
        &self,
        path: &Path,
        known_profiles: &BTreeSet<String>,
    ) -> Result<(), RolloutError> {
        let problems = self.problems(known_profiles);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RolloutError::InvalidInventory {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// The package groups as patterns; every pattern that does not parse is a problem.
    pub fn classifier(&self) -> Result<Classifier, Vec<InventoryProblem>> {
        let mut problems = Vec::new();
        let mut parse = |group: &'static str, texts: &[String]| -> Vec<Pattern> {
            let mut patterns = Vec::new();
            for (index, text) in texts.iter().enumerate() {
                match Pattern::parse(text) {
                    Ok(pattern) => patterns.push(pattern),
                    Err(message) => problems.push(InventoryProblem::BadPattern {
                        group,
                        index,
                        message,
                    }),
                }
            }
            patterns
        };
        let disruptive = parse("disruptive", &self.packages.disruptive);
        let online = parse("online", &self.packages.online);
        if problems.is_empty() {
            Ok(Classifier { disruptive, online })
        } else {
            Err(problems)
        }
    }
}

/// The hw-profile names in a profiles directory: the stem of every `*.toml` file, plus the
/// `name` key inside it when it has one.
pub fn known_profiles(dir: &Path) -> Result<BTreeSet<String>, RolloutError> {
    let read_dir = fs::read_dir(dir).map_err(|source| RolloutError::ProfilesDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = BTreeSet::new();
    for entry in read_dir {
        let entry = entry.map_err(|source| RolloutError::ProfilesDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path: PathBuf = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            names.insert(stem.to_string());
        }
        // A profile file that does not parse is the profile module's concern; its file name
        // still names it.
        let declared = fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|table| table.get("name").and_then(|v| v.as_str()).map(String::from));
        if let Some(name) = declared {
            names.insert(name);
        }
    }
    Ok(names)
}
