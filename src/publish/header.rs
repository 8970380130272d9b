//! The `Packages` header of a profile's snapshots: what the profile says (CHOST, USE, the
//! Gentoo profile's ARCH, ACCEPT_KEYWORDS, USE_EXPAND...), and REPO_REVISIONS.
//!
//! The Gentoo profile's variables come from its `make.defaults` files, parents first (the
//! `parent` files), without running a shell: `KEY="value"` lines, `${VAR}` expanded from
//! what was read before, incremental variables (USE, USE_EXPAND, ...) stacked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::profile::Profile;

/// Variables that stack across profile levels (a `-x` token removes `x`).
const INCREMENTAL: [&str; 9] = [
    "USE",
    "USE_EXPAND",
    "USE_EXPAND_HIDDEN",
    "USE_EXPAND_IMPLICIT",
    "USE_EXPAND_UNPREFIXED",
    "IUSE_IMPLICIT",
    "CONFIG_PROTECT",
    "CONFIG_PROTECT_MASK",
    "ACCEPT_KEYWORDS",
];

/// Header keys taken from the Gentoo profile as they are.
const FROM_GENTOO_PROFILE: [&str; 10] = [
    "ACCEPT_KEYWORDS",
    "ACCEPT_LICENSE",
    "ARCH",
    "CONFIG_PROTECT",
    "CONFIG_PROTECT_MASK",
    "IUSE_IMPLICIT",
    "USE_EXPAND",
    "USE_EXPAND_HIDDEN",
    "USE_EXPAND_IMPLICIT",
    "USE_EXPAND_UNPREFIXED",
];

/// Deepest `parent` chain followed (Gentoo's own profiles are far shallower).
const MAX_DEPTH: usize = 32;

/// Header keys for the snapshots of `profile` (to pass as index header overrides).
pub fn profile_header(profile: &Profile) -> BTreeMap<String, String> {
    let vars = gentoo_profile_vars(profile);
    let mut header = BTreeMap::new();
    for key in FROM_GENTOO_PROFILE {
        if let Some(v) = vars.get(key).filter(|v| !v.is_empty()) {
            header.insert(key.to_string(), v.clone());
        }
    }
    for (key, value) in &vars {
        let expand_value = key.starts_with("USE_EXPAND_VALUES_");
        let expand_var = vars
            .get("USE_EXPAND_IMPLICIT")
            .is_some_and(|list| list.split_whitespace().any(|v| v == key));
        if (expand_value || expand_var) && !value.is_empty() {
            header.insert(key.clone(), value.clone());
        }
    }
    header.insert("CHOST".into(), profile.chost.clone());
    header.insert("CBUILD".into(), profile.chost.clone());
    header.insert("PROFILE".into(), profile.gentoo_profile_path.clone());
    let mut use_flags: Vec<String> = vars
        .get("USE")
        .map(|u| u.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(arch) = vars.get("ARCH").filter(|a| !a.is_empty()) {
        use_flags.push(arch.clone());
    }
    use_flags.extend(profile.use_flags.iter().cloned());
    use_flags.extend(
        profile
            .cpu_flags_x86
            .iter()
            .map(|f| format!("cpu_flags_x86_{f}")),
    );
    let use_flags = stack_tokens(&[], &use_flags.join(" "));
    if !use_flags.is_empty() {
        header.insert("USE".into(), use_flags.join(" "));
    }
    let revisions: BTreeMap<String, String> = profile
        .repositories
        .iter()
        .filter_map(|r| r.revision.clone().map(|rev| (r.name.clone(), rev)))
        .collect();
    if !revisions.is_empty() {
        header.insert(
            "REPO_REVISIONS".into(),
            crate::index::repo_revisions_json(&revisions),
        );
    }
    header
}

/// The Gentoo profile's variables (empty when it cannot be found or read: the header then
/// has only what the hw-profile says).
pub fn gentoo_profile_vars(profile: &Profile) -> BTreeMap<String, String> {
    let repos: BTreeMap<&str, &Path> = profile
        .repositories
        .iter()
        .map(|r| (r.name.as_str(), r.location.as_path()))
        .collect();
    let Some(repo) = repos.get(profile.gentoo_profile_repo.as_str()) else {
        return BTreeMap::new();
    };
    let dir = repo.join("profiles").join(&profile.gentoo_profile_path);
    let mut levels = Vec::new();
    collect_levels(&dir, &repos, 0, &mut levels);
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for level in levels {
        let Ok(text) = std::fs::read_to_string(level.join("make.defaults")) else {
            continue;
        };
        for (key, raw) in parse_assignments(&text) {
            let value = expand(&raw, &vars);
            if INCREMENTAL.contains(&key.as_str()) {
                let old: Vec<String> = vars
                    .get(&key)
                    .map(|v| v.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default();
                vars.insert(key, stack_tokens(&old, &value).join(" "));
            } else {
                vars.insert(key, value);
            }
        }
    }
    vars
}

/// Profile directories in the order their make.defaults apply: parents first.
fn collect_levels(dir: &Path, repos: &BTreeMap<&str, &Path>, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH || !dir.is_dir() {
        return;
    }
    if let Ok(parents) = std::fs::read_to_string(dir.join("parent")) {
        for line in parents.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // `repo:path` (profile-formats portage-2) or a path relative to this level.
            let parent = match line.split_once(':') {
                Some((repo, path)) if !repo.contains('/') => match repos.get(repo) {
                    Some(location) => location.join("profiles").join(path),
                    None => continue,
                },
                _ => dir.join(line),
            };
            collect_levels(&parent, repos, depth + 1, out);
        }
    }
    out.push(dir.to_path_buf());
}

/// `KEY="value"`, `KEY='value'`, `KEY=value` lines (comments and blank lines skipped;
/// a double-quoted value may span lines).
fn parse_assignments(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let value = if let Some(body) = rest.strip_prefix('"') {
            let mut value = body.to_string();
            while !value.ends_with('"') {
                match lines.next() {
                    Some(next) => {
                        value.push(' ');
                        value.push_str(next.trim());
                    }
                    None => break,
                }
            }
            value.trim_end_matches('"').to_string()
        } else if let Some(body) = rest.strip_prefix('\'') {
            body.trim_end_matches('\'').to_string()
        } else {
            rest.split_whitespace().next().unwrap_or("").to_string()
        };
        out.push((key.to_string(), value));
    }
    out
}

