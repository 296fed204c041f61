//! How SQLite's declared column types map to Arrow, and how values cross
//! between the two in both directions.
//!
//! SQLite is dynamically typed: a declared type is only an affinity, and
//! any column may hold any value. So every value read is checked against
//! the Arrow type its column promised; one that does not fit is a dirty
//! row, never a silent NULL. Decimals, dates and times travel as text, and
//! decimals are parsed digit by digit, never through a float.

use arrow::datatypes::{DataType, TimeUnit};
use chrono::{Datelike, NaiveDate};
use rusqlite::types::ValueRef;
use std::fmt::Write as _;

/// Precision and scale of a `DECIMAL`/`NUMERIC` declared without them.
const DEFAULT_DECIMAL: (u8, i8) = (38, 10);

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i64 = 719_163;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The Arrow type a source column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int64,
    Float64,
    Utf8,
    Binary,
    Boolean,
    /// Precision, scale.
    Decimal(u8, i8),
    Date32,
    /// Microseconds, no time zone.
    Timestamp,
    /// Microseconds since midnight.
    Time64,
}

impl Kind {
    pub(crate) fn data_type(self) -> DataType {
        match self {
            Kind::Int64 => DataType::Int64,
            Kind::Float64 => DataType::Float64,
            Kind::Utf8 => DataType::Utf8,
            Kind::Binary => DataType::Binary,
            Kind::Boolean => DataType::Boolean,
            Kind::Decimal(p, s) => DataType::Decimal128(p, s),
            Kind::Date32 => DataType::Date32,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Time64 => DataType::Time64(TimeUnit::Microsecond),
        }
    }

    /// The kind for a declared column type, `None` when the declaration
    /// says nothing (no type, or a name SQLite would give NUMERIC affinity
    /// that tidex does not recognise): then the first row decides.
    ///
    /// Names tidex knows come first (`BOOLEAN`, `DECIMAL(p,s)`, `DATE`…),
    /// then SQLite's own affinity rules: `INT` → integer; `CHAR`, `CLOB`,
    /// `TEXT` → text; `BLOB` → binary; `REAL`, `FLOA`, `DOUB` → float.
    pub(crate) fn from_decl(decl: &str) -> Option<Kind> {
        let d = decl.trim().to_ascii_uppercase();
        if d.is_empty() {
            return None;
        }
        let (name, args) = match d.split_once('(') {
            Some((n, rest)) => (n.trim(), Some(rest.trim_end_matches(')'))),
            None => (d.as_str(), None),
        };
        let has = |s: &str| name.contains(s);
        if has("BOOL") {
            return Some(Kind::Boolean);
        }
        if has("DECIMAL") || has("NUMERIC") || has("NUMBER") {
            return Some(decimal_kind(args));
        }
        if has("DATETIME") || has("TIMESTAMP") {
            return Some(Kind::Timestamp);
        }
        if has("DATE") {
            return Some(Kind::Date32);
        }
        if has("TIME") {
            return Some(Kind::Time64);
        }
        if has("INT") {
            return Some(Kind::Int64);
        }
        if has("CHAR") || has("CLOB") || has("TEXT") || has("JSON") {
            return Some(Kind::Utf8);
        }
        if has("BLOB") {
            return Some(Kind::Binary);
        }
        if has("REAL") || has("FLOA") || has("DOUB") {
            return Some(Kind::Float64);
        }
        None
    }

    /// The kind for a column without a usable declaration, from the type of
    /// its value in the first row (text when that is NULL or there is none).
    pub(crate) fn from_value(v: Option<ValueRef<'_>>) -> Kind {
        match v {
            Some(ValueRef::Integer(_)) => Kind::Int64,
            Some(ValueRef::Real(_)) => Kind::Float64,
            Some(ValueRef::Blob(_)) => Kind::Binary,
            _ => Kind::Utf8,
        }
    }
}

