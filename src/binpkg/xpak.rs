//! Legacy xpak binpkgs (`.tbz2` / `.xpak`): a compressed image tar followed by an XPAK
//! segment and a trailer.
//!
//! ```text
//! <compressed tar> | "XPAKPACK" index_len:u32 data_len:u32 index data "XPAKSTOP" | xpak_len:u32 "STOP"
//! index entry: name_len:u32 name data_offset:u32 data_len:u32     (big-endian)
//! ```
//! `xpak_len` covers the segment from XPAKPACK to XPAKSTOP. Every length and offset
//! comes from the file, so each is bounds-checked before use.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::binpkg::compress::Compression;
use crate::binpkg::{
    is_metadata_key, limits, Binpkg, BinpkgError, Format, Member, Metadata, SignatureStatus,
};

const TRAILER_LEN: u64 = 8; // xpak_len + "STOP"
const HEADER_LEN: usize = 16; // "XPAKPACK" + two lengths
const END_MAGIC: &[u8] = b"XPAKSTOP";

/// Where the parts of an xpak file are.
#[derive(Debug, Clone)]
pub struct XpakLayout {
    /// Length of the compressed image tar at the start of the file.
    pub image_len: u64,
    pub image_compression: Compression,
    /// Length of the XPAK segment (XPAKPACK .. XPAKSTOP).
    pub segment_len: u64,
    pub files: BTreeMap<String, Vec<u8>>,
}

fn member_error(path: &Path, member: &str, message: impl Into<String>) -> BinpkgError {
    BinpkgError::Member {
        path: path.to_owned(),
        member: member.to_owned(),
        message: message.into(),
    }
}

fn io_error(path: &Path, source: io::Error) -> BinpkgError {
    BinpkgError::Io {
        path: path.to_owned(),
        source,
    }
}

/// True when the file ends like an xpak (`STOP` trailer).
pub fn looks_like_xpak(file: &mut File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    if len < TRAILER_LEN {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 4))?;
    let mut stop = [0u8; 4];
    file.read_exact(&mut stop)?;
    Ok(&stop == b"STOP")
}

fn be32(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
}

/// Parses the trailer and XPAK segment.
pub fn layout(path: &Path) -> Result<XpakLayout, BinpkgError> {
    let seg = "XPAK";
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
    if file_len < TRAILER_LEN {
        return Err(member_error(
            path,
            seg,
            "file too short for an xpak trailer",
        ));
    }
    file.seek(SeekFrom::Start(file_len - TRAILER_LEN))
        .map_err(|e| io_error(path, e))?;
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact(&mut trailer)
        .map_err(|e| io_error(path, e))?;
    if &trailer[4..] != b"STOP" {
        return Err(member_error(
            path,
            seg,
            "no STOP trailer (not an xpak, or truncated)",
        ));
    }
    let segment_len = be32(&trailer, 0).unwrap_or(0);
    if segment_len < (HEADER_LEN + END_MAGIC.len()) as u64 {
        return Err(member_error(
            path,
            seg,
            format!("segment length {segment_len} is too small"),
        ));
    }
    if segment_len > file_len - TRAILER_LEN {
        return Err(member_error(
            path,
            seg,
            format!(
                "segment length {segment_len} is past the start of the file ({file_len} bytes)"
            ),
        ));
    }
    if segment_len > limits::METADATA_TOTAL_MAX {
        return Err(member_error(
            path,
            seg,
            format!(
                "segment of {segment_len} bytes is over the {} MiB metadata limit",
                limits::METADATA_TOTAL_MAX >> 20
            ),
        ));
    }
    let image_len = file_len - TRAILER_LEN - segment_len;
    file.seek(SeekFrom::Start(image_len))
        .map_err(|e| io_error(path, e))?;
    let mut segment = vec![0u8; segment_len as usize];
    file.read_exact(&mut segment)
        .map_err(|e| io_error(path, e))?;
    let files = parse_segment(&segment).map_err(|m| member_error(path, seg, m))?;

    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error(path, e))?;
    let mut head = [0u8; 8];
    let head_len = (image_len as usize).min(head.len());
    file.read_exact(&mut head[..head_len])
        .map_err(|e| io_error(path, e))?;
    Ok(XpakLayout {
        image_len,
        image_compression: Compression::sniff(&head[..head_len]),
        segment_len,
        files,
    })
}

