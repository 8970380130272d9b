//! Gentoo package atoms, CPVs and version comparison (PMS rules).
//!
//! Three value types, each parsed from and displayed as the exact text Portage uses:
//!
//! - [`Version`]: `1.2.3b_rc4_p5-r6`, ordered by the PMS version comparison algorithm.
//! - [`Cpv`]: `dev-libs/libhello-1.0-r1` (category, package name, version).
//! - [`Atom`]: a package dependency specification such as
//!   `!!>=dev-libs/foo-1.2:0/1.2=::gentoo[ssl,-doc,X?]`.
//!
//! Names follow the "Names and versions" chapter of PMS, and dependency syntax its
//! "Package dependency specifications" section. Where PMS leaves room, matching follows
//! Portage (see [`Atom::matches`]).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything that can be wrong with a version, name, CPV or atom. Each message names the
/// rejected text and says what is wrong with it, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtomError {
    #[error("invalid version {input:?}: {problem}")]
    Version { input: String, problem: String },
    /// A category, package, slot, repository or USE flag name (`what` says which).
    #[error("invalid {what} {input:?}: {problem}")]
    Name {
        what: &'static str,
        input: String,
        problem: String,
    },
    #[error("invalid CPV {input:?}: {problem}")]
    Cpv { input: String, problem: String },
    #[error("invalid atom {input:?}: {problem}")]
    Atom { input: String, problem: String },
}

type Result<T, E = AtomError> = std::result::Result<T, E>;

/// Describes the character at `pos` for error messages ("'x'" or "end of input").
fn char_at(text: &str, pos: usize) -> String {
    match text.get(pos..).and_then(|rest| rest.chars().next()) {
        Some(c) => format!("{c:?}"),
        None => "end of input".to_owned(),
    }
}

/// End of the run of ASCII digits starting at `start`.
fn digits_end(bytes: &[u8], start: usize) -> usize {
    start
        + bytes
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
}

/// Compares two non-empty ASCII digit strings as unbounded unsigned integers.
fn cmp_integers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------------------------
// Version
// ---------------------------------------------------------------------------------------------

/// The type of a version suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SuffixKind {
    Alpha,
    Beta,
    Pre,
    Rc,
    P,
}

impl SuffixKind {
    fn from_name(name: &str) -> Option<SuffixKind> {
        match name {
            "alpha" => Some(SuffixKind::Alpha),
            "beta" => Some(SuffixKind::Beta),
            "pre" => Some(SuffixKind::Pre),
            "rc" => Some(SuffixKind::Rc),
            "p" => Some(SuffixKind::P),
            _ => None,
        }
    }

