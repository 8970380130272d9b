//! The gpkg Manifest (GLEP 74 `DATA` lines, GLEP 78): parsing, checking, writing, and
//! taking a clear-signed Manifest apart.
//!
//! A line is `DATA <member> <size> <HASH> <hex> [<HASH> <hex> ...]`. Portage writes the
//! hashes in varying order, so they are looked up by name. We compute BLAKE2B and
//! SHA512; a line must carry at least one of them, and every one it carries must match.

use std::io::{self, Write};

use blake2::{Blake2b512, Digest};
use sha2::Sha512;

pub const BLAKE2B: &str = "BLAKE2B";
pub const SHA512: &str = "SHA512";

const SIGNED_BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const SIGNATURE_BEGIN: &str = "-----BEGIN PGP SIGNATURE-----";
const SIGNATURE_END: &str = "-----END PGP SIGNATURE-----";

/// One `DATA` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Member name without the top directory, e.g. `image.tar.zst`.
    pub name: String,
    pub size: u64,
    /// (hash name, lower-case hex), in the order the line gave them.
    pub hashes: Vec<(String, String)>,
}

impl ManifestEntry {
    /// An entry with our two hashes, in the order GLEP 74 lists them.
    pub fn new(name: &str, size: u64, digests: &Digests) -> Self {
        ManifestEntry {
            name: name.to_owned(),
            size,
            hashes: vec![
                (BLAKE2B.to_owned(), digests.blake2b.clone()),
                (SHA512.to_owned(), digests.sha512.clone()),
            ],
        }
    }

    pub fn hash(&self, name: &str) -> Option<&str> {
        self.hashes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.as_str())
    }

    /// Checks a member's size and digests against this entry: every hash we know must
    /// match, and at least one must be present.
    pub fn check(&self, size: u64, digests: &Digests) -> Result<(), String> {
        if self.size != size {
            return Err(format!(
                "size mismatch: Manifest says {} bytes, member has {size}",
                self.size
            ));
        }
        let mut checked = 0;
        for (name, computed) in [(BLAKE2B, &digests.blake2b), (SHA512, &digests.sha512)] {
            if let Some(expected) = self.hash(name) {
                if expected != computed.as_str() {
                    return Err(format!(
                        "{name} mismatch: Manifest says {expected}, member hashes to {computed}"
                    ));
                }
                checked += 1;
            }
        }
        if checked == 0 {
            return Err(format!(
                "Manifest entry has neither {BLAKE2B} nor {SHA512}, nothing to check it with"
            ));
        }
        Ok(())
    }
}

/// The `DATA` lines of a Manifest, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    pub fn get(&self, name: &str) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Parses the (unsigned) Manifest text. Refuses other tags, duplicate names, bad
    /// sizes, malformed or duplicate hashes.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut entries: Vec<ManifestEntry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let lineno = index + 1;
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() {
                continue;
            }
            if words[0] != "DATA" {
                return Err(format!(
                    "line {lineno}: unsupported tag {:?} (only DATA)",
                    words[0]
                ));
            }
            if words.len() < 5 || words.len() % 2 == 0 {
                return Err(format!(
                    "line {lineno}: expected DATA <name> <size> (<HASH> <hex>)+"
                ));
            }
            let name = words[1];
            if !is_plain_member_name(name) {
                return Err(format!("line {lineno}: bad member name {name:?}"));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err(format!("line {lineno}: {name} listed twice"));
            }
            let size = words[2]
                .parse::<u64>()
                .map_err(|_| format!("line {lineno}: bad size {:?} for {name}", words[2]))?;
            let mut hashes: Vec<(String, String)> = Vec::new();
            for pair in words[3..].chunks(2) {
                let (hash_name, hex) = (pair[0], pair[1]);
                if hashes.iter().any(|(n, _)| n == hash_name) {
                    return Err(format!("line {lineno}: {hash_name} given twice for {name}"));
                }
                if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "line {lineno}: {hash_name} of {name} is not hex: {hex:?}"
                    ));
                }
                let expected_len = match hash_name {
                    BLAKE2B | SHA512 => Some(128),
                    _ => None,
                };
                if let Some(len) = expected_len {
                    if hex.len() != len {
                        return Err(format!(
                            "line {lineno}: {hash_name} of {name} has {} hex digits, expected {len}",
                            hex.len()
                        ));
                    }
                }
                hashes.push((hash_name.to_owned(), hex.to_ascii_lowercase()));
            }
            entries.push(ManifestEntry {
                name: name.to_owned(),
                size,
                hashes,
            });
        }
        Ok(Manifest { entries })
    }

    /// One line per entry, each ending in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str("DATA ");
            out.push_str(&e.name);
            out.push(' ');
            out.push_str(&e.size.to_string());
            for (name, hex) in &e.hashes {
                out.push(' ');
                out.push_str(name);
                out.push(' ');
                out.push_str(hex);
            }
            out.push('\n');
        }
        out
    }
}