/// `${VAR}` and `$VAR` from `vars` (unknown ones become empty).
fn expand(raw: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        if name.is_empty() {
            out.push('$');
        } else if let Some(v) = vars.get(&name) {
            out.push_str(v);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Adds the tokens of `value` to `old`: `-x` removes `x`, `-*` removes all.
fn stack_tokens(old: &[String], value: &str) -> Vec<String> {
    let mut tokens: Vec<String> = old.to_vec();
    for token in value.split_whitespace() {
        if token == "-*" {
            tokens.clear();
        } else if let Some(removed) = token.strip_prefix('-') {
            tokens.retain(|t| t != removed);
        } else {
            tokens.retain(|t| t != token);
            tokens.push(token.to_string());
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_expansion_and_stacking() {
        let text = "# comment\nARCH=\"amd64\"\nUSE=\"a b\"\nFOO='x y'\nBAR=${ARCH}-z\nLONG=\"one\n two\"\n";
        let parsed = parse_assignments(text);
        assert_eq!(
            parsed,
            vec![
                ("ARCH".into(), "amd64".into()),
                ("USE".into(), "a b".into()),
                ("FOO".into(), "x y".into()),
                ("BAR".into(), "${ARCH}-z".into()),
                ("LONG".into(), "one two".into()),
            ]
        );
        let vars = BTreeMap::from([("ARCH".to_string(), "amd64".to_string())]);
        assert_eq!(expand("${ARCH}-z $ARCH $NOPE", &vars), "amd64-z amd64");
        let old = vec!["a".to_string(), "b".to_string()];
        assert_eq!(stack_tokens(&old, "-a c"), vec!["b", "c"]);
        assert_eq!(stack_tokens(&old, "-* d"), vec!["d"]);
    }
}