    /// PMS order `_alpha < _beta < _pre < _rc < _p`. `None` stands for a version that has run
    /// out of suffixes where the other has one: it sits between `_rc` and `_p`, so that
    /// `1_rc1 < 1 < 1_p1` and `1_p1_alpha < 1_p1 < 1_p1_p`.
    fn rank(kind: Option<SuffixKind>) -> u8 {
        match kind {
            Some(SuffixKind::Alpha) => 0,
            Some(SuffixKind::Beta) => 1,
            Some(SuffixKind::Pre) => 2,
            Some(SuffixKind::Rc) => 3,
            None => 4,
            Some(SuffixKind::P) => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Suffix {
    kind: SuffixKind,
    /// Digits as written; a missing number counts as 0.
    number: Option<String>,
}

/// A package version per PMS: `[0-9]+(\.[0-9]+)*[a-z]?(_(alpha|beta|pre|rc|p)[0-9]*)*(-r[0-9]+)?`.
///
/// The text is kept as written, so Display gives back exactly what was parsed.
///
/// Ordering: [`Version::vercmp`] is the PMS comparison, under which different texts can be
/// equal (`1.0` and `1.00`, `1.0` and `1.0-r0`). `Ord` sorts by `vercmp` first and breaks such
/// ties by the text, so that it agrees with `Eq` (equal text); use `vercmp` for "same version".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    text: String,
    /// Numeric components as written (leading zeros matter after the first one).
    numbers: Vec<String>,
    letter: Option<u8>,
    suffixes: Vec<Suffix>,
    revision: u64,
    /// Byte offset of `-r` in `text`, when the revision is written out.
    revision_at: Option<usize>,
}

impl Version {
    /// Parses a version, rejecting anything outside the PMS version syntax.
    pub fn parse(input: &str) -> Result<Version> {
        parse_version(input).map_err(|problem| AtomError::Version {
            input: input.to_owned(),
            problem,
        })
    }

    /// Whether `text` is a valid version.
    pub fn is_valid(text: &str) -> bool {
        parse_version(text).is_ok()
    }

    /// The version exactly as written (PVR).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The revision number (`-r3` gives 3); 0 when there is no `-rN` part.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether the text has an explicit `-rN` part (`1.0-r0` has one, `1.0` has not).
    pub fn has_revision(&self) -> bool {
        self.revision_at.is_some()
    }

    /// The version without its revision part (PV): `1.2_rc1-r3` gives `1.2_rc1`.
    pub fn without_revision(&self) -> &str {
        match self.revision_at {
            Some(at) => &self.text[..at],
            None => &self.text,
        }
    }

    /// PMS version comparison. Different texts may compare equal (`1.0` vs `1.00`, `1` vs `1-r0`).
    pub fn vercmp(&self, other: &Version) -> Ordering {
        self.cmp_ignoring_revision(other)
            .then_with(|| self.revision.cmp(&other.revision))
    }

    /// PMS comparison of everything but the revision.
    fn cmp_ignoring_revision(&self, other: &Version) -> Ordering {
        cmp_integers(&self.numbers[0], &other.numbers[0])
            .then_with(|| {
                for (a, b) in self.numbers.iter().zip(&other.numbers).skip(1) {
                    let order = if a.starts_with('0') || b.starts_with('0') {
                        // PMS: a leading zero makes the component a decimal fraction, so compare
                        // the digits as text once trailing zeros are gone (1.01 < 1.1, 1.0 == 1.00).
                        a.trim_end_matches('0').cmp(b.trim_end_matches('0'))
                    } else {
                        cmp_integers(a, b)
                    };
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                self.numbers.len().cmp(&other.numbers.len())
            })
            .then_with(|| self.letter.cmp(&other.letter))
            .then_with(|| {
                let longest = self.suffixes.len().max(other.suffixes.len());
                for i in 0..longest {
                    let (a, b) = (self.suffixes.get(i), other.suffixes.get(i));
                    let order = SuffixKind::rank(a.map(|s| s.kind))
                        .cmp(&SuffixKind::rank(b.map(|s| s.kind)))
                        .then_with(|| cmp_integers(suffix_number(a), suffix_number(b)));
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                Ordering::Equal
            })
    }

    /// `=pattern*` matching: `self` (the pattern) equals the start of `candidate` and ends on a
    /// component boundary there, so `1.2*` matches `1.2`, `1.2.3`, `1.2a`, `1.2_rc1`, `1.2-r1`,
    /// but not `1.20`. A leading zero of the first component is ignored, as integers.
    fn glob_matches(&self, candidate: &Version) -> bool {
        let pattern = normalize_first_component(&self.text);
        let candidate = normalize_first_component(&candidate.text);
        let Some(rest) = candidate.strip_prefix(pattern.as_str()) else {
            return false;
        };
        match rest.chars().next() {
            None => true,
            Some('.' | '_' | '-') => true,
            // A digit after a digit (or a letter after a letter) continues the same component.
            Some(next) => {
                let last_is_digit = pattern.ends_with(|c: char| c.is_ascii_digit());
                last_is_digit != next.is_ascii_digit()
            }
        }
    }
}

/// The number of a suffix, 0 when it has none (or when there is no suffix).
fn suffix_number(suffix: Option<&Suffix>) -> &str {
    suffix.and_then(|s| s.number.as_deref()).unwrap_or("0")
}

/// `007.1` -> `7.1`: the first component compares as an integer, so its leading zeros are noise.
fn normalize_first_component(text: &str) -> String {
    let end = digits_end(text.as_bytes(), 0);
    let first = text[..end].trim_start_matches('0');
    let first = if first.is_empty() { "0" } else { first };
    format!("{first}{}", &text[end..])
}

fn parse_version(text: &str) -> Result<Version, String> {
    let bytes = text.as_bytes();
    if text.is_empty() {
        return Err("empty version".to_owned());
    }
    let mut pos = digits_end(bytes, 0);
    if pos == 0 {
        return Err(format!(
            "a version starts with a digit, found {}",
            char_at(text, 0)
        ));
    }
    let mut numbers = vec![text[..pos].to_owned()];
    while bytes.get(pos) == Some(&b'.') {
        let end = digits_end(bytes, pos + 1);
        if end == pos + 1 {
            return Err(format!(
                "expected a digit after '.' at offset {}, found {}",
                pos,
                char_at(text, pos + 1)
            ));
        }
        numbers.push(text[pos + 1..end].to_owned());
        pos = end;
    }

    let mut letter = None;
    if let Some(&b) = bytes.get(pos) {
        if b.is_ascii_lowercase() {
            letter = Some(b);
            pos += 1;
            if bytes.get(pos).is_some_and(|b| b.is_ascii_lowercase()) {
                return Err(format!(
                    "unexpected {} at offset {pos}: only one letter may follow the numbers",
                    char_at(text, pos)
                ));
            }
        }
    }

    let mut suffixes = Vec::new();
    while bytes.get(pos) == Some(&b'_') {
        let name_start = pos + 1;
        let name_end = name_start
            + bytes[name_start..]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
        let name = &text[name_start..name_end];
        let Some(kind) = SuffixKind::from_name(name) else {
            return Err(format!(
                "unknown suffix '_{name}' at offset {pos} (expected _alpha, _beta, _pre, _rc or _p)"
            ));
        };
        let number_end = digits_end(bytes, name_end);
        let number = (number_end > name_end).then(|| text[name_end..number_end].to_owned());
        suffixes.push(Suffix { kind, number });
        pos = number_end;
    }

    let mut revision = 0;
    let mut revision_at = None;
    if bytes.get(pos) == Some(&b'-') {
        if bytes.get(pos + 1) != Some(&b'r') {
            return Err(format!(
                "expected a revision '-r<number>' at offset {pos}, found '-' followed by {}",
                char_at(text, pos + 1)
            ));
        }
        let end = digits_end(bytes, pos + 2);
        if end == pos + 2 {
            return Err(format!(
                "the revision at offset {pos} needs a number after '-r', found {}",
                char_at(text, pos + 2)
            ));
        }
        let digits = &text[pos + 2..end];
        revision = digits
            .parse()
            .map_err(|_| format!("revision {digits} at offset {pos} is too large"))?;
        revision_at = Some(pos);
        pos = end;
    }

    if pos < text.len() {
        return Err(format!("unexpected {} at offset {pos}", char_at(text, pos)));
    }
    Ok(Version {
        text: text.to_owned(),
        numbers,
        letter,
        suffixes,
        revision,
        revision_at,
    })
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.vercmp(other).then_with(|| self.text.cmp(&other.text))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// PMS comparison of two version strings.
pub fn vercmp(a: &str, b: &str) -> Result<Ordering> {
    Ok(Version::parse(a)?.vercmp(&Version::parse(b)?))
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

fn check_name(
    what: &'static str,
    text: &str,
    allowed: &str,
    extra: &[u8],
    bad_first: &[u8],
) -> Result<()> {
    let fail = |problem: String| AtomError::Name {
        what,
        input: text.to_owned(),
        problem,
    };
    let Some(&first) = text.as_bytes().first() else {
        return Err(fail("is empty".to_owned()));
    };
    if bad_first.contains(&first) {
        return Err(fail(format!("must not begin with '{}'", first as char)));
    }
    for (pos, c) in text.char_indices() {
        if !(c.is_ascii_alphanumeric() || (c.is_ascii() && extra.contains(&(c as u8)))) {
            return Err(fail(format!(
                "character {c:?} at offset {pos} is not allowed (allowed: {allowed})"
            )));
        }
    }
    Ok(())
}

/// A hyphen followed by something that parses as a version must not end a package or
/// repository name, or `foo-1` would be ambiguous.
fn check_no_version_ending(what: &'static str, text: &str) -> Result<()> {
    for (pos, _) in text.match_indices('-') {
        let tail = &text[pos + 1..];
        if Version::is_valid(tail) {
            return Err(AtomError::Name {
                what,
                input: text.to_owned(),
                problem: format!("must not end in a hyphen and a version ('-{tail}')"),
            });
        }
    }
    Ok(())
}

/// Category name: `[A-Za-z0-9+_.-]`, not starting with `-`, `.` or `+`.
pub fn validate_category(text: &str) -> Result<()> {
    check_name("category", text, "A-Z a-z 0-9 + _ . -", b"+_.-", b"-.+")
}

/// Package name (PN): `[A-Za-z0-9+_-]`, not starting with `-` or `+`, not ending in `-<version>`.
pub fn validate_package_name(text: &str) -> Result<()> {
    check_name("package name", text, "A-Z a-z 0-9 + _ -", b"+_-", b"-+")?;
    check_no_version_ending("package name", text)
}

/// Slot or sub-slot name: `[A-Za-z0-9+_.-]`, not starting with `-`, `.` or `+`.
pub fn validate_slot_name(text: &str) -> Result<()> {
    check_name("slot name", text, "A-Z a-z 0-9 + _ . -", b"+_.-", b"-.+")
}

/// Repository name: `[A-Za-z0-9_-]`, not starting with `-`, and (PMS) a valid package name, so
/// not ending in `-<version>`.
pub fn validate_repo_name(text: &str) -> Result<()> {
    check_name("repository name", text, "A-Z a-z 0-9 _ -", b"_-", b"-")?;
    check_no_version_ending("repository name", text)
}

/// USE flag name: `[A-Za-z0-9+_@-]`, starting with a letter or digit.
pub fn validate_use_flag(text: &str) -> Result<()> {
    check_name("USE flag", text, "A-Z a-z 0-9 + _ @ -", b"+_@-", b"+_@-")
}

// ---------------------------------------------------------------------------------------------
// PF splitting and Cpv
// ---------------------------------------------------------------------------------------------

/// Splits a PF (`libhello-1.0-r1`) into the package name and version.
///
/// The split is unique: a valid PN never ends in `-<version>`, so only one hyphen can separate
/// a valid PN from a valid version.
pub fn split_pf(pf: &str) -> Result<(String, Version)> {
    split_pf_problem(pf)
        .map(|(pn, version)| (pn.to_owned(), version))
        .map_err(|problem| AtomError::Cpv {
            input: pf.to_owned(),
            problem,
        })
}

fn split_pf_problem(pf: &str) -> Result<(&str, Version), String> {
    for (pos, _) in pf.rmatch_indices('-') {
        let Ok(version) = Version::parse(&pf[pos + 1..]) else {
            continue;
        };
        let pn = &pf[..pos];
        validate_package_name(pn).map_err(|e| e.to_string())?;
        return Ok((pn, version));
    }
    // Explain with the part after the last hyphen that is not a revision ("-r1").
    let candidate = pf
        .rmatch_indices('-')
        .map(|(pos, _)| &pf[pos + 1..])
        .find(|tail| !is_revision_text(tail));
    match candidate {
        Some(tail) => {
            Err(format!(
            "expected <package>-<version>, but the part after the last '-' is not a version: {}",
            Version::parse(tail).err().map(|e| e.to_string()).unwrap_or_default()
        ))
        }
        None => Err("expected <package>-<version>, found no '-<version>' part".to_owned()),
    }
}

fn is_revision_text(text: &str) -> bool {
    text.strip_prefix('r')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// A category, package name and version: `dev-libs/libhello-1.0-r1`.
///
/// Ordered by category, then package name, then [`Version`] order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cpv {
    // Field order is the sort order.
    category: String,
    package: String,
    version: Version,
}

impl Cpv {
    /// Parses `category/package-version`.
    pub fn parse(input: &str) -> Result<Cpv> {
        let fail = |problem: String| AtomError::Cpv {
            input: input.to_owned(),
            problem,
        };
        let Some((category, pf)) = input.split_once('/') else {
            return Err(fail(
                "expected <category>/<package>-<version>, found no '/'".to_owned(),
            ));
        };
        if pf.contains('/') {
            return Err(fail("more than one '/'".to_owned()));
        }
        validate_category(category).map_err(|e| fail(e.to_string()))?;
        let (package, version) = split_pf_problem(pf).map_err(fail)?;
        Ok(Cpv {
            category: category.to_owned(),
            package: package.to_owned(),
            version,
        })
    }

    /// Builds a CPV from a category and a PF (`libhello-1.0-r1`), as found in binpkg paths and
    /// `Packages` entries.
    pub fn from_pf(category: &str, pf: &str) -> Result<Cpv> {
        Cpv::parse(&format!("{category}/{pf}"))
    }

    /// Builds a CPV from its parts, checking the names.
    pub fn new(category: &str, package: &str, version: Version) -> Result<Cpv> {
        let fail = |e: AtomError| AtomError::Cpv {
            input: format!("{category}/{package}-{version}"),
            problem: e.to_string(),
        };
        validate_category(category).map_err(fail)?;
        validate_package_name(package).map_err(fail)?;
        Ok(Cpv {
            category: category.to_owned(),
            package: package.to_owned(),
            version,
        })
    }

    pub fn category(&self) -> &str {
        &self.category
    }

    /// The package name (PN), e.g. `libhello`.
    pub fn pn(&self) -> &str {
        &self.package
    }

    pub fn version(&self) -> &Version {
        &self.version
    }

    /// `category/package` (the qualified package name).
    pub fn cp(&self) -> String {
        format!("{}/{}", self.category, self.package)
    }

    /// PF: package name and full version, `libhello-1.0-r1`.
    pub fn pf(&self) -> String {
        format!("{}-{}", self.package, self.version)
    }

    /// P: package name and version without revision, `libhello-1.0`.
    pub fn p(&self) -> String {
        format!("{}-{}", self.package, self.version.without_revision())
    }

    /// PV: version without revision, `1.0`.
    pub fn pv(&self) -> &str {
        self.version.without_revision()
    }

    /// PVR: version with revision as written, `1.0-r1`.
    pub fn pvr(&self) -> &str {
        self.version.as_str()
    }
}

impl fmt::Display for Cpv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}-{}", self.category, self.package, self.version)
    }
}

// ---------------------------------------------------------------------------------------------
// Atom
// ---------------------------------------------------------------------------------------------

/// `!` (weak) or `!!` (strong) blocker prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blocker {
    Weak,
    Strong,
}

/// Version operator of an atom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `=`
    Equal,
    /// `=` with a trailing `*` after the version: prefix match on whole components.
    EqualGlob,
    /// `~`: equal when revisions are ignored.
    Approximate,
    /// `>=`
    GreaterOrEqual,
    /// `>`
    Greater,
}

impl Operator {
    fn prefix(self) -> &'static str {
        match self {
            Operator::Less => "<",
            Operator::LessOrEqual => "<=",
            Operator::Equal | Operator::EqualGlob => "=",
            Operator::Approximate => "~",
            Operator::GreaterOrEqual => ">=",
            Operator::Greater => ">",
        }
    }

