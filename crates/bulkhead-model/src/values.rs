//! Scalar values as the database accepts them, one checker per column type.
//!
//! Each checker accepts a subset of what PostgreSQL accepts for the column type, never more, so
//! a value that passes here cannot make the database raise a data exception (SQLSTATE class
//! 22). Every checker reads `char`s or uses a parser that does (`time`); none slices a string
//! at a byte offset, so arbitrary Unicode never panics. The property tests below and in
//! `bulkhead-pg/tests/it/values.rs` (round trips through a real PostgreSQL) keep both promises.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;

/// Why a value does not fit a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueProblem {
    WrongType { expected: String },
    OutOfRange { detail: String },
}

fn out_of_range(detail: impl Into<String>) -> ValueProblem {
    ValueProblem::OutOfRange {
        detail: detail.into(),
    }
}

fn wrong(expected: &str) -> ValueProblem {
    ValueProblem::WrongType {
        expected: expected.into(),
    }
}

/// Digits before the decimal point PostgreSQL's `numeric` holds (weight ≤ 32767 base-10000
/// digits), not counting leading zeros.
pub const NUMERIC_MAX_INT_DIGITS: usize = 131_072;
/// Digits after the decimal point PostgreSQL's `numeric` holds (`NUMERIC_DSCALE_MAX`).
pub const NUMERIC_MAX_FRAC_DIGITS: usize = 16_383;
/// The largest time-zone offset PostgreSQL accepts is 15:59 (`MAX_TZDISP_HOUR`).
const MAX_OFFSET_HOURS: i8 = 15;
/// Fractional digits of a timestamp: microseconds, what PostgreSQL stores (no rounding).
const MAX_FRACTION_DIGITS: usize = 6;
/// Nesting a JSON value may have (serde_json's own parsing limit).
pub const MAX_JSON_DEPTH: usize = 128;

/// Text: any Unicode but NUL, which PostgreSQL's `text` cannot store (SQLSTATE 22021).
pub fn text(s: &str, max_chars: Option<u32>) -> Result<(), ValueProblem> {
    if s.contains('\0') {
        return Err(out_of_range("text may not contain NUL characters"));
    }
    if let Some(max) = max_chars
        && s.chars().count() > max as usize
    {
        return Err(out_of_range(format!("longer than {max} characters")));
    }
    Ok(())
}

/// A decimal string `-?digits(.digits)?` within `numeric`'s limits.
pub fn decimal(s: &str) -> Result<(), ValueProblem> {
    let expected = "a number or a decimal string";
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(wrong(expected));
    }
    if int.trim_start_matches('0').chars().count() > NUMERIC_MAX_INT_DIGITS {
        return Err(out_of_range(format!(
            "more than {NUMERIC_MAX_INT_DIGITS} digits before the decimal point"
        )));
    }
    if frac.is_some_and(|f| f.chars().count() > NUMERIC_MAX_FRAC_DIGITS) {
        return Err(out_of_range(format!(
            "more than {NUMERIC_MAX_FRAC_DIGITS} digits after the decimal point"
        )));
    }
    Ok(())
}

/// `YYYY-MM-DD`, a real calendar day in years 1 to 9999.
pub fn date(s: &str) -> Result<(), ValueProblem> {
    let chars: Vec<char> = s.chars().collect();
    let shape = chars.len() == 10
        && chars.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == '-',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return Err(wrong("a YYYY-MM-DD date string"));
    }
    let num = |range: std::ops::Range<usize>| {
        chars[range]
            .iter()
            .fold(0u32, |n, c| n * 10 + c.to_digit(10).unwrap_or(0))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    calendar_day(year, month, day)
}

fn calendar_day(year: u32, month: u32, day: u32) -> Result<(), ValueProblem> {
    if year == 0 {
        return Err(out_of_range("year 0 does not exist; years start at 0001"));
    }
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(|| out_of_range(format!("month {month} does not exist")))?;
    let year = i32::try_from(year).unwrap_or(i32::MAX);
    let day8 = u8::try_from(day).unwrap_or(u8::MAX);
    time::Date::from_calendar_date(year, month, day8)
        .map(drop)
        .map_err(|_| out_of_range(format!("{month} {year} has no day {day}")))
}

/// An RFC 3339 timestamp (`T`, `t` or a space between date and time), at most microsecond
/// precision, no leap second, an offset within ±15:59, denoting an instant in years 1 to 9999
/// UTC — so what the database stores is exactly what was sent and reads back in the same form.
pub fn timestamp(s: &str) -> Result<(), ValueProblem> {
    let expected = "an RFC 3339 timestamp string (2026-11-23T10:00:00Z)";
    let parsed = time::OffsetDateTime::parse(s, &Rfc3339).map_err(|_| wrong(expected))?;
    let chars: Vec<char> = s.chars().take(20).collect();
    // `time` accepts any character between date and time; PostgreSQL only these.
    if !matches!(chars.get(10), Some('T' | 't' | ' ')) {
        return Err(wrong(expected));
    }
    if chars.get(17..19) == Some(&['6', '0'][..]) {
        return Err(out_of_range("leap seconds are not stored; use :59"));
    }
    let fraction = s
        .split_once('.')
        .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).count())
        .unwrap_or(0);
    if fraction > MAX_FRACTION_DIGITS {
        return Err(out_of_range(format!(
            "at most {MAX_FRACTION_DIGITS} fractional digits (microseconds)"
        )));
    }
    if parsed.offset().whole_hours().abs() > MAX_OFFSET_HOURS {
        return Err(out_of_range(format!(
            "the offset must be within ±{MAX_OFFSET_HOURS}:59"
        )));
    }
    // `checked_`: the conversion itself would panic past the year 9999.
    let utc_year = parsed.checked_to_utc().map(|t| t.year());
    if !utc_year.is_some_and(|y| (1..=9999).contains(&y)) {
        return Err(out_of_range("outside 0001-01-01 to 9999-12-31 UTC"));
    }
    Ok(())
}

