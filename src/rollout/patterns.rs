//! Package patterns of the inventory's `[packages]` groups: `category/name` globs
//! (`sys-kernel/*`, `www-servers/nginx`, `dev-lang/php*`, optionally `:slot`) and versioned
//! atoms (`>=sys-libs/glibc-2.39`, `=dev-lang/php-8.3*`, `~dev-libs/openssl-3.0.14`).

use crate::atom::{Atom, Cpv};

/// One pattern, parsed.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    kind: PatternKind,
}

#[derive(Debug, Clone)]
enum PatternKind {
    /// `category/name[:slot]`, each part a glob.
    Glob {
        category: String,
        name: String,
        slot: Option<String>,
    },
    /// An atom with a version operator; matched by `crate::atom`.
    Atom(Atom),
}

/// One package of a snapshot as patterns see it.
#[derive(Debug, Clone, Copy)]
pub struct PackageRef<'a> {
    pub cpv: &'a Cpv,
    /// The full SLOT value (`8.3`, `0/3`).
    pub slot: &'a str,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let bad = |why: &str| format!("{text:?} is not a category/name glob or atom: {why}");
        if text.starts_with(['<', '>', '=', '~']) {
            let atom = Atom::parse(text).map_err(|e| bad(&e.to_string()))?;
            if atom.blocker().is_some() || atom.repo().is_some() || !atom.use_deps().is_empty() {
                return Err(bad("blockers, ::repo and [use] have no meaning here"));
            }
            return Ok(Pattern {
                text: text.to_string(),
                kind: PatternKind::Atom(atom),
            });
        }
        let (body, slot) = match text.split_once(':') {
            Some((body, slot)) if !slot.is_empty() && !slot.contains(':') => (
                body,
                Some(slot.split('/').next().unwrap_or(slot).to_string()),
            ),
            Some(_) => return Err(bad("empty or repeated ':slot'")),
            None => (text, None),
        };
        let (category, name) = body
            .split_once('/')
            .ok_or_else(|| bad("expected category/name"))?;
        let valid_part = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+_.-*?".contains(c))
        };
        if !valid_part(category) || !valid_part(name) {
            return Err(bad(
                "category and name may hold letters, digits, + _ . - and the globs * ?",
            ));
        }
        Ok(Pattern {
            text: text.to_string(),
            kind: PatternKind::Glob {
                category: category.to_string(),
                name: name.to_string(),
                slot,
            },
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, package: PackageRef<'_>) -> bool {
        let (slot, subslot) = match package.slot.split_once('/') {
            Some((slot, subslot)) => (slot, Some(subslot)),
            None => (package.slot, None),
        };
        match &self.kind {
            PatternKind::Atom(atom) => atom.matches(package.cpv, Some((slot, subslot)), None),
            PatternKind::Glob {
                category,
                name,
                slot: wanted_slot,
            } => {
                glob_match(category, package.cpv.category())
                    && glob_match(name, package.cpv.pn())
                    && match wanted_slot {
                        Some(wanted) => glob_match(wanted, slot),
                        None => true,
                    }
            }
        }
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Bytes: patterns are ASCII (checked when parsed), so '?' never splits a character of
    // an ASCII name, and nothing is allocated per match.
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, cpv: &str, slot: &str) -> bool {
        let cpv = Cpv::parse(cpv).unwrap();
        Pattern::parse(pattern)
            .unwrap()
            .matches(PackageRef { cpv: &cpv, slot })
    }

    #[test]
    fn globs_match_category_and_name_separately() {
        assert!(matches(
            "sys-kernel/*",
            "sys-kernel/gentoo-kernel-6.6.30",
            "6.6.30"
        ));
        assert!(matches("*/openssl", "dev-libs/openssl-3.0.14", "0"));
        assert!(matches("dev-lang/php*", "dev-lang/php-8.3.10", "8.3"));
        assert!(!matches("dev-lang/php", "dev-lang/python-3.12.4", "3.12"));
        assert!(matches("dev-lang/php:8.*", "dev-lang/php-8.3.10", "8.3"));
        assert!(!matches("dev-lang/php:7*", "dev-lang/php-8.3.10", "8.3"));
        assert!(glob_match("a*b*c", "axxbyyc") && !glob_match("a*b", "ab-") && glob_match("*", ""));
    }

    #[test]
    fn atoms_compare_versions() {
        assert!(matches(
            ">=sys-libs/glibc-2.39",
            "sys-libs/glibc-2.40",
            "2.2"
        ));
        assert!(!matches(
            ">=sys-libs/glibc-2.39",
            "sys-libs/glibc-2.38-r10",
            "2.2"
        ));
        assert!(matches("<app-arch/tar-1.35", "app-arch/tar-1.34", "0"));
        assert!(matches("=dev-lang/php-8.3*", "dev-lang/php-8.3.10", "8.3"));
        assert!(!matches("=dev-lang/php-8.3*", "dev-lang/php-8.30", "8.30"));
        assert!(matches(
            "~dev-libs/openssl-3.0.14",
            "dev-libs/openssl-3.0.14-r2",
            "0"
        ));
        assert!(matches(
            "=dev-libs/openssl-3.0.14",
            "dev-libs/openssl-3.0.14-r0",
            "0"
        ));
    }

    #[test]
    fn rejects_what_is_not_a_pattern() {
        for bad in [
            "openssl",
            "dev-libs/",
            ">=dev-libs/openssl",
            "dev-libs/open ssl",
            "a/b:",
            ">=a/b*-1",
        ] {
            let err = Pattern::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
