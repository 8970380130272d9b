//! Package patterns of the inventory's `[packages]` groups: `category/name` globs
//! (`sys-kernel/*`, `www-servers/nginx`, `dev-lang/php*`, optionally `:slot`) and versioned
//! atoms (`>=sys-libs/glibc-2.39`, `=dev-lang/php-8.3*`, `~dev-libs/openssl-3.0.14`).

use std::cmp::Ordering;

use super::cpv::{Cpv, Version};

/// One pattern, parsed.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    category: String,
    name: String,
    slot: Option<String>,
    version: Option<(Operator, Version, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Less,
    LessOrEqual,
    Equal,
    Tilde,
    GreaterOrEqual,
    Greater,
}

/// One installed-or-published package as patterns see it.
#[derive(Debug, Clone, Copy)]
pub struct PackageRef<'a> {
    pub category: &'a str,
    pub name: &'a str,
    pub version: &'a Version,
    /// Main slot (no sub-slot).
    pub slot: &'a str,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let bad = |why: &str| format!("{text:?} is not a category/name glob or atom: {why}");
        let (body, slot) = match text.split_once(':') {
            Some((body, slot)) if !slot.is_empty() && !slot.contains(':') => (
                body,
                Some(slot.split('/').next().unwrap_or(slot).to_string()),
            ),
            Some(_) => return Err(bad("empty or repeated ':slot'")),
            None => (text, None),
        };
        let operators = [
            ("<=", Operator::LessOrEqual),
            (">=", Operator::GreaterOrEqual),
            ("<", Operator::Less),
            (">", Operator::Greater),
            ("=", Operator::Equal),
            ("~", Operator::Tilde),
        ];
        let operator = operators
            .iter()
            .find(|(prefix, _)| body.starts_with(prefix))
            .map(|&(prefix, op)| (prefix.len(), op));
        let (category, name, version) = match operator {
            Some((skip, operator)) => {
                let rest = &body[skip..];
                let (rest, wildcard) = match rest.strip_suffix('*') {
                    Some(rest) if operator == Operator::Equal => (rest, true),
                    Some(_) => return Err(bad("'*' only follows a version after '='")),
                    None => (rest, false),
                };
                if rest.contains(['*', '?']) {
                    return Err(bad("a versioned atom cannot contain globs"));
                }
                let cpv = Cpv::parse(rest).map_err(|e| bad(&e))?;
                (
                    cpv.category,
                    cpv.package,
                    Some((operator, cpv.version, wildcard)),
                )
            }
            None => {
                let (category, name) = body
                    .split_once('/')
                    .ok_or_else(|| bad("expected category/name"))?;
                (category.to_string(), name.to_string(), None)
            }
        };
        let valid_part = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+_.-*?".contains(c))
        };
        if !valid_part(&category) || !valid_part(&name) {
            return Err(bad(
                "category and name may hold letters, digits, + _ . - and the globs * ?",
            ));
        }
        Ok(Pattern {
            text: text.to_string(),
            category,
            name,
            slot,
            version,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, package: PackageRef<'_>) -> bool {
        if !glob_match(&self.category, package.category) || !glob_match(&self.name, package.name) {
            return false;
        }
        if let Some(slot) = &self.slot {
            if !glob_match(slot, package.slot) {
                return false;
            }
        }
        let Some((operator, version, wildcard)) = &self.version else {
            return true;
        };
        let ordering = package.version.cmp(version);
        match operator {
            Operator::Less => ordering == Ordering::Less,
            Operator::LessOrEqual => ordering != Ordering::Greater,
            Operator::Greater => ordering == Ordering::Greater,
            Operator::GreaterOrEqual => ordering != Ordering::Less,
            Operator::Equal if *wildcard => package.version.has_prefix(version.as_str()),
            Operator::Equal => ordering == Ordering::Equal,
            Operator::Tilde => {
                strip_revision(package.version.as_str()) == strip_revision(version.as_str())
            }
        }
    }
}

fn strip_revision(version: &str) -> &str {
    match version.rsplit_once("-r") {
        Some((main, rev)) if rev.bytes().all(|b| b.is_ascii_digit()) => main,
        _ => version,
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
        Pattern::parse(pattern).unwrap().matches(PackageRef {
            category: &cpv.category,
            name: &cpv.package,
            version: &cpv.version,
            slot,
        })
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
