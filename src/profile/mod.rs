//! hw-profiles: TOML files in profiles/, validation, rendering a Portage config root from templates/.
//!
//! A profile file is parsed strictly (unknown keys are errors) and then checked as a whole;
//! every problem is reported as one line naming the file, the key and what is wrong.

mod checks;
pub mod render;
mod settings;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use render::{render, ConfigLayout, RenderSettings, Rendered, RenderedPaths, Signing};

/// One problem in one profile file: `FILE[:LINE]: KEY: PROBLEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: {}: {}",
                self.path.display(),
                line,
                self.key,
                self.message
            ),
            None => write!(f, "{}: {}: {}", self.path.display(), self.key, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: cannot read profile: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file parsed badly or failed validation; one line per problem.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Problem>),
    #[error("no profile named {name:?} in {dir} (looked for {dir}/{name}.toml)")]
    NotFound { name: String, dir: PathBuf },
    #[error("{path}: cannot list profiles: {source}")]
    ListDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {template}: {message}")]
    Template { template: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn join_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Binary package format written by the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BinpkgFormat {
    #[default]
    Gpkg,
    Xpak,
}

impl BinpkgFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BinpkgFormat::Gpkg => "gpkg",
            BinpkgFormat::Xpak => "xpak",
        }
    }
}

/// An ebuild repository the profile builds from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub name: String,
    /// Absolute after loading (relative paths in the file are relative to the file's directory).
    pub location: PathBuf,
    /// The repository revision the build must use (a git commit), recorded for fingerprints.
    #[serde(default)]
    pub revision: Option<String>,
}

/// What production runs: explicit atoms and/or a `@world`-style file (one atom a line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSet {
    #[serde(default)]
    pub atoms: Vec<String>,
    /// Absolute after loading.
    #[serde(default)]
    pub world_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Distcc {
    /// distcc(1) host specifications: `HOST[:PORT][/LIMIT][,OPTION...]`, `@HOST` (ssh),
    /// `localhost[/LIMIT]`, `--randomize`, `--localslots=N`, `--localslots_cpp=N`.
    pub hosts: Vec<String>,
}

/// What a worker must offer to build this profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerRequirements {
    /// CPU flags (as in /proc/cpuinfo) the worker needs, e.g. to run test suites of the build.
    #[serde(default)]
    pub cpu_flags: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// The file as written; checked and turned into a [`Profile`] by [`Profile::load`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    chost: Option<String>,
    cflags: Option<String>,
    cxxflags: Option<String>,
    #[serde(default)]
    ldflags: String,
    #[serde(default)]
    makeopts: Option<String>,
    #[serde(default)]
    cc: Option<String>,
    #[serde(default)]
    cxx: Option<String>,
    #[serde(default, rename = "use")]
    use_flags: Vec<String>,
    #[serde(default)]
    cpu_flags_x86: Vec<String>,
    gentoo_profile: Option<String>,
    #[serde(default)]
    binpkg_format: BinpkgFormat,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default, rename = "repository")]
    repositories: Vec<Repository>,
    #[serde(default)]
    package_use: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    packages: PackageSet,
    #[serde(default)]
    distcc: Option<Distcc>,
    #[serde(default)]
    worker: WorkerRequirements,
}

/// A validated hw-profile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Profile {
    /// The file it was loaded from (absolute).
    pub source: PathBuf,
    pub name: String,
    pub description: String,
    pub chost: String,
    pub cflags: String,
    pub cxxflags: String,
    pub ldflags: String,
    pub makeopts: Option<String>,
    /// Compiler commands (CC/CXX in make.conf); unset leaves it to the ebuilds/toolchain.
    pub cc: Option<String>,
    pub cxx: Option<String>,
    pub use_flags: Vec<String>,
    pub cpu_flags_x86: Vec<String>,
    /// Repository holding the Gentoo profile, and the profile path inside its `profiles/`.
    pub gentoo_profile_repo: String,
    pub gentoo_profile_path: String,
    pub binpkg_format: BinpkgFormat,
    /// Extra FEATURES for the build (e.g. `test`), validated as plain tokens.
    pub features: Vec<String>,
    pub repositories: Vec<Repository>,
    pub package_use: BTreeMap<String, Vec<String>>,
    pub packages: PackageSet,
    pub distcc: Option<Distcc>,
    pub worker: WorkerRequirements,
}

impl Profile {
    /// Reads and validates one profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::parse(path, &text)
    }

    /// Validates profile text; `path` names the file in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Profile, ProfileError> {
        let raw: RawProfile = toml::from_str(text)
            .map_err(|e| ProfileError::Invalid(vec![checks::toml_problem(path, text, &e)]))?;
        let base_dir = absolute_dir_of(path);
        checks::validate(path, &base_dir, raw).map_err(ProfileError::Invalid)
    }

    /// Finds a profile by file path (`x.toml`, or anything with a `/`) or by name in `dir`.
    pub fn find(name_or_path: &str, dir: &Path) -> Result<Profile, ProfileError> {
        let as_path = Path::new(name_or_path);
        if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
            return Profile::load(as_path);
        }
        let candidate = dir.join(format!("{name_or_path}.toml"));
        if candidate.is_file() {
            Profile::load(&candidate)
        } else {
            Err(ProfileError::NotFound {
                name: name_or_path.to_string(),
                dir: dir.to_path_buf(),
            })
        }
    }

    /// The repository that holds the Gentoo profile: Portage's main repository for this build.
    /// Always present in a profile that passed validation.
    pub fn main_repository(&self) -> Option<&Repository> {
        self.repositories
            .iter()
            .find(|r| r.name == self.gentoo_profile_repo)
    }

    /// All atoms of the package set: the explicit list, then the world file's lines.
    pub fn set_atoms(&self) -> Result<Vec<String>, ProfileError> {
        let mut atoms = self.packages.atoms.clone();
        if let Some(world) = &self.packages.world_file {
            let text = std::fs::read_to_string(world).map_err(|source| ProfileError::Read {
                path: world.clone(),
                source,
            })?;
            let mut problems = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match checks::check_atom(line) {
                    Ok(()) => atoms.push(line.to_string()),
                    Err(msg) => problems.push(Problem {
                        path: world.clone(),
                        line: Some(i + 1),
                        key: "atom".into(),
                        message: format!("{line:?}: {msg}"),
                    }),
                }
            }
            if !problems.is_empty() {
                return Err(ProfileError::Invalid(problems));
            }
        }
        Ok(atoms)
    }
}

fn absolute_dir_of(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Result of checking a directory of profiles.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub valid: Vec<Profile>,
    pub problems: Vec<Problem>,
    /// Files that could not be read at all.
    pub unreadable: Vec<ProfileError>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.unreadable.is_empty()
    }
}

/// Validates every `*.toml` under `dir` (recursively: `examples/` holds production-style
/// examples that are validated but not built by the tests).
pub fn check_dir(dir: &Path) -> Result<CheckReport, ProfileError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| ProfileError::ListDir {
            path: e.path().unwrap_or(dir).to_path_buf(),
            source: e.into(),
        })?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "toml") {
            files.push(entry.into_path());
        }
    }
    let mut report = CheckReport::default();
    for file in files {
        match Profile::load(&file) {
            Ok(p) => report.valid.push(p),
            Err(ProfileError::Invalid(problems)) => report.problems.extend(problems),
            Err(other) => report.unreadable.push(other),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
