//! The subordinate id ranges of /etc/subuid and /etc/subgid (shadow's
//! format: one `NAME_OR_UID:START:COUNT` a line), which newuidmap and
//! newgidmap let a user map into its user namespaces.

use std::path::{Path, PathBuf};

use crate::Error;

/// The file of subordinate uids.
pub const SUBUID_FILE: &str = "/etc/subuid";
/// The file of subordinate gids.
pub const SUBGID_FILE: &str = "/etc/subgid";

/// One range of host ids: `start .. start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The first host id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// Whether every id of `host .. host + size` lies in one of `ranges`
/// (one map may span adjacent ranges, as newuidmap allows).
pub fn covered(ranges: &[Range], host: u32, size: u32) -> bool {
    let end = u64::from(host) + u64::from(size);
    let mut next = u64::from(host);
    while next < end {
        let holding = ranges
            .iter()
            .find(|r| u64::from(r.start) <= next && next < u64::from(r.start) + u64::from(r.count));
        match holding {
            Some(r) => next = u64::from(r.start) + u64::from(r.count),
            None => return false,
        }
    }
    true
}

/// The ranges of `file` that belong to the user named `user` or with uid
/// `uid`, in file order, each id once (a line's ids that an earlier line
/// gave are left out). A missing file has none.
pub fn ranges(file: &Path, user: &str, uid: u32) -> Result<Vec<Range>, Error> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                what: format!("cannot read {}", file.display()),
                source: e,
            })
        }
    };
    parse(&text, file, user, uid)
}

fn parse(text: &str, file: &Path, user: &str, uid: u32) -> Result<Vec<Range>, Error> {
    let uid_text = uid.to_string();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| Error::BadLine {
            file: PathBuf::from(file),
            line: n + 1,
            reason: reason.to_string(),
        };
        let mut fields = line.split(':');
        let owner = fields.next().unwrap_or_default();
        if owner != user && owner != uid_text {
            continue;
        }
        let (Some(start), Some(count), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("not three fields"));
        };
        let start: u32 = start.parse().map_err(|_| bad("START is not an id"))?;
        let count: u32 = count.parse().map_err(|_| bad("COUNT is not a number"))?;
        if count == 0 || u64::from(start) + u64::from(count) > u64::from(u32::MAX) {
            return Err(bad(
                "the range is empty or runs past the last id 4294967294",
            ));
        }
        add_new_ids(&mut out, Range { start, count });
    }
    Ok(out)
}

/// Appends the ids of `range` that `ranges` lacks (none, the whole range,
/// or the pieces around what it shares with them): a user's lines may
/// overlap (one by name, one by uid), and a map of one host id twice is
/// one the kernel refuses.
pub(crate) fn add_new_ids(ranges: &mut Vec<Range>, range: Range) {
    let mut pieces = vec![(
        u64::from(range.start),
        u64::from(range.start) + u64::from(range.count),
    )];
    for r in ranges.iter() {
        let (a, b) = (u64::from(r.start), u64::from(r.start) + u64::from(r.count));
        pieces = pieces
            .into_iter()
            .flat_map(|(s, e)| [(s, e.min(a)), (s.max(b), e)])
            .filter(|(s, e)| s < e)
            .collect();
    }
    // The pieces lie inside `range`: they fit in u32.
    ranges.extend(pieces.into_iter().map(|(s, e)| Range {
        start: s as u32,
        count: (e - s) as u32,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_the_user_by_name_or_uid_in_file_order() {
        let text = "# comment\nalice:100000:65536\nbob:165536:65536\n1000:300000:10\n";
        let r = parse(text, Path::new("/etc/subuid"), "alice", 1000).unwrap();
        assert_eq!(
            r,
            [
                Range {
                    start: 100000,
                    count: 65536
                },
                Range {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert!(parse(text, Path::new("x"), "carol", 7).unwrap().is_empty());
        assert!(covered(&r, 100000, 65536));
        assert!(!covered(&r, 100000, 65537));
        assert!(!covered(&r, 99999, 1));
    }

    #[test]
    fn overlapping_lines_of_the_user_give_each_id_once() {
        let r = |start, count| Range { start, count };
        let text = "alice:100000:65536\n1000:100000:65536\n\
                    alice:160000:10000\nalice:90000:200000\nalice:4294967290:5\n";
        let ranges = parse(text, Path::new("/etc/subuid"), "alice", 1000).unwrap();
        assert_eq!(
            ranges,
            [
                r(100000, 65536),
                r(165536, 4464),
                r(90000, 10000),
                r(170000, 120000),
                r(4294967290, 5)
            ]
        );
    }

    #[test]
    fn a_map_may_span_adjacent_or_overlapping_lines() {
        let text = "alice:100000:65536\nalice:165536:65536\nalice:300000:10\n\
                    alice:400000:100\nalice:390000:200000\n";
        let r = parse(text, Path::new("/etc/subuid"), "alice", 1000).unwrap();
        assert!(covered(&r, 100000, 131072));
        assert!(covered(&r, 150000, 20000));
        assert!(!covered(&r, 100000, 131073));
        assert!(!covered(&r, 299999, 2));
        // The last line alone grants this; the one before split it.
        assert!(covered(&r, 390000, 200000));
        assert!(!covered(&r, 390000, 200001));
    }

    #[test]
    fn a_bad_line_of_the_user_names_the_file_and_line() {
        for text in [
            "alice:1:",
            "alice:x:5",
            "alice:4294967295:1",
            "alice:1:0",
            "alice",
        ] {
            let e = parse(text, Path::new("/etc/subuid"), "alice", 1).unwrap_err();
            assert!(e.to_string().starts_with("/etc/subuid line 1: "), "{e}");
        }
    }

    #[test]
    fn a_missing_file_has_no_ranges() {
        let r = ranges(Path::new("/nonexistent/subuid"), "alice", 1).unwrap();
        assert!(r.is_empty());
    }
}
