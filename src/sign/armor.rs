//! Finding ASCII-armored blocks in a file: gpg writes one block per export, but key files are
//! often several exports concatenated (`cat a.asc b.asc`), which rPGP's reader stops after.

/// One `-----BEGIN PGP ...-----` ... `-----END PGP ...-----` block.
pub(crate) struct ArmorBlock<'a> {
    /// The label between `BEGIN ` and the closing dashes, e.g. `PGP PUBLIC KEY BLOCK`.
    pub label: &'a str,
    /// The whole block, both marker lines included.
    pub text: &'a str,
}

/// Splits `text` into armor blocks. Text outside blocks is ignored (gpg does the same).
/// An opened block that never ends is an error naming its label.
pub(crate) fn armor_blocks(text: &str) -> Result<Vec<ArmorBlock<'_>>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, &str)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim_end();
        match open {
            None => {
                if let Some(label) = trimmed
                    .strip_prefix("-----BEGIN ")
                    .and_then(|rest| rest.strip_suffix("-----"))
                {
                    open = Some((start, label));
                }
            }
            Some((block_start, label)) => {
                let ends = trimmed
                    .strip_prefix("-----END ")
                    .and_then(|rest| rest.strip_suffix("-----"))
                    .is_some_and(|end_label| end_label == label);
                if ends {
                    blocks.push(ArmorBlock {
                        label,
                        text: &text[block_start..offset],
                    });
                    open = None;
                }
            }
        }
    }
    match open {
        Some((_, label)) => Err(format!("the armored block `{label}` has no END line")),
        None => Ok(blocks),
    }
}

/// Whether the data looks like binary OpenPGP packets rather than armored text: the first
/// byte of a packet has its high bit set, and no armor begins with such a byte.
pub(crate) fn looks_binary(data: &[u8]) -> bool {
    data.first().is_some_and(|first| first & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_concatenated_blocks_and_skips_surrounding_text() {
        let text = "comment\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n\
                    junk\r\n-----BEGIN PGP PRIVATE KEY BLOCK-----\r\n\r\nBBBB\r\n-----END PGP PRIVATE KEY BLOCK-----\r\n";
        let blocks = armor_blocks(text).expect("two blocks");
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "PGP PUBLIC KEY BLOCK");
        assert!(blocks[0].text.starts_with("-----BEGIN PGP PUBLIC"));
        assert!(blocks[0]
            .text
            .ends_with("-----END PGP PUBLIC KEY BLOCK-----\n"));
        assert_eq!(blocks[1].label, "PGP PRIVATE KEY BLOCK");
        assert!(blocks[1].text.contains("BBBB"));
    }

    #[test]
    fn unterminated_block_is_an_error() {
        let err = armor_blocks("-----BEGIN PGP SIGNATURE-----\n\nAAAA\n").err();
        assert_eq!(
            err.as_deref(),
            Some("the armored block `PGP SIGNATURE` has no END line")
        );
        assert!(armor_blocks("no armor here\n")
            .expect("no blocks")
            .is_empty());
    }

    #[test]
    fn binary_detection() {
        assert!(looks_binary(&[0x99, 0x01]));
        assert!(!looks_binary(b"-----BEGIN"));
        assert!(!looks_binary(b""));
    }
}
