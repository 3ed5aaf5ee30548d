//! /proc/PID/mountinfo fields.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Decodes a mountinfo path field: the kernel writes space, tab, newline
/// and backslash as `\NNN` octal escapes. Bytes are kept as they are, so a
/// path that is not UTF-8 survives.
pub fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d[0] <= b'3' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_are_decoded_and_the_rest_kept() {
        assert_eq!(unescape("/a\\040b\\134c"), PathBuf::from("/a b\\c"));
        assert_eq!(unescape("/t\\011n\\012"), PathBuf::from("/t\tn\n"));
        assert_eq!(unescape("/plain\\x"), PathBuf::from("/plain\\x"));
        assert_eq!(unescape("/end\\04"), PathBuf::from("/end\\04"));
        // Not a byte (above \377): left as it is.
        assert_eq!(unescape("/big\\777"), PathBuf::from("/big\\777"));
    }
}
