//! The MySQL ⇄ Arrow type mapping, both ways.
//!
//! Reading: column metadata decides a [`Kind`] (and so the Arrow field);
//! each value is first decoded into a [`Cell`], so a row with one bad value
//! (a zero date, a TIME past 24 h) is rejected whole before anything is
//! appended to the column builders. Values are parsed from the driver's
//! bytes in place; decimals go from their text straight to scaled
//! integers, never through a float.
//!
//! Writing: [`sql_type`] gives the column type of a created table and
//! [`SinkCols`] turns a batch's columns into bound parameters.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Decimal256Builder, Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    Int8Builder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
    UInt16Builder, UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow::datatypes::{
    i256, DataType, Date32Type, Decimal128Type, Decimal256Type, Field, FieldRef, Float32Type,
    Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, Time64MicrosecondType, TimeUnit,
    TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::json::writer::{make_encoder, EncoderOptions, NullableEncoder};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::{Column, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Field metadata key of Arrow extension types.
pub(super) const EXT_NAME: &str = "ARROW:extension:name";
/// Canonical extension name of JSON text columns.
pub(super) const JSON_EXT: &str = "arrow.json";
/// Canonical extension name of 16-byte UUIDs.
pub(super) const UUID_EXT: &str = "arrow.uuid";

const EPOCH_DAYS_FROM_CE: i32 = 719_163;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// What a result column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    Dec128(u8, i8),
    Dec256(u8, i8),
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    Text,
    Json,
    Binary,
    Bit,
}

impl Kind {
    /// Whether the column can bound key ranges or an incremental cursor,
    /// and how its values become integers.
    pub(super) fn key_form(self) -> Option<KeyForm> {
        match self {
            Kind::I8
            | Kind::I16
            | Kind::I32
            | Kind::I64
            | Kind::U8
            | Kind::U16
            | Kind::U32
            | Kind::U64
            | Kind::Year => Some(KeyForm::Int),
            Kind::Date | Kind::DateTime | Kind::Timestamp => Some(KeyForm::Micros),
            _ => None,
        }
    }
}

/// How a key or cursor column's values are held as `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyForm {
    /// The integer itself.
    Int,
    /// Microseconds since 1970-01-01 00:00:00 (UTC for TIMESTAMP).
    Micros,
}

impl KeyForm {
    /// A key value as a bound parameter.
    pub(super) fn param(self, v: i64) -> Value {
        match self {
            KeyForm::Int => Value::Int(v),
            KeyForm::Micros => {
                let t = micros_to_datetime(v).unwrap_or_default();
                Value::Date(
                    t.year() as u16,
                    t.month() as u8,
                    t.day() as u8,
                    t.hour() as u8,
                    t.minute() as u8,
                    t.second() as u8,
                    t.nanosecond() / 1000,
                )
            }
        }
    }

    /// A key value for labels and stored marks.
    pub(super) fn format(self, v: i64) -> String {
        match self {
            KeyForm::Int => v.to_string(),
            KeyForm::Micros => match micros_to_datetime(v) {
                Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                None => v.to_string(),
            },
        }
    }

    /// Parses what [`Self::format`] wrote.
    pub(super) fn parse(self, s: &str) -> Option<i64> {
        match self {
            KeyForm::Int => s.parse().ok(),
            KeyForm::Micros => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc().timestamp_micros()),
        }
    }

    /// A value read from the server (MIN, MAX) as an integer; `Ok(None)`
    /// for NULL.
    pub(super) fn read(self, v: &Value) -> Result<Option<i64>, String> {
        match (self, v) {
            (_, Value::NULL) => Ok(None),
            (KeyForm::Int, Value::Int(i)) => Ok(Some(*i)),
            (KeyForm::Int, Value::UInt(u)) => i64::try_from(*u)
                .map(Some)
                .map_err(|_| format!("{u} is beyond the 64-bit signed range")),
            (KeyForm::Int, Value::Bytes(b)) => parse_int(b)
                .and_then(|i| i64::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| format!("{:?} is not an integer", String::from_utf8_lossy(b))),
            (KeyForm::Micros, v) => match decode(Kind::DateTime, v)? {
                Cell::Micros(m) => Ok(Some(m)),
                _ => Err(format!("unexpected value {}", raw(Kind::DateTime, v))),
            },
            (_, v) => Err(format!("unexpected value {}", raw(Kind::Text, v))),
        }
    }
}

fn micros_to_datetime(v: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_micros(v).map(|t| t.naive_utc())
}

/// The MySQL name of a column type, for errors.
fn type_name(t: ColumnType) -> String {
    format!("{t:?}")
        .trim_start_matches("MYSQL_TYPE_")
        .to_string()
}

