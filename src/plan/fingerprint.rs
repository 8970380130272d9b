//! Fingerprints: the sha256 of everything that decides a binpkg's bytes.
//!
//! Inputs, in a canonical length-prefixed text: the profile's build settings (a canonical
//! string from the profile module), CPV, SLOT, repository name, sorted USE, the ebuild file,
//! the package's `files/` directory, every eclass it inherits (directly or through other
//! eclasses, read from the repositories' `eclass/` directories), and the fingerprints of its
//! build-time dependencies. Two steps with equal fingerprints build the same package.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::graph::DepGraph;
use super::{PlanError, PlannedPackage};

/// Version tag of the canonical text: bump it when the inputs change meaning.
const FINGERPRINT_VERSION: &str = "binfarm-fingerprint-1";

/// One ebuild repository.
#[derive(Debug, Clone)]
pub struct Repo {
    pub name: String,
    pub path: PathBuf,
    /// Repositories whose eclasses this one may use (`masters` in layout.conf), by name.
    pub masters: Vec<String>,
}

/// The ebuild repositories a profile builds from, by name.
#[derive(Debug, Clone, Default)]
pub struct Repos {
    by_name: HashMap<String, Repo>,
}

impl Repos {
    pub fn new() -> Repos {
        Repos::default()
    }

    pub fn add(&mut self, repo: Repo) {
        self.by_name.insert(repo.name.clone(), repo);
    }

    /// Add a repository from its directory: the name from `profiles/repo_name`, the masters
    /// from `metadata/layout.conf`.
    pub fn add_path(&mut self, path: &Path) -> Result<String, PlanError> {
        let name_file = path.join("profiles").join("repo_name");
        let name = fs::read_to_string(&name_file)
            .map_err(|source| PlanError::Read {
                path: name_file.clone(),
                source,
            })?
            .trim()
            .to_string();
        if name.is_empty() {
            return Err(PlanError::BadRepo {
                path: path.to_path_buf(),
                reason: "profiles/repo_name is empty".to_string(),
            });
        }
        let layout = path.join("metadata").join("layout.conf");
        let masters = match fs::read_to_string(&layout) {
            Ok(text) => text
                .lines()
                .filter_map(|line| {
                    let (key, value) = line.split_once('=')?;
                    (key.trim() == "masters").then(|| value.trim().to_string())
                })
                .next_back()
                .map(|value| value.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(PlanError::Read {
                    path: layout,
                    source,
                })
            }
        };
        self.add(Repo {
            name: name.clone(),
            path: path.to_path_buf(),
            masters,
        });
        Ok(name)
    }

    pub fn get(&self, name: &str) -> Option<&Repo> {
        self.by_name.get(name)
    }

    /// Where an eclass of a package in `repo` comes from: the repo's own `eclass/` first, then
    /// its masters (the last listed master wins, as in Portage).
    fn eclass_dirs(&self, repo: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(r) = self.by_name.get(repo) {
            dirs.push(r.path.join("eclass"));
            for master in r.masters.iter().rev() {
                if let Some(m) = self.by_name.get(master) {
                    dirs.push(m.path.join("eclass"));
                }
            }
        }
        dirs
    }
}

#[derive(Debug, Clone)]
struct EclassInfo {
    sha256: String,
    inherits: Vec<String>,
}

/// Computes fingerprints, caching eclass and `files/` hashes across packages.
pub struct Fingerprinter<'a> {
    settings: &'a str,
    repos: &'a Repos,
    eclasses: HashMap<PathBuf, EclassInfo>,
    files_dirs: HashMap<PathBuf, String>,
}

