//! Short human renderings of times, durations, rates and payloads, for
//! table cells.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Shown for a value the api did not give.
pub(super) const NONE: &str = "-";

/// Milliseconds since the epoch, now.
pub(super) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `850ms`, `4.2s`, `3m12s`, `2h05m`, `3d04h`.
pub(super) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{}.{}s", s, (ms % 1000) / 100),
        60_000..=3_599_999 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..=86_399_999 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How long ago an epoch-ms instant was: `12.0s ago`; `-` for none (0).
pub(super) fn ago_ms(ms: i64, now: i64) -> String {
    if ms <= 0 {
        return NONE.into();
    }
    match now - ms {
        d if d < 0 => "just now".into(),
        d => format!("{} ago", duration(d as u64)),
    }
}

/// [`ago_ms`] of an optional timestamp.
pub(super) fn ago(t: Option<DateTime<Utc>>, now: i64) -> String {
    t.map_or_else(|| NONE.into(), |t| ago_ms(t.timestamp_millis(), now))
}

/// `2024-05-01 12:00:03 UTC (3m12s ago)`, for detail views.
pub(super) fn when_ms(ms: i64, now: i64) -> String {
    match DateTime::from_timestamp_millis(ms).filter(|_| ms > 0) {
        Some(t) => format!(
            "{} ({})",
            t.format("%Y-%m-%d %H:%M:%S UTC"),
            ago_ms(ms, now)
        ),
        None => NONE.into(),
    }
}

/// A 0..=1 ratio as `12.5%`.
pub(super) fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// `1 job`, `2 jobs`: a count with its noun.
pub(super) fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// An optional cell.
pub(super) fn opt(v: Option<impl ToString>) -> String {
    v.map_or_else(|| NONE.into(), |v| v.to_string())
}

/// `text` on one line, at most `max` characters (an ellipsis marks a cut).
pub(super) fn clip(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A job payload in a cell: `key=value` for each field of an object, else
/// compact JSON. A wrapped scalar (MongoDB's `{"$oid": "…"}`) shows as the
/// scalar; other nested values as `…`.
pub(super) fn payload(v: &Value) -> String {
    let Value::Object(map) = v else {
        return v.to_string();
    };
    map.iter()
        .map(|(k, v)| format!("{k}={}", scalar(v).unwrap_or_else(|| "…".into())))
        .collect::<Vec<_>>()
        .join(" ")
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(_) => None,
        Value::Object(m) if m.len() == 1 => m.values().next().and_then(scalar),
        Value::Object(_) => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            (0, "0ms"),
            (999, "999ms"),
            (4_250, "4.2s"),
            (192_000, "3m12s"),
            (7_500_000, "2h05m"),
            (273_600_000, "3d04h"),
        ];
        for (ms, want) in cases {
            assert_eq!(duration(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn ages() {
        assert_eq!(ago_ms(0, 10_000), NONE, "unset");
        assert_eq!(ago_ms(9_000, 10_000), "1.0s ago");
        assert_eq!(ago_ms(11_000, 10_000), "just now", "clock skew");
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "job"), "1 job");
        assert_eq!(count(0, "job"), "0 jobs");
    }

    #[test]
    fn clipping() {
        assert_eq!(clip("a\n  b", 10), "a b", "one line");
        assert_eq!(clip("abcdef", 4), "abc…", "cut");
        assert_eq!(clip("abcd", 4), "abcd", "fits");
    }

    #[test]
    fn payloads() {
        let v = serde_json::json!({
            "contactId": {"$oid": "c1"}, "list": [1], "provider": "hubspot",
            "version": 2, "x": {"y": 1, "z": 2}
        });
        assert_eq!(
            payload(&v),
            "contactId=c1 list=… provider=hubspot version=2 x=…"
        );
        assert_eq!(payload(&serde_json::json!([1, 2])), "[1,2]");
    }
}
