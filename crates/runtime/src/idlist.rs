//! The kernel's list format for CPU and NUMA node sets ("0-3,7"), as
//! `process.execCPUAffinity` and `linux.memoryPolicy.nodes` use it, turned
//! into the bitmask of words that sched_setaffinity(2) and
//! set_mempolicy(2) take.

/// The highest CPU or node number a list may name (runc's limit): enough
/// for any machine, small enough that a bogus number cannot make the mask
/// huge.
pub(crate) const MAX_ID: usize = 64 * 1024 - 1;

/// Bits in one mask word.
const WORD_BITS: usize = libc::c_ulong::BITS as usize;

/// Parses `list` into a mask of words (bit `n` set for member `n`),
/// refusing an empty list, a malformed item, a range that runs backwards
/// and a member above [`MAX_ID`].
pub(crate) fn parse(list: &str) -> Result<Vec<libc::c_ulong>, String> {
    let mut members = Vec::new();
    for item in list.split(',') {
        let num = |s: &str| -> Result<usize, String> {
            let n: usize = s
                .trim()
                .parse()
                .map_err(|_| format!("{item:?} is not a number or a range like 0-3"))?;
            if n > MAX_ID {
                return Err(format!("{n} is above the highest number allowed, {MAX_ID}"));
            }
            Ok(n)
        };
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(item)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!("range {item:?} runs backwards"));
        }
        members.push((lo, hi));
    }
    let top = members.iter().map(|&(_, hi)| hi).max().unwrap_or(0);
    let mut mask = vec![0; top / WORD_BITS + 1];
    for (lo, hi) in members {
        for n in lo..=hi {
            mask[n / WORD_BITS] |= 1 << (n % WORD_BITS);
        }
    }
    Ok(mask)
}

/// The number of members set in `mask`.
pub(crate) fn count(mask: &[libc::c_ulong]) -> u32 {
    mask.iter().map(|w| w.count_ones()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_become_masks() {
        assert_eq!(parse("0").unwrap(), vec![1]);
        assert_eq!(parse("0-3,7").unwrap(), vec![0b1000_1111]);
        let m = parse("64").unwrap();
        assert_eq!(m, vec![0, 1]);
        assert_eq!(count(&parse("1-2,5").unwrap()), 3);
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        assert!(parse("").unwrap_err().contains("not a number"));
        assert!(parse("3-1").unwrap_err().contains("backwards"));
        assert!(parse("a").unwrap_err().contains("not a number"));
        assert!(parse("70000").unwrap_err().contains("highest"));
        assert!(parse("1,,2").is_err());
    }
}