/// A member name as the Manifest and the container use it: one path component.
pub fn is_plain_member_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name
            .bytes()
            .any(|b| b == 0 || b.is_ascii_whitespace() || b.is_ascii_control())
}

/// The Manifest member's text, with the clear-signature framing taken off (unchecked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestText {
    /// The DATA lines (dash-escaping undone when it was clear-signed).
    pub body: String,
    pub clear_signed: bool,
}

/// Splits a Manifest member into its body, stripping an OpenPGP clear-signature frame
/// (RFC 4880 section 7) without checking it. Refuses text around or inside the frame
/// that is not part of it, so the body is exactly what a signature would cover.
pub fn split_clear_signed(raw: &str) -> Result<ManifestText, String> {
    if !raw.starts_with(SIGNED_BEGIN) {
        if raw.contains("-----BEGIN PGP") {
            return Err("OpenPGP block in an unsigned Manifest".into());
        }
        return Ok(ManifestText {
            body: raw.to_owned(),
            clear_signed: false,
        });
    }
    let mut lines = raw.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    lines.next(); // the BEGIN line
                  // Armor headers (`Hash: SHA512`) up to the first empty line.
    loop {
        match lines.next() {
            None => return Err("clear-signed Manifest ends inside its armor headers".into()),
            Some("") => break,
            Some(header) if header.contains(':') => {}
            Some(other) => {
                return Err(format!("clear-signed Manifest: bad armor header {other:?}"))
            }
        }
    }
    let mut body_lines: Vec<&str> = Vec::new();
    let mut found_signature = false;
    for line in lines.by_ref() {
        if line == SIGNATURE_BEGIN {
            found_signature = true;
            break;
        }
        if line.starts_with("-----") {
            return Err(format!(
                "clear-signed Manifest: unexpected armor line {line:?}"
            ));
        }
        body_lines.push(line.strip_prefix("- ").unwrap_or(line));
    }
    if !found_signature {
        return Err("clear-signed Manifest has no signature block".into());
    }
    let mut found_end = false;
    for line in lines.by_ref() {
        if line == SIGNATURE_END {
            found_end = true;
            break;
        }
    }
    if !found_end {
        return Err("clear-signed Manifest: signature block is not closed".into());
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("text after the clear-signed Manifest's signature".into());
    }
    let mut body = body_lines.join("\n");
    body.push('\n');
    Ok(ManifestText {
        body,
        clear_signed: true,
    })
}

/// BLAKE2B and SHA512 of some bytes, as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub blake2b: String,
    pub sha512: String,
}

impl Digests {
    pub fn of(data: &[u8]) -> Digests {
        let mut w = DigestWriter::new(io::sink());
        // Writing to a sink cannot fail.
        let _ = w.write_all(data);
        w.finish().1
    }
}

