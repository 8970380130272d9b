//! Compression of the inner archives: told apart by member-name suffix (gpkg) or by
//! magic bytes (xpak). zstd, gzip, bzip2 and uncompressed are read; the others that
//! Portage can write are recognised and refused by name.

use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
    Gzip,
    Bzip2,
    Xz,
    Lz4,
    Lzip,
    Lzo,
}

const SUFFIXES: [(Compression, &str); 7] = [
    (Compression::Zstd, ".zst"),
    (Compression::Gzip, ".gz"),
    (Compression::Bzip2, ".bz2"),
    (Compression::Xz, ".xz"),
    (Compression::Lz4, ".lz4"),
    (Compression::Lzip, ".lz"),
    (Compression::Lzo, ".lzo"),
];

impl Compression {
    /// File-name suffix (`.zst`), empty when uncompressed.
    pub fn suffix(self) -> &'static str {
        SUFFIXES
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, s)| *s)
            .unwrap_or("")
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
            Compression::Lzip => "lzip",
            Compression::Lzo => "lzop",
        }
    }

    /// Guesses from the first bytes of a stream (xpak packages carry no suffix inside).
    /// Data without a known magic is taken as an uncompressed tar.
    pub fn sniff(head: &[u8]) -> Compression {
        const MAGICS: [(&[u8], Compression); 7] = [
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0x1f, 0x8b], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x04, 0x22, 0x4d, 0x18], Compression::Lz4),
            (b"LZIP", Compression::Lzip),
            (&[0x89, b'L', b'Z', b'O', 0x00], Compression::Lzo),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| head.starts_with(magic))
            .map(|(_, c)| *c)
            .unwrap_or(Compression::None)
    }

    /// A reader of the decompressed stream; an error names an unsupported format.
    pub fn decoder<'a, R: Read + 'a>(self, input: R) -> Result<Box<dyn Read + 'a>, String> {
        match self {
            Compression::None => Ok(Box::new(input)),
            Compression::Zstd => zstd::stream::read::Decoder::new(input)
                .map(|d| Box::new(d) as Box<dyn Read>)
                .map_err(|e| format!("zstd decoder: {e}")),
            Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(input))),
            Compression::Bzip2 => Ok(Box::new(bzip2::read::MultiBzDecoder::new(input))),
            other => Err(format!(
                "{} compression is not supported (zstd, gzip, bzip2 or none)",
                other.name()
            )),
        }
    }
}

/// Splits an inner archive name into its stem and compression:
/// `image.tar.zst` -> (`image`, zstd), `metadata.tar` -> (`metadata`, none).
/// Names that are not `<stem>.tar[<suffix>]` give None.
pub fn split_archive_name(name: &str) -> Option<(&str, Compression)> {
    if let Some(stem) = name.strip_suffix(".tar") {
        return Some((stem, Compression::None));
    }
    SUFFIXES.iter().find_map(|(c, suffix)| {
        name.strip_suffix(suffix)
            .and_then(|rest| rest.strip_suffix(".tar"))
            .map(|stem| (stem, *c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names() {
        assert_eq!(
            split_archive_name("image.tar.zst"),
            Some(("image", Compression::Zstd))
        );
        assert_eq!(
            split_archive_name("metadata.tar"),
            Some(("metadata", Compression::None))
        );
        assert_eq!(
            split_archive_name("image.tar.lz"),
            Some(("image", Compression::Lzip))
        );
        assert_eq!(split_archive_name("image.tar.zst.sig"), None);
        assert_eq!(split_archive_name("Manifest"), None);
    }

    #[test]
    fn sniffs_magic() {
        let z = zstd::encode_all(&b"x"[..], 1).unwrap();
        assert_eq!(Compression::sniff(&z), Compression::Zstd);
        assert_eq!(Compression::sniff(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(Compression::sniff(b"usr/"), Compression::None);
    }

    #[test]
    fn refuses_unsupported_by_name() {
        let err = Compression::Xz.decoder(&b""[..]).err().unwrap();
        assert!(err.contains("xz"), "{err}");
    }
}
