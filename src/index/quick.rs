//! A no-allocation pass over a `Packages` file that finds, per entry, what matching a
//! file needs (CPV, PATH, SIZE, MTIME, whether hashes are there). A warm run that finds
//! every file current stops after this pass; the full parse only runs when the index
//! must be rewritten. Anything unusual makes the pass give up, and the full parser
//! (which explains errors) takes over.

/// What matching a file against an entry needs, borrowed from the index text.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EntryKeys<'a> {
    pub cpv: &'a str,
    pub path: Option<&'a str>,
    pub size: Option<&'a str>,
    pub mtime: Option<&'a str>,
    /// MD5 and SHA1 both present and not empty.
    pub hashed: bool,
}

impl<'a> EntryKeys<'a> {
    pub fn of(entry: &'a super::Entry) -> Self {
        let md5 = entry.get("MD5").is_some_and(|v| !v.is_empty());
        let sha1 = entry.get("SHA1").is_some_and(|v| !v.is_empty());
        EntryKeys {
            cpv: entry.cpv(),
            path: entry.get("PATH"),
            size: entry.get("SIZE"),
            mtime: entry.get("MTIME"),
            hashed: md5 && sha1,
        }
    }
}

pub(crate) struct QuickIndex<'a> {
    pub header: Vec<(&'a str, &'a str)>,
    pub entries: Vec<EntryKeys<'a>>,
}

fn split(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = line.split_once(':')?;
    if key.is_empty() || key.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    if rest.is_empty() {
        return Some((key, rest));
    }
    rest.strip_prefix(' ').map(|value| (key, value))
}

/// Scans `text`; None when it is not plainly well-formed (then use the full parser).
pub(crate) fn scan(text: &str) -> Option<QuickIndex<'_>> {
    if text.contains('\r') {
        return None;
    }
    let body = text.trim_end_matches('\n');
    let (head, rest) = match body.split_once("\n\n") {
        Some((head, rest)) => (head, rest),
        None => (body, ""),
    };
    let mut header = Vec::with_capacity(32);
    for line in head.split('\n') {
        header.push(split(line)?);
    }
    let version = header.iter().find(|(k, _)| *k == "VERSION")?.1;
    if version.parse::<i64>().ok()? > i64::from(super::packages::VERSION) {
        return None;
    }
    let mut entries = Vec::with_capacity(rest.len() / 400 + 1);
    if rest.is_empty() {
        return Some(QuickIndex { header, entries });
    }
    for block in rest.split("\n\n") {
        if block.is_empty() {
            return None;
        }
        let mut keys = EntryKeys::default();
        let (mut md5, mut sha1) = (false, false);
        for line in block.split('\n') {
            let (key, value) = split(line)?;
            match key {
                "CPV" => keys.cpv = value,
                "PATH" => keys.path = Some(value),
                "SIZE" => keys.size = Some(value),
                "MTIME" => keys.mtime = Some(value),
                "MD5" => md5 = !value.is_empty(),
                "SHA1" => sha1 = !value.is_empty(),
                _ => {}
            }
        }
        if keys.cpv.is_empty() {
            return None;
        }
        keys.hashed = md5 && sha1;
        entries.push(keys);
    }
    Some(QuickIndex { header, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_full_parser_or_gives_up() {
        let good = "VERSION: 0\nCHOST: x\n\nCPV: a/b-1\nPATH: a/b/b-1-1.gpkg.tar\nSIZE: 3\nMTIME: 4\nMD5: m\nSHA1: s\n\nCPV: a/c-1\nMD5: m\n\n";
        let q = scan(good).expect("scans");
        assert_eq!(q.header, [("VERSION", "0"), ("CHOST", "x")]);
        assert_eq!(q.entries.len(), 2);
        assert_eq!(q.entries[0].path, Some("a/b/b-1-1.gpkg.tar"));
        assert!(q.entries[0].hashed && !q.entries[1].hashed);
        assert!(scan("VERSION: 0\n\n").is_some_and(|q| q.entries.is_empty()));
        for bad in [
            "VERSION: 1\n\n",
            "CHOST: x\n\n",
            "VERSION: 0\n\nPATH: x\n\n",
            "VERSION: 0\n\nCPV: a/b-1\n\n\nCPV: a/c-1\n",
            "VERSION: 0\r\n\r\n",
            "VERSION:0\n\n",
        ] {
            assert!(scan(bad).is_none(), "{bad:?}");
        }
    }
}
