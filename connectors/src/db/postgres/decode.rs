//! PostgreSQL types as Arrow types, and the decoder of `COPY … TO STDOUT
//! (FORMAT binary)` rows straight into Arrow builders.
//!
//! | PostgreSQL | Arrow |
//! | --- | --- |
//! | bool | Boolean |
//! | int2 / int4 / int8 | Int16 / Int32 / Int64 |
//! | float4 / float8 | Float32 / Float64 |
//! | numeric(p,s), p ≤ 38 | Decimal128(p, s) |
//! | numeric (unconstrained or p > 38) | Utf8: the exact decimal text (`NaN` kept), metadata `tidex:pg_type = numeric` |
//! | text, varchar, char(n), name | Utf8 |
//! | json, jsonb | Utf8, field metadata `ARROW:extension:name = arrow.json` |
//! | bytea | Binary |
//! | date | Date32 |
//! | time | Time64(µs) |
//! | timestamp / timestamptz | Timestamp(µs) / Timestamp(µs, "+00:00") (UTC) |
//! | interval | Utf8: ISO 8601 `P<months>M<days>DT<seconds>S`, metadata `tidex:pg_type = interval` (Parquet cannot store Arrow's month-day-nano intervals) |
//! | uuid | FixedSizeBinary(16), `ARROW:extension:name = arrow.uuid` |
//! | one-dimensional arrays of the above | List |

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, ListArray, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
pub const PG_EPOCH_DAYS: i32 = 10_957;

/// Type oids tidex maps.
pub mod oid {
    #![allow(missing_docs)]
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Field metadata key naming the PostgreSQL type a text column came from
/// (`interval`, `numeric`), so a table created from it gets that type back.
pub const PG_TYPE_KEY: &str = "tidex:pg_type";

/// Field metadata key of Arrow extension types.
pub const EXTENSION_KEY: &str = "ARROW:extension:name";

/// A column as the catalog describes it.
#[derive(Debug, Clone)]
pub struct PgColumn {
    /// Column name.
    pub name: String,
    /// Type oid.
    pub oid: u32,
    /// Type modifier (numeric precision/scale, varchar length), -1 if none.
    pub typmod: i32,
    /// Element type oid for arrays, 0 otherwise.
    pub elem: u32,
    /// `format_type` text, for messages and `CREATE TABLE`.
    pub type_name: String,
    /// Declared NOT NULL.
    pub not_null: bool,
}

fn ext_field(name: &str, dt: DataType, ext: &str) -> Field {
    Field::new(name, dt, true).with_metadata(HashMap::from([(
        EXTENSION_KEY.to_string(),
        ext.to_string(),
    )]))
}

/// A text field remembering the PostgreSQL type it holds.
fn pg_typed_text(name: &str, pg_type: &str) -> Field {
    Field::new(name, DataType::Utf8, true).with_metadata(HashMap::from([(
        PG_TYPE_KEY.to_string(),
        pg_type.to_string(),
    )]))
}

/// Precision and scale of a `numeric(p,s)` type modifier.
pub fn numeric_typmod(typmod: i32) -> Option<(u8, i8)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    Some((((t >> 16) & 0xffff) as u8, (t & 0xffff) as i16 as i8))
}

/// The Arrow field for a column; `None` when the type is not supported.
pub fn arrow_field(name: &str, oid: u32, typmod: i32, elem: u32) -> Option<Field> {
    use oid::*;
    let dt = match oid {
        BOOL => DataType::Boolean,
        INT2 => DataType::Int16,
        INT4 => DataType::Int32,
        INT8 => DataType::Int64,
        FLOAT4 => DataType::Float32,
        FLOAT8 => DataType::Float64,
        NUMERIC => match numeric_typmod(typmod) {
            Some((p, s)) if p <= 38 && s >= 0 => DataType::Decimal128(p, s),
            _ => return Some(pg_typed_text(name, "numeric")),
        },
        TEXT | VARCHAR | BPCHAR | NAME | CHAR => DataType::Utf8,
        JSON | JSONB => return Some(ext_field(name, DataType::Utf8, "arrow.json")),
        BYTEA => DataType::Binary,
        DATE => DataType::Date32,
        TIME => DataType::Time64(TimeUnit::Microsecond),
        TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        INTERVAL => return Some(pg_typed_text(name, "interval")),
        UUID => return Some(ext_field(name, DataType::FixedSizeBinary(16), "arrow.uuid")),
        _ if elem != 0 => {
            // Arrays keep the element's typmod in the column's.
            let item = arrow_field("item", elem, typmod, 0)?;
            DataType::List(Arc::new(item))
        }
        _ => return None,
    };
    Some(Field::new(name, dt, true))
}