    /// Whether `candidate` satisfies `<self> wanted`.
    fn accepts(self, wanted: &Version, candidate: &Version) -> bool {
        let order = candidate.vercmp(wanted);
        match self {
            Operator::Less => order == Ordering::Less,
            Operator::LessOrEqual => order != Ordering::Greater,
            Operator::Equal => order == Ordering::Equal,
            Operator::GreaterOrEqual => order != Ordering::Less,
            Operator::Greater => order == Ordering::Greater,
            Operator::EqualGlob => wanted.glob_matches(candidate),
            // Like Portage: the versions without revision must be the same text, so `~1.0`
            // does not take `1.00` (which PMS comparison would call equal).
            Operator::Approximate => candidate.without_revision() == wanted.without_revision(),
        }
    }
}

/// The slot part of an atom (after `:`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SlotDep {
    /// `:*` any slot.
    Any,
    /// `:=` any slot; rebuild dependents when the slot or sub-slot changes.
    AnyRebuild,
    /// `:slot`, `:slot/subslot`, `:slot=`, or `:slot/subslot=` (the last as Portage records
    /// `:=` deps of installed packages).
    Named {
        slot: String,
        subslot: Option<String>,
        rebuild: bool,
    },
}

impl fmt::Display for SlotDep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotDep::Any => f.write_str("*"),
            SlotDep::AnyRebuild => f.write_str("="),
            SlotDep::Named {
                slot,
                subslot,
                rebuild,
            } => {
                f.write_str(slot)?;
                if let Some(subslot) = subslot {
                    write!(f, "/{subslot}")?;
                }
                if *rebuild {
                    f.write_str("=")?;
                }
                Ok(())
            }
        }
    }
}

/// What a USE dependency asks of a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UseDepKind {
    /// `flag`: must be enabled.
    Enabled,
    /// `-flag`: must be disabled.
    Disabled,
    /// `flag=`: same state as in the depending package.
    Same,
    /// `!flag=`: opposite state to the depending package.
    Opposite,
    /// `flag?`: enabled if enabled in the depending package.
    IfEnabled,
    /// `!flag?`: disabled if disabled in the depending package.
    IfDisabled,
}

/// `(+)` or `(-)` after a flag name: the state assumed when the package lacks the flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UseDefault {
    Enabled,
    Disabled,
}

/// One element of an atom's `[...]` USE dependency list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UseDep {
    flag: String,
    kind: UseDepKind,
    default: Option<UseDefault>,
}

impl UseDep {
    pub fn flag(&self) -> &str {
        &self.flag
    }

    pub fn kind(&self) -> UseDepKind {
        self.kind
    }

    pub fn default(&self) -> Option<UseDefault> {
        self.default
    }
}

fn parse_use_dep(text: &str) -> Result<UseDep, String> {
    if text.is_empty() {
        return Err("empty USE dependency (two commas in a row, or a trailing comma?)".to_owned());
    }
    let (prefix, rest) = match text.as_bytes()[0] {
        b'!' | b'-' => (Some(text.as_bytes()[0]), &text[1..]),
        _ => (None, text),
    };
    let (rest, suffix) = match rest.as_bytes().last() {
        Some(&c @ (b'?' | b'=')) => (&rest[..rest.len() - 1], Some(c)),
        _ => (rest, None),
    };
    let (flag, default) = if let Some(flag) = rest.strip_suffix("(+)") {
        (flag, Some(UseDefault::Enabled))
    } else if let Some(flag) = rest.strip_suffix("(-)") {
        (flag, Some(UseDefault::Disabled))
    } else {
        (rest, None)
    };
    validate_use_flag(flag).map_err(|e| format!("USE dependency {text:?}: {e}"))?;
    let kind = match (prefix, suffix) {
        (None, None) => UseDepKind::Enabled,
        (Some(b'-'), None) => UseDepKind::Disabled,
        (None, Some(b'=')) => UseDepKind::Same,
        (Some(b'!'), Some(b'=')) => UseDepKind::Opposite,
        (None, Some(b'?')) => UseDepKind::IfEnabled,
        (Some(b'!'), Some(b'?')) => UseDepKind::IfDisabled,
        _ => {
            return Err(format!(
                "USE dependency {text:?} is none of flag, -flag, flag=, !flag=, flag?, !flag?"
            ))
        }
    };
    Ok(UseDep {
        flag: flag.to_owned(),
        kind,
        default,
    })
}

impl fmt::Display for UseDep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, suffix) = match self.kind {
            UseDepKind::Enabled => ("", ""),
            UseDepKind::Disabled => ("-", ""),
            UseDepKind::Same => ("", "="),
            UseDepKind::Opposite => ("!", "="),
            UseDepKind::IfEnabled => ("", "?"),
            UseDepKind::IfDisabled => ("!", "?"),
        };
        let default = match self.default {
            None => "",
            Some(UseDefault::Enabled) => "(+)",
            Some(UseDefault::Disabled) => "(-)",
        };
        write!(f, "{prefix}{}{default}{suffix}", self.flag)
    }
}

/// A package dependency specification:
/// `[!|!!][op]category/package[-version[*]][:slot][::repo][[use,...]]`.
///
/// Display gives back the parsed text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Atom {
    blocker: Option<Blocker>,
    category: String,
    package: String,
    /// An operator always comes with a version, and a version with an operator.
    version: Option<(Operator, Version)>,
    slot: Option<SlotDep>,
    repo: Option<String>,
    /// `None` when there is no `[...]`; never `Some` of an empty list.
    use_deps: Option<Vec<UseDep>>,
}

impl Atom {
    pub fn parse(input: &str) -> Result<Atom> {
        parse_atom(input).map_err(|problem| AtomError::Atom {
            input: input.to_owned(),
            problem,
        })
    }

    pub fn blocker(&self) -> Option<Blocker> {
        self.blocker
    }

    pub fn category(&self) -> &str {
        &self.category
    }

    /// The package name (PN).
    pub fn pn(&self) -> &str {
        &self.package
    }

    /// `category/package`.
    pub fn cp(&self) -> String {
        format!("{}/{}", self.category, self.package)
    }

    pub fn operator(&self) -> Option<Operator> {
        self.version.as_ref().map(|(op, _)| *op)
    }

