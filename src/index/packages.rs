//! The `Packages` file format: parse and render, the way Portage reads and writes it.
//!
//! Layout: a header block of `Key: value` lines, a blank line, then one block per
//! package, each followed by a blank line. Keys are written sorted by Portage's
//! internal names (so `MTIME` and `REPO`, internally `_mtime_` and `repository`, come
//! last), empty values are left out, and so are package values equal to Portage's
//! defaults (`EAPI: 0`, `SLOT: 0`) or to the header's (`CHOST`, `REPO`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use super::IndexError;

/// Index format version Portage writes and accepts (readers refuse a higher one).
pub const VERSION: u32 = 0;

/// Package keys whose value, when equal to the header's, is left out of the entry
/// (and filled back in from the header when reading).
pub const INHERITED_KEYS: [&str; 2] = ["CHOST", "REPO"];

/// Package keys with the value Portage assumes when the key is absent; an entry
/// holding exactly this value is written without the key. Every other key
/// defaults to the empty string.
pub const NON_EMPTY_DEFAULTS: [(&str, &str); 2] = [("EAPI", "0"), ("SLOT", "0")];

/// Keys Portage keeps in a package entry when it reads an index (others are dropped).
pub const ALLOWED_ENTRY_KEYS: [&str; 32] = [
    "BASE_URI",
    "BDEPEND",
    "BUILD_ID",
    "BUILD_TIME",
    "CHOST",
    "CPV",
    "DEFINED_PHASES",
    "DEPEND",
    "DESC",
    "EAPI",
    "FETCHCOMMAND",
    "IDEPEND",
    "IUSE",
    "KEYWORDS",
    "LICENSE",
    "MD5",
    "MTIME",
    "PATH",
    "PDEPEND",
    "PKGINDEX_URI",
    "PROPERTIES",
    "PROVIDES",
    "RDEPEND",
    "REPO",
    "REQUIRES",
    "RESTRICT",
    "RESUMECOMMAND",
    "SHA1",
    "SIZE",
    "SLOT",
    "USE",
    "USER_PATCHES",
];

/// The name Portage sorts a key by: file names `DESC`, `MTIME`, `REPO` are
/// `DESCRIPTION`, `_mtime_`, `repository` inside Portage.
fn sort_name(key: &str) -> &str {
    match key {
        "DESC" => "DESCRIPTION",
        "MTIME" => "_mtime_",
        "REPO" => "repository",
        other => other,
    }
}

/// The file name of a key Portage may hand over under its internal name.
fn file_name(key: &str) -> &str {
    match key {
        "DESCRIPTION" => "DESC",
        "_mtime_" => "MTIME",
        "repository" => "REPO",
        other => other,
    }
}

/// A package's default value for `key` (what an absent key means).
pub fn default_value(key: &str) -> &'static str {
    NON_EMPTY_DEFAULTS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, v)| v)
}

/// One package block. Keys are the names used in the file (`MTIME`, `REPO`, `DESC`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub fields: BTreeMap<String, String>,
}

impl Entry {
    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The value as Portage sees it: the stored one, else the key's default.
    pub fn value(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| default_value(key))
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.fields.insert(key.into(), value.into());
    }

    /// `CPV` (present in every parsed entry).
    pub fn cpv(&self) -> &str {
        self.value("CPV")
    }

    /// `PATH`, relative to PKGDIR (empty for old indexes that did not record it).
    pub fn path(&self) -> &str {
        self.value("PATH")
    }

    /// BUILD_ID as a number (0 when absent or not a number).
    pub fn build_id(&self) -> u64 {
        self.value("BUILD_ID").parse().unwrap_or(0)
    }
}

/// A whole `Packages` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackagesIndex {
    /// Header keys as written (`VERSION`, `TIMESTAMP`, `PACKAGES` included when read).
    pub header: BTreeMap<String, String>,
    /// Package entries in file order.
    pub entries: Vec<Entry>,
}