/// The kind a result column is read as; `Err` names an unsupported type.
pub(super) fn kind_of(col: &Column, is_json: bool) -> Result<Kind, String> {
    use ColumnType::*;
    let flags = col.flags();
    let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
    let textual = flags.intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG);
    let binary = col.character_set() == 63 && !textual;
    let t = col.column_type();
    Ok(match t {
        MYSQL_TYPE_TINY if col.column_length() == 1 => Kind::Bool,
        MYSQL_TYPE_TINY => pick(unsigned, Kind::U8, Kind::I8),
        MYSQL_TYPE_SHORT => pick(unsigned, Kind::U16, Kind::I16),
        MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG => pick(unsigned, Kind::U32, Kind::I32),
        MYSQL_TYPE_LONGLONG => pick(unsigned, Kind::U64, Kind::I64),
        MYSQL_TYPE_FLOAT => Kind::F32,
        MYSQL_TYPE_DOUBLE => Kind::F64,
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => {
            let s = col.decimals();
            if s > 30 {
                return Err("DECIMAL of unknown scale".into());
            }
            // The display length counts the digits, the point and the sign.
            let len = col.column_length() as i64;
            let p = len - i64::from(s > 0) - i64::from(!unsigned);
            let p = p.clamp(i64::from(s).max(1), 65) as u8;
            if p <= 38 {
                Kind::Dec128(p, s as i8)
            } else {
                Kind::Dec256(p, s as i8)
            }
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Kind::DateTime,
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Kind::Time,
        MYSQL_TYPE_YEAR => Kind::Year,
        MYSQL_TYPE_BIT => Kind::Bit,
        MYSQL_TYPE_JSON => Kind::Json,
        // A NULL literal in a query: text that is always NULL.
        MYSQL_TYPE_NULL => Kind::Text,
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => {
            if is_json {
                Kind::Json
            } else if binary {
                Kind::Binary
            } else {
                Kind::Text
            }
        }
        other => return Err(type_name(other)),
    })
}

fn pick(unsigned: bool, u: Kind, s: Kind) -> Kind {
    if unsigned {
        u
    } else {
        s
    }
}

/// The Arrow field of a column read as `kind`.
pub(super) fn field(name: &str, kind: Kind) -> Field {
    let dt = match kind {
        Kind::Bool => DataType::Boolean,
        Kind::I8 => DataType::Int8,
        Kind::I16 | Kind::Year => DataType::Int16,
        Kind::I32 => DataType::Int32,
        Kind::I64 => DataType::Int64,
        Kind::U8 => DataType::UInt8,
        Kind::U16 => DataType::UInt16,
        Kind::U32 => DataType::UInt32,
        Kind::U64 | Kind::Bit => DataType::UInt64,
        Kind::F32 => DataType::Float32,
        Kind::F64 => DataType::Float64,
        Kind::Dec128(p, s) => DataType::Decimal128(p, s),
        Kind::Dec256(p, s) => DataType::Decimal256(p, s),
        Kind::Date => DataType::Date32,
        Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::Time => DataType::Time64(TimeUnit::Microsecond),
        Kind::Text | Kind::Json => DataType::Utf8,
        Kind::Binary => DataType::Binary,
    };
    let f = Field::new(name, dt, true);
    if kind == Kind::Json {
        f.with_metadata(HashMap::from([(EXT_NAME.into(), JSON_EXT.into())]))
    } else {
        f
    }
}

