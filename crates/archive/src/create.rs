//! Layer creation: a directory, an overlay upper directory, or the changes
//! between two directories, written as an OCI layer tar stream.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fsops;
use crate::Compression;

/// What to turn into a layer.
#[derive(Debug, Clone, Copy)]
pub enum LayerSource<'a> {
    /// Every file below the directory (a base layer, or `berth import`).
    Dir(&'a Path),
    /// An overlay upper directory: 0/0 character devices become `.wh.` whiteouts
    /// and `trusted.overlay.opaque=y` directories get an opaque marker.
    OverlayUpper(&'a Path),
    /// The changes that turn `lower` into `upper` (both full trees): changed or
    /// new entries, and whiteouts for what `upper` lacks. Files are compared by
    /// type, size, mtime, mode, owner, link target and xattrs, not content.
    Changes {
        /// The parent tree.
        lower: &'a Path,
        /// The new tree.
        upper: &'a Path,
    },
}

/// The result of [`create_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// `sha256:` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    /// Uncompressed size.
    pub size: u64,
    /// `sha256:` of the bytes written (the blob digest).
    pub digest: String,
    /// Bytes written.
    pub compressed_size: u64,
}

/// Why a layer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("creating a layer from {path}: {op}: {source}")]
pub struct CreateError {
    /// The file involved.
    pub path: PathBuf,
    /// What failed.
    pub op: &'static str,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

fn err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> CreateError + 'a {
    move |source| CreateError {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Hashes and counts what passes through.
struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    n: u64,
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

/// One entry to write.
enum Item {
    Entry { rel: PathBuf, abs: PathBuf },
    Whiteout(PathBuf),
    Opaque(PathBuf),
}

struct Writer<W: Write> {
    tar: tar::Builder<Digesting<Encoder<Digesting<W>>>>,
    links: HashMap<(u64, u64), PathBuf>,
    overlay: bool,
}

impl<W: Write> Writer<W> {
    fn add(&mut self, item: &Item) -> Result<(), CreateError> {
        match item {
            Item::Whiteout(rel) => {
                let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                let mut wh = b".wh.".to_vec();
                wh.extend_from_slice(name);
                let path = rel.with_file_name(std::ffi::OsStr::from_bytes(&wh));
                self.marker(&path)
            }
            Item::Opaque(dir) => self.marker(&dir.join(".wh..wh..opq")),
            Item::Entry { rel, abs } => self.entry(rel, abs),
        }
    }

    fn marker(&mut self, path: &Path) -> Result<(), CreateError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        self.tar
            .append_data(&mut h, path, io::empty())
            .map_err(err(path, "write whiteout"))
    }

    fn entry(&mut self, rel: &Path, abs: &Path) -> Result<(), CreateError> {
        let m = fs::symlink_metadata(abs).map_err(err(abs, "stat"))?;
        let ft = m.file_type();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        for (k, v) in xattrs(abs)? {
            if !k.starts_with(b"trusted.overlay.") {
                pax.push((format!("SCHILY.xattr.{}", String::from_utf8_lossy(&k)), v));
            }
        }
        if m.mtime_nsec() != 0 && m.mtime() >= 0 {
            let t = format!("{}.{:09}", m.mtime(), m.mtime_nsec());
            pax.push(("mtime".to_string(), t.into_bytes()));
        }
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(err(abs, "write PAX header"))?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_size(0);
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                let first = first.clone();
                return self
                    .tar
                    .append_link(&mut h, rel, &first)
                    .map_err(err(abs, "write hardlink"));
            }
            self.links.insert((m.dev(), m.ino()), rel.to_path_buf());
        }
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            self.tar
                .append_data(&mut h, rel, io::empty())
                .map_err(err(abs, "write directory"))
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(abs).map_err(err(abs, "readlink"))?;
            self.tar
                .append_link(&mut h, rel, &target)
                .map_err(err(abs, "write symlink"))
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.len());
            let f = fs::File::open(abs).map_err(err(abs, "open"))?;
            self.tar
                .append_data(&mut h, rel, f)
                .map_err(err(abs, "write file"))
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                // Sockets are not layer content.
                return Ok(());
            };
            h.set_entry_type(kind);
            let rdev = m.rdev();
            h.set_device_major(nix::sys::stat::major(rdev) as u32)
                .map_err(err(abs, "device number"))?;
            h.set_device_minor(nix::sys::stat::minor(rdev) as u32)
                .map_err(err(abs, "device number"))?;
            self.tar
                .append_data(&mut h, rel, io::empty())
                .map_err(err(abs, "write device"))
        }
    }

    /// Writes the tree below `abs` (not `abs` itself), sorted by name.
    fn tree(&mut self, rel: &Path, abs: &Path) -> Result<(), CreateError> {
        for name in sorted_names(abs)? {
            let (r, a) = (rel.join(&name), abs.join(&name));
            let m = fs::symlink_metadata(&a).map_err(err(&a, "stat"))?;
            if self.overlay && m.file_type().is_char_device() && m.rdev() == 0 {
                self.add(&Item::Whiteout(r))?;
                continue;
            }
            self.add(&Item::Entry {
                rel: r.clone(),
                abs: a.clone(),
            })?;
            if m.is_dir() {
                if self.overlay
                    && fsops::lget_xattr(&a, b"trusted.overlay.opaque").is_ok_and(|v| v == b"y")
                {
                    self.add(&Item::Opaque(r.clone()))?;
                }
                self.tree(&r, &a)?;
            }
        }
        Ok(())
    }
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, CreateError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(err(dir, "list"))? {
        names.push(e.map_err(err(dir, "list"))?.file_name());
    }
    names.sort();
    Ok(names)
}