/// Splits one `Key: value` line. Portage writes exactly one space after the colon.
fn split_line<'a>(
    line: &'a str,
    path: &Path,
    line_number: usize,
) -> Result<(&'a str, &'a str), IndexError> {
    let parse_error = |message: String| IndexError::Parse {
        path: path.to_owned(),
        line: line_number,
        message,
    };
    let Some((key, rest)) = line.split_once(':') else {
        return Err(parse_error(format!(
            "expected `Key: value`, found {line:?}"
        )));
    };
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(parse_error(format!("invalid key {key:?}")));
    }
    let value = if rest.is_empty() {
        rest
    } else if let Some(value) = rest.strip_prefix(' ') {
        value
    } else {
        return Err(parse_error(format!(
            "expected a space after `{key}:`, found {line:?}"
        )));
    };
    Ok((key, value))
}

impl PackagesIndex {
    /// Reads and parses a `Packages` file (see [`PackagesIndex::parse`]).
    pub fn read(path: &Path) -> Result<Self, IndexError> {
        let bytes = std::fs::read(path).map_err(|source| IndexError::Io {
            path: path.to_owned(),
            source,
        })?;
        // Portage reads with errors="replace": keep going on stray bytes the same way.
        let text = String::from_utf8_lossy(&bytes);
        Self::parse(&text, path)
    }