/// One decoded value, ready to append.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cell<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    D128(i128),
    D256(i256),
    /// Days since 1970-01-01.
    Days(i32),
    /// Microseconds since 1970-01-01 00:00:00, or since midnight for TIME.
    Micros(i64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

/// Decodes one value; `Err` says why the row cannot be read.
pub(super) fn decode(kind: Kind, v: &Value) -> Result<Cell<'_>, String> {
    if matches!(v, Value::NULL) {
        return Ok(Cell::Null);
    }
    let int_in = |lo: i128, hi: i128| -> Result<i128, String> {
        let i = int_value(v)?;
        if i < lo || i > hi {
            return Err(format!("{i} is out of range"));
        }
        Ok(i)
    };
    Ok(match kind {
        Kind::Bool => match int_value(v)? {
            0 => Cell::Bool(false),
            1 => Cell::Bool(true),
            other => return Err(format!("{other} is not a boolean (0 or 1)")),
        },
        Kind::I8 => Cell::I64(int_in(i8::MIN.into(), i8::MAX.into())? as i64),
        Kind::I16 | Kind::Year => Cell::I64(int_in(i16::MIN.into(), i16::MAX.into())? as i64),
        Kind::I32 => Cell::I64(int_in(i32::MIN.into(), i32::MAX.into())? as i64),
        Kind::I64 => Cell::I64(int_in(i64::MIN.into(), i64::MAX.into())? as i64),
        Kind::U8 => Cell::U64(int_in(0, u8::MAX.into())? as u64),
        Kind::U16 => Cell::U64(int_in(0, u16::MAX.into())? as u64),
        Kind::U32 => Cell::U64(int_in(0, u32::MAX.into())? as u64),
        Kind::U64 => Cell::U64(int_in(0, u64::MAX.into())? as u64),
        Kind::F32 => Cell::F32(match v {
            Value::Float(f) => *f,
            Value::Double(d) => *d as f32,
            Value::Bytes(b) => parse_text::<f32>(b)?,
            other => return Err(unexpected(kind, other)),
        }),
        Kind::F64 => Cell::F64(match v {
            Value::Float(f) => f64::from(*f),
            Value::Double(d) => *d,
            Value::Bytes(b) => parse_text::<f64>(b)?,
            other => return Err(unexpected(kind, other)),
        }),
        Kind::Dec128(p, s) => Cell::D128(decimal_value(v, p, s, kind)?),
        Kind::Dec256(p, s) => Cell::D256(decimal256_value(v, p, s, kind)?),
        Kind::Date => {
            let (y, m, d, ..) = date_parts(kind, v)?;
            let day = NaiveDate::from_ymd_opt(y.into(), m.into(), d.into())
                .ok_or_else(|| invalid_date(kind, v))?;
            Cell::Days(day.num_days_from_ce() - EPOCH_DAYS_FROM_CE)
        }
        Kind::DateTime | Kind::Timestamp => {
            let (y, mo, d, h, mi, s, us) = date_parts(kind, v)?;
            let t = NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
                .and_then(|day| day.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
                .ok_or_else(|| invalid_date(kind, v))?;
            Cell::Micros(t.and_utc().timestamp_micros())
        }
        Kind::Time => {
            let (neg, days, h, m, s, us) = match v {
                Value::Time(neg, days, h, m, s, us) => (*neg, *days, *h, *m, *s, *us),
                Value::Bytes(b) => parse_time(b).ok_or_else(|| unexpected(kind, v))?,
                other => return Err(unexpected(kind, other)),
            };
            let hours = i64::from(days) * 24 + i64::from(h);
            let micros =
                ((hours * 60 + i64::from(m)) * 60 + i64::from(s)) * 1_000_000 + i64::from(us);
            if neg && micros != 0 || micros >= MICROS_PER_DAY {
                return Err(format!(
                    "TIME {} is outside 00:00:00–24:00:00 and cannot be a time of day",
                    raw(kind, v)
                ));
            }
            Cell::Micros(micros)
        }
        Kind::Text | Kind::Json => match v {
            Value::Bytes(b) => Cell::Str(
                std::str::from_utf8(b).map_err(|e| format!("text is not valid UTF-8: {e}"))?,
            ),
            other => return Err(unexpected(kind, other)),
        },
        Kind::Binary => match v {
            Value::Bytes(b) => Cell::Bytes(b),
            other => return Err(unexpected(kind, other)),
        },
        Kind::Bit => match v {
            Value::Bytes(b) if b.len() <= 8 => {
                Cell::U64(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
            }
            Value::Int(_) | Value::UInt(_) => Cell::U64(int_in(0, u64::MAX.into())? as u64),
            other => return Err(unexpected(kind, other)),
        },
    })
}

fn unexpected(kind: Kind, v: &Value) -> String {
    format!("unexpected value {} for a {kind:?} column", raw(kind, v))
}

fn invalid_date(kind: Kind, v: &Value) -> String {
    let r = raw(kind, v);
    if r.starts_with("0000-00-00") {
        format!("zero date {r} is not a date")
    } else {
        format!("{r} is not a valid date")
    }
}

/// The value as the server would print it, for dead letters and errors.
pub(super) fn raw(kind: Kind, v: &Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) if kind == Kind::Binary => {
            let mut s = String::with_capacity(2 + b.len() * 2);
            s.push_str("0x");
            for x in b {
                s.push_str(&format!("{x:02X}"));
            }
            s
        }
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Date(y, mo, d, h, mi, s, us) => {
            if kind == Kind::Date {
                format!("{y:04}-{mo:02}-{d:02}")
            } else if *us == 0 {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
            } else {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
            }
        }
        Value::Time(neg, days, h, m, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            if *us == 0 {
                format!("{sign}{hours:02}:{m:02}:{s:02}")
            } else {
                format!("{sign}{hours:02}:{m:02}:{s:02}.{us:06}")
            }
        }
    }
}

/// Bytes a value took on the wire, roughly, for progress.
pub(super) fn wire_size(v: &Value) -> u64 {
    match v {
        Value::NULL => 0,
        Value::Bytes(b) => b.len() as u64 + 1,
        Value::Float(_) => 4,
        Value::Date(..) | Value::Time(..) => 12,
        _ => 8,
    }
}