    pub fn version(&self) -> Option<&Version> {
        self.version.as_ref().map(|(_, v)| v)
    }

    pub fn slot(&self) -> Option<&SlotDep> {
        self.slot.as_ref()
    }

    pub fn repo(&self) -> Option<&str> {
        self.repo.as_deref()
    }

    /// The `[...]` USE dependencies, in written order (empty when there are none).
    pub fn use_deps(&self) -> &[UseDep] {
        self.use_deps.as_deref().unwrap_or_default()
    }

    /// Whether a package with this CPV, slot (`(slot, subslot)`) and repository satisfies the
    /// atom's name, version, slot and repository parts. USE dependencies are not evaluated and a
    /// blocker prefix is ignored (the result says which packages the blocker is about).
    ///
    /// Like PMS (and stricter than Portage, which lets a candidate without slot information
    /// through), a slot or repository restriction fails when `slot` or `repo` is `None`.
    /// `:*` and `:=` accept any slot, known or not. A missing sub-slot is the slot itself.
    pub fn matches(
        &self,
        cpv: &Cpv,
        slot: Option<(&str, Option<&str>)>,
        repo: Option<&str>,
    ) -> bool {
        if cpv.category != self.category || cpv.package != self.package {
            return false;
        }
        if let Some((op, wanted)) = &self.version {
            if !op.accepts(wanted, &cpv.version) {
                return false;
            }
        }
        if let Some(SlotDep::Named {
            slot: wanted_slot,
            subslot: wanted_subslot,
            ..
        }) = &self.slot
        {
            let Some((slot, subslot)) = slot else {
                return false;
            };
            if slot != wanted_slot {
                return false;
            }
            if let Some(wanted_subslot) = wanted_subslot {
                if subslot.unwrap_or(slot) != wanted_subslot {
                    return false;
                }
            }
        }
        if let Some(wanted_repo) = &self.repo {
            if repo != Some(wanted_repo.as_str()) {
                return false;
            }
        }
        true
    }
}