    /// Parses the text of a `Packages` file; `path` is only used in error messages.
    ///
    /// Stricter than Portage where Portage would silently lose data: a line without
    /// `Key: value`, a repeated key, an entry without `CPV`, two blank lines in a row
    /// (Portage stops reading there), and a missing or unsupported `VERSION` are errors.
    /// Entries get the header's `CHOST`/`REPO` when they have none (as Portage reads them).
    pub fn parse(text: &str, path: &Path) -> Result<Self, IndexError> {
        let mut index = PackagesIndex::default();
        let mut current: Option<(usize, Entry)> = None;
        let mut in_header = true;
        let mut previous_blank = false;
        let mut last_line = 0;

        // Blank lines at the very end close the last block; nothing follows them.
        let body = text.trim_end_matches(['\n', '\r']);
        for (i, raw) in body.split('\n').enumerate() {
            let line_number = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            last_line = line_number;
            if line.is_empty() {
                if in_header {
                    in_header = false;
                } else if let Some((start, entry)) = current.take() {
                    index.finish_entry(entry, path, start)?;
                } else if previous_blank {
                    return Err(IndexError::Parse {
                        path: path.to_owned(),
                        line: line_number,
                        message: "empty package block (two blank lines in a row); \
                                  Portage stops reading the index here"
                            .into(),
                    });
                }
                previous_blank = true;
                continue;
            }
            previous_blank = false;
            let (key, value) = split_line(line, path, line_number)?;
            let target = if in_header {
                &mut index.header
            } else {
                &mut current
                    .get_or_insert_with(|| (line_number, Entry::default()))
                    .1
                    .fields
            };
            if target.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(IndexError::Parse {
                    path: path.to_owned(),
                    line: line_number,
                    message: format!("key `{key}` appears twice in this block"),
                });
            }
        }
        if let Some((start, entry)) = current.take() {
            index.finish_entry(entry, path, start)?;
        }
        index.check_version(path, last_line)?;
        Ok(index)
    }

    fn finish_entry(
        &mut self,
        mut entry: Entry,
        path: &Path,
        start: usize,
    ) -> Result<(), IndexError> {
        if entry.get("CPV").is_none_or(str::is_empty) {
            return Err(IndexError::Parse {
                path: path.to_owned(),
                line: start,
                message: "package block without CPV".into(),
            });
        }
        for key in INHERITED_KEYS {
            if let Some(v) = self.header.get(key).filter(|v| !v.is_empty()) {
                entry
                    .fields
                    .entry(key.to_owned())
                    .or_insert_with(|| v.clone());
            }
        }
        self.entries.push(entry);
        Ok(())
    }

    fn check_version(&self, path: &Path, last_line: usize) -> Result<(), IndexError> {
        let version = self
            .header
            .get("VERSION")
            .ok_or_else(|| IndexError::Parse {
                path: path.to_owned(),
                line: last_line.max(1),
                message: "header has no VERSION (Portage ignores such an index)".into(),
            })?;
        match version.parse::<i64>() {
            Ok(v) if v <= i64::from(VERSION) => Ok(()),
            _ => Err(IndexError::Parse {
                path: path.to_owned(),
                line: 1,
                message: format!(
                    "unsupported VERSION {version:?} (Portage reads VERSION {VERSION} and below)"
                ),
            }),
        }
    }

    /// Renders the file as Portage writes it, with `TIMESTAMP` set to `timestamp` and
    /// `PACKAGES` to the number of entries. Entries are ordered by CPV; entries with the
    /// same CPV keep their order in `entries` (Portage's sort is stable too).
    pub fn render(&self, timestamp: u64) -> String {
        let mut header: Vec<(&str, Cow<'_, str>)> = self
            .header
            .iter()
            .filter(|(k, _)| k.as_str() != "TIMESTAMP" && k.as_str() != "PACKAGES")
            .map(|(k, v)| (file_name(k), Cow::Borrowed(v.as_str())))
            .collect();
        header.push(("TIMESTAMP", Cow::Owned(timestamp.to_string())));
        header.push(("PACKAGES", Cow::Owned(self.entries.len().to_string())));
        header.sort_by(|a, b| sort_name(a.0).cmp(sort_name(b.0)));

        let mut out = String::with_capacity(1024 + self.entries.len() * 512);
        for (key, value) in &header {
            write_line(&mut out, key, value);
        }
        out.push('\n');

        let mut keys: Vec<(&str, &str)> = Vec::with_capacity(32);
        for entry in self.written_order() {
            keys.clear();
            keys.extend(self.written_fields(entry));
            keys.sort_by(|a, b| sort_name(a.0).cmp(sort_name(b.0)));
            for (key, value) in &keys {
                write_line(&mut out, key, value);
            }
            out.push('\n');
        }
        out
    }

    /// Entries in the order they are written: by CPV, ties in `entries` order.
    pub fn written_order(&self) -> Vec<&Entry> {
        let mut order: Vec<&Entry> = self.entries.iter().collect();
        order.sort_by(|a, b| a.cpv().cmp(b.cpv()));
        order
    }

    /// The fields of `entry` that are written (file key names, in name order): empty
    /// values, default values and values equal to the header's inherited ones left out.
    pub fn written_fields<'a>(
        &'a self,
        entry: &'a Entry,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        entry.fields.iter().filter_map(move |(key, value)| {
            let key = file_name(key);
            let value = value.as_str();
            let inherited = INHERITED_KEYS.contains(&key)
                && self
                    .header
                    .get(key)
                    .is_some_and(|h| !h.is_empty() && h == value);
            (!value.is_empty() && value != default_value(key) && !inherited).then_some((key, value))
        })
    }
}

/// Whether Portage keeps `key` in an entry when it reads an index.
pub fn is_allowed_entry_key(key: &str) -> bool {
    ALLOWED_ENTRY_KEYS.binary_search(&key).is_ok()
}

fn write_line(out: &mut String, key: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    out.push_str(key);
    out.push_str(": ");
    out.push_str(value);
    out.push('\n');
}

/// `REPO_REVISIONS` header value for `revisions` (repository name -> commit), formatted
/// as Portage does (`json.dumps(..., ensure_ascii=False, sort_keys=True)`).
pub fn repo_revisions_json(revisions: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (name, revision)) in revisions.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_string(&mut out, name);
        out.push_str(": ");
        json_string(&mut out, revision);
    }
    out.push('}');
    out
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_keys_are_sorted_for_binary_search() {
        assert!(ALLOWED_ENTRY_KEYS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_allowed_entry_key("MTIME") && !is_allowed_entry_key("REPO_REVISIONS"));
    }
}