/// An interval as ISO 8601 text: `P<months>M<days>DT<seconds>S`.
pub fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let (whole, frac) = (
        micros.unsigned_abs() / 1_000_000,
        micros.unsigned_abs() % 1_000_000,
    );
    let secs = if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let f = format!("{frac:06}");
        format!("{sign}{whole}.{}", f.trim_end_matches('0'))
    };
    format!("P{months}M{days}DT{secs}S")
}

/// Parses the text [`interval_text`] writes (and ISO 8601 durations with
/// Y, M, W, D, H, M, S designators) into months, days and microseconds.
pub fn parse_interval(s: &str) -> Result<(i32, i32, i64), String> {
    let bad = || format!("{s:?} is not an ISO 8601 interval");
    let body = s.trim().strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i128);
    let mut num = String::new();
    for c in date.chars() {
        if c.is_ascii_digit() || c == '-' || c == '+' {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        match c {
            'Y' => months += n * 12,
            'M' => months += n,
            'W' => days += n * 7,
            'D' => days += n,
            _ => return Err(bad()),
        }
    }
    for c in time.chars() {
        if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' {
            num.push(c);
            continue;
        }
        let unit: i128 = match c {
            'H' => 3_600_000_000,
            'M' => 60_000_000,
            'S' => 1_000_000,
            _ => return Err(bad()),
        };
        let neg = num.starts_with('-');
        let digits = num.trim_start_matches(['-', '+']);
        let (w, f) = digits.split_once('.').unwrap_or((digits, ""));
        if f.len() > 6 || (w.is_empty() && f.is_empty()) {
            return Err(bad());
        }
        let w: i128 = if w.is_empty() {
            0
        } else {
            w.parse().map_err(|_| bad())?
        };
        let f: i128 = if f.is_empty() {
            0
        } else {
            format!("{f:0<6}").parse().map_err(|_| bad())?
        };
        let v = w * unit + f * unit / 1_000_000;
        micros += if neg { -v } else { v };
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok((
        i32::try_from(months).map_err(|_| bad())?,
        i32::try_from(days).map_err(|_| bad())?,
        i64::try_from(micros).map_err(|_| bad())?,
    ))
}

/// Decodes one column's binary values.
pub enum Col {
    /// bool
    Bool(BooleanBuilder),
    /// int2
    I16(Int16Builder),
    /// int4
    I32(Int32Builder),
    /// int8
    I64(Int64Builder),
    /// float4
    F32(Float32Builder),
    /// float8
    F64(Float64Builder),
    /// numeric(p,s)
    Dec(Decimal128Builder, u8, i8),
    /// unconstrained numeric as text
    NumText(StringBuilder),
    /// text types
    Text(StringBuilder),
    /// jsonb (a version byte, then text)
    Jsonb(StringBuilder),
    /// bytea
    Bytea(BinaryBuilder),
    /// date
    Date(Date32Builder),
    /// time
    Time(Time64MicrosecondBuilder),
    /// timestamp(tz)
    Ts(TimestampMicrosecondBuilder),
    /// interval, as ISO 8601 text
    Interval(StringBuilder),
    /// uuid
    Uuid(FixedSizeBinaryBuilder),
    /// one-dimensional array
    List {
        /// Offsets into the child.
        offsets: Vec<i32>,
        /// Which lists are NULL.
        validity: NullBufferBuilder,
        /// Element decoder.
        child: Box<Col>,
        /// Element field.
        field: FieldRef,
    },
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}
fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn need(v: &[u8], n: usize, what: &str) -> Result<(), String> {
    if v.len() == n {
        Ok(())
    } else {
        Err(format!("{what} value of {} bytes, expected {n}", v.len()))
    }
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|e| format!("invalid UTF-8: {e}"))
}

