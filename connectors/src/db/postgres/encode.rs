//! Arrow arrays as `COPY … FROM STDIN (FORMAT binary)` rows, and Arrow
//! types as PostgreSQL column types for `CREATE TABLE`.

use super::decode::{
    oid, parse_interval, PgColumn, EXTENSION_KEY, PG_EPOCH_DAYS, PG_EPOCH_MICROS, PG_TYPE_KEY,
};
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    FixedSizeBinaryArray, Float32Array, Float64Array, Int64Array, IntervalMonthDayNanoArray,
    ListArray, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};

/// The column type `CREATE TABLE` uses for an Arrow field.
pub fn pg_type_for(field: &Field) -> Result<String, String> {
    let ext = field.metadata().get(EXTENSION_KEY).map(String::as_str);
    Ok(match field.data_type() {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if ext == Some("arrow.json") => {
            "jsonb".into()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            if matches!(
                field.metadata().get(PG_TYPE_KEY).map(String::as_str),
                Some("interval" | "numeric")
            ) =>
        {
            field.metadata()[PG_TYPE_KEY].clone()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::FixedSizeBinary(16) if ext == Some("arrow.uuid") => "uuid".into(),
        DataType::FixedSizeBinary(_) => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Interval(IntervalUnit::MonthDayNano) => "interval".into(),
        DataType::Dictionary(_, v) => {
            pg_type_for(&Field::new(field.name(), v.as_ref().clone(), true))?
        }
        DataType::List(item) | DataType::LargeList(item) => {
            let t = pg_type_for(item)?;
            if t.ends_with("[]") {
                return Err(format!(
                    "column `{}`: nested lists have no PostgreSQL type",
                    field.name()
                ));
            }
            format!("{t}[]")
        }
        other => {
            return Err(format!(
                "column `{}` has Arrow type {other}, which has no PostgreSQL column type in tidex",
                field.name()
            ))
        }
    })
}

/// How one column's values are written.
pub enum Enc {
    /// bool
    Bool(BooleanArray),
    /// int2/int4/int8 from integers (range-checked).
    Int(Int64Array, u8),
    /// numeric from integers.
    IntNumeric(Int64Array),
    /// float4
    F4(Float32Array),
    /// float8
    F8(Float64Array),
    /// numeric from decimals.
    Decimal(Decimal128Array, i8),
    /// text, varchar, char, name, json
    Text(StringArray),
    /// jsonb
    Jsonb(StringArray),
    /// numeric from decimal text.
    TextNumeric(StringArray),
    /// uuid from text.
    TextUuid(StringArray),
    /// interval from ISO 8601 text.
    TextInterval(StringArray),
    /// bytea
    Bytes(BinaryArray),
    /// uuid from 16 bytes.
    Uuid(FixedSizeBinaryArray),
    /// date
    Date(Date32Array),
    /// time
    Time(Time64MicrosecondArray),
    /// timestamp / timestamptz
    Ts(TimestampMicrosecondArray),
    /// interval
    Interval(IntervalMonthDayNanoArray),
    /// one-dimensional array
    List(ListArray, u32, Box<Enc>),
}

fn cast(a: &ArrayRef, to: &DataType) -> Result<ArrayRef, String> {
    cast_with_options(
        a,
        to,
        &CastOptions {
            safe: false,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// A column's encoder, or why this Arrow type cannot go into this column.
pub fn encoder(a: &ArrayRef, col: &PgColumn) -> Result<Enc, String> {
    encoder_for(a, col.oid, col.elem)
}

fn encoder_for(a: &ArrayRef, target: u32, elem: u32) -> Result<Enc, String> {
    use oid::*;
    let dt = a.data_type();
    let mismatch = || format!("cannot write Arrow {dt} into a column of type oid {target}");
    if let DataType::Dictionary(_, v) = dt {
        return encoder_for(&cast(a, v)?, target, elem);
    }
    let is_int = dt.is_integer();
    let is_str = matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    let text = |a: &ArrayRef| -> Result<StringArray, String> {
        Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
    };
    Ok(match target {
        BOOL if *dt == DataType::Boolean => Enc::Bool(a.as_boolean().clone()),
        INT2 | INT4 | INT8 if is_int => Enc::Int(
            cast(a, &DataType::Int64)?
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone(),
            match target {
                INT2 => 2,
                INT4 => 4,
                _ => 8,
            },
        ),
        NUMERIC if is_int => Enc::IntNumeric(
            cast(a, &DataType::Int64)?
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone(),
        ),
        NUMERIC => match dt {
            DataType::Decimal128(_, s) => Enc::Decimal(
                a.as_primitive::<arrow::datatypes::Decimal128Type>().clone(),
                *s,
            ),
            _ if is_str => Enc::TextNumeric(text(a)?),
            _ => return Err(mismatch()),
        },
        FLOAT4 if dt.is_floating() || is_int => Enc::F4(
            cast(a, &DataType::Float32)?
                .as_primitive::<arrow::datatypes::Float32Type>()
                .clone(),
        ),
        FLOAT8 if dt.is_floating() || is_int => Enc::F8(
            cast(a, &DataType::Float64)?
                .as_primitive::<arrow::datatypes::Float64Type>()
                .clone(),
        ),
        TEXT | VARCHAR | BPCHAR | NAME | JSON if is_str => Enc::Text(text(a)?),
        JSONB if is_str => Enc::Jsonb(text(a)?),
        UUID if is_str => Enc::TextUuid(text(a)?),
        INTERVAL if is_str => Enc::TextInterval(text(a)?),
        UUID if *dt == DataType::FixedSizeBinary(16) => Enc::Uuid(a.as_fixed_size_binary().clone()),
        BYTEA
            if matches!(
                dt,
                DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::FixedSizeBinary(_)
            ) =>
        {
            Enc::Bytes(cast(a, &DataType::Binary)?.as_binary::<i32>().clone())
        }
        DATE if matches!(dt, DataType::Date32 | DataType::Date64) => Enc::Date(
            cast(a, &DataType::Date32)?
                .as_primitive::<arrow::datatypes::Date32Type>()
                .clone(),
        ),
        TIME if matches!(dt, DataType::Time32(_) | DataType::Time64(_)) => Enc::Time(
            cast(a, &DataType::Time64(TimeUnit::Microsecond))?
                .as_primitive::<arrow::datatypes::Time64MicrosecondType>()
                .clone(),
        ),
        TIMESTAMP | TIMESTAMPTZ => match dt {
            DataType::Timestamp(_, tz) => Enc::Ts(
                cast(a, &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))?
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .clone(),
            ),
            _ => return Err(mismatch()),
        },
        INTERVAL if *dt == DataType::Interval(IntervalUnit::MonthDayNano) => Enc::Interval(
            a.as_primitive::<arrow::datatypes::IntervalMonthDayNanoType>()
                .clone(),
        ),
        _ if elem != 0 => match dt {
            DataType::List(_) | DataType::LargeList(_) => {
                let item = match dt {
                    DataType::List(i) | DataType::LargeList(i) => i.clone(),
                    _ => unreachable!(),
                };
                let list = cast(a, &DataType::List(item))?.as_list::<i32>().clone();
                let inner = encoder_for(list.values(), elem, 0)?;
                Enc::List(list, elem, Box::new(inner))
            }
            _ => return Err(mismatch()),
        },
        _ => return Err(mismatch()),
    })
}

/// Writes a numeric in wire form from its decimal text.
pub fn numeric_from_text(s: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let t = s.trim();
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (0x4000u16, &t[1..]),
        Some(b'+') => (0, &t[1..]),
        _ => (0, t),
    };
    let special = match t.to_ascii_lowercase().as_str() {
        "nan" => Some(0xC000u16),
        "infinity" | "+infinity" | "inf" => Some(0xD000),
        "-infinity" | "-inf" => Some(0xF000),
        _ => None,
    };
    if let Some(sp) = special {
        out.extend(0i16.to_be_bytes());
        out.extend(0i16.to_be_bytes());
        out.extend(sp.to_be_bytes());
        out.extend(0u16.to_be_bytes());
        return Ok(());
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{s:?} is not a decimal number"));
    }
    let int = int.trim_start_matches('0');
    let dscale = frac.len() as u16;
    // Digits left-padded to whole groups of four before the point and
    // right-padded after it.
    let lead = (4 - int.len() % 4) % 4;
    let mut digits: Vec<u8> = std::iter::repeat_n(b'0', lead).chain(int.bytes()).collect();
    let int_groups = digits.len() / 4;
    digits.extend(frac.bytes());
    digits.extend(std::iter::repeat_n(b'0', (4 - frac.len() % 4) % 4));
    let mut groups: Vec<u16> = digits
        .chunks(4)
        .map(|c| c.iter().fold(0u16, |a, d| a * 10 + (d - b'0') as u16))
        .collect();
    let mut weight = int_groups as i32 - 1;
    let leading_zeros = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading_zeros);
    weight -= leading_zeros as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.extend((groups.len() as i16).to_be_bytes());
    out.extend((weight as i16).to_be_bytes());
    out.extend(if groups.is_empty() { 0 } else { sign }.to_be_bytes());
    out.extend(dscale.to_be_bytes());
    for g in groups {
        out.extend(g.to_be_bytes());
    }
    Ok(())
}

fn decimal_text(v: i128, scale: i8) -> String {
    let digits = v.unsigned_abs().to_string();
    let sign = if v < 0 { "-" } else { "" };
    if scale <= 0 {
        return format!("{sign}{digits}{}", "0".repeat((-scale) as usize));
    }
    let s = scale as usize;
    let padded = format!("{digits:0>width$}", width = s + 1);
    let (i, f) = padded.split_at(padded.len() - s);
    format!("{sign}{i}.{f}")
}

fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let bad = || format!("{s:?} is not a UUID");
    let hex: Vec<u8> = s
        .trim_matches(|c| c == '{' || c == '}')
        .bytes()
        .filter(|b| *b != b'-')
        .collect();
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let p = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn with_len(
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    let at = out.len();
    out.extend([0u8; 4]);
    f(out)?;
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

impl Enc {
    fn is_null(&self, i: usize) -> bool {
        match self {
            Enc::Bool(a) => a.is_null(i),
            Enc::Int(a, _) | Enc::IntNumeric(a) => a.is_null(i),
            Enc::F4(a) => a.is_null(i),
            Enc::F8(a) => a.is_null(i),
            Enc::Decimal(a, _) => a.is_null(i),
            Enc::Text(a)
            | Enc::Jsonb(a)
            | Enc::TextNumeric(a)
            | Enc::TextUuid(a)
            | Enc::TextInterval(a) => a.is_null(i),
            Enc::Bytes(a) => a.is_null(i),
            Enc::Uuid(a) => a.is_null(i),
            Enc::Date(a) => a.is_null(i),
            Enc::Time(a) => a.is_null(i),
            Enc::Ts(a) => a.is_null(i),
            Enc::Interval(a) => a.is_null(i),
            Enc::List(a, _, _) => a.is_null(i),
        }
    }

    /// Writes value `i` (length-prefixed; -1 for NULL).
    pub fn write(&self, i: usize, out: &mut Vec<u8>) -> Result<(), String> {
        if self.is_null(i) {
            out.extend((-1i32).to_be_bytes());
            return Ok(());
        }
        match self {
            Enc::Bool(a) => {
                out.extend(1i32.to_be_bytes());
                out.push(a.value(i) as u8);
            }
            Enc::Int(a, w) => {
                let v = a.value(i);
                match w {
                    2 => {
                        let v =
                            i16::try_from(v).map_err(|_| format!("{v} does not fit smallint"))?;
                        out.extend(2i32.to_be_bytes());
                        out.extend(v.to_be_bytes());
                    }
                    4 => {
                        let v =
                            i32::try_from(v).map_err(|_| format!("{v} does not fit integer"))?;
                        out.extend(4i32.to_be_bytes());
                        out.extend(v.to_be_bytes());
                    }
                    _ => {
                        out.extend(8i32.to_be_bytes());
                        out.extend(v.to_be_bytes());
                    }
                }
            }
            Enc::IntNumeric(a) => with_len(out, |o| numeric_from_text(&a.value(i).to_string(), o))?,
            Enc::F4(a) => {
                out.extend(4i32.to_be_bytes());
                out.extend(a.value(i).to_bits().to_be_bytes());
            }
            Enc::F8(a) => {
                out.extend(8i32.to_be_bytes());
                out.extend(a.value(i).to_bits().to_be_bytes());
            }
            Enc::Decimal(a, s) => {
                with_len(out, |o| numeric_from_text(&decimal_text(a.value(i), *s), o))?
            }
            Enc::Text(a) => {
                let v = a.value(i).as_bytes();
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(v);
            }
            Enc::Jsonb(a) => {
                let v = a.value(i).as_bytes();
                out.extend((v.len() as i32 + 1).to_be_bytes());
                out.push(1);
                out.extend(v);
            }
            Enc::TextNumeric(a) => with_len(out, |o| numeric_from_text(a.value(i), o))?,
            Enc::TextUuid(a) => {
                let u = parse_uuid(a.value(i))?;
                out.extend(16i32.to_be_bytes());
                out.extend(u);
            }
            Enc::TextInterval(a) => {
                let (months, days, micros) = parse_interval(a.value(i))?;
                out.extend(16i32.to_be_bytes());
                out.extend(micros.to_be_bytes());
                out.extend(days.to_be_bytes());
                out.extend(months.to_be_bytes());
            }
            Enc::Bytes(a) => {
                let v = a.value(i);
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(v);
            }
            Enc::Uuid(a) => {
                out.extend(16i32.to_be_bytes());
                out.extend(a.value(i));
            }
            Enc::Date(a) => {
                out.extend(4i32.to_be_bytes());
                out.extend((a.value(i) - PG_EPOCH_DAYS).to_be_bytes());
            }
            Enc::Time(a) => {
                out.extend(8i32.to_be_bytes());
                out.extend(a.value(i).to_be_bytes());
            }
            Enc::Ts(a) => {
                out.extend(8i32.to_be_bytes());
                out.extend((a.value(i) - PG_EPOCH_MICROS).to_be_bytes());
            }
            Enc::Interval(a) => {
                let v = a.value(i);
                if v.nanoseconds % 1000 != 0 {
                    return Err("interval has sub-microsecond precision".into());
                }
                out.extend(16i32.to_be_bytes());
                out.extend((v.nanoseconds / 1000).to_be_bytes());
                out.extend(v.days.to_be_bytes());
                out.extend(v.months.to_be_bytes());
            }
            Enc::List(a, elem, inner) => {
                let offs = a.value_offsets();
                let (start, end) = (offs[i] as usize, offs[i + 1] as usize);
                let has_null = (start..end).any(|j| inner.is_null(j));
                with_len(out, |o| {
                    o.extend(1i32.to_be_bytes());
                    o.extend((has_null as i32).to_be_bytes());
                    o.extend(elem.to_be_bytes());
                    o.extend(((end - start) as i32).to_be_bytes());
                    o.extend(1i32.to_be_bytes());
                    for j in start..end {
                        inner.write(j, o)?;
                    }
                    Ok(())
                })?
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode::Numeric;
    use super::*;

    fn roundtrip(s: &str) -> String {
        let mut v = Vec::new();
        numeric_from_text(s, &mut v).unwrap();
        let mut out = String::new();
        Numeric::parse(&v).unwrap().to_text(&mut out);
        out
    }

    #[test]
    fn numeric_text_round_trips() {
        for s in [
            "0",
            "1",
            "-1",
            "12345.67",
            "0.0001",
            "-0.000100",
            "10000",
            "99999999999999999999999999999999999999",
            "1234567890.1234567890",
            "NaN",
            "0.00",
        ] {
            assert_eq!(roundtrip(s), s, "{s}");
        }
        assert_eq!(roundtrip("007.50"), "7.50");
        assert!(numeric_from_text("1e5", &mut Vec::new()).is_err());
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(7, 0), "7");
    }

    #[test]
    fn uuids_parse() {
        let u = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(u[0], 0xa0);
        assert_eq!(u[15], 0x11);
        assert!(parse_uuid("nope").is_err());
    }
}