impl<'a> Fingerprinter<'a> {
    /// `profile_settings` is the profile module's canonical text of its build settings.
    pub fn new(profile_settings: &'a str, repos: &'a Repos) -> Fingerprinter<'a> {
        Fingerprinter {
            settings: profile_settings,
            repos,
            eclasses: HashMap::new(),
            files_dirs: HashMap::new(),
        }
    }

    /// The fingerprint of every package of `graph` (built from `packages`), dependencies
    /// first, as lowercase hex sha256.
    pub fn fingerprints(
        &mut self,
        packages: &[PlannedPackage],
        graph: &DepGraph,
    ) -> Result<Vec<String>, PlanError> {
        let mut fingerprints: Vec<Option<String>> = vec![None; packages.len()];
        for &node in graph.topo_order() {
            let mut dep_fps = BTreeMap::new();
            for &dep in graph.deps(node) {
                let fp = fingerprints[dep]
                    .clone()
                    .ok_or_else(|| PlanError::Internal {
                        what: format!(
                            "dependency {} of {} has no fingerprint yet",
                            packages[dep].cpv, packages[node].cpv
                        ),
                    })?;
                dep_fps.insert(packages[dep].cpv.clone(), fp);
            }
            fingerprints[node] = Some(self.fingerprint(&packages[node], &dep_fps)?);
        }
        fingerprints
            .into_iter()
            .zip(packages)
            .map(|(fp, pkg)| {
                fp.ok_or_else(|| PlanError::Internal {
                    what: format!("{} has no fingerprint", pkg.cpv),
                })
            })
            .collect()
    }

    /// The fingerprint of one package, given its dependencies' fingerprints by CPV.
    pub fn fingerprint(
        &mut self,
        pkg: &PlannedPackage,
        dep_fingerprints: &BTreeMap<String, String>,
    ) -> Result<String, PlanError> {
        let repo = self
            .repos
            .get(&pkg.repo)
            .ok_or_else(|| PlanError::UnknownRepo {
                cpv: pkg.cpv.clone(),
                repo: pkg.repo.clone(),
            })?;
        let ebuild = ebuild_path(pkg, repo)?;
        let ebuild_text = fs::read(&ebuild).map_err(|source| PlanError::Read {
            path: ebuild.clone(),
            source,
        })?;
        let ebuild_hash = hex::encode(Sha256::digest(&ebuild_text));
        let files_hash = match ebuild.parent() {
            Some(dir) => self.files_dir_hash(&dir.join("files"))?,
            None => String::new(),
        };
        let direct = inherited_names(&String::from_utf8_lossy(&ebuild_text), &ebuild)?;
        let eclasses = self.eclass_closure(&pkg.repo, &ebuild, direct)?;

        let mut use_flags: Vec<&str> = pkg.use_flags.iter().map(String::as_str).collect();
        use_flags.sort_unstable();
        use_flags.dedup();

        let mut canonical = String::new();
        canonical.push_str(FINGERPRINT_VERSION);
        canonical.push('\n');
        push_field(&mut canonical, "settings", self.settings);
        push_field(&mut canonical, "cpv", &pkg.cpv);
        push_field(&mut canonical, "slot", &pkg.slot);
        push_field(&mut canonical, "repo", &pkg.repo);
        push_field(&mut canonical, "use", &use_flags.join(" "));
        push_field(&mut canonical, "ebuild", &ebuild_hash);
        push_field(&mut canonical, "files", &files_hash);
        for (name, hash) in &eclasses {
            push_field(&mut canonical, &format!("eclass {name}"), hash);
        }
        for (cpv, fp) in dep_fingerprints {
            push_field(&mut canonical, &format!("dep {cpv}"), fp);
        }
        Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
    }

    /// Every eclass reached from `direct` through inherit lines, with its file hash.
    fn eclass_closure(
        &mut self,
        repo: &str,
        ebuild: &Path,
        direct: Vec<String>,
    ) -> Result<BTreeMap<String, String>, PlanError> {
        let dirs = self.repos.eclass_dirs(repo);
        let mut done: BTreeMap<String, String> = BTreeMap::new();
        let mut pending: Vec<(String, PathBuf)> = direct
            .into_iter()
            .map(|name| (name, ebuild.to_path_buf()))
            .collect();
        while let Some((name, inherited_by)) = pending.pop() {
            if done.contains_key(&name) {
                continue;
            }
            let path = dirs
                .iter()
                .map(|dir| dir.join(format!("{name}.eclass")))
                .find(|p| p.is_file())
                .ok_or_else(|| PlanError::MissingEclass {
                    eclass: name.clone(),
                    inherited_by: inherited_by.clone(),
                    searched: dirs.clone(),
                })?;
            let info = match self.eclasses.get(&path) {
                Some(info) => info.clone(),
                None => {
                    let text = fs::read(&path).map_err(|source| PlanError::Read {
                        path: path.clone(),
                        source,
                    })?;
                    let info = EclassInfo {
                        sha256: hex::encode(Sha256::digest(&text)),
                        inherits: inherited_names(&String::from_utf8_lossy(&text), &path)?,
                    };
                    self.eclasses.insert(path.clone(), info.clone());
                    info
                }
            };
            for next in &info.inherits {
                if !done.contains_key(next) {
                    pending.push((next.clone(), path.clone()));
                }
            }
            done.insert(name, info.sha256);
        }
        Ok(done)
    }

    /// Hash of a package's `files/` directory (names and contents); empty when absent.
    fn files_dir_hash(&mut self, dir: &Path) -> Result<String, PlanError> {
        if let Some(hash) = self.files_dirs.get(dir) {
            return Ok(hash.clone());
        }
        let hash = if dir.is_dir() {
            let mut entries = BTreeSet::new();
            for entry in walkdir::WalkDir::new(dir).follow_links(false) {
                let entry = entry.map_err(|e| PlanError::Read {
                    path: e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| dir.into()),
                    source: e.into(),
                })?;
                if entry.file_type().is_file() {
                    let path = entry.path();
                    let bytes = fs::read(path).map_err(|source| PlanError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    let relative = path
                        .strip_prefix(dir)
                        .unwrap_or(path)
                        .to_string_lossy()
                        .into_owned();
                    entries.insert((relative, hex::encode(Sha256::digest(&bytes))));
                }
            }
            let mut canonical = String::new();
            for (name, hash) in &entries {
                push_field(&mut canonical, name, hash);
            }
            hex::encode(Sha256::digest(canonical.as_bytes()))
        } else {
            String::new()
        };
        self.files_dirs.insert(dir.to_path_buf(), hash.clone());
        Ok(hash)
    }
}