/// The parts of a binary numeric: sign, weight, display scale, digits in
/// base 10000.
pub struct Numeric<'a> {
    sign: u16,
    weight: i16,
    dscale: u16,
    digits: &'a [u8],
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

impl<'a> Numeric<'a> {
    /// Parses the wire form.
    pub fn parse(v: &'a [u8]) -> Result<Self, String> {
        if v.len() < 8 {
            return Err("truncated numeric".into());
        }
        let n = be_i16(v) as usize;
        if v.len() != 8 + 2 * n {
            return Err("malformed numeric".into());
        }
        Ok(Numeric {
            weight: be_i16(&v[2..]),
            sign: u16::from_be_bytes([v[4], v[5]]),
            dscale: u16::from_be_bytes([v[6], v[7]]),
            digits: &v[8..],
        })
    }

    fn digit(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.digits[2 * i], self.digits[2 * i + 1]])
    }

    fn special(&self) -> Option<&'static str> {
        match self.sign {
            NUMERIC_NAN => Some("NaN"),
            NUMERIC_PINF => Some("Infinity"),
            NUMERIC_NINF => Some("-Infinity"),
            _ => None,
        }
    }

    /// The value scaled by 10^scale as an integer; an error when it has
    /// more decimals than `scale`, is not finite, or overflows.
    pub fn to_i128(&self, scale: i8) -> Result<i128, String> {
        if let Some(s) = self.special() {
            return Err(format!("{s} does not fit a decimal column"));
        }
        let overflow = || "numeric value out of range of decimal(38)".to_string();
        let mut acc: i128 = 0;
        let mut exact = true;
        for i in 0..self.digits.len() / 2 {
            let d = self.digit(i) as i128;
            // This digit's value is d * 10^(4 * (weight - i) + scale).
            let e = 4 * (self.weight as i32 - i as i32) + scale as i32;
            if e >= 0 {
                let p = 10i128.checked_pow(e as u32).ok_or_else(overflow)?;
                acc = d
                    .checked_mul(p)
                    .and_then(|x| acc.checked_add(x))
                    .ok_or_else(overflow)?;
            } else if e > -4 {
                let p = 10i128.pow((-e) as u32);
                if d % p != 0 {
                    exact = false;
                }
                acc = acc.checked_add(d / p).ok_or_else(overflow)?;
            } else if d != 0 {
                exact = false;
            }
        }
        if !exact {
            return Err(format!("more than {scale} decimal places"));
        }
        Ok(if self.sign == NUMERIC_NEG { -acc } else { acc })
    }

    /// The exact decimal text, as PostgreSQL prints it.
    pub fn to_text(&self, out: &mut String) {
        if let Some(s) = self.special() {
            out.push_str(s);
            return;
        }
        let n = self.digits.len() / 2;
        if self.sign == NUMERIC_NEG {
            out.push('-');
        }
        // Integer part: groups weight, weight-1, …, 0.
        if self.weight < 0 {
            out.push('0');
        } else {
            for g in 0..=self.weight as usize {
                let d = if g < n { self.digit(g) } else { 0 };
                if g == 0 {
                    out.push_str(&d.to_string());
                } else {
                    out.push_str(&format!("{d:04}"));
                }
            }
        }
        if self.dscale > 0 {
            out.push('.');
            let mut frac = String::new();
            let mut g = self.weight as i32 + 1;
            while (frac.len() as u16) < self.dscale {
                let d = if g >= 0 && (g as usize) < n {
                    self.digit(g as usize)
                } else {
                    0
                };
                frac.push_str(&format!("{d:04}"));
                g += 1;
            }
            frac.truncate(self.dscale as usize);
            out.push_str(&frac);
        }
    }
}

