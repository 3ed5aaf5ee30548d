//! What `berth images` and `berth ps` print: column tables and durations in
//! words, in podman's style.

use std::io::Write;

/// How long ago an RFC 3339 time was, in podman's words ("Less than a
/// second", "1 second", "About a minute", "3 hours", "2 weeks"); `None`
/// when there is no time or it does not parse.
pub fn since(time: Option<&str>) -> Option<String> {
    let when = chrono::DateTime::parse_from_rfc3339(time?).ok()?;
    let secs = (chrono::Utc::now() - when.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    let (minutes, hours) = (secs / 60, secs / 3600);
    let days = hours / 24;
    Some(match secs {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if days < 14 => format!("{days} days"),
        _ if days < 60 => format!("{} weeks", days / 7),
        _ if days < 730 => format!("{} months", days / 30),
        _ => format!("{} years", days / 365),
    })
}

/// Writes `rows` (the first one the header) as columns padded to their
/// widest cell and separated by `gap` spaces; the last column is not padded.
pub fn write_table<R: AsRef<[String]>>(
    out: &mut impl Write,
    rows: &[R],
    gap: usize,
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for row in rows {
        let row = row.as_ref();
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + gap;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let rows = vec![
            vec!["ID".to_string(), "NAME".into(), "X".into()],
            vec!["abcdef".to_string(), "n".into(), "".into()],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows, 2).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID      NAME  X\nabcdef  n\n"
        );
    }

    #[test]
    fn durations_read_as_podman_writes_them() {
        let ago = |secs: i64| {
            let t = chrono::Utc::now() - chrono::Duration::seconds(secs);
            since(Some(&t.to_rfc3339())).unwrap()
        };
        assert_eq!(ago(0), "Less than a second");
        assert_eq!(ago(30), "30 seconds");
        assert_eq!(ago(90), "About a minute");
        assert_eq!(ago(3 * 3600), "3 hours");
        assert_eq!(ago(20 * 86400), "2 weeks");
        assert_eq!(since(Some("not a time")), None);
    }
}
