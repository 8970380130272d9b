//! Stand-in for `crate::atom` while it is being written: CPV splitting and PMS version
//! ordering, just what the snapshot diff and the package patterns need. It is replaced by
//! `crate::atom` when that lands on main; nothing outside `rollout` uses it.

use std::cmp::Ordering;

/// `category/package-version[-rN]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpv {
    pub category: String,
    pub package: String,
    pub version: Version,
}

impl Cpv {
    /// Splits a CPV such as `dev-lang/php-8.3.10-r1`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Cpv, String> {
        let (category, rest) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CPV: no '/' between category and package"))?;
        if category.is_empty() || rest.contains('/') {
            return Err(format!(
                "{text:?} is not a CPV: expected category/package-version"
            ));
        }
        // The version starts after the first '-' whose remainder is a whole version: package
        // names may contain '-' and digits, but never a '-' followed by a valid version.
        for (index, _) in rest.match_indices('-') {
            let (package, version) = (&rest[..index], &rest[index + 1..]);
            if package.is_empty() {
                continue;
            }
            if let Ok(version) = Version::parse(version) {
                return Ok(Cpv {
                    category: category.to_string(),
                    package: package.to_string(),
                    version,
                });
            }
        }
        Err(format!(
            "{text:?} is not a CPV: no valid version after the package name"
        ))
    }

    /// `category/package`.
    pub fn cp(&self) -> String {
        format!("{}/{}", self.category, self.package)
    }
}

/// A package version, ordered by the PMS rules (numbers, letter, suffixes, revision).
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    numbers: Vec<String>,
    letter: Option<char>,
    suffixes: Vec<(Suffix, u64)>,
    revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Suffix {
    Alpha,
    Beta,
    Pre,
    Rc,
    P,
}

impl Version {
    pub fn parse(text: &str) -> Result<Version, String> {
        let bad = || format!("{text:?} is not a valid version");
        let (main, revision) = match text.rsplit_once("-r") {
            Some((main, rev)) if !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()) => {
                (main, rev.parse::<u64>().map_err(|_| bad())?)
            }
            _ => (text, 0),
        };
        let mut parts = main.split('_');
        let head = parts.next().ok_or_else(bad)?;
        let (numeric, letter) = match head.chars().last() {
            Some(c) if c.is_ascii_lowercase() => (&head[..head.len() - 1], Some(c)),
            _ => (head, None),
        };
        let numbers: Vec<String> = numeric.split('.').map(str::to_string).collect();
        if numbers
            .iter()
            .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        let mut suffixes = Vec::new();
        for part in parts {
            let name_len = part
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(part.len());
            let suffix = match &part[..name_len] {
                "alpha" => Suffix::Alpha,
                "beta" => Suffix::Beta,
                "pre" => Suffix::Pre,
                "rc" => Suffix::Rc,
                "p" => Suffix::P,
                _ => return Err(bad()),
            };
            let digits = &part[name_len..];
            let number = if digits.is_empty() {
                0
            } else {
                digits.parse::<u64>().map_err(|_| bad())?
            };
            suffixes.push((suffix, number));
        }
        Ok(Version {
            text: text.to_string(),
            numbers,
            letter,
            suffixes,
            revision,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when this version starts with `prefix` component-wise (the `=cat/pkg-1.2*` rule).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        match self.text.strip_prefix(prefix) {
            Some("") => true,
            Some(rest) => {
                let last_is_digit = prefix.ends_with(|c: char| c.is_ascii_digit());
                // "1.2*" matches 1.2, 1.2.3, 1.2_rc1, 1.2b, but not 1.20.
                !(last_is_digit && rest.starts_with(|c: char| c.is_ascii_digit()))
            }
            None => false,
        }
    }
}

fn compare_numbers(a: &[String], b: &[String]) -> Ordering {
    for (index, (x, y)) in a.iter().zip(b).enumerate() {
        let ordering = if index > 0 && (x.starts_with('0') || y.starts_with('0')) {
            // PMS: a component with a leading zero compares as a decimal fraction.
            x.trim_end_matches('0').cmp(y.trim_end_matches('0'))
        } else {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    a.len().cmp(&b.len())
}

fn compare_suffixes(a: &[(Suffix, u64)], b: &[(Suffix, u64)]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let ordering = x.cmp(y);
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    // An extra suffix makes a version newer only when it is _p (a patch release).
    match a.len().cmp(&b.len()) {
        Ordering::Equal => Ordering::Equal,
        Ordering::Greater => match a[b.len()].0 {
            Suffix::P => Ordering::Greater,
            _ => Ordering::Less,
        },
        Ordering::Less => match b[a.len()].0 {
            Suffix::P => Ordering::Less,
            _ => Ordering::Greater,
        },
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_numbers(&self.numbers, &other.numbers)
            .then_with(|| self.letter.cmp(&other.letter))
            .then_with(|| compare_suffixes(&self.suffixes, &other.suffixes))
            .then_with(|| self.revision.cmp(&other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).expect(text)
    }

    #[test]
    fn splits_cpvs_with_dashes_and_digits_in_names() {
        let cpv = Cpv::parse("dev-lang/php-8.3.10-r1").unwrap();
        assert_eq!(
            (cpv.cp().as_str(), cpv.version.as_str()),
            ("dev-lang/php", "8.3.10-r1")
        );
        let cpv = Cpv::parse("media-libs/libpng-compat-1.2_p3").unwrap();
        assert_eq!(cpv.package, "libpng-compat");
        let cpv = Cpv::parse("sys-kernel/gentoo-kernel-bin-6.6.30").unwrap();
        assert_eq!(cpv.package, "gentoo-kernel-bin");
        assert!(Cpv::parse("dev-lang/php").is_err());
        assert!(Cpv::parse("php-8.3").is_err());
    }

    #[test]
    fn orders_versions_by_pms_rules() {
        let ordered = [
            "1.0_alpha",
            "1.0_beta2",
            "1.0_pre",
            "1.0_rc1",
            "1.0",
            "1.0-r1",
            "1.0_p1",
            "1.0a",
            "1.0.1",
            "1.01",
            "1.1",
            "1.2",
            "1.10",
            "2",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.0"), v("1.0-r0"));
        assert!(v("1.010") == v("1.01"));
    }

    #[test]
    fn version_prefix_respects_component_boundaries() {
        assert!(v("8.3.10").has_prefix("8.3"));
        assert!(!v("8.30").has_prefix("8.3"));
        assert!(v("8.3").has_prefix("8.3"));
    }
}
