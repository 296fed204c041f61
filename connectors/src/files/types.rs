//! Column type names used in specs (`schema = ["id:int64", "amount:decimal(12,2)"]`).

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

/// Type names accepted in specs, for error messages.
pub const TYPE_NAMES: &str =
    "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, utf8 (string), date, timestamp, timestamptz, decimal(p,s)";

/// Parses a type name.
pub fn parse_type(name: &str) -> Option<DataType> {
    let n = name.trim().to_ascii_lowercase();
    Some(match n.as_str() {
        "bool" | "boolean" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" | "int" => DataType::Int32,
        "int64" | "bigint" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" | "float" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "utf8" | "string" | "text" => DataType::Utf8,
        "date" | "date32" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => {
            let inner = n.strip_prefix("decimal(")?.strip_suffix(')')?;
            let (p, s) = inner.split_once(',')?;
            let (p, s): (u8, i8) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
            if p == 0 || p > 38 || s < 0 || s as u8 > p {
                return None;
            }
            DataType::Decimal128(p, s)
        }
    })
}

/// Parses `["name:type", …]` into a schema; errors name the entry.
pub fn parse_schema(entries: &[String]) -> Result<Schema, String> {
    let mut fields = Vec::with_capacity(entries.len());
    for e in entries {
        let (name, ty) = e
            .rsplit_once(':')
            .ok_or_else(|| format!("entry {e:?} should be \"name:type\""))?;
        let dt = parse_type(ty).ok_or_else(|| {
            format!("entry {e:?}: unknown type `{ty}`; expected one of {TYPE_NAMES}")
        })?;
        fields.push(Field::new(name.trim(), dt, true));
    }
    Ok(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(
            parse_type("decimal(12, 2)"),
            Some(DataType::Decimal128(12, 2))
        );
        assert_eq!(
            parse_type("TIMESTAMPTZ"),
            Some(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            ))
        );
        assert_eq!(parse_type("decimal(40,2)"), None);
        assert!(parse_schema(&["id:int64".into(), "x".into()])
            .unwrap_err()
            .contains("name:type"));
    }
}
