//! What people and scripts read: pretty JSON, aligned tables, `key: value` views,
//! ages and dates.

use serde_json::Value;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Exit code of a process whose reader went away (128 + SIGPIPE), as a shell reports it.
const BROKEN_PIPE: i32 = 141;

/// Write `bytes` to stdout and flush them now (streamed output shows as it comes).
/// A reader that went away (`berth ... | head`) ends the process quietly.
pub fn stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
        std::process::exit(BROKEN_PIPE);
    }
}

/// Write `bytes` to stderr and flush them now.
pub fn stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes).and_then(|()| err.flush());
}

/// Print the API's answer as it came, pretty.
pub fn json(value: &Value) -> anyhow::Result<()> {
    stdout(format!("{}\n", serde_json::to_string_pretty(value)?).as_bytes());
    Ok(())
}

/// Print rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    stdout(render_table(headers, rows).as_bytes());
}

/// The text of [`table`]: two spaces between columns, no trailing blanks.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Print `key: value` lines with the values aligned.
pub fn details(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in fields {
        text.push_str(&format!("{:<width$}  {value}\n", format!("{key}:")));
    }
    stdout(text.as_bytes());
}

/// `-` for a missing value.
pub fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How long ago `then` was, in its largest unit: `45s`, `12m`, `3h`, `5d`.
pub fn age(then: i64, now: i64) -> String {
    let secs = (now - then).max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC (age ago)`.
pub fn when(secs: i64) -> String {
    format!("{} UTC ({} ago)", utc(secs), age(secs, now()))
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

/// A byte count in the largest fitting binary unit: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A span in its two largest units: `45s`, `12m 5s`, `3h 20m`, `5d 2h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60, secs % 60);
    match secs {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{m}m {s}s"),
        3_600..86_400 => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let rows = vec![vec!["inst_a".into(), "running".into()], vec!["inst_bbbbbb".into(), "-".into()]];
        let text = render_table(&["ID", "STATUS"], &rows);
        assert_eq!(text, "ID           STATUS\ninst_a       running\ninst_bbbbbb  -\n");
    }

    #[test]
    fn ages_use_the_largest_unit() {
        assert_eq!(age(100, 145), "45s");
        assert_eq!(age(0, 7_300), "2h");
        assert_eq!(age(0, 3 * 86_400 + 5), "3d");
        assert_eq!(age(10, 0), "0s");
    }

    #[test]
    fn durations_use_two_units() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(725), "12m 5s");
        assert_eq!(duration(3 * 3_600 + 20 * 60 + 7), "3h 20m");
        assert_eq!(duration(5 * 86_400 + 2 * 3_600), "5d 2h");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