/// `DECIMAL(p,s)`, `DECIMAL(p)` or `DECIMAL`; a precision Decimal128
/// cannot hold is read as text, exactly as stored.
fn decimal_kind(args: Option<&str>) -> Kind {
    let Some(args) = args else {
        return Kind::Decimal(DEFAULT_DECIMAL.0, DEFAULT_DECIMAL.1);
    };
    let mut parts = args.split(',').map(|s| s.trim().parse::<i64>());
    let (p, s) = match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(p)), None, None) => (p, 0),
        (Some(Ok(p)), Some(Ok(s)), None) => (p, s),
        _ => return Kind::Utf8,
    };
    if (1..=38).contains(&p) && (-38..=p).contains(&s) {
        Kind::Decimal(p as u8, s as i8)
    } else {
        Kind::Utf8
    }
}

/// One value converted for its column's Arrow builder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    /// Int64, and the integer forms of Date32 (days), Timestamp and Time64
    /// (microseconds).
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// Text rendered from a number (a number in a text column).
    Owned(String),
    Bytes(&'a [u8]),
    Bool(bool),
    Decimal(i128),
}

/// A value as a person would recognise it in an error message.
pub(crate) fn show(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => format!("integer {i}"),
        ValueRef::Real(f) => format!("real {f}"),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            if s.chars().count() > 64 {
                let head: String = s.chars().take(64).collect();
                format!("text {head:?}…")
            } else {
                format!("text {s:?}")
            }
        }
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

/// A value as raw text, for the dead-letter record.
pub(crate) fn raw(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => {
            let mut s = String::with_capacity(3 + 2 * b.len());
            s.push_str("x'");
            for byte in b {
                let _ = write!(s, "{byte:02x}");
            }
            s.push('\'');
            s
        }
    }
}

/// Bytes a value occupies, for the progress estimate.
pub(crate) fn value_size(v: ValueRef<'_>) -> u64 {
    match v {
        ValueRef::Null => 1,
        ValueRef::Integer(_) | ValueRef::Real(_) => 8,
        ValueRef::Text(b) | ValueRef::Blob(b) => b.len() as u64,
    }
}