impl Col {
    /// A decoder for an Arrow field made by [`arrow_field`] from a column
    /// of type `oid` (arrays: element type `elem`).
    pub fn new(field: &Field, oid: u32, elem: u32, capacity: usize) -> Col {
        use oid::*;
        match field.data_type() {
            DataType::Boolean => Col::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int16 => Col::I16(Int16Builder::with_capacity(capacity)),
            DataType::Int32 => Col::I32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Col::I64(Int64Builder::with_capacity(capacity)),
            DataType::Float32 => Col::F32(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => Col::F64(Float64Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => Col::Dec(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*p, *s)
                    .expect("valid precision"),
                *p,
                *s,
            ),
            DataType::Utf8 if oid == NUMERIC => {
                Col::NumText(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            DataType::Utf8 if oid == INTERVAL => {
                Col::Interval(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            DataType::Utf8 if oid == JSONB => {
                Col::Jsonb(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            DataType::Utf8 => Col::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Binary => Col::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Date32 => Col::Date(Date32Builder::with_capacity(capacity)),
            DataType::Time64(_) => Col::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            DataType::Timestamp(_, tz) => Col::Ts(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone_opt(tz.clone()),
            ),
            DataType::FixedSizeBinary(_) => {
                Col::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16))
            }
            DataType::List(item) => Col::List {
                offsets: vec![0],
                validity: NullBufferBuilder::new(capacity),
                child: Box::new(Col::new(item, elem, 0, capacity)),
                field: item.clone(),
            },
            other => unreachable!("arrow_field never makes {other}"),
        }
    }

    /// Appends a NULL.
    pub fn push_null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Dec(b, _, _) => b.append_null(),
            Col::NumText(b) | Col::Text(b) | Col::Jsonb(b) => b.append_null(),
            Col::Bytea(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
            Col::Interval(b) => b.append_null(),
            Col::Uuid(b) => b.append_null(),
            Col::List {
                offsets,
                validity,
                child,
                ..
            } => {
                offsets.push(child.len() as i32);
                validity.append_null();
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::Bool(b) => b.len(),
            Col::I16(b) => b.len(),
            Col::I32(b) => b.len(),
            Col::I64(b) => b.len(),
            Col::F32(b) => b.len(),
            Col::F64(b) => b.len(),
            Col::Dec(b, _, _) => b.len(),
            Col::NumText(b) | Col::Text(b) | Col::Jsonb(b) => b.len(),
            Col::Bytea(b) => b.len(),
            Col::Date(b) => b.len(),
            Col::Time(b) => b.len(),
            Col::Ts(b) => b.len(),
            Col::Interval(b) => b.len(),
            Col::Uuid(b) => b.len(),
            Col::List { offsets, .. } => offsets.len() - 1,
        }
    }

    /// Appends one value in binary wire form. On error nothing (or a NULL
    /// in its place) was appended and the row must be rejected.
    pub fn push(&mut self, v: &[u8]) -> Result<(), String> {
        match self {
            Col::Bool(b) => {
                need(v, 1, "bool")?;
                b.append_value(v[0] != 0);
            }
            Col::I16(b) => {
                need(v, 2, "int2")?;
                b.append_value(be_i16(v));
            }
            Col::I32(b) => {
                need(v, 4, "int4")?;
                b.append_value(be_i32(v));
            }
            Col::I64(b) => {
                need(v, 8, "int8")?;
                b.append_value(be_i64(v));
            }
            Col::F32(b) => {
                need(v, 4, "float4")?;
                b.append_value(f32::from_bits(be_i32(v) as u32));
            }
            Col::F64(b) => {
                need(v, 8, "float8")?;
                b.append_value(f64::from_bits(be_i64(v) as u64));
            }
            Col::Dec(b, p, s) => {
                let x = Numeric::parse(v)?.to_i128(*s)?;
                if x.unsigned_abs() >= 10u128.pow(*p as u32) {
                    return Err(format!("value does not fit numeric({p},{s})"));
                }
                b.append_value(x);
            }
            Col::NumText(b) => {
                let mut s = String::with_capacity(24);
                Numeric::parse(v)?.to_text(&mut s);
                b.append_value(s);
            }
            Col::Text(b) => b.append_value(utf8(v)?),
            Col::Jsonb(b) => match v.split_first() {
                Some((1, rest)) => b.append_value(utf8(rest)?),
                _ => return Err("unknown jsonb version".into()),
            },
            Col::Bytea(b) => b.append_value(v),
            Col::Date(b) => {
                need(v, 4, "date")?;
                let d = be_i32(v);
                if d == i32::MAX || d == i32::MIN {
                    return Err("date is ±infinity, which Arrow cannot hold".into());
                }
                b.append_value(d + PG_EPOCH_DAYS);
            }
            Col::Time(b) => {
                need(v, 8, "time")?;
                b.append_value(be_i64(v));
            }
            Col::Ts(b) => {
                need(v, 8, "timestamp")?;
                let t = be_i64(v);
                if t == i64::MAX || t == i64::MIN {
                    return Err("timestamp is ±infinity, which Arrow cannot hold".into());
                }
                b.append_value(t + PG_EPOCH_MICROS);
            }
            Col::Interval(b) => {
                need(v, 16, "interval")?;
                b.append_value(interval_text(be_i32(&v[12..]), be_i32(&v[8..]), be_i64(v)));
            }
            Col::Uuid(b) => {
                need(v, 16, "uuid")?;
                b.append_value(v).map_err(|e| e.to_string())?;
            }
            Col::List {
                offsets,
                validity,
                child,
                ..
            } => {
                if v.len() < 12 {
                    return Err("truncated array".into());
                }
                let ndim = be_i32(v);
                let mut pos = 12;
                let count = match ndim {
                    0 => 0usize,
                    1 => {
                        if v.len() < 20 {
                            return Err("truncated array".into());
                        }
                        pos = 20;
                        be_i32(&v[12..]).max(0) as usize
                    }
                    n => {
                        return Err(format!(
                            "{n}-dimensional array; only one-dimensional arrays map to a list"
                        ))
                    }
                };
                let mut err = None;
                for _ in 0..count {
                    if pos + 4 > v.len() {
                        err = Some("truncated array".to_string());
                        break;
                    }
                    let len = be_i32(&v[pos..]);
                    pos += 4;
                    if len < 0 {
                        child.push_null();
                        continue;
                    }
                    let end = pos + len as usize;
                    if end > v.len() {
                        err = Some("truncated array".to_string());
                        break;
                    }
                    if let Err(e) = child.push(&v[pos..end]) {
                        child.push_null();
                        err = Some(format!("array element: {e}"));
                    }
                    pos = end;
                }
                offsets.push(child.len() as i32);
                match err {
                    Some(e) => {
                        validity.append_null();
                        return Err(e);
                    }
                    None => validity.append_non_null(),
                }
            }
        }
        Ok(())
    }

    /// The array built so far; the decoder starts over empty.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::I16(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Dec(b, _, _) => Arc::new(b.finish()),
            Col::NumText(b) | Col::Text(b) | Col::Jsonb(b) => Arc::new(b.finish()),
            Col::Bytea(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
            Col::Interval(b) => Arc::new(b.finish()),
            Col::Uuid(b) => Arc::new(b.finish()),
            Col::List {
                offsets,
                validity,
                child,
                field,
            } => {
                let values = child.finish();
                let offs = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::new(
                    field.clone(),
                    OffsetBuffer::new(offs.into()),
                    values,
                    validity.finish(),
                ))
            }
        }
    }
}

/// Decodes a binary COPY stream into batches of rows.
pub struct RowDecoder {
    /// One per column.
    pub cols: Vec<Col>,
    /// Rows decoded into the builders (including rejected ones).
    pub rows: usize,
    /// Rows rejected in the current batch: (row in batch, column, reason).
    pub rejected: Vec<(usize, usize, String)>,
    header_done: bool,
    /// The trailer (-1 field count) was seen.
    pub finished: bool,
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl RowDecoder {
    /// A decoder for the given columns.
    pub fn new(cols: Vec<Col>) -> Self {
        RowDecoder {
            cols,
            rows: 0,
            rejected: Vec::new(),
            header_done: false,
            finished: false,
        }
    }

    /// Decodes every complete row at the front of `data`; returns how many
    /// bytes were consumed (an incomplete row is left for the next call).
    /// Stops after `max_rows` rows in the current batch.
    pub fn decode(&mut self, data: &[u8], max_rows: usize) -> Result<usize, String> {
        let mut pos = 0;
        if !self.header_done {
            if data.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err("the server did not send a binary COPY header".into());
            }
            let ext = be_i32(&data[SIGNATURE.len() + 4..]).max(0) as usize;
            let hdr = SIGNATURE.len() + 8 + ext;
            if data.len() < hdr {
                return Ok(0);
            }
            pos = hdr;
            self.header_done = true;
        }
        let ncols = self.cols.len();
        while self.rows < max_rows && !self.finished {
            let rest = &data[pos..];
            if rest.len() < 2 {
                break;
            }
            let n = be_i16(rest);
            if n == -1 {
                self.finished = true;
                pos += 2;
                break;
            }
            if n as usize != ncols {
                return Err(format!("row with {n} fields, expected {ncols}"));
            }
            // Find the row's end first, so a row is decoded only when whole.
            let mut p = 2;
            let mut complete = true;
            for _ in 0..ncols {
                if p + 4 > rest.len() {
                    complete = false;
                    break;
                }
                let len = be_i32(&rest[p..]);
                p += 4;
                if len > 0 {
                    p += len as usize;
                }
                if p > rest.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            let mut q = 2;
            for (c, col) in self.cols.iter_mut().enumerate() {
                let len = be_i32(&rest[q..]);
                q += 4;
                if len < 0 {
                    col.push_null();
                } else {
                    let v = &rest[q..q + len as usize];
                    q += len as usize;
                    if let Err(e) = col.push(v) {
                        if col.len() == self.rows {
                            col.push_null();
                        }
                        self.rejected.push((self.rows, c, e));
                    }
                }
            }
            self.rows += 1;
            pos += p;
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_decode_exactly() {
        // 12345.67 = [1, 2345, 6700] weight 1
        let v = numeric(1, 0, 2, &[1, 2345, 6700]);
        let n = Numeric::parse(&v).unwrap();
        assert_eq!(n.to_i128(2).unwrap(), 1_234_567);
        assert_eq!(n.to_i128(4).unwrap(), 123_456_700);
        assert!(n.to_i128(1).is_err());
        let mut s = String::new();
        n.to_text(&mut s);
        assert_eq!(s, "12345.67");
        // -0.0001 = [1] weight -1
        let v = numeric(-1, NUMERIC_NEG, 4, &[1]);
        let n = Numeric::parse(&v).unwrap();
        assert_eq!(n.to_i128(4).unwrap(), -1);
        let mut s = String::new();
        n.to_text(&mut s);
        assert_eq!(s, "-0.0001");
        // 10000 = [1] weight 1, no digits after
        let v = numeric(1, 0, 0, &[1]);
        let mut s = String::new();
        Numeric::parse(&v).unwrap().to_text(&mut s);
        assert_eq!(s, "10000");
        let v = numeric(0, NUMERIC_NAN, 0, &[]);
        let mut s = String::new();
        Numeric::parse(&v).unwrap().to_text(&mut s);
        assert_eq!(s, "NaN");
        assert!(Numeric::parse(&v).unwrap().to_i128(2).is_err());
        // 0 with scale 3
        let v = numeric(0, 0, 3, &[]);
        let mut s = String::new();
        Numeric::parse(&v).unwrap().to_text(&mut s);
        assert_eq!(s, "0.000");
    }

    #[test]
    fn intervals_round_trip_through_iso_text() {
        for (m, d, us) in [
            (14, 3, 14_706_700_000),
            (0, -1, 0),
            (0, 0, -1),
            (-5, 2, 86_399_999_999),
        ] {
            let t = interval_text(m, d, us);
            assert_eq!(parse_interval(&t).unwrap(), (m, d, us), "{t}");
        }
        assert_eq!(interval_text(14, 3, 14_706_700_000), "P14M3DT14706.7S");
        assert_eq!(
            parse_interval("P1Y2M3DT4H5M6.7S").unwrap(),
            (14, 3, 14_706_700_000)
        );
        assert!(parse_interval("1 day").is_err());
    }

    #[test]
    fn typmods_give_precision_and_scale() {
        // numeric(12,2): ((12 << 16) | 2) + 4
        assert_eq!(numeric_typmod((12 << 16 | 2) + 4), Some((12, 2)));
        assert_eq!(numeric_typmod(-1), None);
    }
}
