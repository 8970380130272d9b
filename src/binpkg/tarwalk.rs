//! Walking a tar stream with bounded memory, and writing an outer (container) tar.
//!
//! Reading uses the `tar` crate in raw mode and resolves GNU long names/links and pax
//! `path`/`linkpath` here, with caps: the crate's own resolution reads an extension
//! entry of any size into memory, which a decompression bomb can abuse.

use std::io::{self, Read, Seek, SeekFrom, Write};

use tar::{EntryType, Header};

/// Longest path or link target accepted from an extension header.
const LONG_NAME_MAX: u64 = 64 * 1024;
/// Largest pax extended header accepted.
const PAX_MAX: u64 = 1024 * 1024;
pub const BLOCK: u64 = 512;
/// GNU tar and Python's tarfile pad archives to 20 blocks; so do we.
const RECORD: u64 = 20 * BLOCK;

/// One entry of a tar stream, with extension headers applied.
pub struct Item<'e, 'a, R: Read> {
    pub entry: &'e mut tar::Entry<'a, R>,
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub kind: EntryType,
    pub size: u64,
    /// Offset of the entry's data from the start of the stream.
    pub data_offset: u64,
}

/// Calls `visit` for every entry. Structural problems (bad checksum, truncation,
/// oversized or dangling extension headers) go through `tar_error`, with the path of
/// the last good entry for context.
pub fn walk<R: Read, E>(
    reader: R,
    tar_error: impl Fn(String) -> E,
    mut visit: impl FnMut(&mut Item<'_, '_, R>) -> Result<(), E>,
) -> Result<(), E> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| tar_error(format!("not a tar archive: {e}")))?
        .raw(true);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut last = String::from("(start of archive)");
    for next in entries {
        let mut entry = next.map_err(|e| tar_error(format!("after {last}: {e}")))?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::GNULongName | EntryType::GNULongLink => {
                let mut value = read_extension(&mut entry, LONG_NAME_MAX)
                    .map_err(|e| tar_error(format!("after {last}: long name: {e}")))?;
                while value.last() == Some(&0) {
                    value.pop();
                }
                let slot = if kind == EntryType::GNULongName {
                    &mut long_name
                } else {
                    &mut long_link
                };
                if slot.replace(value).is_some() {
                    return Err(tar_error(format!("after {last}: two long-name headers")));
                }
                continue;
            }
            EntryType::XHeader => {
                let data = read_extension(&mut entry, PAX_MAX)
                    .map_err(|e| tar_error(format!("after {last}: pax header: {e}")))?;
                for (key, value) in parse_pax(&data)
                    .map_err(|e| tar_error(format!("after {last}: pax header: {e}")))?
                {
                    match key.as_str() {
                        "path" => long_name = Some(value),
                        "linkpath" => long_link = Some(value),
                        "size" => {
                            let text = String::from_utf8_lossy(&value).into_owned();
                            pax_size = Some(text.parse().map_err(|_| {
                                tar_error(format!("after {last}: pax size {text:?}"))
                            })?);
                        }
                        _ => {}
                    }
                }
                continue;
            }
            EntryType::XGlobalHeader => {
                return Err(tar_error(format!(
                    "after {last}: pax global header (not used by binpkgs)"
                )))
            }
            _ => {}
        }
        let size = entry.size();
        if let Some(p) = pax_size.take() {
            // The crate sized the entry from its header; a different pax size would
            // make us and other readers see different archives.
            if p != size {
                return Err(tar_error(format!(
                    "after {last}: pax size {p} differs from header size {size}"
                )));
            }
        }
        let path = long_name
            .take()
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let link = long_link
            .take()
            .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        last = format!("entry {:?}", String::from_utf8_lossy(&path));
        let data_offset = entry.raw_file_position();
        let mut item = Item {
            entry: &mut entry,
            path,
            link,
            kind,
            size,
            data_offset,
        };
        visit(&mut item)?;
    }
    if long_name.is_some() || long_link.is_some() || pax_size.is_some() {
        return Err(tar_error(format!(
            "after {last}: extension header with no entry after it (truncated?)"
        )));
    }
    Ok(())
}

