//! A SHA-256 whose running state can be saved as text and resumed in
//! another process: how an upload session's hash travels between
//! replicas in its stored state, so no replica re-reads the data.
//!
//! `sha2`'s hashers keep their state private; this one keeps the eight
//! state words, the length and the unfinished block itself and runs
//! `sha2`'s block function ([`sha2::compress256`], with the CPU's SHA
//! extensions where present) over whole blocks.

use oci_spec::image::Digest;
use sha2::digest::generic_array::typenum::U64;
use sha2::digest::generic_array::GenericArray;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

type Block = GenericArray<u8, U64>;

/// A running SHA-256 that can be saved ([`Sha256State::save`]) and resumed
/// ([`Sha256State::restore`]).
#[derive(Clone)]
pub struct Sha256State {
    h: [u32; 8],
    /// Bytes hashed so far, the unfinished block included.
    len: u64,
    /// The unfinished block: `len % 64` bytes.
    buf: [u8; 64],
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State {
            h: INIT,
            len: 0,
            buf: [0; 64],
        }
    }
}

/// Runs the block function over `data`, a whole number of blocks.
fn compress(h: &mut [u32; 8], data: &[u8]) {
    debug_assert_eq!(data.len() % 64, 0);
    // SAFETY: `GenericArray<u8, U64>` is a `#[repr(transparent)]` wrapper of
    // `[u8; 64]` (size 64, alignment 1), and `data` holds exactly
    // `data.len() / 64` such arrays back to back, borrowed for this call.
    let blocks: &[Block] =
        unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<Block>(), data.len() / 64) };
    sha2::compress256(h, blocks);
}

impl Sha256State {
    /// Bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.len
    }

    /// Feeds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        let filled = (self.len % 64) as usize;
        self.len += data.len() as u64;
        if filled > 0 {
            let take = (64 - filled).min(data.len());
            self.buf[filled..filled + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if filled + take < 64 {
                return;
            }
            let block = self.buf;
            compress(&mut self.h, &block);
        }
        let whole = data.len() / 64 * 64;
        compress(&mut self.h, &data[..whole]);
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
    }

    /// The digest of everything fed so far (the state keeps running).
    pub fn digest(&self) -> Digest {
        let mut h = self.h;
        let filled = (self.len % 64) as usize;
        let mut tail = [0u8; 128];
        tail[..filled].copy_from_slice(&self.buf[..filled]);
        tail[filled] = 0x80;
        let total = if filled < 56 { 64 } else { 128 };
        tail[total - 8..total].copy_from_slice(&(self.len * 8).to_be_bytes());
        compress(&mut h, &tail[..total]);
        let bytes: Vec<u8> = h.iter().flat_map(|w| w.to_be_bytes()).collect();
        crate::digest::parse(&format!("sha256:{}", hex::encode(bytes)))
            .expect("a sha256 digest is well formed")
    }

    /// The state as text: `<length>:<state words, hex>:<unfinished block, hex>`.
    pub fn save(&self) -> String {
        let words: Vec<u8> = self.h.iter().flat_map(|w| w.to_be_bytes()).collect();
        let filled = (self.len % 64) as usize;
        format!(
            "{}:{}:{}",
            self.len,
            hex::encode(words),
            hex::encode(&self.buf[..filled])
        )
    }

    /// The state [`Sha256State::save`] wrote, or `None` if `text` is not one.
    pub fn restore(text: &str) -> Option<Sha256State> {
        let mut fields = text.split(':');
        let len: u64 = fields.next()?.parse().ok()?;
        let words = hex::decode(fields.next()?).ok()?;
        let tail = hex::decode(fields.next()?).ok()?;
        if fields.next().is_some() || words.len() != 32 || tail.len() as u64 != len % 64 {
            return None;
        }
        let mut s = Sha256State {
            len,
            ..Default::default()
        };
        for (w, b) in s.h.iter_mut().zip(words.chunks_exact(4)) {
            *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        s.buf[..tail.len()].copy_from_slice(&tail);
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::digest::sha256_of;

    /// Fed in pieces of every awkward size, saved and restored between
    /// them, the digest is sha2's for the same bytes, at every length
    /// around the padding boundaries.
    #[test]
    fn matches_sha2_across_saves_and_odd_pieces() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 5000] {
            for piece in [1, 3, 63, 64, 65, 700] {
                let mut s = Sha256State::default();
                for chunk in data[..n].chunks(piece) {
                    s.update(chunk);
                    s = Sha256State::restore(&s.save()).expect("restores");
                }
                assert_eq!(s.digest(), sha256_of(&data[..n]), "{n} bytes by {piece}");
                assert_eq!(s.hashed(), n as u64);
            }
        }
    }

    #[test]
    fn refuses_damaged_states() {
        let mut s = Sha256State::default();
        s.update(b"abc");
        let saved = s.save();
        assert!(Sha256State::restore(&saved).is_some());
        for bad in ["", "3:00:616263", "4:", &saved.replace(":616263", ":6162")] {
            assert!(Sha256State::restore(bad).is_none(), "{bad:?}");
        }
    }
}