/// Converts one stored value for a column of `kind`; the error is the
/// reason the row is dirty.
pub(crate) fn convert(kind: Kind, v: ValueRef<'_>) -> Result<Cell<'_>, String> {
    if let ValueRef::Null = v {
        return Ok(Cell::Null);
    }
    let unfit = |what: &str| format!("{} is not {what}", show(v));
    match kind {
        Kind::Int64 => match v {
            ValueRef::Integer(i) => Ok(Cell::Int(i)),
            // 2^63 is exact as a float; anything at or past it does not fit.
            ValueRef::Real(f)
                if f.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) =>
            {
                Ok(Cell::Int(f as i64))
            }
            ValueRef::Text(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .map(Cell::Int)
                .ok_or_else(|| unfit("an integer")),
            _ => Err(unfit("an integer")),
        },
        Kind::Float64 => match v {
            ValueRef::Real(f) => Ok(Cell::Float(f)),
            ValueRef::Integer(i) => Ok(Cell::Float(i as f64)),
            // NaN cannot be stored as a REAL (SQLite makes it NULL), so
            // tidex writes it as the text 'NaN'.
            ValueRef::Text(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .map(Cell::Float)
                .ok_or_else(|| unfit("a number")),
            ValueRef::Blob(_) | ValueRef::Null => Err(unfit("a number")),
        },
        Kind::Utf8 => match v {
            ValueRef::Text(t) | ValueRef::Blob(t) => std::str::from_utf8(t)
                .map(Cell::Str)
                .map_err(|_| format!("{} is not valid UTF-8 text", show(v))),
            ValueRef::Integer(i) => Ok(Cell::Owned(i.to_string())),
            ValueRef::Real(f) => Ok(Cell::Owned(f.to_string())),
            ValueRef::Null => Ok(Cell::Null),
        },
        Kind::Binary => match v {
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Cell::Bytes(b)),
            _ => Err(unfit("a blob")),
        },
        Kind::Boolean => match v {
            ValueRef::Integer(0) => Ok(Cell::Bool(false)),
            ValueRef::Integer(1) => Ok(Cell::Bool(true)),
            ValueRef::Text(t) => match t.to_ascii_lowercase().as_slice() {
                b"true" | b"t" | b"1" => Ok(Cell::Bool(true)),
                b"false" | b"f" | b"0" => Ok(Cell::Bool(false)),
                _ => Err(unfit("a boolean (0/1, true/false)")),
            },
            _ => Err(unfit("a boolean (0/1, true/false)")),
        },
        Kind::Decimal(p, s) => {
            let parsed = match v {
                ValueRef::Integer(i) => parse_decimal(&i.to_string(), p, s),
                // A REAL in a NUMERIC column: its shortest exact-round-trip
                // text, the digits SQLite would show.
                ValueRef::Real(f) if f.is_finite() => parse_decimal(&f.to_string(), p, s),
                ValueRef::Text(t) => match std::str::from_utf8(t) {
                    Ok(text) => parse_decimal(text, p, s),
                    Err(_) => Err(String::new()),
                },
                _ => Err(String::new()),
            };
            parsed.map(Cell::Decimal).map_err(|why| {
                let what = format!("a DECIMAL({p},{s})");
                if why.is_empty() {
                    unfit(&what)
                } else {
                    format!("{} is not {what}: {why}", show(v))
                }
            })
        }
        Kind::Date32 => match v {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| parse_date(s.trim()))
                .map(|d| Cell::Int(d as i64))
                .ok_or_else(|| unfit("a date (YYYY-MM-DD)")),
            ValueRef::Integer(secs) if secs % 86_400 == 0 => i32::try_from(secs / 86_400)
                .map(|d| Cell::Int(d as i64))
                .map_err(|_| unfit("a date in range")),
            _ => Err(unfit("a date (YYYY-MM-DD)")),
        },
        Kind::Timestamp => match v {
            ValueRef::Text(t) => match std::str::from_utf8(t).map(|s| parse_timestamp(s.trim())) {
                Ok(Ok(us)) => Ok(Cell::Int(us)),
                Ok(Err(why)) if !why.is_empty() => {
                    Err(format!("{} is not a timestamp: {why}", show(v)))
                }
                _ => Err(unfit("a timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])")),
            },
            ValueRef::Integer(secs) => secs
                .checked_mul(1_000_000)
                .map(Cell::Int)
                .ok_or_else(|| unfit("a timestamp in range (unix seconds)")),
            _ => Err(unfit("a timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])")),
        },
        Kind::Time64 => match v {
            ValueRef::Text(t) => match std::str::from_utf8(t).map(|s| parse_time(s.trim())) {
                Ok(Ok(us)) => Ok(Cell::Int(us)),
                Ok(Err(why)) if !why.is_empty() => Err(format!("{} is not a time: {why}", show(v))),
                _ => Err(unfit("a time (HH:MM:SS[.ffffff])")),
            },
            _ => Err(unfit("a time (HH:MM:SS[.ffffff])")),
        },
    }
}

/// Parses a decimal literal (`-12.50`, `1e3`, `+.5`) exactly into its
/// unscaled value at scale `s`; the error says why it does not fit
/// (empty when it is not a number at all).
pub(crate) fn parse_decimal(text: &str, p: u8, s: i8) -> Result<i128, String> {
    let t = text.trim();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => {
            let e: i32 = t[i + 1..].parse().map_err(|_| String::new())?;
            (&t[..i], e)
        }
        None => (t, 0),
    };
    if !(-400..=400).contains(&exp) {
        return Err("out of range".into());
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(String::new());
    }
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    // Decimal places of the number as written.
    let places = frac.len() as i32 - exp;
    let s = s as i32;
    if places > s {
        let extra = (places - s) as usize;
        let cut = digits.len().saturating_sub(extra);
        if digits[cut..].iter().any(|&d| d != b'0') {
            return Err(format!("more than {s} decimal places"));
        }
        digits.truncate(cut);
    } else {
        digits.extend(std::iter::repeat_n(b'0', (s - places) as usize));
    }
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    let digits = &digits[first..];
    if digits.len() > p as usize {
        return Err(format!("more than {p} significant digits"));
    }
    let mut v: i128 = 0;
    for &d in digits {
        v = v * 10 + (d - b'0') as i128;
    }
    Ok(if neg { -v } else { v })
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `[-]YYYY-MM-DD` → days since 1970-01-01.
pub(crate) fn parse_date(s: &str) -> Option<i32> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut it = body.splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if y.len() < 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let y = num(y)? as i32;
    let date = NaiveDate::from_ymd_opt(if neg { -y } else { y }, num(m)?, num(d)?)?;
    i32::try_from(date.num_days_from_ce() as i64 - EPOCH_DAYS_FROM_CE).ok()
}