fn same(a: &fs::Metadata, b: &fs::Metadata, pa: &Path, pb: &Path) -> Result<bool, CreateError> {
    let (ta, tb) = (a.mode() & libc::S_IFMT, b.mode() & libc::S_IFMT);
    if ta != tb || a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() {
        return Ok(false);
    }
    if !a.is_dir()
        && (a.len() != b.len()
            || a.mtime() != b.mtime()
            || a.mtime_nsec() != b.mtime_nsec()
            || a.rdev() != b.rdev())
    {
        return Ok(false);
    }
    if a.file_type().is_symlink()
        && fs::read_link(pa).map_err(err(pa, "readlink"))?
            != fs::read_link(pb).map_err(err(pb, "readlink"))?
    {
        return Ok(false);
    }
    let xa = xattrs(pa)?;
    Ok(xa == xattrs(pb)?)
}

fn xattrs(p: &Path) -> Result<fsops::Xattrs, CreateError> {
    fsops::read_xattrs(p).map_err(err(p, "read xattrs"))
}

/// Collects what changed below `rel` between the trees; returns the items in
/// tar order (a directory before its contents).
fn changes(lower: &Path, upper: &Path, rel: &Path, out: &mut Vec<Item>) -> Result<(), CreateError> {
    let (ldir, udir) = (lower.join(rel), upper.join(rel));
    let unames = sorted_names(&udir)?;
    let lnames = match fs::symlink_metadata(&ldir) {
        Ok(m) if m.is_dir() => sorted_names(&ldir)?,
        _ => Vec::new(),
    };
    for name in &lnames {
        if unames.binary_search(name).is_err() {
            out.push(Item::Whiteout(rel.join(name)));
        }
    }
    for name in unames {
        let r = rel.join(&name);
        let (la, ua) = (lower.join(&r), upper.join(&r));
        let um = fs::symlink_metadata(&ua).map_err(err(&ua, "stat"))?;
        let lm = fs::symlink_metadata(&la).ok();
        let unchanged = match &lm {
            Some(lm) => same(lm, &um, &la, &ua)?,
            None => false,
        };
        if um.is_dir() {
            let mut inner = Vec::new();
            changes(lower, upper, &r, &mut inner)?;
            if !unchanged || !inner.is_empty() {
                out.push(Item::Entry { rel: r, abs: ua });
                out.extend(inner);
            }
        } else if !unchanged {
            out.push(Item::Entry { rel: r, abs: ua });
        }
    }
    Ok(())
}

/// Writes `source` as a layer tar stream to `out`, compressed as asked, and
/// returns its diff_id and blob digest. Entries are sorted by name, so the
/// same tree gives the same layer.
pub fn create_layer<W: Write>(
    source: LayerSource<'_>,
    out: W,
    compression: Compression,
) -> Result<Created, CreateError> {
    let outer = Digesting {
        inner: out,
        hasher: Sha256::new(),
        n: 0,
    };
    let root = match source {
        LayerSource::Dir(p) | LayerSource::OverlayUpper(p) => p,
        LayerSource::Changes { upper, .. } => upper,
    };
    let enc = match compression {
        Compression::None => Encoder::None(outer),
        Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
            outer,
            flate2::Compression::default(),
        )),
        Compression::Zstd => Encoder::Zstd(
            zstd::stream::write::Encoder::new(outer, 3).map_err(err(root, "start zstd"))?,
        ),
    };
    let mut w = Writer {
        tar: tar::Builder::new(Digesting {
            inner: enc,
            hasher: Sha256::new(),
            n: 0,
        }),
        links: HashMap::new(),
        overlay: matches!(source, LayerSource::OverlayUpper(_)),
    };
    w.tar.follow_symlinks(false);
    match source {
        LayerSource::Dir(p) | LayerSource::OverlayUpper(p) => w.tree(Path::new(""), p)?,
        LayerSource::Changes { lower, upper } => {
            let mut items = Vec::new();
            changes(lower, upper, Path::new(""), &mut items)?;
            for item in &items {
                w.add(item)?;
            }
        }
    }
    let tar_out = w.tar.into_inner().map_err(err(root, "finish tar"))?;
    let diff_id = format!("sha256:{}", hex::encode(tar_out.hasher.finalize()));
    let size = tar_out.n;
    let mut outer = tar_out
        .inner
        .finish()
        .map_err(err(root, "finish compression"))?;
    outer.flush().map_err(err(root, "flush"))?;
    Ok(Created {
        diff_id,
        size,
        digest: format!("sha256:{}", hex::encode(outer.hasher.finalize())),
        compressed_size: outer.n,
    })
}