/// `name LEN\nVALUE\n`: no value can be mistaken for another field.
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(' ');
    out.push_str(&value.len().to_string());
    out.push('\n');
    out.push_str(value);
    out.push('\n');
}

/// The ebuild of a package: `ebuild_path` (absolute, or relative to the repository), or
/// `<repo>/<category>/<PN>/<PF>.ebuild` from the CPV.
pub fn ebuild_path(pkg: &PlannedPackage, repo: &Repo) -> Result<PathBuf, PlanError> {
    if let Some(path) = &pkg.ebuild_path {
        return Ok(if path.is_absolute() {
            path.clone()
        } else {
            repo.path.join(path)
        });
    }
    let (category, pf) = pkg.cpv.split_once('/').ok_or_else(|| PlanError::BadCpv {
        cpv: pkg.cpv.clone(),
    })?;
    let pn = package_name(pf).ok_or_else(|| PlanError::BadCpv {
        cpv: pkg.cpv.clone(),
    })?;
    Ok(repo
        .path
        .join(category)
        .join(pn)
        .join(format!("{pf}.ebuild")))
}

/// PN of a PF (`foo-bar-1.0-r1` -> `foo-bar`).
fn package_name(pf: &str) -> Option<&str> {
    let without_revision = match pf.rsplit_once("-r") {
        Some((head, rev)) if !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => pf,
    };
    let (pn, version) = without_revision.rsplit_once('-')?;
    (!pn.is_empty() && version.starts_with(|c: char| c.is_ascii_digit())).then_some(pn)
}

/// Eclass names on `inherit` commands of an ebuild or eclass. Conditional inherits count
/// too (the fingerprint may cover more than is used, never less). A name that needs shell
/// expansion cannot be resolved here and is an error naming the file and line.
pub fn inherited_names(text: &str, file: &Path) -> Result<Vec<String>, PlanError> {
    let mut names = Vec::new();
    let mut logical = String::new();
    let mut first_line = 0;
    for (number, line) in text.lines().enumerate() {
        if logical.is_empty() {
            first_line = number + 1;
        }
        if let Some(head) = line.strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        scan_line(&logical, file, first_line, &mut names)?;
        logical.clear();
    }
    if !logical.is_empty() {
        scan_line(&logical, file, first_line, &mut names)?;
    }
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

fn scan_line(
    line: &str,
    file: &Path,
    line_number: usize,
    names: &mut Vec<String>,
) -> Result<(), PlanError> {
    // Drop a comment: '#' starting a word.
    let code = match line
        .char_indices()
        .find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with(char::is_whitespace)))
    {
        Some((i, _)) => &line[..i],
        None => line,
    };
    if !code.contains("inherit") {
        return Ok(());
    }
    let spaced = code
        .replace("&&", " ; ")
        .replace("||", " ; ")
        .replace(['|', '(', ')', '{', '}'], " ; ");
    for command in spaced.split(';') {
        let mut words = command
            .split_whitespace()
            .skip_while(|w| matches!(*w, "then" | "else" | "do" | "!"));
        if words.next() != Some("inherit") {
            continue;
        }
        for word in words {
            let name = word.trim_matches(|c| c == '"' || c == '\'');
            if name.is_empty() {
                continue;
            }
            let valid = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'));
            if !valid {
                return Err(PlanError::UnresolvableInherit {
                    path: file.to_path_buf(),
                    line: line_number,
                    word: word.to_string(),
                });
            }
            names.push(name.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_lines_are_parsed() {
        let text = "EAPI=8\n# inherit commented\ninherit toolchain-funcs \\\n  flag-o-matic\n\
                    [[ ${PV} == 9999 ]] && inherit git-r3 # live\nDESCRIPTION=\"inherit nothing\"\n";
        let names = inherited_names(text, Path::new("x.ebuild")).expect("parse");
        assert_eq!(names, vec!["toolchain-funcs", "flag-o-matic", "git-r3"]);
    }

    #[test]
    fn expanded_inherit_is_refused() {
        let err = inherited_names("inherit ${SCM}\n", Path::new("y.ebuild")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("y.ebuild") && msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn package_names() {
        assert_eq!(package_name("foo-bar-1.0-r1"), Some("foo-bar"));
        assert_eq!(package_name("minilang-8.2.5"), Some("minilang"));
        assert_eq!(package_name("x264-0.0.20240101"), Some("x264"));
        assert_eq!(package_name("nover"), None);
    }
}
