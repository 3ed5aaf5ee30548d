//! The attach protocol between a detached container's monitor and the
//! clients that attach to it (`berth attach`, `berth start -a`).
//!
//! The monitor listens on `<root>/containers/<id>/attach.sock` (mode
//! 0600, in the container's root-only directory). Both ways, the stream is
//! a sequence of frames: one kind byte, a big-endian u32 length, then that
//! many bytes (at most [`MAX_FRAME`]).
//!
//! - monitor → client: [`Kind::Stdout`] and [`Kind::Stderr`] carry the
//!   container's output (a pty's output is stdout), [`Kind::Exit`] its exit
//!   code (4 bytes, big-endian i32) just before the monitor closes the
//!   connection;
//! - client → monitor: [`Kind::Stdin`] carries input for the container
//!   (dropped unless it was started with `-i`), [`Kind::StdinEof`] ends its
//!   input (closes its stdin pipe; on a pty sends the EOF character, ^D),
//!   [`Kind::Resize`] sets its pty's size (rows and columns, two
//!   big-endian u16).
//!
//! The socket is reached through `/proc/self/fd/N/attach.sock` (N an
//! O_PATH descriptor of the container's directory) on both sides, so that
//! a data root deeper than a socket address allows (108 bytes) works too.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::error::{Error, Result};

/// The largest frame payload either side sends or accepts.
pub const MAX_FRAME: usize = 64 << 10;

/// The length of a frame's header: kind and length.
pub const HEADER: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Input for the container's stdin (client → monitor).
    Stdin = 0,
    /// The container's stdout, or its pty's output (monitor → client).
    Stdout = 1,
    /// The container's stderr (monitor → client).
    Stderr = 2,
    /// The container's exit code, the monitor's last frame.
    Exit = 3,
    /// The client's input ended (client → monitor).
    StdinEof = 4,
    /// The client's terminal size: rows, columns (client → monitor).
    Resize = 5,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Stdin,
            1 => Kind::Stdout,
            2 => Kind::Stderr,
            3 => Kind::Exit,
            4 => Kind::StdinEof,
            5 => Kind::Resize,
            _ => return None,
        })
    }
}

/// Appends a frame of `kind` carrying `data` (at most [`MAX_FRAME`]
/// bytes; longer data is split into several frames) to `out`.
pub fn encode(kind: Kind, data: &[u8], out: &mut Vec<u8>) {
    let mut chunks = data.chunks(MAX_FRAME).peekable();
    if chunks.peek().is_none() {
        out.push(kind as u8);
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    for chunk in chunks {
        out.push(kind as u8);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Splits a byte stream into frames as it arrives.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds bytes read from the peer.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, None until one has arrived; an error for a
    /// frame of an unknown kind or longer than [`MAX_FRAME`] (the peer is
    /// not speaking this protocol: drop it).
    pub fn next_frame(&mut self) -> Result<Option<(Kind, Vec<u8>)>> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let kind = Kind::from_byte(self.buf[0]).ok_or_else(|| {
            Error::invalid(
                "attach frame",
                format!("unknown kind {}: not an attach peer", self.buf[0]),
            )
        })?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(Error::invalid(
                "attach frame",
                format!("{len} bytes is longer than {MAX_FRAME}"),
            ));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let data = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some((kind, data)))
    }
}

/// The exit code an [`Kind::Exit`] frame carries.
pub fn exit_code(data: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(data.try_into().ok()?))
}

/// The rows and columns a [`Kind::Resize`] frame carries.
pub fn window_size(data: &[u8]) -> Option<(u16, u16)> {
    match data {
        [r0, r1, c0, c1] => Some((
            u16::from_be_bytes([*r0, *r1]),
            u16::from_be_bytes([*c0, *c1]),
        )),
        _ => None,
    }
}

/// The payload of a [`Kind::Resize`] frame.
pub fn resize_payload(rows: u16, cols: u16) -> [u8; 4] {
    let (r, c) = (rows.to_be_bytes(), cols.to_be_bytes());
    [r[0], r[1], c[0], c[1]]
}

/// A short address for the socket at `path`: its directory opened O_PATH
/// (keep it open while the address is used) and `/proc/self/fd/N/NAME`.
fn short_address(path: &Path) -> Result<(File, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => {
            return Err(Error::invalid(
                format!("socket path {}", path.display()),
                "no file name",
            ))
        }
    };
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| Error::io(dir, e))?;
    let address = format!(
        "/proc/self/fd/{}/{}",
        handle.as_raw_fd(),
        name.to_string_lossy()
    );
    Ok((handle, address))
}

/// Listens on the attach socket `path` (replacing a stale one), mode 0600.
pub fn listen(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let (_dir, address) = short_address(path)?;
    let listener = UnixListener::bind(&address).map_err(|e| Error::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, e))?;
    Ok(listener)
}

/// Connects to the attach socket `path`.
pub fn connect(path: &Path) -> Result<UnixStream> {
    let (_dir, address) = short_address(path)?;
    UnixStream::connect(&address).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces_and_bad_ones_are_refused() {
        let mut out = Vec::new();
        encode(Kind::Stdout, b"hello", &mut out);
        encode(Kind::StdinEof, b"", &mut out);
        encode(Kind::Resize, &resize_payload(24, 80), &mut out);
        encode(Kind::Exit, &7i32.to_be_bytes(), &mut out);
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for byte in &out {
            d.push(std::slice::from_ref(byte));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got[0], (Kind::Stdout, b"hello".to_vec()));
        assert_eq!(got[1], (Kind::StdinEof, vec![]));
        assert_eq!(window_size(&got[2].1), Some((24, 80)));
        assert_eq!(exit_code(&got[3].1), Some(7));

        let mut big = Vec::new();
        encode(Kind::Stdin, &vec![b'x'; MAX_FRAME + 1], &mut big);
        assert_eq!(big.len(), 2 * HEADER + MAX_FRAME + 1, "split in two frames");

        let mut d = Decoder::default();
        d.push(&[9, 0, 0, 0, 0]);
        assert!(d.next_frame().is_err(), "unknown kind");
        let mut d = Decoder::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err(), "too long");
    }
}