fn read_extension<R: Read>(entry: &mut R, max: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    entry.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::other(format!("longer than {max} bytes")));
    }
    Ok(data)
}

/// pax records: `<len> <key>=<value>\n`, `len` counting the whole record.
fn parse_pax(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("record without length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad record length")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("bad record length".into());
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without '='")?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        out.push((key, record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// Reads exactly `size` bytes of `reader` into `sink`; fewer means the input was cut.
pub fn copy_exact(reader: &mut dyn Read, sink: &mut dyn Write, size: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(size), sink)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("truncated: {copied} of {size} bytes present"),
        ));
    }
    Ok(())
}

/// Header blocks for a regular file in the container: ustar when the name and size fit,
/// otherwise GNU (with a long-name entry for names over 100 bytes).
pub fn file_header_blocks(name: &str, size: u64, mode: u32, mtime: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(BLOCK as usize * 3);
    let mut header = Header::new_ustar();
    let ustar_fits = size < 8 * 1024 * 1024 * 1024 && header.set_path(name).is_ok();
    if !ustar_fits {
        header = Header::new_gnu();
        let bytes = name.as_bytes();
        if bytes.len() > 100 {
            let mut long = Header::new_gnu();
            long.as_gnu_mut()
                .ok_or_else(|| io::Error::other("GNU header"))?
                .name[..13]
                .copy_from_slice(b"././@LongLink");
            long.set_entry_type(EntryType::GNULongName);
            long.set_size(bytes.len() as u64 + 1);
            long.set_mode(0o644);
            long.set_cksum();
            out.extend_from_slice(long.as_bytes());
            out.extend_from_slice(bytes);
            out.push(0);
            pad_vec(&mut out);
            let old = header.as_old_mut();
            old.name.copy_from_slice(&bytes[..100]);
        } else {
            header.set_path(name)?;
        }
    }
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

fn pad_vec(v: &mut Vec<u8>) {
    let rem = v.len() as u64 % BLOCK;
    if rem != 0 {
        v.resize(v.len() + (BLOCK - rem) as usize, 0);
    }
}

fn padding(len: u64) -> usize {
    ((BLOCK - len % BLOCK) % BLOCK) as usize
}

/// Writes the outer gpkg tar: regular files only, sizes known up front or patched in
/// afterwards (for members compressed straight into the container).
pub struct ContainerWriter<W: Write + Seek> {
    out: W,
    pos: u64,
}

/// A member whose header is written once its size is known.
pub struct OpenMember {
    name: String,
    mode: u32,
    mtime: u64,
    header_pos: u64,
    header_len: u64,
    data_start: u64,
}

impl OpenMember {
    pub fn data_offset(&self) -> u64 {
        self.data_start
    }
}

impl<W: Write + Seek> ContainerWriter<W> {
    pub fn new(out: W) -> Self {
        ContainerWriter { out, pos: 0 }
    }

    fn raw_write(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let zeros = [0u8; BLOCK as usize];
        self.raw_write(&zeros[..padding(len)])
    }

    /// Appends a member held in memory; returns the offset of its data.
    pub fn append(&mut self, name: &str, data: &[u8], mode: u32, mtime: u64) -> io::Result<u64> {
        let header = file_header_blocks(name, data.len() as u64, mode, mtime)?;
        self.raw_write(&header)?;
        let offset = self.pos;
        self.raw_write(data)?;
        self.pad(data.len() as u64)?;
        Ok(offset)
    }

    /// Writes the header of a member of known size; the caller then writes exactly
    /// `size` bytes with [`Self::write_data`] and calls [`Self::end_sized`].
    pub fn begin_sized(&mut self, name: &str, size: u64, mode: u32, mtime: u64) -> io::Result<u64> {
        let header = file_header_blocks(name, size, mode, mtime)?;
        self.raw_write(&header)?;
        Ok(self.pos)
    }

    pub fn end_sized(&mut self, data_offset: u64, size: u64) -> io::Result<()> {
        let written = self.pos - data_offset;
        if written != size {
            return Err(io::Error::other(format!(
                "member data is {written} bytes, header says {size}"
            )));
        }
        self.pad(size)
    }

    /// Reserves room for the header of a member whose size is not known yet.
    pub fn begin_unsized(&mut self, name: &str, mode: u32, mtime: u64) -> io::Result<OpenMember> {
        // Header length depends on the name only (size < 8 GiB assumed for the
        // reservation; a larger member switches to a GNU header of the same length
        // unless the name needs a long-name entry the ustar form did not).
        let reserved = file_header_blocks(name, 0, mode, mtime)?;
        let header_pos = self.pos;
        self.raw_write(&vec![0u8; reserved.len()])?;
        Ok(OpenMember {
            name: name.to_owned(),
            mode,
            mtime,
            header_pos,
            header_len: reserved.len() as u64,
            data_start: self.pos,
        })
    }

    /// Pads the member and writes its real header in the reserved room.
    pub fn end_unsized(&mut self, member: OpenMember) -> io::Result<u64> {
        let size = self.pos - member.data_start;
        self.pad(size)?;
        let header = file_header_blocks(&member.name, size, member.mode, member.mtime)?;
        if header.len() as u64 != member.header_len {
            return Err(io::Error::other(format!(
                "{}: member of {size} bytes needs a header form that was not reserved",
                member.name
            )));
        }
        self.out.seek(SeekFrom::Start(member.header_pos))?;
        self.out.write_all(&header)?;
        self.out.seek(SeekFrom::Start(self.pos))?;
        Ok(size)
    }

    /// Writes the end-of-archive blocks and record padding; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let end = self.pos + 2 * BLOCK;
        let total = end.div_ceil(RECORD) * RECORD;
        let zeros = vec![0u8; (total - self.pos) as usize];
        self.raw_write(&zeros)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write + Seek> Write for ContainerWriter<W> {
    /// Member data between `begin_*` and `end_*`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(bytes: &[u8]) -> Result<Vec<(String, u64)>, String> {
        let mut out = Vec::new();
        walk(
            bytes,
            |e| e,
            |item| {
                let mut data = Vec::new();
                item.entry
                    .read_to_end(&mut data)
                    .map_err(|e| e.to_string())?;
                out.push((
                    String::from_utf8_lossy(&item.path).into_owned(),
                    data.len() as u64,
                ));
                Ok(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn container_round_trip_with_long_and_streamed_names() {
        let long_top = "x".repeat(150);
        let longer = format!("{}/{}", "y".repeat(120), "z".repeat(30));
        let mut w = ContainerWriter::new(io::Cursor::new(Vec::new()));
        w.append(&format!("{long_top}/gpkg-1"), b"", 0o644, 1)
            .unwrap();
        let open = w.begin_unsized(&longer, 0o644, 1).unwrap();
        w.write_all(b"streamed data").unwrap();
        assert_eq!(w.end_unsized(open).unwrap(), 13);
        let off = w.begin_sized("a/b", 3, 0o644, 1).unwrap();
        w.write_all(b"abc").unwrap();
        w.end_sized(off, 3).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(bytes.len() as u64 % RECORD, 0);
        let entries = list(&bytes).unwrap();
        assert_eq!(
            entries,
            vec![
                (format!("{long_top}/gpkg-1"), 0),
                (longer, 13),
                ("a/b".to_string(), 3)
            ]
        );
    }

    #[test]
    fn refuses_huge_long_name() {
        let mut long = Header::new_gnu();
        long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(EntryType::GNULongName);
        let size = LONG_NAME_MAX + 10;
        long.set_size(size);
        long.set_cksum();
        let mut bytes = long.as_bytes().to_vec();
        bytes.resize(bytes.len() + size as usize + 1024, b'a');
        let err = list(&bytes).unwrap_err();
        assert!(err.contains("long name"), "{err}");
    }

    #[test]
    fn parses_pax_records() {
        let recs = parse_pax(b"20 path=a/b/c/d/e/f\n11 size=42\n").unwrap();
        assert_eq!(recs[0], ("path".to_string(), b"a/b/c/d/e/f".to_vec()));
        assert_eq!(recs[1], ("size".to_string(), b"42".to_vec()));
        assert!(parse_pax(b"99 path=x\n").is_err());
    }
}
