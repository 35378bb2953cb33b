//! Every time an upstream states, read in one place: retry hints (`retry-after`,
//! `retry-after-ms`), HTTP dates, RFC 3339 instants (Anthropic's rate-limit resets, model
//! creation times), Go-style durations (OpenAI's reset headers) and protobuf durations
//! (Gemini's `RetryInfo`).
//!
//! The calendar work is [`jiff`]'s; the functions here only say which forms an API may
//! send and refuse the rest. Nothing here panics on an absurd value: a hint too large
//! for a [`Duration`] or a date field too long for the arithmetic is no hint.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// The upstream's retry hint: `retry-after-ms` (OpenAI, Anthropic), else `retry-after`
/// in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // `try_from`: a hint too large for a Duration (`1e30`) is no hint, not a panic.
    if let Some(after) = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
    {
        return Some(after);
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = http_date(value)?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`): the IMF-fixdate form, the only one a
/// current server sends (RFC 9110's obsolete RFC 850 and asctime forms are not read).
pub fn http_date(text: &str) -> Option<SystemTime> {
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(text.trim())
        .ok()?;
    Some(SystemTime::from(at))
}

/// Most fraction-of-a-second digits kept: nanoseconds, as far as a [`SystemTime`] goes.
const FRACTION_DIGITS: usize = 9;

/// An RFC 3339 instant (`2025-08-21T12:40:59Z`, `2024-10-22T00:00:00.5+02:00`).
///
/// jiff reads the wider Temporal (ISO 8601) grammar, which also takes offsets without a
/// colon (`+0200`, `+02`) and `[zone]` annotations: those are refused here, since no API
/// documents them. RFC 3339 allows any number of fraction digits; those past
/// nanoseconds are dropped, not rounded.
pub fn rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let b = text.as_bytes();
    let offset = match b.len().checked_sub(6) {
        _ if matches!(b.last(), Some(b'Z' | b'z')) => true,
        Some(at) => matches!(b[at], b'+' | b'-') && b[at + 3] == b':',
        None => false,
    };
    if !offset {
        return None;
    }
    let cut;
    let text = match text.find('.') {
        Some(dot) => {
            let digits = text[dot + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits > FRACTION_DIGITS {
                let kept = dot + 1 + FRACTION_DIGITS;
                cut = format!("{}{}", &text[..kept], &text[dot + 1 + digits..]);
                cut.as_str()
            } else {
                text
            }
        }
        None => text,
    };
    let at: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(at))
}

/// Seconds since the Unix epoch of an RFC 3339 instant; `None` for anything else or a
/// time before 1970.
pub fn unix_seconds(text: &str) -> Option<u64> {
    let at = rfc3339(text)?;
    Some(at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs())
}

/// A duration as Go prints one (`1s`, `6m0s`, `20ms`, `1h2m3.5s`), which is jiff's
/// "friendly" format; a negative one is no duration.
pub fn go_duration(text: &str) -> Option<Duration> {
    let duration: jiff::SignedDuration = text.trim().parse().ok()?;
    Duration::try_from(duration).ok()
}

/// A protobuf `Duration` in its JSON form: seconds with an `s` suffix (`"34s"`,
/// `"1.5s"`).
pub fn proto_duration(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    // `try_from`: a delay too large for a Duration (`1e30s`) is no hint, not a panic.
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            retry_after(&h),
            Some(Duration::from_millis(1500)),
            "the finer header wins"
        );
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn absurd_retry_hints_are_ignored_not_a_panic() {
        // Each used to panic the request task: Duration::from_secs_f64 on a value too
        // large for a Duration, or integer overflow on an over-long date field.
        for (name, value) in [
            ("retry-after", "1e30"),
            ("retry-after", "184467440737095516160"),
            ("retry-after-ms", "1e300"),
            ("retry-after", "Sun, 06 Nov 99999999999999999 08:49:37 GMT"),
            (
                "retry-after",
                "Sun, 06 Nov 1994 99999999999999999:49:37 GMT",
            ),
            (
                "retry-after",
                "Sun, 9999999999999999999 Nov 1994 08:49:37 GMT",
            ),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            assert_eq!(retry_after(&h), None, "{name}: {value}");
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1e300"));
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(
            retry_after(&h),
            Some(Duration::from_secs(2)),
            "an unusable ms hint falls back to retry-after"
        );
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("soon"), None);
        assert_eq!(go_duration("99999999999999999999h"), None);
        assert_eq!(go_duration(&format!("{}s", "9".repeat(400))), None);
    }

    /// `seconds` and `nanos` after the Unix epoch.
    fn at(seconds: u64, nanos: u32) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
    }

    #[test]
    fn rfc3339_timestamps_parse_with_fractions_and_offsets() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), at(0, 0));
        assert_eq!(rfc3339("2025-08-21T12:40:59Z"), at(1_755_780_059, 0));
        assert_eq!(
            rfc3339("2025-08-21T14:40:59.25+02:00"),
            at(1_755_780_059, 250_000_000)
        );
        assert_eq!(
            rfc3339("2025-08-21t10:10:59.123456789123-02:30"),
            at(1_755_780_059, 123_456_789)
        );
        assert_eq!(rfc3339("2024-02-29T00:00:00Z"), at(1_709_164_800, 0));
        for bad in [
            "",
            "2025-08-21",
            "2025-08-21T12:40:59",
            "2025-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-08-21T24:00:00Z",
            "2025-08-21T12:40:59.Z",
            "2025-08-21T12:40:59+0200",
            "Thu, 21 Aug 2025 12:40:59 GMT",
            "2025-08-21T12:4a:59Z",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn proto_durations_parse() {
        assert_eq!(proto_duration("34s"), Some(Duration::from_secs(34)));
        assert_eq!(proto_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(proto_duration("34"), None);
        assert_eq!(proto_duration("-1s"), None);
        assert_eq!(proto_duration("soon"), None);
        assert_eq!(proto_duration("1e30s"), None);
        assert_eq!(proto_duration("NaNs"), None);
    }

    #[test]
    fn rfc3339_timestamps_parse_to_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2024-12-06T00:48:09.983619Z"),
            Some(1_733_446_089)
        );
        // 14:56:49 at UTC-7 is 21:56:49 UTC.
        assert_eq!(
            unix_seconds("2023-11-04T14:56:49.277302595-07:00"),
            Some(1_699_135_009)
        );
        assert_eq!(
            unix_seconds("2023-11-05T03:26:49+05:30"),
            Some(1_699_135_009)
        );
        for bad in [
            "",
            "2023-11-04",
            "2023-11-04T14:56:49",
            "2023-13-04T14:56:49Z",
            "2023-11-04T14:56:49.Z",
            "2023-11-04T14:56:49+0700",
            "1969-12-31T23:59:59Z",
            "2023-11-04T14:56:4éZ",
            "yesterday",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }
}