/// `HH:MM[:SS[.fraction]]` → microseconds since midnight. Digits past the
/// sixth must be zero: a Time64(µs) column cannot hold nanoseconds.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut it = hms.split(':');
    let (h, m, sec) = (it.next(), it.next(), it.next());
    if it.next().is_some() {
        return Err(String::new());
    }
    let two = |x: Option<&str>| x.filter(|x| x.len() == 2).and_then(num);
    let (h, m) = (two(h).ok_or("")?, two(m).ok_or("")?);
    let sec = match sec {
        Some(x) => two(Some(x)).ok_or("")?,
        None if frac.is_empty() => 0,
        None => return Err(String::new()),
    };
    if h > 23 || m > 59 || sec > 59 {
        return Err("hour, minute or second out of range".into());
    }
    let micros = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || num(frac).is_none() {
            return Err(String::new());
        }
        if frac.len() > 6 && frac[6..].bytes().any(|b| b != b'0') {
            return Err("finer than microseconds".into());
        }
        let f = &frac[..frac.len().min(6)];
        num(f).ok_or("")? as i64 * 10i64.pow(6 - f.len() as u32)
    };
    Ok(((h as i64 * 60 + m as i64) * 60 + sec as i64) * 1_000_000 + micros)
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.fraction]]][Z|±HH:MM]` → microseconds since
/// the epoch, UTC when an offset is given.
pub(crate) fn parse_timestamp(s: &str) -> Result<i64, String> {
    let sep = s
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == ' ' || c == 'T')
        .map(|(i, _)| i);
    let (date, rest) = match sep {
        Some(i) => (&s[..i], s[i + 1..].trim_start()),
        None => (s, ""),
    };
    let days = parse_date(date).ok_or("")? as i64;
    let (time, offset_secs) = split_offset(rest)?;
    let tod = if time.is_empty() {
        0
    } else {
        parse_time(time)?
    };
    days.checked_mul(MICROS_PER_DAY)
        .and_then(|d| d.checked_add(tod))
        .and_then(|t| t.checked_sub(offset_secs * 1_000_000))
        .ok_or_else(|| "out of range".to_string())
}

/// Splits a trailing `Z` or `±HH:MM`/`±HHMM` zone off a time of day.
fn split_offset(t: &str) -> Result<(&str, i64), String> {
    if let Some(body) = t.strip_suffix('Z').or_else(|| t.strip_suffix(" UTC")) {
        return Ok((body.trim_end(), 0));
    }
    if let Some(i) = t.rfind(['+', '-']) {
        let (body, zone) = (&t[..i], &t[i + 1..]);
        let sign = if t.as_bytes()[i] == b'-' { -1 } else { 1 };
        let (h, m) = match zone.split_once(':') {
            Some((h, m)) => (h, m),
            None if zone.len() == 4 => zone.split_at(2),
            None if zone.len() == 2 => (zone, "00"),
            None => return Err(String::new()),
        };
        let (h, m) = (
            num(h).filter(|_| h.len() == 2).ok_or("")?,
            num(m).filter(|_| m.len() == 2).ok_or("")?,
        );
        return Ok((body.trim_end(), sign * (h as i64 * 3600 + m as i64 * 60)));
    }
    Ok((t, 0))
}

/// Writes days since the epoch as `YYYY-MM-DD`.
pub(crate) fn write_date(days: i64, out: &mut String) -> Result<(), String> {
    let date = i32::try_from(days + EPOCH_DAYS_FROM_CE)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| format!("date {days} days from 1970-01-01 is out of range"))?;
    let y = date.year();
    if y < 0 {
        let _ = write!(out, "-{:04}", -y);
    } else {
        let _ = write!(out, "{y:04}");
    }
    let _ = write!(out, "-{:02}-{:02}", date.month(), date.day());
    Ok(())
}

/// Writes a time of day given in `unit`s as `HH:MM:SS.ffffff` (nine
/// fraction digits for nanoseconds).
pub(crate) fn write_time(value: i64, unit: TimeUnit, out: &mut String) -> Result<(), String> {
    let (secs, nanos) = split_unit(value, unit);
    if !(0..86_400).contains(&secs) {
        return Err(format!("time of day {value} ({unit:?}) is out of range"));
    }
    write_hms(secs, nanos, unit, out);
    Ok(())
}

/// Writes a timestamp given in `unit`s since the epoch (UTC) as
/// `YYYY-MM-DD HH:MM:SS.ffffff`.
pub(crate) fn write_timestamp(value: i64, unit: TimeUnit, out: &mut String) -> Result<(), String> {
    let (secs, nanos) = split_unit(value, unit);
    write_date(secs.div_euclid(86_400), out)?;
    out.push(' ');
    write_hms(secs.rem_euclid(86_400), nanos, unit, out);
    Ok(())
}

fn split_unit(value: i64, unit: TimeUnit) -> (i64, i64) {
    let per_sec = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let secs = value.div_euclid(per_sec);
    let nanos = value.rem_euclid(per_sec) * (1_000_000_000 / per_sec);
    (secs, nanos)
}

fn write_hms(secs_of_day: i64, nanos: i64, unit: TimeUnit, out: &mut String) {
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let _ = write!(out, "{h:02}:{m:02}:{s:02}");
    if unit == TimeUnit::Nanosecond {
        let _ = write!(out, ".{nanos:09}");
    } else {
        let _ = write!(out, ".{:06}", nanos / 1000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_follow_affinity_and_known_names() {
        assert_eq!(Kind::from_decl("INTEGER"), Some(Kind::Int64));
        assert_eq!(Kind::from_decl("unsigned big int"), Some(Kind::Int64));
        assert_eq!(Kind::from_decl("VARCHAR(20)"), Some(Kind::Utf8));
        assert_eq!(Kind::from_decl("double precision"), Some(Kind::Float64));
        assert_eq!(Kind::from_decl("BLOB"), Some(Kind::Binary));
        assert_eq!(Kind::from_decl("boolean"), Some(Kind::Boolean));
        assert_eq!(
            Kind::from_decl("DECIMAL(12, 2)"),
            Some(Kind::Decimal(12, 2))
        );
        assert_eq!(
            Kind::from_decl("DECIMAL TEXT(38,10)"),
            Some(Kind::Decimal(38, 10))
        );
        assert_eq!(Kind::from_decl("NUMERIC(7)"), Some(Kind::Decimal(7, 0)));
        assert_eq!(Kind::from_decl("NUMERIC(60,2)"), Some(Kind::Utf8));
        assert_eq!(Kind::from_decl("DATETIME"), Some(Kind::Timestamp));
        assert_eq!(Kind::from_decl("timestamp"), Some(Kind::Timestamp));
        assert_eq!(Kind::from_decl("DATE"), Some(Kind::Date32));
        assert_eq!(Kind::from_decl("TIME"), Some(Kind::Time64));
        assert_eq!(Kind::from_decl(""), None);
        assert_eq!(Kind::from_decl("MONEY"), None);
    }

    #[test]
    fn decimals_parse_exactly_or_not_at_all() {
        assert_eq!(parse_decimal("12.5", 10, 2), Ok(1250));
        assert_eq!(parse_decimal("-0.50", 10, 2), Ok(-50));
        assert_eq!(parse_decimal("1e3", 10, 2), Ok(100_000));
        assert_eq!(parse_decimal("12.3400", 10, 2), Ok(1234));
        assert_eq!(
            parse_decimal("9999999999999999999999999999.9999999999", 38, 10),
            Ok(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
        assert!(parse_decimal("12.345", 10, 2)
            .unwrap_err()
            .contains("decimal places"));
        assert!(parse_decimal("123456789", 5, 0)
            .unwrap_err()
            .contains("significant"));
        assert_eq!(parse_decimal("abc", 10, 2), Err(String::new()));
        assert_eq!(parse_decimal("1.2.3", 10, 2), Err(String::new()));
        assert_eq!(parse_decimal(".", 10, 2), Err(String::new()));
        // The float closest to 0.1 reads as 0.1: shortest round-trip text.
        assert!(matches!(
            convert(Kind::Decimal(10, 2), ValueRef::Real(0.1)),
            Ok(Cell::Decimal(10))
        ));
    }

    #[test]
    fn dates_times_and_timestamps() {
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_time("00:00:01.5"), Ok(1_500_000));
        assert!(parse_time("00:00:01.0000005").is_err());
        assert_eq!(
            parse_time("00:00:01.000000500"),
            Err("finer than microseconds".into())
        );
        assert_eq!(parse_time("00:00:01.123456000"), Ok(1_123_456));
        assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Ok(1_000_000));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.25"), Ok(1_250_000));
        assert_eq!(parse_timestamp("1970-01-01T08:00:00+08:00"), Ok(0));
        assert_eq!(parse_timestamp("1970-01-01 00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp("1969-12-31 23:59:59"), Ok(-1_000_000));
        assert_eq!(parse_timestamp("1970-01-02"), Ok(MICROS_PER_DAY));
        assert!(parse_timestamp("yesterday").is_err());
        let mut s = String::new();
        write_timestamp(-1, TimeUnit::Microsecond, &mut s).unwrap();
        assert_eq!(s, "1969-12-31 23:59:59.999999");
        s.clear();
        write_timestamp(253_402_300_799_999_999, TimeUnit::Microsecond, &mut s).unwrap();
        assert_eq!(s, "9999-12-31 23:59:59.999999");
        assert_eq!(parse_timestamp(&s), Ok(253_402_300_799_999_999));
        s.clear();
        write_date(-719_529, &mut s).unwrap();
        assert_eq!(s, "-0001-12-31");
        assert_eq!(parse_date(&s), Some(-719_529));
        s.clear();
        write_time(1, TimeUnit::Nanosecond, &mut s).unwrap();
        assert_eq!(s, "00:00:00.000000001");
    }

    #[test]
    fn stored_values_that_do_not_fit_are_reasons_not_nulls() {
        let e = convert(Kind::Int64, ValueRef::Text(b"abc")).unwrap_err();
        assert_eq!(e, "text \"abc\" is not an integer");
        assert_eq!(convert(Kind::Int64, ValueRef::Real(3.0)), Ok(Cell::Int(3)));
        assert!(convert(Kind::Int64, ValueRef::Real(3.5)).is_err());
        assert!(convert(Kind::Int64, ValueRef::Real(9.3e18)).is_err());
        assert!(convert(Kind::Boolean, ValueRef::Integer(2)).is_err());
        assert!(matches!(
            convert(Kind::Float64, ValueRef::Text(b"NaN")),
            Ok(Cell::Float(f)) if f.is_nan()
        ));
        assert!(convert(Kind::Utf8, ValueRef::Blob(&[0xff])).is_err());
        assert_eq!(convert(Kind::Utf8, ValueRef::Null), Ok(Cell::Null));
        assert!(convert(Kind::Date32, ValueRef::Integer(5)).is_err());
        assert!(convert(Kind::Date32, ValueRef::Integer(86_400 * (1 << 40))).is_err());
        assert_eq!(
            convert(Kind::Date32, ValueRef::Integer(86_400)),
            Ok(Cell::Int(1))
        );
    }
}