/// Passes bytes through to `inner` while hashing and counting them.
pub struct DigestWriter<W> {
    inner: W,
    blake2b: Blake2b512,
    sha512: Sha512,
    count: u64,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            blake2b: Blake2b512::new(),
            sha512: Sha512::new(),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer and the digests of everything written.
    pub fn finish(self) -> (W, Digests) {
        let digests = Digests {
            blake2b: hex::encode(self.blake2b.finalize()),
            sha512: hex::encode(self.sha512.finalize()),
        };
        (self.inner, digests)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.blake2b.update(&buf[..n]);
        self.sha512.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests_empty() -> Digests {
        Digests::of(b"")
    }

    #[test]
    fn parses_hashes_in_any_order_and_checks_them() {
        let d = digests_empty();
        let text = format!(
            "DATA gpkg-1 0 SHA512 {} BLAKE2B {}\nDATA image.tar.zst 5 BLAKE2B {} SHA256 abcd\n",
            d.sha512, d.blake2b, d.blake2b
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.get("gpkg-1").unwrap().check(0, &d), Ok(()));
        // Unknown hashes are carried but not checked.
        assert_eq!(m.get("image.tar.zst").unwrap().hash("SHA256"), Some("abcd"));
        let err = m.get("image.tar.zst").unwrap().check(4, &d).unwrap_err();
        assert!(err.contains("size mismatch"), "{err}");
        let other = Digests::of(b"x");
        let err = m.get("gpkg-1").unwrap().check(0, &other).unwrap_err();
        assert!(err.contains("mismatch"), "{err}");
    }

    #[test]
    fn requires_a_known_hash() {
        let m = Manifest::parse("DATA gpkg-1 0 SHA256 00\n").unwrap();
        let err = m
            .get("gpkg-1")
            .unwrap()
            .check(0, &digests_empty())
            .unwrap_err();
        assert!(err.contains("neither"), "{err}");
    }

    #[test]
    fn refuses_malformed_lines() {
        let d = digests_empty();
        for bad in [
            "MISC foo 0 SHA512 00\n".to_string(),
            "DATA foo x SHA512 00\n".to_string(),
            "DATA foo 0 SHA512\n".to_string(),
            "DATA ../x 0 SHA512 00\n".to_string(),
            format!("DATA a 0 SHA512 {0}\nDATA a 0 SHA512 {0}\n", d.sha512),
            format!("DATA a 0 SHA512 {0} SHA512 {0}\n", d.sha512),
            "DATA a 0 SHA512 zz\n".to_string(),
            "DATA a 0 BLAKE2B abcd\n".to_string(),
        ] {
            assert!(Manifest::parse(&bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn render_parses_back() {
        let d = Digests::of(b"hello");
        let m = Manifest {
            entries: vec![
                ManifestEntry::new("gpkg-1", 0, &digests_empty()),
                ManifestEntry::new("image.tar.zst", 5, &d),
            ],
        };
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
    }

    #[test]
    fn strips_clear_signature_and_dash_escapes() {
        let raw = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nDATA a 0 SHA512 00\n- -dashed\n-----BEGIN PGP SIGNATURE-----\n\nabc\n=x\n-----END PGP SIGNATURE-----\n";
        let t = split_clear_signed(raw).unwrap();
        assert!(t.clear_signed);
        assert_eq!(t.body, "DATA a 0 SHA512 00\n-dashed\n");
        let plain = split_clear_signed("DATA a 0 SHA512 00\n").unwrap();
        assert!(!plain.clear_signed);
    }

    #[test]
    fn refuses_text_outside_the_signed_part() {
        let trailing = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nDATA a\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\nDATA evil 0 SHA512 00\n";
        assert!(split_clear_signed(trailing).is_err());
        let leading = "DATA evil 0 SHA512 00\n-----BEGIN PGP SIGNED MESSAGE-----\n";
        assert!(split_clear_signed(leading).is_err());
        let unclosed = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nDATA a\n";
        assert!(split_clear_signed(unclosed).is_err());
    }
}