/// Parses an XPAK segment (XPAKPACK .. XPAKSTOP) into its named entries.
pub fn parse_segment(segment: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    if !segment.starts_with(b"XPAKPACK") {
        return Err("segment does not start with XPAKPACK".into());
    }
    if !segment.ends_with(END_MAGIC) {
        return Err("segment does not end with XPAKSTOP".into());
    }
    let index_len = be32(segment, 8).ok_or("short header")? as usize;
    let data_len = be32(segment, 12).ok_or("short header")? as usize;
    let expected = HEADER_LEN as u64 + index_len as u64 + data_len as u64 + END_MAGIC.len() as u64;
    if expected != segment.len() as u64 {
        return Err(format!(
            "index ({index_len}) and data ({data_len}) lengths do not add up to the segment length {}",
            segment.len()
        ));
    }
    let index = &segment[HEADER_LEN..HEADER_LEN + index_len];
    let data = &segment[HEADER_LEN + index_len..HEADER_LEN + index_len + data_len];
    let mut files = BTreeMap::new();
    let mut at = 0usize;
    while at < index.len() {
        let name_len =
            be32(index, at).ok_or_else(|| format!("index entry at {at}: cut short"))? as usize;
        let name_start = at + 4;
        let name_end = name_start
            .checked_add(name_len)
            .filter(|&e| e <= index.len())
            .ok_or_else(|| {
                format!("index entry at {at}: name length {name_len} runs past the index")
            })?;
        let name = std::str::from_utf8(&index[name_start..name_end])
            .map_err(|_| format!("index entry at {at}: name is not UTF-8"))?;
        let offset =
            be32(index, name_end).ok_or_else(|| format!("index entry {name:?}: cut short"))?;
        let len =
            be32(index, name_end + 4).ok_or_else(|| format!("index entry {name:?}: cut short"))?;
        if !is_metadata_key(name) {
            return Err(format!("index entry {name:?}: not a plain metadata key"));
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= data.len() as u64)
            .ok_or_else(|| {
                format!(
                    "entry {name:?}: bytes {offset}..+{len} are outside the {} byte data area",
                    data.len()
                )
            })?;
        if files.len() >= limits::METADATA_ENTRIES_MAX {
            return Err(format!(
                "more than {} entries",
                limits::METADATA_ENTRIES_MAX
            ));
        }
        if files
            .insert(
                name.to_owned(),
                data[offset as usize..end as usize].to_vec(),
            )
            .is_some()
        {
            return Err(format!("entry {name:?} appears twice"));
        }
        at = name_end + 8;
    }
    Ok(files)
}

pub fn read(path: &Path) -> Result<Binpkg, BinpkgError> {
    let layout = layout(path)?;
    let image_name = format!("image.tar{}", layout.image_compression.suffix());
    Ok(Binpkg {
        format: Format::Xpak,
        top_dir: None,
        metadata: Metadata::from_files(&layout.files),
        members: vec![
            Member {
                name: image_name,
                size: layout.image_len,
            },
            Member {
                name: "XPAK".into(),
                size: layout.segment_len + TRAILER_LEN,
            },
        ],
        signature: SignatureStatus::Unsigned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (name, value) in entries {
            index.extend_from_slice(&(name.len() as u32).to_be_bytes());
            index.extend_from_slice(name.as_bytes());
            index.extend_from_slice(&(data.len() as u32).to_be_bytes());
            index.extend_from_slice(&(value.len() as u32).to_be_bytes());
            data.extend_from_slice(value);
        }
        let mut out = b"XPAKPACK".to_vec();
        out.extend_from_slice(&(index.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&index);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"XPAKSTOP");
        out
    }

    #[test]
    fn parses_entries() {
        let seg = segment(&[("CATEGORY", b"app-misc\n"), ("PF", b"hello-1.0\n")]);
        let files = parse_segment(&seg).unwrap();
        assert_eq!(files["CATEGORY"], b"app-misc\n");
        assert_eq!(files["PF"], b"hello-1.0\n");
    }

    #[test]
    fn refuses_out_of_bounds_offsets() {
        let mut seg = segment(&[("PF", b"hello-1.0\n")]);
        // data_offset of the only entry: after XPAKPACK, 2 lengths, name_len, "PF".
        let at = 16 + 4 + 2;
        seg[at..at + 4].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        let err = parse_segment(&seg).unwrap_err();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn refuses_name_running_past_index() {
        let mut seg = segment(&[("PF", b"x")]);
        seg[16..20].copy_from_slice(&1000u32.to_be_bytes());
        let err = parse_segment(&seg).unwrap_err();
        assert!(err.contains("past the index"), "{err}");
    }

    #[test]
    fn refuses_bad_lengths_and_names() {
        let mut seg = segment(&[("PF", b"x")]);
        seg[12..16].copy_from_slice(&99u32.to_be_bytes());
        assert!(parse_segment(&seg).is_err());
        let seg = segment(&[("../etc/passwd", b"x")]);
        assert!(parse_segment(&seg).is_err());
        let seg = segment(&[("PF", b"x"), ("PF", b"y")]);
        assert!(parse_segment(&seg).is_err());
    }
}
