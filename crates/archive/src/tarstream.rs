//! A streaming tar reader that uses the `tar` crate only to decode headers.
//!
//! It resolves GNU long names/links and PAX extended headers itself so that it
//! can refuse ambiguous archives (a PAX `size` that disagrees with the header,
//! data attached to entries that carry none) instead of guessing.

use std::io::{self, BufRead};

use crate::ApplyError;

/// Largest PAX or GNU long-name record we accept (they hold names and xattrs).
const MAX_META: u64 = 1 << 20;
/// The biggest size an octal header field can hold; larger files need PAX `size`.
const OCTAL_SIZE_LIMIT: u64 = 0o77777777777;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One decoded tar entry (its data still unread in the stream).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub atime: Option<(i64, i64)>,
    pub major: u32,
    pub minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The entry name for error messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Reads entries one by one from a (decompressed) tar stream.
pub(crate) struct TarStream<R> {
    inner: R,
    offset: u64,
    ended: bool,
}

fn malformed(offset: u64, reason: impl Into<String>) -> ApplyError {
    ApplyError::Malformed {
        offset,
        reason: reason.into(),
    }
}

fn parse_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = c.to_digit(10)? as i64;
        nanos += d * 10i64.pow(8 - i as u32);
    }
    if secs < 0 && nanos > 0 {
        // i64::MIN with a fraction has no second before it: malformed.
        return Some((secs.checked_sub(1)?, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

impl<R: BufRead> TarStream<R> {
    pub fn new(inner: R) -> Self {
        TarStream {
            inner,
            offset: 0,
            ended: false,
        }
    }

    fn stream_err(&self, e: io::Error, what: &str) -> ApplyError {
        match ApplyError::from_stream(e, what) {
            ApplyError::Truncated { entry, .. } => ApplyError::Truncated {
                entry,
                offset: self.offset,
            },
            other => other,
        }
    }

    /// Gives back the underlying reader (to drain what follows the archive).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Fills `buf` completely; `Ok(false)` if the stream ended before any byte.
    fn read_block(&mut self, buf: &mut [u8], what: &str) -> Result<bool, ApplyError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.stream_err(e, what)),
            }
        }
        self.offset += got as u64;
        if got == 0 {
            return Ok(false);
        }
        if got < buf.len() {
            return Err(ApplyError::Truncated {
                entry: what.to_string(),
                offset: self.offset,
            });
        }
        Ok(true)
    }

    fn read_meta(&mut self, size: u64, what: &str) -> Result<Vec<u8>, ApplyError> {
        if size > MAX_META {
            return Err(malformed(
                self.offset,
                format!("{what} record of {size} bytes exceeds the {MAX_META}-byte limit"),
            ));
        }
        let mut v = Vec::with_capacity(size as usize);
        self.read_data(size, what, &mut |b| {
            v.extend_from_slice(b);
            Ok(())
        })?;
        Ok(v)
    }

    /// Streams `size` bytes of entry data (plus block padding) to `sink`,
    /// straight from the reader's buffer (no copy on the way).
    pub fn read_data(
        &mut self,
        size: u64,
        entry: &str,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        // Within 511 bytes of u64::MAX a size has no padded length; wrapping
        // it would read the data as headers, where other readers refuse.
        let mut left = size.div_ceil(512).checked_mul(512).ok_or_else(|| {
            malformed(
                self.offset,
                format!("entry {entry:?}: size {size} is beyond any archive"),
            )
        })?;
        let mut data_left = size;
        while left > 0 {
            let buf = match self.inner.fill_buf() {
                Ok([]) => {
                    return Err(ApplyError::Truncated {
                        entry: entry.to_string(),
                        offset: self.offset,
                    })
                }
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_err(e, entry)),
            };
            let n = (buf.len() as u64).min(left) as usize;
            let data = (n as u64).min(data_left) as usize;
            if data > 0 {
                sink(&buf[..data])?;
                data_left -= data as u64;
            }
            self.inner.consume(n);
            self.offset += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    /// Decodes the next entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ApplyError> {
        if self.ended {
            return Ok(None);
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut block = [0u8; 512];
        loop {
            let start = self.offset;
            if !self.read_block(&mut block, "tar header")? {
                // No end-of-archive marker: accept, the diff_id still covers the stream.
                self.ended = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                self.ended = true;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let stored = header
                .cksum()
                .map_err(|e| malformed(start, format!("unreadable header checksum: {e}")))?;
            let computed: u32 = block[..148].iter().map(|&b| b as u32).sum::<u32>()
                + 8 * 32
                + block[156..].iter().map(|&b| b as u32).sum::<u32>();
            if stored != computed {
                return Err(malformed(
                    start,
                    "header checksum mismatch (corrupt or not a tar stream)",
                ));
            }
            let raw_name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
            let hsize = header.size().map_err(|e| {
                malformed(start, format!("entry {raw_name:?}: bad size field: {e}"))
            })?;
            let et = header.entry_type().as_byte();
            match et {
                b'x' => {
                    let data = self.read_meta(hsize, "PAX header")?;
                    for ext in tar::PaxExtensions::new(&data) {
                        let ext = ext.map_err(|e| {
                            malformed(start, format!("PAX header before {raw_name:?}: {e}"))
                        })?;
                        let key = ext.key().map_err(|_| {
                            malformed(start, "PAX header with a non-UTF-8 key".to_string())
                        })?;
                        pax.push((key.to_string(), ext.value_bytes().to_vec()));
                    }
                    continue;
                }
                b'g' => {
                    // Global headers carry defaults (mostly comments); none affect us.
                    self.read_meta(hsize, "PAX global header")?;
                    continue;
                }
                b'L' => {
                    long_name = Some(trim_nul(self.read_meta(hsize, "GNU long name")?));
                    continue;
                }
                b'K' => {
                    long_link = Some(trim_nul(self.read_meta(hsize, "GNU long link")?));
                    continue;
                }
                _ => {}
            }
            let mut path = long_name.unwrap_or_else(|| header.path_bytes().into_owned());
            let mut link = long_link.unwrap_or_else(|| {
                header
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default()
            });
            let bad = |field: &str, e: io::Error| {
                malformed(
                    start,
                    format!(
                        "entry {:?}: bad {field} field: {e}",
                        String::from_utf8_lossy(&header.path_bytes())
                    ),
                )
            };
            let mut size = hsize;
            // Blank numeric fields (all NUL or space) read as 0, as Go's reader does.
            let old = header.as_old();
            let blank = |f: &[u8]| f.iter().all(|&b| b == 0 || b == b' ');
            let num = |f: &[u8], v: io::Result<u64>, name: &str| {
                if blank(f) {
                    Ok(0)
                } else {
                    v.map_err(|e| bad(name, e))
                }
            };
            let mut uid = num(&old.uid, header.uid(), "uid")?;
            let mut gid = num(&old.gid, header.gid(), "gid")?;
            let mut mtime = (num(&old.mtime, header.mtime(), "mtime")? as i64, 0);
            let mut atime = None;
            let mode = num(&old.mode, header.mode().map(u64::from), "mode")? as u32;
            let mut xattrs = Vec::new();
            let mut pax_size = None;
            for (k, v) in pax {
                match k.as_str() {
                    "path" => path = v,
                    "linkpath" => link = v,
                    "size" => pax_size = Some(v),
                    "uid" => {
                        uid = parse_num(&v)
                            .ok_or_else(|| bad("PAX uid", io::Error::other("not a number")))?
                    }
                    "gid" => {
                        gid = parse_num(&v)
                            .ok_or_else(|| bad("PAX gid", io::Error::other("not a number")))?
                    }
                    "mtime" => {
                        mtime = parse_time(&v)
                            .ok_or_else(|| bad("PAX mtime", io::Error::other("not a time")))?
                    }
                    "atime" => atime = parse_time(&v),
                    _ => {
                        if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                            xattrs.push((name.as_bytes().to_vec(), v));
                        }
                    }
                }
            }
            let name = String::from_utf8_lossy(&path).into_owned();
            if let Some(v) = pax_size {
                let ps = parse_num(&v).ok_or_else(|| {
                    malformed(start, format!("entry {name:?}: PAX size is not a number"))
                })?;
                // A writer may zero the header field when the size does not fit in octal.
                let zeroed_for_big = hsize == 0 && ps > OCTAL_SIZE_LIMIT;
                if ps != hsize && !zeroed_for_big {
                    return Err(ApplyError::Refused {
                        entry: name,
                        reason: format!(
                            "PAX size {ps} disagrees with the header size {hsize} \
                             (size desync: readers would split this archive differently)"
                        ),
                    });
                }
                size = ps;
            }
            let kind = match et {
                b'0' | b'\0' | b'7' => Kind::File,
                b'5' => Kind::Dir,
                b'2' => Kind::Symlink,
                b'1' => Kind::Hardlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'6' => Kind::Fifo,
                other => {
                    return Err(ApplyError::Refused {
                        entry: name,
                        reason: format!(
                            "unsupported tar entry type {:?} (sparse/volume/vendor entries are not OCI layer content)",
                            other as char
                        ),
                    })
                }
            };
            if kind != Kind::File && size != 0 {
                return Err(ApplyError::Refused {
                    entry: name,
                    reason: format!(
                        "{kind:?} entry with a non-zero size {size}: readers disagree whether data follows"
                    ),
                });
            }
            let (major, minor) = if matches!(kind, Kind::Char | Kind::Block) {
                let (bmaj, bmin) = header
                    .as_ustar()
                    .map(|u| (blank(&u.dev_major), blank(&u.dev_minor)))
                    .unwrap_or((false, false));
                (
                    if bmaj {
                        0
                    } else {
                        header
                            .device_major()
                            .map_err(|e| bad("devmajor", e))?
                            .unwrap_or(0)
                    },
                    if bmin {
                        0
                    } else {
                        header
                            .device_minor()
                            .map_err(|e| bad("devminor", e))?
                            .unwrap_or(0)
                    },
                )
            } else {
                (0, 0)
            };
            if path.is_empty() {
                return Err(malformed(start, "entry with an empty name"));
            }
            let to_u32 = |v: u64, f: &str| {
                u32::try_from(v)
                    .map_err(|_| malformed(start, format!("entry {name:?}: {f} {v} out of range")))
            };
            return Ok(Some(Entry {
                uid: to_u32(uid, "uid")?,
                gid: to_u32(gid, "gid")?,
                path,
                link,
                kind,
                size,
                mode: mode & 0o7777,
                mtime,
                atime,
                major,
                minor,
                xattrs,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn pax_times_parse_with_fractions() {
        assert_eq!(parse_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_time(b"7"), Some((7, 0)));
        assert_eq!(parse_time(b"x"), None);
        assert_eq!(parse_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_time(b"-9223372036854775808.5"), None);
    }
}