fn int_value(v: &Value) -> Result<i128, String> {
    match v {
        Value::Int(i) => Ok((*i).into()),
        Value::UInt(u) => Ok((*u).into()),
        Value::Bytes(b) => parse_int(b).ok_or_else(|| format!("{:?} is not an integer", lossy(b))),
        other => Err(format!(
            "unexpected value {} for an integer",
            raw(Kind::Text, other)
        )),
    }
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn parse_int(b: &[u8]) -> Option<i128> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 38 {
        return None;
    }
    let mut n: i128 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i128::from(c - b'0');
    }
    Some(if neg { -n } else { n })
}

fn parse_text<T: std::str::FromStr>(b: &[u8]) -> Result<T, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("{:?} is not a number", lossy(b)))
}

/// Splits decimal text into sign, integer digits and fraction digits.
fn split_decimal(b: &[u8]) -> Option<(bool, &[u8], &[u8])> {
    let (neg, rest) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let (int, frac) = match rest.iter().position(|&c| c == b'.') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    Some((neg, int, frac))
}

/// The digits of a decimal scaled to `scale`, or why they do not fit.
fn scaled_digits<'a>(
    b: &'a [u8],
    p: u8,
    scale: i8,
) -> Result<(bool, impl Iterator<Item = u8> + 'a), String> {
    let (neg, int, frac) =
        split_decimal(b).ok_or_else(|| format!("{:?} is not a decimal", lossy(b)))?;
    let scale = scale.max(0) as usize;
    let (kept, dropped) = frac.split_at(frac.len().min(scale));
    if dropped.iter().any(|&c| c != b'0') {
        return Err(format!("{} has more than {scale} decimal places", lossy(b)));
    }
    let int = {
        let lead = int.iter().take_while(|&&c| c == b'0').count();
        &int[lead..]
    };
    if int.len() + scale > usize::from(p) {
        return Err(format!("{} does not fit DECIMAL({p},{scale})", lossy(b)));
    }
    let pad = scale - kept.len();
    let digits = int
        .iter()
        .chain(kept)
        .map(|c| c - b'0')
        .chain(std::iter::repeat_n(0u8, pad));
    Ok((neg, digits))
}

fn decimal_value(v: &Value, p: u8, s: i8, kind: Kind) -> Result<i128, String> {
    let text;
    let b: &[u8] = match v {
        Value::Bytes(b) => b,
        Value::Int(_) | Value::UInt(_) => {
            text = int_value(v)?.to_string();
            text.as_bytes()
        }
        other => return Err(unexpected(kind, other)),
    };
    let (neg, digits) = scaled_digits(b, p, s)?;
    // At most 38 digits (checked above), so this cannot overflow.
    let n = digits.fold(0i128, |acc, d| acc * 10 + i128::from(d));
    Ok(if neg { -n } else { n })
}

fn decimal256_value(v: &Value, p: u8, s: i8, kind: Kind) -> Result<i256, String> {
    let text;
    let b: &[u8] = match v {
        Value::Bytes(b) => b,
        Value::Int(_) | Value::UInt(_) => {
            text = int_value(v)?.to_string();
            text.as_bytes()
        }
        other => return Err(unexpected(kind, other)),
    };
    let (neg, digits) = scaled_digits(b, p, s)?;
    let ten = i256::from_i128(10);
    let mut n = i256::ZERO;
    for d in digits {
        // At most 65 digits, far below i256's 76.
        n = n.wrapping_mul(ten).wrapping_add(i256::from_i128(d.into()));
    }
    Ok(if neg { n.wrapping_neg() } else { n })
}

type DateParts = (u16, u8, u8, u8, u8, u8, u32);

fn date_parts(kind: Kind, v: &Value) -> Result<DateParts, String> {
    match v {
        Value::Date(y, mo, d, h, mi, s, us) => Ok((*y, *mo, *d, *h, *mi, *s, *us)),
        Value::Bytes(b) => parse_datetime(b).ok_or_else(|| {
            if b.starts_with(b"0000-00-00") {
                format!("zero date {} is not a date", lossy(b))
            } else {
                format!("{:?} is not a date", lossy(b))
            }
        }),
        other => Err(unexpected(kind, other)),
    }
}

fn num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn micros_of(frac: &[u8]) -> Option<u32> {
    if frac.len() > 6 {
        return None;
    }
    let mut us: u32 = num(frac)?;
    for _ in frac.len()..6 {
        us *= 10;
    }
    Some(us)
}