fn parse_atom(input: &str) -> Result<Atom, String> {
    let mut rest = input;
    let blocker = if let Some(r) = rest.strip_prefix("!!") {
        rest = r;
        Some(Blocker::Strong)
    } else if let Some(r) = rest.strip_prefix('!') {
        rest = r;
        Some(Blocker::Weak)
    } else {
        None
    };
    if rest.starts_with('!') {
        return Err("at most two '!' may start a blocker".to_owned());
    }

    let mut operator = None;
    for (text, op) in [
        ("<=", Operator::LessOrEqual),
        (">=", Operator::GreaterOrEqual),
        ("<", Operator::Less),
        (">", Operator::Greater),
        ("=", Operator::Equal),
        ("~", Operator::Approximate),
    ] {
        if let Some(r) = rest.strip_prefix(text) {
            rest = r;
            operator = Some(op);
            break;
        }
    }

    // The parts come in this order: name[-version][*] [:slot] [::repo] [[use]].
    let use_deps = match rest.find('[') {
        Some(open) => {
            let list = &rest[open + 1..];
            let Some(list) = list.strip_suffix(']') else {
                return Err(
                    "the USE dependency list must end with ']' at the end of the atom".to_owned(),
                );
            };
            if list.is_empty() {
                return Err("empty USE dependency list '[]'".to_owned());
            }
            if list.contains(['[', ']']) {
                return Err("only one '[...]' USE dependency list is allowed".to_owned());
            }
            rest = &rest[..open];
            Some(
                list.split(',')
                    .map(parse_use_dep)
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
        None if rest.contains(']') => return Err("']' without '['".to_owned()),
        None => None,
    };

    let repo = match rest.find("::") {
        Some(at) => {
            let repo = &rest[at + 2..];
            validate_repo_name(repo).map_err(|e| e.to_string())?;
            rest = &rest[..at];
            Some(repo.to_owned())
        }
        None => None,
    };

    let slot = match rest.find(':') {
        Some(at) => {
            let slot = parse_slot_dep(&rest[at + 1..])?;
            rest = &rest[..at];
            Some(slot)
        }
        None => None,
    };

    let glob = match rest.strip_suffix('*') {
        Some(r) => {
            if operator != Some(Operator::Equal) {
                return Err("a trailing '*' is only allowed with the '=' operator".to_owned());
            }
            rest = r;
            true
        }
        None => false,
    };

    let Some((category, pf)) = rest.split_once('/') else {
        return Err(format!(
            "expected <category>/<package>, found no '/' in {rest:?}"
        ));
    };
    if pf.contains('/') {
        return Err("more than one '/'".to_owned());
    }
    validate_category(category).map_err(|e| e.to_string())?;

    let (package, version) = match operator {
        Some(op) => {
            let (package, version) = split_pf_problem(pf).map_err(|problem| {
                if pf.contains('-') {
                    format!("{pf:?}: {problem}")
                } else {
                    format!("operator '{}' needs a version", op.prefix())
                }
            })?;
            let op = if glob { Operator::EqualGlob } else { op };
            (package, Some((op, version)))
        }
        None => {
            if let Ok((pn, version)) = split_pf_problem(pf) {
                return Err(format!(
                    "{pf:?} ends in a version but has no operator (did you mean \"={category}/{pn}-{version}\"?)"
                ));
            }
            validate_package_name(pf).map_err(|e| e.to_string())?;
            (pf, None)
        }
    };

    Ok(Atom {
        blocker,
        category: category.to_owned(),
        package: package.to_owned(),
        version,
        slot,
        repo,
        use_deps,
    })
}

fn parse_slot_dep(text: &str) -> Result<SlotDep, String> {
    match text {
        "" => return Err("empty slot after ':'".to_owned()),
        "*" => return Ok(SlotDep::Any),
        "=" => return Ok(SlotDep::AnyRebuild),
        _ => {}
    }
    let (names, rebuild) = match text.strip_suffix('=') {
        Some(names) => (names, true),
        None => (text, false),
    };
    let (slot, subslot) = match names.split_once('/') {
        Some((slot, subslot)) => (slot, Some(subslot)),
        None => (names, None),
    };
    validate_slot_name(slot).map_err(|e| e.to_string())?;
    if let Some(subslot) = subslot {
        validate_slot_name(subslot).map_err(|e| format!("sub-slot: {e}"))?;
    }
    Ok(SlotDep::Named {
        slot: slot.to_owned(),
        subslot: subslot.map(str::to_owned),
        rebuild,
    })
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.blocker {
            Some(Blocker::Weak) => f.write_str("!")?,
            Some(Blocker::Strong) => f.write_str("!!")?,
            None => {}
        }
        match &self.version {
            Some((op, version)) => {
                let glob = if *op == Operator::EqualGlob { "*" } else { "" };
                write!(
                    f,
                    "{}{}/{}-{}{}",
                    op.prefix(),
                    self.category,
                    self.package,
                    version,
                    glob
                )?;
            }
            None => write!(f, "{}/{}", self.category, self.package)?,
        }
        if let Some(slot) = &self.slot {
            write!(f, ":{slot}")?;
        }
        if let Some(repo) = &self.repo {
            write!(f, "::{repo}")?;
        }
        if let Some(use_deps) = &self.use_deps {
            f.write_str("[")?;
            for (i, dep) in use_deps.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{dep}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// FromStr and serde (as strings)
// ---------------------------------------------------------------------------------------------

macro_rules! string_forms {
    ($($ty:ident),*) => {$(
        impl FromStr for $ty {
            type Err = AtomError;
            fn from_str(text: &str) -> Result<Self> {
                $ty::parse(text)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $ty::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

string_forms!(Version, Cpv, Atom);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn cpv(text: &str) -> Cpv {
        Cpv::parse(text).unwrap()
    }

    fn atom(text: &str) -> Atom {
        Atom::parse(text).unwrap()
    }

    fn err<T: fmt::Debug>(result: Result<T>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn version_parts() {
        let version = v("1.2.3b_rc4_p-r06");
        assert_eq!(version.as_str(), "1.2.3b_rc4_p-r06");
        assert_eq!(version.to_string(), "1.2.3b_rc4_p-r06");
        assert_eq!(version.revision(), 6);
        assert!(version.has_revision());
        assert_eq!(version.without_revision(), "1.2.3b_rc4_p");
        let plain = v("20240101");
        assert_eq!(plain.revision(), 0);
        assert!(!plain.has_revision());
        assert_eq!(plain.without_revision(), "20240101");
        assert!(v("1-r0").has_revision());
        // Components longer than any integer type still compare.
        assert!(v("1.123456789012345678901234567890") > v("1.123456789012345678901234567889"));
    }

    #[test]
    fn version_errors_say_what_and_where() {
        let cases = [
            ("", r#"invalid version "": empty version"#),
            (
                "a1",
                r#"invalid version "a1": a version starts with a digit, found 'a'"#,
            ),
            (
                "1.",
                r#"invalid version "1.": expected a digit after '.' at offset 1, found end of input"#,
            ),
            (
                "1..2",
                r#"invalid version "1..2": expected a digit after '.' at offset 1, found '.'"#,
            ),
            (
                "1.0ab",
                r#"invalid version "1.0ab": unexpected 'b' at offset 4: only one letter may follow the numbers"#,
            ),
            (
                "1_gamma1",
                r#"invalid version "1_gamma1": unknown suffix '_gamma' at offset 1 (expected _alpha, _beta, _pre, _rc or _p)"#,
            ),
            (
                "1_",
                r#"invalid version "1_": unknown suffix '_' at offset 1 (expected _alpha, _beta, _pre, _rc or _p)"#,
            ),
            (
                "1-1",
                r#"invalid version "1-1": expected a revision '-r<number>' at offset 1, found '-' followed by '1'"#,
            ),
            (
                "1-r",
                r#"invalid version "1-r": the revision at offset 1 needs a number after '-r', found end of input"#,
            ),
            (
                "1-r1a",
                r#"invalid version "1-r1a": unexpected 'a' at offset 4"#,
            ),
            (
                "1.0A",
                r#"invalid version "1.0A": unexpected 'A' at offset 3"#,
            ),
            (
                "1.0 ",
                r#"invalid version "1.0 ": unexpected ' ' at offset 3"#,
            ),
            ("1é", r#"invalid version "1é": unexpected 'é' at offset 1"#),
            (
                "1_alpha_RC",
                r#"invalid version "1_alpha_RC": unknown suffix '_RC' at offset 7 (expected _alpha, _beta, _pre, _rc or _p)"#,
            ),
            (
                "1-r99999999999999999999999",
                r#"invalid version "1-r99999999999999999999999": revision 99999999999999999999999 at offset 1 is too large"#,
            ),
        ];
        for (input, message) in cases {
            assert_eq!(err(Version::parse(input)), message, "for {input:?}");
        }
        assert!(!Version::is_valid("1.0b2"));
        assert!(Version::is_valid("1.0b_p2"));
    }

    #[test]
    fn version_comparison_follows_pms() {
        use Ordering::*;
        let cases = [
            ("2.10", "2.9", Greater),
            ("2.9", "1.500", Greater),
            ("1.0.0", "1.0", Greater),
            ("1.0.0_alpha", "1.0", Greater),
            ("1.0", "1.00", Equal),
            ("1.01", "1.1", Less),
            ("1.01", "1.001", Greater),
            ("1.010", "1.01", Equal),
            ("1.05", "1.4", Less),
            ("1.09", "1.1", Less),
            ("0.9", "0.10", Less),
            ("01", "1", Equal),
            ("2", "1.99.99", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0b", "1.0a", Greater),
            ("1.0a", "1.0.1", Less),
            ("1_alpha", "1", Less),
            ("1_alpha", "1_beta", Less),
            ("1_beta", "1_pre", Less),
            ("1_pre", "1_rc", Less),
            ("1_rc", "1", Less),
            ("1", "1_p", Less),
            ("1_p", "1_p0", Equal),
            ("1_alpha", "1_alpha0", Equal),
            ("1_p1", "1", Greater),
            ("1_rc10", "1_rc9", Greater),
            ("1_p1_alpha", "1_p1", Less),
            ("1_p1_p1", "1_p1", Greater),
            ("1.2.3_pre4_p5", "1.2.3_pre4", Greater),
            ("1.2.3_pre4_p5", "1.2.3_rc1", Less),
            ("1.0_rc1-r1", "1.0_rc1", Greater),
            ("1.0_rc1-r1", "1.0", Less),
            ("1-r0", "1", Equal),
            ("1-r01", "1-r1", Equal),
            ("1-r2", "1-r10", Less),
        ];
        for (a, b, expected) in cases {
            assert_eq!(v(a).vercmp(&v(b)), expected, "{a} vs {b}");
            assert_eq!(v(b).vercmp(&v(a)), expected.reverse(), "{b} vs {a}");
            assert_eq!(vercmp(a, b).unwrap(), expected);
        }
        assert!(vercmp("1", "x").is_err());
    }

    #[test]
    fn ord_agrees_with_eq_and_breaks_vercmp_ties_by_text() {
        assert_eq!(v("1.0").vercmp(&v("1.00")), Ordering::Equal);
        assert_ne!(v("1.0"), v("1.00"));
        assert_eq!(v("1.0").cmp(&v("1.00")), Ordering::Less);
        let mut sorted = [v("1.00"), v("1.0_rc1"), v("1.0"), v("0.9"), v("1.0-r1")];
        sorted.sort();
        let texts: Vec<&str> = sorted.iter().map(Version::as_str).collect();
        assert_eq!(texts, ["0.9", "1.0_rc1", "1.0", "1.00", "1.0-r1"]);
    }

    #[test]
    fn names() {
        for ok in [
            "dev-libs", "app-misc", "_x", "0ad", "virtual", "x11-libs", "a+b.c_d",
        ] {
            validate_category(ok).unwrap();
        }
        for ok in [
            "libhello", "gtk+", "foo-bar", "foo-r1", "bar-", "_x", "3proxy", "foo-1xy", "x-1_",
        ] {
            validate_package_name(ok).unwrap();
        }
        let cases = [
            (validate_category(""), r#"invalid category "": is empty"#),
            (
                validate_category(".x"),
                r#"invalid category ".x": must not begin with '.'"#,
            ),
            (
                validate_category("dev libs"),
                r#"invalid category "dev libs": character ' ' at offset 3 is not allowed (allowed: A-Z a-z 0-9 + _ . -)"#,
            ),
            (
                validate_package_name("+x"),
                r#"invalid package name "+x": must not begin with '+'"#,
            ),
            (
                validate_package_name("foo.bar"),
                r#"invalid package name "foo.bar": character '.' at offset 3 is not allowed (allowed: A-Z a-z 0-9 + _ -)"#,
            ),
            (
                validate_package_name("foo-1"),
                r#"invalid package name "foo-1": must not end in a hyphen and a version ('-1')"#,
            ),
            (
                validate_package_name("foo-1-r1"),
                r#"invalid package name "foo-1-r1": must not end in a hyphen and a version ('-1-r1')"#,
            ),
            (
                validate_package_name("foo-1a"),
                r#"invalid package name "foo-1a": must not end in a hyphen and a version ('-1a')"#,
            ),
            (
                validate_slot_name("-1"),
                r#"invalid slot name "-1": must not begin with '-'"#,
            ),
            (
                validate_repo_name("my-repo-2"),
                r#"invalid repository name "my-repo-2": must not end in a hyphen and a version ('-2')"#,
            ),
            (
                validate_repo_name("a.b"),
                r#"invalid repository name "a.b": character '.' at offset 1 is not allowed (allowed: A-Z a-z 0-9 _ -)"#,
            ),
            (
                validate_use_flag("_x"),
                r#"invalid USE flag "_x": must not begin with '_'"#,
            ),
            (
                validate_use_flag("a:b"),
                r#"invalid USE flag "a:b": character ':' at offset 1 is not allowed (allowed: A-Z a-z 0-9 + _ @ -)"#,
            ),
        ];
        for (result, message) in cases {
            assert_eq!(err(result), message);
        }
        validate_slot_name("0").unwrap();
        validate_slot_name("5.34+x_y-z").unwrap();
        validate_repo_name("gentoo").unwrap();
        validate_use_flag("python_targets_python3_12").unwrap();
        validate_use_flag("l10n@x+y-z").unwrap();
    }

    #[test]
    fn split_pf_and_cpv_parts() {
        let (pn, version) = split_pf("libhello-1.0-r1").unwrap();
        assert_eq!((pn.as_str(), version.as_str()), ("libhello", "1.0-r1"));
        let (pn, version) = split_pf("foo-bar-r1-2_p3").unwrap();
        assert_eq!((pn.as_str(), version.as_str()), ("foo-bar-r1", "2_p3"));
        let (pn, version) = split_pf("gtk+-2.24.33").unwrap();
        assert_eq!((pn.as_str(), version.as_str()), ("gtk+", "2.24.33"));

        let parsed = cpv("dev-libs/libhello-1.0-r1");
        assert_eq!(parsed.category(), "dev-libs");
        assert_eq!(parsed.pn(), "libhello");
        assert_eq!(parsed.version().as_str(), "1.0-r1");
        assert_eq!(parsed.cp(), "dev-libs/libhello");
        assert_eq!(parsed.pf(), "libhello-1.0-r1");
        assert_eq!(parsed.p(), "libhello-1.0");
        assert_eq!(parsed.pv(), "1.0");
        assert_eq!(parsed.pvr(), "1.0-r1");
        assert_eq!(parsed.to_string(), "dev-libs/libhello-1.0-r1");
        assert_eq!(Cpv::from_pf("dev-libs", "libhello-1.0-r1").unwrap(), parsed);
        assert_eq!(
            Cpv::new("dev-libs", "libhello", v("1.0-r1")).unwrap(),
            parsed
        );
    }

    #[test]
    fn cpv_errors() {
        let cases = [
            (
                "dev-libs/libhello",
                r#"invalid CPV "dev-libs/libhello": expected <package>-<version>, found no '-<version>' part"#,
            ),
            (
                "libhello-1.0",
                r#"invalid CPV "libhello-1.0": expected <category>/<package>-<version>, found no '/'"#,
            ),
            ("a/b/c-1", r#"invalid CPV "a/b/c-1": more than one '/'"#),
            (
                ".a/b-1",
                r#"invalid CPV ".a/b-1": invalid category ".a": must not begin with '.'"#,
            ),
            (
                "a/b-1-2",
                r#"invalid CPV "a/b-1-2": invalid package name "b-1": must not end in a hyphen and a version ('-1')"#,
            ),
            (
                "a/b-1.x-r1",
                r#"invalid CPV "a/b-1.x-r1": expected <package>-<version>, but the part after the last '-' is not a version: invalid version "1.x-r1": expected a digit after '.' at offset 1, found 'x'"#,
            ),
            (
                "a/b",
                r#"invalid CPV "a/b": expected <package>-<version>, found no '-<version>' part"#,
            ),
            (
                "a/b-r1",
                r#"invalid CPV "a/b-r1": expected <package>-<version>, found no '-<version>' part"#,
            ),
        ];
        for (input, message) in cases {
            assert_eq!(err(Cpv::parse(input)), message, "for {input:?}");
        }
        assert_eq!(
            err(Cpv::new("a", "b-1", v("2"))),
            r#"invalid CPV "a/b-1-2": invalid package name "b-1": must not end in a hyphen and a version ('-1')"#
        );
        assert!(split_pf("foo").is_err());
    }

    #[test]
    fn cpv_order_is_category_package_version() {
        let mut list = [
            cpv("dev-libs/foo-1.10"),
            cpv("app-misc/zed-1"),
            cpv("dev-libs/foo-1.9"),
            cpv("dev-libs/bar-3"),
            cpv("dev-libs/foo-1.9-r1"),
            cpv("dev-libs/foo-1.9_rc1"),
        ];
        list.sort();
        let texts: Vec<String> = list.iter().map(Cpv::to_string).collect();
        assert_eq!(
            texts,
            [
                "app-misc/zed-1",
                "dev-libs/bar-3",
                "dev-libs/foo-1.9_rc1",
                "dev-libs/foo-1.9",
                "dev-libs/foo-1.9-r1",
                "dev-libs/foo-1.10",
            ]
        );
    }

    #[test]
    fn serde_as_strings() {
        let value = cpv("dev-libs/libhello-1.0-r1");
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, r#""dev-libs/libhello-1.0-r1""#);
        assert_eq!(serde_json::from_str::<Cpv>(&json).unwrap(), value);

        let value = atom(">=dev-libs/foo-1.2:0/1.2=::gentoo[ssl,-doc]");
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, r#"">=dev-libs/foo-1.2:0/1.2=::gentoo[ssl,-doc]""#);
        assert_eq!(serde_json::from_str::<Atom>(&json).unwrap(), value);

        assert_eq!(serde_json::to_string(&v("1.0_p1")).unwrap(), r#""1.0_p1""#);
        let bad = serde_json::from_str::<Cpv>(r#""dev-libs/foo""#)
            .unwrap_err()
            .to_string();
        assert!(bad.contains(r#"invalid CPV "dev-libs/foo""#), "{bad}");
        let bad = serde_json::from_str::<Atom>(r#""=a/b""#)
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains(r#"invalid atom "=a/b": operator '=' needs a version"#),
            "{bad}"
        );
    }

    #[test]
    fn atom_parts() {
        let parsed =
            atom("!!>=dev-libs/foo-1.2-r3:0/1.2=::gentoo[ssl,-doc,X?,!test?,a=,!b=,c(+),d(-)?]");
        assert_eq!(parsed.blocker(), Some(Blocker::Strong));
        assert_eq!(parsed.operator(), Some(Operator::GreaterOrEqual));
        assert_eq!(parsed.category(), "dev-libs");
        assert_eq!(parsed.pn(), "foo");
        assert_eq!(parsed.cp(), "dev-libs/foo");
        assert_eq!(parsed.version().map(Version::as_str), Some("1.2-r3"));
        assert_eq!(
            parsed.slot(),
            Some(&SlotDep::Named {
                slot: "0".into(),
                subslot: Some("1.2".into()),
                rebuild: true
            })
        );
        assert_eq!(parsed.repo(), Some("gentoo"));
        let uses: Vec<(&str, UseDepKind, Option<UseDefault>)> = parsed
            .use_deps()
            .iter()
            .map(|u| (u.flag(), u.kind(), u.default()))
            .collect();
        assert_eq!(
            uses,
            [
                ("ssl", UseDepKind::Enabled, None),
                ("doc", UseDepKind::Disabled, None),
                ("X", UseDepKind::IfEnabled, None),
                ("test", UseDepKind::IfDisabled, None),
                ("a", UseDepKind::Same, None),
                ("b", UseDepKind::Opposite, None),
                ("c", UseDepKind::Enabled, Some(UseDefault::Enabled)),
                ("d", UseDepKind::IfEnabled, Some(UseDefault::Disabled)),
            ]
        );

        let simple = atom("sys-apps/portage");
        assert_eq!(simple.blocker(), None);
        assert_eq!(simple.operator(), None);
        assert_eq!(simple.version(), None);
        assert_eq!(simple.slot(), None);
        assert_eq!(simple.repo(), None);
        assert!(simple.use_deps().is_empty());

        assert_eq!(atom("!a/b").blocker(), Some(Blocker::Weak));
        assert_eq!(atom("=a/b-1*").operator(), Some(Operator::EqualGlob));
        assert_eq!(atom("=a/b-1").operator(), Some(Operator::Equal));
        assert_eq!(atom("~a/b-1").operator(), Some(Operator::Approximate));
        assert_eq!(atom("<a/b-1").operator(), Some(Operator::Less));
        assert_eq!(atom("<=a/b-1").operator(), Some(Operator::LessOrEqual));
        assert_eq!(atom(">a/b-1").operator(), Some(Operator::Greater));
        assert_eq!(atom("a/b:*").slot(), Some(&SlotDep::Any));
        assert_eq!(atom("a/b:=").slot(), Some(&SlotDep::AnyRebuild));
        assert_eq!(
            atom("a/b:2=").slot(),
            Some(&SlotDep::Named {
                slot: "2".into(),
                subslot: None,
                rebuild: true
            })
        );
        // A package name may look like a revision or end in a hyphen.
        assert_eq!(atom("a/b-r1").pn(), "b-r1");
        assert_eq!(atom("=a/b-r1-1").pn(), "b-r1");
    }

    #[test]
    fn atom_display_round_trips() {
        for text in [
            "sys-apps/portage",
            "!sys-apps/portage",
            "!!<sys-apps/portage-3.0.83",
            "=dev-lang/python-3.12*",
            "=dev-lang/python-3.12.1-r1*",
            "~dev-libs/foo-1.0",
            "~dev-libs/foo-1.0-r1",
            "dev-libs/foo:0",
            "dev-libs/foo:*",
            "dev-libs/foo:=",
            "dev-libs/foo:0=",
            "dev-libs/foo:0/1.2",
            "dev-libs/foo:0/1.2=",
            "dev-libs/foo::gentoo",
            "dev-libs/foo:0::gentoo",
            "dev-libs/foo[ssl]",
            ">=dev-libs/foo-01.02_p3-r04:slot::repo[a,-b,c?,!d?,e=,!f=,g(+),h(-)=,!i(+)?]",
        ] {
            assert_eq!(atom(text).to_string(), text);
            assert_eq!(text.parse::<Atom>().unwrap(), atom(text));
        }
    }

    #[test]
    fn atom_errors() {
        let cases = [
            ("=foo/bar", "operator '=' needs a version"),
            (
                ">=foo/bar-baz",
                r#""bar-baz": expected <package>-<version>, but the part after the last '-' is not a version: invalid version "baz": a version starts with a digit, found 'b'"#,
            ),
            (
                "foo/bar-1.0",
                r#""bar-1.0" ends in a version but has no operator (did you mean "=foo/bar-1.0"?)"#,
            ),
            (
                "foo/bar-1.0-r1",
                r#""bar-1.0-r1" ends in a version but has no operator (did you mean "=foo/bar-1.0-r1"?)"#,
            ),
            (
                "foobar",
                r#"expected <category>/<package>, found no '/' in "foobar""#,
            ),
            ("a/b/c", "more than one '/'"),
            ("!!!a/b", "at most two '!' may start a blocker"),
            (
                ">=a/b-1*",
                "a trailing '*' is only allowed with the '=' operator",
            ),
            (
                "~a/b-1*",
                "a trailing '*' is only allowed with the '=' operator",
            ),
            (
                "a/b*",
                "a trailing '*' is only allowed with the '=' operator",
            ),
            ("a/b:", "empty slot after ':'"),
            (
                "a/b:*=",
                r#"invalid slot name "*": character '*' at offset 0 is not allowed (allowed: A-Z a-z 0-9 + _ . -)"#,
            ),
            ("a/b:1/", r#"sub-slot: invalid slot name "": is empty"#),
            ("a/b:/1", r#"invalid slot name "": is empty"#),
            ("a/b::", r#"invalid repository name "": is empty"#),
            (
                "a/b::x.y",
                r#"invalid repository name "x.y": character '.' at offset 1 is not allowed (allowed: A-Z a-z 0-9 _ -)"#,
            ),
            ("a/b[]", "empty USE dependency list '[]'"),
            (
                "a/b[x",
                "the USE dependency list must end with ']' at the end of the atom",
            ),
            (
                "a/b[x]:1",
                "the USE dependency list must end with ']' at the end of the atom",
            ),
            (
                "a/b[x][y]",
                "only one '[...]' USE dependency list is allowed",
            ),
            ("a/bx]", "']' without '['"),
            (
                "a/b[x,]",
                "empty USE dependency (two commas in a row, or a trailing comma?)",
            ),
            (
                "a/b[!x]",
                r#"USE dependency "!x" is none of flag, -flag, flag=, !flag=, flag?, !flag?"#,
            ),
            (
                "a/b[-x?]",
                r#"USE dependency "-x?" is none of flag, -flag, flag=, !flag=, flag?, !flag?"#,
            ),
            (
                "a/b[@x]",
                r#"USE dependency "@x": invalid USE flag "@x": must not begin with '@'"#,
            ),
            (
                "a/b[x(*)]",
                r#"USE dependency "x(*)": invalid USE flag "x(*)": character '(' at offset 1 is not allowed (allowed: A-Z a-z 0-9 + _ @ -)"#,
            ),
            ("+a/b", r#"invalid category "+a": must not begin with '+'"#),
            (
                "a/+b",
                r#"invalid package name "+b": must not begin with '+'"#,
            ),
            (
                "=a/b-1-2",
                r#""b-1-2": invalid package name "b-1": must not end in a hyphen and a version ('-1')"#,
            ),
        ];
        for (input, problem) in cases {
            assert_eq!(
                err(Atom::parse(input)),
                format!("invalid atom {input:?}: {problem}"),
                "for {input:?}"
            );
        }
    }

    #[test]
    fn matching_versions() {
        let check = |atom_text: &str, yes: &[&str], no: &[&str]| {
            let a = atom(atom_text);
            for version in yes {
                let c = cpv(&format!("dev-libs/foo-{version}"));
                assert!(a.matches(&c, None, None), "{atom_text} should match {c}");
            }
            for version in no {
                let c = cpv(&format!("dev-libs/foo-{version}"));
                assert!(
                    !a.matches(&c, None, None),
                    "{atom_text} should not match {c}"
                );
            }
        };
        check("dev-libs/foo", &["0", "1.0", "99_p9-r9"], &[]);
        check(
            "=dev-libs/foo-1.0",
            &["1.0", "1.00", "01.0", "1.0-r0"],
            &["1.0-r1", "1.0.0", "1.0_p0"],
        );
        check(
            "~dev-libs/foo-1.0",
            &["1.0", "1.0-r1", "1.0-r99"],
            &["1.00", "1.0.1", "1.0_p1", "0.9"],
        );
        check("~dev-libs/foo-1.0-r3", &["1.0", "1.0-r1"], &["1.1"]);
        check(
            "<dev-libs/foo-1.0",
            &["0.9", "1.0_rc9", "1.0_alpha_p9"],
            &["1.0", "1.0-r1", "1.0_p1"],
        );
        check(
            "<=dev-libs/foo-1.0",
            &["0.9", "1.0", "1.00", "1.0-r0"],
            &["1.0-r1", "1.0a"],
        );
        check(
            ">dev-libs/foo-1.0",
            &["1.0-r1", "1.0a", "1.0.0", "1.0_p1"],
            &["1.0", "1.0_rc1"],
        );
        check(
            ">=dev-libs/foo-1.0",
            &["1.0", "1.0-r1", "2"],
            &["1.0_rc1", "0.99"],
        );
        check(
            "=dev-libs/foo-1.2*",
            &[
                "1.2",
                "1.2.3",
                "1.2a",
                "1.2_rc1",
                "1.2-r1",
                "01.2.9",
                "1.2.3.4_p1",
            ],
            &["1.20", "1.3", "1.1.2", "1"],
        );
        check(
            "=dev-libs/foo-1*",
            &["1", "1.0", "1a", "1_p2"],
            &["10", "2"],
        );
        check(
            "=dev-libs/foo-1.2_rc*",
            &["1.2_rc", "1.2_rc1", "1.2_rc1_p2"],
            &["1.2", "1.2_p1", "1.2_pre1"],
        );
        check(
            "=dev-libs/foo-1.2_rc1*",
            &["1.2_rc1", "1.2_rc1-r2", "1.2_rc1_p1"],
            &["1.2_rc10", "1.2_rc2"],
        );

        let blocker = atom("!<dev-libs/foo-2");
        assert!(blocker.matches(&cpv("dev-libs/foo-1"), None, None));
        assert!(!atom("dev-libs/foo").matches(&cpv("dev-libs/foobar-1"), None, None));
        assert!(!atom("dev-libs/foo").matches(&cpv("dev-util/foo-1"), None, None));
    }

    #[test]
    fn matching_slots_and_repos() {
        let c = cpv("dev-libs/foo-1.0");
        let slot2 = Some(("2", None));
        let slot2_3 = Some(("2", Some("3")));
        assert!(atom("dev-libs/foo:2").matches(&c, slot2, None));
        assert!(atom("dev-libs/foo:2").matches(&c, slot2_3, None));
        assert!(!atom("dev-libs/foo:2").matches(&c, Some(("20", None)), None));
        assert!(
            !atom("dev-libs/foo:2").matches(&c, None, None),
            "unknown slot never matches a slot dep"
        );
        assert!(atom("dev-libs/foo:2/3").matches(&c, slot2_3, None));
        assert!(!atom("dev-libs/foo:2/3").matches(&c, Some(("2", Some("4"))), None));
        assert!(
            !atom("dev-libs/foo:2/3").matches(&c, slot2, None),
            "missing sub-slot is the slot"
        );
        assert!(atom("dev-libs/foo:2/2").matches(&c, slot2, None));
        assert!(atom("dev-libs/foo:2=").matches(&c, slot2_3, None));
        assert!(atom("dev-libs/foo:2/3=").matches(&c, slot2_3, None));
        for any in ["dev-libs/foo:*", "dev-libs/foo:="] {
            assert!(atom(any).matches(&c, slot2_3, None));
            assert!(atom(any).matches(&c, None, None));
        }

        assert!(atom("dev-libs/foo::gentoo").matches(&c, None, Some("gentoo")));
        assert!(!atom("dev-libs/foo::gentoo").matches(&c, None, Some("local")));
        assert!(!atom("dev-libs/foo::gentoo").matches(&c, None, None));
        assert!(atom("dev-libs/foo").matches(&c, None, Some("local")));
        assert!(atom(">=dev-libs/foo-1:2::gentoo[ssl]").matches(&c, slot2, Some("gentoo")));
        assert!(!atom(">=dev-libs/foo-1.1:2::gentoo[ssl]").matches(&c, slot2, Some("gentoo")));
    }

    // ---- property tests -------------------------------------------------------------------

    /// Versions drawn from a small alphabet so that equal and near-equal pairs are common.
    fn small_version() -> impl Strategy<Value = String> {
        "(0|1|2|01)(\\.(0|00|1|01|10|9)){0,2}[ab]?(_(alpha|rc|p)1?){0,2}(-r(0|1|2))?"
    }

    fn any_version() -> impl Strategy<Value = String> {
        "[0-9]{1,4}(\\.[0-9]{1,4}){0,4}[a-z]?(_(alpha|beta|pre|rc|p)[0-9]{0,3}){0,3}(-r[0-9]{1,3})?"
    }

    fn use_dep() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["", "-", "!"]),
            "[A-Za-z0-9][A-Za-z0-9+_@-]{0,6}",
            prop::sample::select(vec!["", "(+)", "(-)"]),
            prop::sample::select(vec!["", "?", "="]),
        )
            .prop_map(|(prefix, flag, default, suffix)| {
                // Only PMS forms: "-" has no suffix, "!" needs one.
                let prefix = match (prefix, suffix) {
                    ("-", "") | ("", _) => prefix,
                    ("!", "?" | "=") => "!",
                    _ => "",
                };
                format!("{prefix}{flag}{default}{suffix}")
            })
    }

    fn atom_text() -> impl Strategy<Value = String> {
        let name = "[A-Za-z0-9_][A-Za-z0-9+_]{0,6}(-[a-z][a-z0-9+_]{0,4}){0,2}";
        (
            prop::sample::select(vec!["", "!", "!!"]),
            "[a-z0-9_][a-z0-9+_.-]{0,10}",
            name,
            prop::option::of((
                prop::sample::select(vec!["<", "<=", "=", "~", ">=", ">", "=*"]),
                any_version(),
            )),
            prop::option::of(prop_oneof![
                Just("*".to_owned()),
                Just("=".to_owned()),
                "[A-Za-z0-9_][A-Za-z0-9+_.-]{0,5}(/[A-Za-z0-9_][A-Za-z0-9+_.-]{0,5})?=?",
            ]),
            prop::option::of("[A-Za-z_][A-Za-z0-9_]{0,5}(-[a-z]{1,4})?"),
            prop::collection::vec(use_dep(), 0..4),
        )
            .prop_map(|(blocker, category, package, version, slot, repo, uses)| {
                let mut text = blocker.to_owned();
                match version {
                    Some(("=*", version)) => text += &format!("={category}/{package}-{version}*"),
                    Some((op, version)) => text += &format!("{op}{category}/{package}-{version}"),
                    None => text += &format!("{category}/{package}"),
                }
                if let Some(slot) = slot {
                    text += &format!(":{slot}");
                }
                if let Some(repo) = repo {
                    text += &format!("::{repo}");
                }
                if !uses.is_empty() {
                    text += &format!("[{}]", uses.join(","));
                }
                text
            })
    }

    proptest! {
        #[test]
        fn version_display_round_trips(text in any_version()) {
            let version = Version::parse(&text).unwrap();
            prop_assert_eq!(version.to_string(), text.clone());
            prop_assert_eq!(Version::parse(&version.to_string()).unwrap(), version);
        }

        #[test]
        fn vercmp_is_antisymmetric_and_reflexive(a in small_version(), b in small_version()) {
            let (a, b) = (v(&a), v(&b));
            prop_assert_eq!(a.vercmp(&a), Ordering::Equal);
            prop_assert_eq!(a.vercmp(&b), b.vercmp(&a).reverse());
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a.cmp(&b) == Ordering::Equal, a == b);
        }

        #[test]
        fn vercmp_is_transitive(a in small_version(), b in small_version(), c in small_version()) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            for order in [Ordering::Less, Ordering::Equal, Ordering::Greater] {
                if a.vercmp(&b) == order && b.vercmp(&c) == order {
                    prop_assert_eq!(a.vercmp(&c), order, "{} {} {}", a, b, c);
                }
                if a.vercmp(&b) == Ordering::Equal && b.vercmp(&c) == order {
                    prop_assert_eq!(a.vercmp(&c), order);
                }
                if a.vercmp(&b) == order && b.vercmp(&c) == Ordering::Equal {
                    prop_assert_eq!(a.vercmp(&c), order);
                }
                if a.cmp(&b) == order && b.cmp(&c) == order {
                    prop_assert_eq!(a.cmp(&c), order);
                }
            }
        }

        #[test]
        fn higher_revision_is_greater(base in "[0-9]{1,3}(\\.[0-9]{1,3}){0,2}[a-z]?(_(alpha|p)[0-9]?)?", r1 in 0u64..1000, r2 in 0u64..1000) {
            let a = v(&format!("{base}-r{r1}"));
            let b = v(&format!("{base}-r{r2}"));
            prop_assert_eq!(a.vercmp(&b), r1.cmp(&r2));
            prop_assert_eq!(v(&base).vercmp(&v(&format!("{base}-r{}", r1 + 1))), Ordering::Less);
            prop_assert_eq!(a.without_revision(), base.as_str());
        }

        #[test]
        fn suffixes_and_components_order(base in "[0-9]{1,3}(\\.[1-9][0-9]{0,2}){0,2}", n in 0u32..100) {
            let plain = v(&base);
            for pre in ["alpha", "beta", "pre", "rc"] {
                prop_assert_eq!(v(&format!("{base}_{pre}{n}")).vercmp(&plain), Ordering::Less);
            }
            prop_assert_eq!(v(&format!("{base}_p{n}")).vercmp(&plain), Ordering::Greater);
            prop_assert_eq!(v(&format!("{base}a")).vercmp(&plain), Ordering::Greater);
            prop_assert_eq!(v(&format!("{base}.{n}")).vercmp(&plain), Ordering::Greater);
            prop_assert_eq!(v(&format!("{base}.{n}_alpha")).vercmp(&plain), Ordering::Greater);
            prop_assert_eq!(v(&format!("{base}.{n}0")).vercmp(&v(&format!("{base}.{n}"))), if n == 0 { Ordering::Equal } else { Ordering::Greater });
        }

        #[test]
        fn cpv_round_trips_and_splits(
            category in "[a-z0-9_][a-z0-9+_.-]{0,10}",
            package in "[A-Za-z0-9_][A-Za-z0-9+_]{0,6}(-[a-z][a-z0-9+_]{0,4}){0,2}",
            version in any_version(),
        ) {
            let text = format!("{category}/{package}-{version}");
            let parsed = Cpv::parse(&text).unwrap();
            prop_assert_eq!(parsed.to_string(), text);
            prop_assert_eq!(parsed.category(), category.as_str());
            prop_assert_eq!(parsed.pn(), package.as_str());
            prop_assert_eq!(parsed.version().as_str(), version.as_str());
            prop_assert_eq!(Cpv::from_pf(&category, &parsed.pf()).unwrap(), parsed.clone());
            let (pn, split_version) = split_pf(&parsed.pf()).unwrap();
            prop_assert_eq!(pn, package);
            prop_assert_eq!(split_version.as_str(), version.as_str());
        }

        #[test]
        fn atom_display_round_trips_generated(text in atom_text()) {
            let parsed = Atom::parse(&text);
            prop_assert!(parsed.is_ok(), "{}", parsed.unwrap_err());
            let parsed = parsed.unwrap();
            prop_assert_eq!(parsed.to_string(), text.clone());
            prop_assert_eq!(Atom::parse(&parsed.to_string()).unwrap(), parsed);
        }

        #[test]
        fn versioned_atoms_match_their_own_cpv(
            package in "[a-z][a-z0-9]{0,6}",
            version in any_version(),
        ) {
            let c = cpv(&format!("cat/{package}-{version}"));
            for op in ["=", "<=", ">=", "~"] {
                let a = atom(&format!("{op}cat/{package}-{version}"));
                prop_assert!(a.matches(&c, None, None), "{} vs {}", a, c);
            }
            let glob = atom(&format!("=cat/{package}-{version}*"));
            prop_assert!(glob.matches(&c, None, None));
            for op in ["<", ">"] {
                let strict = atom(&format!("{op}cat/{package}-{version}"));
                prop_assert!(!strict.matches(&c, None, None), "{} vs {}", strict, c);
            }
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,30}") {
            let _ = Atom::parse(&text);
            let _ = Cpv::parse(&text);
            let _ = Version::parse(&text);
        }
    }
}