/// A UUID in its hyphenated form (any case), what `id` and references are.
pub fn uuid(s: &str) -> Result<(), ValueProblem> {
    let mut n = 0;
    for (i, c) in s.chars().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return Err(wrong("a UUID string"));
        }
        n = i + 1;
    }
    if n == 36 {
        Ok(())
    } else {
        Err(wrong("a UUID string"))
    }
}

/// A JSON value `jsonb` stores: no NUL in any string or key (PostgreSQL refuses `\u0000`,
/// SQLSTATE 22P05), nesting within [`MAX_JSON_DEPTH`].
pub fn json(v: &Value) -> Result<(), ValueProblem> {
    fn walk(v: &Value, depth: usize) -> Result<(), ValueProblem> {
        if depth > MAX_JSON_DEPTH {
            return Err(out_of_range(format!(
                "nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        let nul = || out_of_range("JSON strings may not contain NUL (\\u0000)");
        match v {
            Value::String(s) if s.contains('\0') => Err(nul()),
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, depth + 1)),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if k.contains('\0') {
                    return Err(nul());
                }
                walk(v, depth + 1)
            }),
            _ => Ok(()),
        }
    }
    walk(v, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Cases per property: `BULKHEAD_FUZZ_CASES` for long runs, a small default in CI.
    fn cases() -> u32 {
        std::env::var("BULKHEAD_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512)
    }

    #[test]
    fn timestamps_accept_rfc3339_within_what_postgresql_stores() {
        for ok in [
            "2026-11-23T10:00:00Z",
            "2026-11-23t10:00:00z",
            "2026-11-23 10:00:00.123456+15:59",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "2024-02-29T00:00:00-15:00",
        ] {
            assert_eq!(timestamp(ok), Ok(()), "{ok}");
        }
        for bad in [
            "2026-11-23T10:00:00+99:00",
            "2026-11-23T10:00:00+16:00",
            "2026-11-23X10:00:00Z",
            "2026-11-23T10:00:60Z",
            "2026-11-23T10:00:00.1234567Z",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:00:00-01:00",
            "2023-02-29T00:00:00Z",
            "2026-11-23T10:00:00",
            "2026-11-23T1é:00:00Z",
            "2026-11-2é10:00:00Z",
            "２026-11-23T10:00:00Z",
        ] {
            assert!(timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_real_calendar_days() {
        for ok in ["2026-11-23", "2024-02-29", "0001-01-01", "9999-12-31"] {
            assert_eq!(date(ok), Ok(()), "{ok}");
        }
        for bad in [
            "2026-02-30",
            "2023-02-29",
            "2026-13-01",
            "2026-00-10",
            "0000-01-01",
            "2026-1-01",
            "2026-01-0é",
            "٢٠٢٦-01-01",
        ] {
            assert!(date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decimals_stay_within_numeric_limits() {
        assert_eq!(decimal("-12.50"), Ok(()));
        assert_eq!(decimal(&"9".repeat(NUMERIC_MAX_INT_DIGITS)), Ok(()));
        let zeros = format!("{}1", "0".repeat(NUMERIC_MAX_INT_DIGITS + 5));
        assert_eq!(decimal(&zeros), Ok(()), "leading zeros do not count");
        assert!(matches!(
            decimal(&"9".repeat(NUMERIC_MAX_INT_DIGITS + 1)),
            Err(ValueProblem::OutOfRange { .. })
        ));
        assert!(matches!(
            decimal(&format!("0.{}", "1".repeat(NUMERIC_MAX_FRAC_DIGITS + 1))),
            Err(ValueProblem::OutOfRange { .. })
        ));
        for bad in ["", "-", "1.", ".5", "1e5", "NaN", "١٢", "+1", "1.2.3"] {
            assert!(decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_refuses_nul_anywhere_and_deep_nesting() {
        assert!(json(&serde_json::json!({"a": ["ok", {"b": 1}]})).is_ok());
        assert!(json(&serde_json::json!({"a": ["x\u{0}"]})).is_err());
        assert!(json(&serde_json::json!({"k\u{0}": 1})).is_err());
        let mut deep = Value::Null;
        for _ in 0..=MAX_JSON_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        assert!(json(&deep).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn no_checker_panics_on_arbitrary_unicode(s in "\\PC*|\\p{Any}{0,40}") {
            let _ = text(&s, Some(10));
            let _ = decimal(&s);
            let _ = date(&s);
            let _ = timestamp(&s);
            let _ = uuid(&s);
            let _ = json(&Value::from(s.clone()));
        }

        #[test]
        fn no_checker_panics_on_near_miss_timestamps(
            s in "[0-9٠-٩é]{4}-[0-9é]{2}-[0-9]{2}[Tt éX][0-9]{2}:[0-9é]{2}:[0-9]{2}(\\.[0-9]{0,8})?(Z|z|[+-][0-9]{2}:[0-9]{2}|é|)"
        ) {
            let _ = timestamp(&s);
            let _ = date(s.get(..10).unwrap_or(""));
        }

        #[test]
        fn an_accepted_date_is_the_date_part_of_an_accepted_timestamp(
            y in 0u32..10000, m in 0u32..14, d in 0u32..33
        ) {
            let day = format!("{y:04}-{m:02}-{d:02}");
            let at = format!("{day}T12:00:00Z");
            prop_assert_eq!(date(&day).is_ok(), timestamp(&at).is_ok(), "{}", at);
        }
    }
}