/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]]`, as the text protocol sends dates.
fn parse_datetime(b: &[u8]) -> Option<DateParts> {
    let (date, time) = match b.iter().position(|&c| c == b' ' || c == b'T') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let mut it = date.split(|&c| c == b'-');
    let (y, mo, d) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
    if it.next().is_some() {
        return None;
    }
    let (h, mi, s, us) = match time {
        None => (0, 0, 0, 0),
        Some(t) => {
            let (hms, frac) = match t.iter().position(|&c| c == b'.') {
                Some(i) => (&t[..i], &t[i + 1..]),
                None => (t, &t[t.len()..]),
            };
            let mut it = hms.split(|&c| c == b':');
            let (h, mi, s) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
            let us = if frac.is_empty() { 0 } else { micros_of(frac)? };
            (h, mi, s, us)
        }
    };
    Some((y, mo, d, h, mi, s, us))
}

/// `[-]HHH:MM:SS[.ffffff]`, as the text protocol sends TIME.
fn parse_time(b: &[u8]) -> Option<(bool, u32, u8, u8, u8, u32)> {
    let (neg, b) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let (hms, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[b.len()..]),
    };
    let mut it = hms.split(|&c| c == b':');
    let hours: u32 = num(it.next()?)?;
    let (m, s) = (num(it.next()?)?, num(it.next()?)?);
    let us = if frac.is_empty() { 0 } else { micros_of(frac)? };
    Some((neg, hours / 24, (hours % 24) as u8, m, s, us))
}

/// A column being built.
pub(super) enum Builder {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    D128(Decimal128Builder),
    D256(Decimal256Builder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
}

impl Builder {
    /// A builder for a field made by [`field`].
    pub(super) fn new(f: &Field, cap: usize) -> Builder {
        let dt = f.data_type().clone();
        match &dt {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Int8 => Builder::I8(Int8Builder::with_capacity(cap)),
            DataType::Int16 => Builder::I16(Int16Builder::with_capacity(cap)),
            DataType::Int32 => Builder::I32(Int32Builder::with_capacity(cap)),
            DataType::Int64 => Builder::I64(Int64Builder::with_capacity(cap)),
            DataType::UInt8 => Builder::U8(UInt8Builder::with_capacity(cap)),
            DataType::UInt16 => Builder::U16(UInt16Builder::with_capacity(cap)),
            DataType::UInt32 => Builder::U32(UInt32Builder::with_capacity(cap)),
            DataType::UInt64 => Builder::U64(UInt64Builder::with_capacity(cap)),
            DataType::Float32 => Builder::F32(Float32Builder::with_capacity(cap)),
            DataType::Float64 => Builder::F64(Float64Builder::with_capacity(cap)),
            DataType::Decimal128(..) => {
                Builder::D128(Decimal128Builder::with_capacity(cap).with_data_type(dt))
            }
            DataType::Decimal256(..) => {
                Builder::D256(Decimal256Builder::with_capacity(cap).with_data_type(dt))
            }
            DataType::Date32 => Builder::Date(Date32Builder::with_capacity(cap)),
            DataType::Timestamp(..) => {
                Builder::Ts(TimestampMicrosecondBuilder::with_capacity(cap).with_data_type(dt))
            }
            DataType::Time64(_) => Builder::Time(Time64MicrosecondBuilder::with_capacity(cap)),
            DataType::Binary => Builder::Bin(BinaryBuilder::with_capacity(cap, cap * 16)),
            _ => Builder::Str(StringBuilder::with_capacity(cap, cap * 16)),
        }
    }

    /// Appends a cell decoded for this builder's kind.
    pub(super) fn append(&mut self, c: Cell<'_>) -> Result<(), String> {
        match (self, c) {
            (Builder::Bool(b), Cell::Null) => b.append_null(),
            (Builder::I8(b), Cell::Null) => b.append_null(),
            (Builder::I16(b), Cell::Null) => b.append_null(),
            (Builder::I32(b), Cell::Null) => b.append_null(),
            (Builder::I64(b), Cell::Null) => b.append_null(),
            (Builder::U8(b), Cell::Null) => b.append_null(),
            (Builder::U16(b), Cell::Null) => b.append_null(),
            (Builder::U32(b), Cell::Null) => b.append_null(),
            (Builder::U64(b), Cell::Null) => b.append_null(),
            (Builder::F32(b), Cell::Null) => b.append_null(),
            (Builder::F64(b), Cell::Null) => b.append_null(),
            (Builder::D128(b), Cell::Null) => b.append_null(),
            (Builder::D256(b), Cell::Null) => b.append_null(),
            (Builder::Date(b), Cell::Null) => b.append_null(),
            (Builder::Ts(b), Cell::Null) => b.append_null(),
            (Builder::Time(b), Cell::Null) => b.append_null(),
            (Builder::Str(b), Cell::Null) => b.append_null(),
            (Builder::Bin(b), Cell::Null) => b.append_null(),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            // Values were range-checked by `decode` for the column's kind.
            (Builder::I8(b), Cell::I64(v)) => b.append_value(v as i8),
            (Builder::I16(b), Cell::I64(v)) => b.append_value(v as i16),
            (Builder::I32(b), Cell::I64(v)) => b.append_value(v as i32),
            (Builder::I64(b), Cell::I64(v)) => b.append_value(v),
            (Builder::U8(b), Cell::U64(v)) => b.append_value(v as u8),
            (Builder::U16(b), Cell::U64(v)) => b.append_value(v as u16),
            (Builder::U32(b), Cell::U64(v)) => b.append_value(v as u32),
            (Builder::U64(b), Cell::U64(v)) => b.append_value(v),
            (Builder::F32(b), Cell::F32(v)) => b.append_value(v),
            (Builder::F64(b), Cell::F64(v)) => b.append_value(v),
            (Builder::D128(b), Cell::D128(v)) => b.append_value(v),
            (Builder::D256(b), Cell::D256(v)) => b.append_value(v),
            (Builder::Date(b), Cell::Days(v)) => b.append_value(v),
            (Builder::Ts(b), Cell::Micros(v)) => b.append_value(v),
            (Builder::Time(b), Cell::Micros(v)) => b.append_value(v),
            (Builder::Str(b), Cell::Str(v)) => b.append_value(v),
            (Builder::Bin(b), Cell::Bytes(v)) => b.append_value(v),
            (_, c) => return Err(format!("a {c:?} value does not fit this column")),
        }
        Ok(())
    }

    /// The column built so far.
    pub(super) fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I8(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::U8(b) => Arc::new(b.finish()),
            Builder::U16(b) => Arc::new(b.finish()),
            Builder::U32(b) => Arc::new(b.finish()),
            Builder::U64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::D128(b) => Arc::new(b.finish()),
            Builder::D256(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::Bin(b) => Arc::new(b.finish()),
        }
    }
}

// ---------------------------------------------------------------- writing

fn ext_name(f: &Field) -> Option<&str> {
    f.metadata().get(EXT_NAME).map(String::as_str)
}

fn is_uuid(f: &Field) -> bool {
    matches!(f.data_type(), DataType::FixedSizeBinary(16)) && ext_name(f) == Some(UUID_EXT)
}

/// The column type of `f` in a created table; `Err` says why there is none.
/// Key columns get bounded types, which InnoDB can index.
pub(super) fn sql_type(f: &Field, key: bool) -> Result<String, String> {
    sql_type_of(f, f.data_type(), key)
}

fn sql_type_of(f: &Field, dt: &DataType, key: bool) -> Result<String, String> {
    Ok(match dt {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INT UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            if *p > 65 {
                return Err(format!(
                    "{dt} has precision {p}; MySQL DECIMAL holds at most 65 digits"
                ));
            }
            if *s < 0 || *s > 30 {
                return Err(format!(
                    "{dt} has scale {s}; MySQL DECIMAL takes a scale from 0 to 30"
                ));
            }
            format!("DECIMAL({p},{s})")
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            if ext_name(f) == Some(JSON_EXT) {
                "JSON".into()
            } else if key {
                "VARCHAR(255)".into()
            } else {
                "LONGTEXT".into()
            }
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            if key {
                "VARBINARY(255)".into()
            } else {
                "LONGBLOB".into()
            }
        }
        DataType::FixedSizeBinary(16) if is_uuid(f) => "CHAR(36)".into(),
        DataType::FixedSizeBinary(n) if *n <= 255 => format!("BINARY({n})"),
        DataType::FixedSizeBinary(_) => "LONGBLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        // Timestamps with a zone are stored as their UTC wall time: MySQL's
        // TIMESTAMP cannot hold dates before 1970 or after 2038.
        DataType::Timestamp(..) => "DATETIME(6)".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME(6)".into(),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => "JSON".into(),
        DataType::Dictionary(_, v) => sql_type_of(f, v, key)?,
        DataType::Interval(_) => {
            return Err(format!("{dt} is an interval, which MySQL cannot store"))
        }
        other => return Err(format!("Arrow type {other} has no MySQL column type")),
    })
}

/// The type a column is cast to before its values are bound (`None`: use
/// it as it is).
fn canonical(f: &Field) -> Option<DataType> {
    match f.data_type() {
        DataType::Float16 => Some(DataType::Float32),
        DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        DataType::LargeBinary | DataType::BinaryView => Some(DataType::Binary),
        DataType::Date64 => Some(DataType::Date32),
        DataType::Timestamp(TimeUnit::Microsecond, _) => None,
        DataType::Timestamp(_, tz) => Some(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
        DataType::Time32(_) | DataType::Time64(TimeUnit::Nanosecond) => {
            Some(DataType::Time64(TimeUnit::Microsecond))
        }
        DataType::Dictionary(_, v) => {
            let inner = Field::new(f.name(), (**v).clone(), true);
            Some(canonical(&inner).unwrap_or_else(|| (**v).clone()))
        }
        _ => None,
    }
}

/// One batch's columns, ready to become bound parameters.
pub(super) struct SinkCols<'a> {
    cols: Vec<SinkCol<'a>>,
    names: Vec<&'a str>,
}

enum SinkCol<'a> {
    Plain(ArrayRef),
    Json(NullableEncoder<'a>),
}

/// Arrays cast to their canonical types, kept alive while a batch is
/// bound (JSON encoders borrow them).
pub(super) struct Prepared {
    arrays: Vec<ArrayRef>,
    fields: Vec<FieldRef>,
    options: EncoderOptions,
}

impl Prepared {
    /// Casts a batch's columns; `Err` names the column that cannot be cast.
    pub(super) fn new(fields: &[FieldRef], columns: &[ArrayRef]) -> Result<Prepared, String> {
        let mut arrays = Vec::with_capacity(columns.len());
        for (f, c) in fields.iter().zip(columns) {
            arrays.push(match canonical(f) {
                Some(dt) => arrow::compute::cast(c, &dt)
                    .map_err(|e| format!("column `{}`: {e}", f.name()))?,
                None => c.clone(),
            });
        }
        Ok(Prepared {
            arrays,
            fields: fields.to_vec(),
            options: EncoderOptions::default().with_explicit_nulls(true),
        })
    }

    /// The columns as parameter sources.
    pub(super) fn cols(&self) -> Result<SinkCols<'_>, String> {
        let mut cols = Vec::with_capacity(self.arrays.len());
        for (f, a) in self.fields.iter().zip(&self.arrays) {
            cols.push(match a.data_type() {
                DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
                    SinkCol::Json(
                        make_encoder(f, a.as_ref(), &self.options)
                            .map_err(|e| format!("column `{}`: {e}", f.name()))?,
                    )
                }
                _ => SinkCol::Plain(a.clone()),
            });
        }
        Ok(SinkCols {
            cols,
            names: self.fields.iter().map(|f| f.name().as_str()).collect(),
        })
    }
}

impl SinkCols<'_> {
    /// Appends row `row`'s values to `out`; returns their size in bytes.
    /// `Err` names the column whose value MySQL cannot store.
    pub(super) fn push_row(
        &mut self,
        row: usize,
        uuid: &[bool],
        out: &mut Vec<Value>,
    ) -> Result<u64, String> {
        let mut size = 0;
        for (i, col) in self.cols.iter_mut().enumerate() {
            let v = match col {
                SinkCol::Json(enc) => {
                    if enc.is_null(row) {
                        Value::NULL
                    } else {
                        let mut buf = Vec::new();
                        enc.encode(row, &mut buf);
                        Value::Bytes(buf)
                    }
                }
                SinkCol::Plain(a) => to_value(a, row, uuid[i])
                    .map_err(|e| format!("column `{}`: {e}", self.names[i]))?,
            };
            size += wire_size(&v);
            out.push(v);
        }
        Ok(size)
    }
}

/// Whether each field is a UUID to be written as text.
pub(super) fn uuid_columns(fields: &[FieldRef]) -> Vec<bool> {
    fields.iter().map(|f| is_uuid(f)).collect()
}

fn date_value(t: NaiveDateTime) -> Result<Value, String> {
    if !(1..=9999).contains(&t.year()) {
        return Err(format!("{t} is outside the years 1–9999 MySQL can store"));
    }
    Ok(Value::Date(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond() / 1000,
    ))
}

fn to_value(a: &ArrayRef, i: usize, uuid: bool) -> Result<Value, String> {
    if a.is_null(i) {
        return Ok(Value::NULL);
    }
    Ok(match a.data_type() {
        DataType::Boolean => Value::Int(a.as_boolean().value(i).into()),
        DataType::Int8 => Value::Int(a.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => Value::Int(a.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Value::Int(a.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Value::Int(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::UInt(a.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => Value::UInt(a.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => Value::UInt(a.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => Value::UInt(a.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => {
            let v = a.as_primitive::<Float32Type>().value(i);
            if !v.is_finite() {
                return Err(format!("{v} cannot be stored in MySQL"));
            }
            Value::Float(v)
        }
        DataType::Float64 => {
            let v = a.as_primitive::<Float64Type>().value(i);
            if !v.is_finite() {
                return Err(format!("{v} cannot be stored in MySQL"));
            }
            Value::Double(v)
        }
        DataType::Decimal128(..) => Value::Bytes(
            a.as_primitive::<Decimal128Type>()
                .value_as_string(i)
                .into_bytes(),
        ),
        DataType::Decimal256(..) => Value::Bytes(
            a.as_primitive::<Decimal256Type>()
                .value_as_string(i)
                .into_bytes(),
        ),
        DataType::Utf8 => Value::Bytes(a.as_string::<i32>().value(i).as_bytes().to_vec()),
        DataType::Binary => Value::Bytes(a.as_binary::<i32>().value(i).to_vec()),
        DataType::FixedSizeBinary(_) => {
            let b = a.as_fixed_size_binary().value(i);
            if uuid {
                Value::Bytes(uuid_text(b).into_bytes())
            } else {
                Value::Bytes(b.to_vec())
            }
        }
        DataType::Date32 => {
            let days = a.as_primitive::<Date32Type>().value(i);
            let t = NaiveDate::from_num_days_from_ce_opt(days.saturating_add(EPOCH_DAYS_FROM_CE))
                .ok_or_else(|| format!("day {days} is not a date"))?;
            date_value(t.and_time(chrono::NaiveTime::MIN))?
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let us = a.as_primitive::<TimestampMicrosecondType>().value(i);
            let t = micros_to_datetime(us).ok_or_else(|| format!("{us} µs is not a date"))?;
            date_value(t)?
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let us = a.as_primitive::<Time64MicrosecondType>().value(i);
            if !(0..MICROS_PER_DAY).contains(&us) {
                return Err(format!("{us} µs is not a time of day"));
            }
            let secs = us / 1_000_000;
            Value::Time(
                false,
                0,
                (secs / 3600) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (us % 1_000_000) as u32,
            )
        }
        other => return Err(format!("Arrow type {other} cannot be written to MySQL")),
    })
}

/// The canonical `8-4-4-4-12` text of a UUID.
fn uuid_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DecimalType;

    #[test]
    fn decimals_parse_exactly_to_their_scale() {
        let v = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        let k = Kind::Dec128(38, 10);
        assert_eq!(
            decimal_value(&v("-1234.5"), 38, 10, k).unwrap(),
            -12_345_000_000_000
        );
        assert_eq!(
            decimal_value(&v("9999999999999999999999999999.9999999999"), 38, 10, k).unwrap(),
            99_999_999_999_999_999_999_999_999_999_999_999_999
        );
        assert!(decimal_value(&v("1.23"), 5, 1, k).is_err());
        assert!(decimal_value(&v("123456"), 5, 1, k).is_err());
        assert!(decimal_value(&v("1e5"), 10, 0, k).is_err());
        let big = format!("-{}.{}", "9".repeat(35), "9".repeat(30));
        let n = decimal256_value(&v(&big), 65, 30, Kind::Dec256(65, 30)).unwrap();
        let back = Decimal256Type::format_decimal(n, 65, 30);
        assert_eq!(back, big);
    }

    #[test]
    fn zero_dates_and_long_times_are_rejected() {
        let zero = Value::Date(0, 0, 0, 0, 0, 0, 0);
        let e = decode(Kind::Date, &zero).unwrap_err();
        assert!(e.contains("zero date 0000-00-00"), "{e}");
        assert!(decode(Kind::DateTime, &zero).is_err());
        assert!(decode(Kind::Time, &Value::Time(false, 1, 0, 0, 0, 0)).is_err());
        assert!(decode(Kind::Time, &Value::Time(true, 0, 1, 0, 0, 0)).is_err());
        assert!(matches!(
            decode(Kind::Time, &Value::Time(false, 0, 23, 59, 59, 999_999)),
            Ok(Cell::Micros(86_399_999_999))
        ));
        assert!(matches!(
            decode(
                Kind::DateTime,
                &Value::Bytes(b"1900-01-01 00:00:00.5".to_vec())
            ),
            Ok(Cell::Micros(-2_208_988_799_500_000))
        ));
        assert!(decode(Kind::Date, &Value::Bytes(b"0000-00-00".to_vec()))
            .unwrap_err()
            .contains("zero date"));
    }

    #[test]
    fn key_marks_round_trip() {
        let f = KeyForm::Micros;
        let m = f.parse("1969-12-31 23:59:59.999999").unwrap();
        assert_eq!(m, -1);
        assert_eq!(f.format(m), "1969-12-31 23:59:59.999999");
        assert_eq!(KeyForm::Int.parse(&KeyForm::Int.format(-5)), Some(-5));
    }

    #[test]
    fn created_column_types() {
        let f = |dt: DataType| Field::new("c", dt, true);
        assert_eq!(
            sql_type(&f(DataType::Decimal256(65, 30)), false).unwrap(),
            "DECIMAL(65,30)"
        );
        assert!(sql_type(&f(DataType::Decimal256(66, 2)), false).is_err());
        assert_eq!(sql_type(&f(DataType::Utf8), true).unwrap(), "VARCHAR(255)");
        let json =
            f(DataType::Utf8).with_metadata(HashMap::from([(EXT_NAME.into(), JSON_EXT.into())]));
        assert_eq!(sql_type(&json, false).unwrap(), "JSON");
        let e = sql_type(
            &f(DataType::Interval(arrow::datatypes::IntervalUnit::DayTime)),
            false,
        )
        .unwrap_err();
        assert!(e.contains("interval"), "{e}");
        assert_eq!(
            uuid_text(&[
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ]),
            "12345678-9abc-def0-0123-456789abcdef"
        );
    }
}
