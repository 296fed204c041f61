//! `mask`: hides personal data before it leaves the providing department.
//!
//! ```toml
//! [[stage]]
//! type = "mask"
//! key = "env:TIDEX_MASK_KEY"        # only for pseudonym rules
//! columns = { phone = "phone", id_card = "id_card", name = "name", email = "email",
//!             card = "bank_card", address = "address:6", customer = "pseudonym",
//!             note = "partial:2:2" }
//! ```
//!
//! A rule is `KIND[:KEEP_PREFIX[:KEEP_SUFFIX]]`, counted in characters (so
//! Chinese names mask correctly). Defaults: phone 3+4 (`138****5678`),
//! id_card 6+4, bank_card 6+4, name 1+0 (`张**`), address 6+0, partial 0+0.
//! `email` keeps the first character of the local part and the domain.
//! A value too short to keep anything is masked entirely. `pseudonym`
//! replaces a value by a keyed HMAC-SHA256 token (32 hex characters): the
//! same value and key always give the same token, so masked keys still join,
//! and without the key the token cannot be traced back. Masked columns
//! become strings; NULL stays NULL.

use crate::dirty::Rejects;
use crate::error::{Error, Result};
use crate::spec::{SpecError, StageConfig};
use crate::stage::{Stage, StageFactory, StagePlan};
use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `[[stage]] type = "mask"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Always `"mask"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Column name → rule (`KIND[:KEEP_PREFIX[:KEEP_SUFFIX]]`).
    pub columns: BTreeMap<String, String>,
    /// Where the pseudonym key comes from: `env:NAME` or `file:PATH`. The
    /// key (at least 16 bytes) never appears in logs or errors.
    #[serde(default)]
    pub key: Option<String>,
}

/// Kinds of rule, for error messages.
pub const KINDS: &str = "phone, id_card, bank_card, name, email, address, partial, pseudonym";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rule {
    Partial { prefix: usize, suffix: usize },
    Email { prefix: usize },
    Pseudonym,
}

pub(crate) fn parse_rule(text: &str) -> Result<Rule, String> {
    let mut it = text.split(':');
    let kind = it.next().unwrap_or("").trim();
    let nums: Vec<usize> = it
        .map(|n| {
            n.trim()
                .parse::<usize>()
                .map_err(|_| format!("rule {text:?}: {n:?} is not a number of characters"))
        })
        .collect::<Result<_, _>>()?;
    let (dp, ds) = match kind {
        "phone" => (3, 4),
        "id_card" | "bank_card" => (6, 4),
        "name" => (1, 0),
        "address" => (6, 0),
        "partial" => (0, 0),
        "email" => {
            if nums.len() > 1 {
                return Err(format!("rule {text:?}: email takes at most one number (characters kept of the local part)"));
            }
            return Ok(Rule::Email {
                prefix: nums.first().copied().unwrap_or(1),
            });
        }
        "pseudonym" => {
            if !nums.is_empty() {
                return Err(format!("rule {text:?}: pseudonym takes no numbers"));
            }
            return Ok(Rule::Pseudonym);
        }
        other => {
            return Err(format!(
                "unknown mask kind `{other}`; expected one of {KINDS}"
            ))
        }
    };
    if nums.len() > 2 {
        return Err(format!(
            "rule {text:?}: expected KIND[:KEEP_PREFIX[:KEEP_SUFFIX]]"
        ));
    }
    Ok(Rule::Partial {
        prefix: nums.first().copied().unwrap_or(dp),
        suffix: nums.get(1).copied().unwrap_or(ds),
    })
}

fn mask_partial(s: &str, prefix: usize, suffix: usize, out: &mut String) {
    let n = s.chars().count();
    if n <= prefix + suffix {
        out.extend(std::iter::repeat_n('*', n));
        return;
    }
    for (i, c) in s.chars().enumerate() {
        out.push(if i < prefix || i >= n - suffix {
            c
        } else {
            '*'
        });
    }
}

fn mask_email(s: &str, prefix: usize, out: &mut String) {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            let keep: String = local
                .chars()
                .take(prefix.min(local.chars().count().saturating_sub(1)))
                .collect();
            out.push_str(&keep);
            out.push_str("***@");
            out.push_str(domain);
        }
        None => mask_partial(s, prefix, 0, out),
    }
}

pub(crate) fn load_key(spec: &str) -> Result<Vec<u8>, String> {
    let key = super::keys::load(spec)?;
    if key.len() < 16 {
        return Err("the mask key must be at least 16 bytes".into());
    }
    Ok(key)
}

/// Registers `type = "mask"`.
pub struct MaskFactory;

fn check(cfg: &StageConfig) -> Result<(MaskConfig, Vec<(String, Rule)>), SpecError> {
    let c: MaskConfig = cfg.parse()?;
    if c.columns.is_empty() {
        return Err(cfg.error(
            "columns",
            "name at least one column to mask, e.g. { phone = \"phone\" }",
        ));
    }
    let mut rules = Vec::new();
    for (col, text) in &c.columns {
        let rule = parse_rule(text).map_err(|e| cfg.error(col, e))?;
        rules.push((col.clone(), rule));
    }
    let needs_key = rules.iter().any(|(_, r)| *r == Rule::Pseudonym);
    match (&c.key, needs_key) {
        (None, true) => {
            return Err(cfg.error(
                "columns",
                "pseudonym rules need `key = \"env:NAME\"` or `key = \"file:PATH\"`",
            ))
        }
        (Some(k), _) if !super::keys::well_formed(k) => {
            return Err(cfg.error("key", "expected `env:NAME` or `file:PATH`"))
        }
        _ => {}
    }
    Ok((c, rules))
}

impl StageFactory for MaskFactory {
    fn kind(&self) -> &'static str {
        "mask"
    }

    fn validate(&self, cfg: &StageConfig) -> Result<(), SpecError> {
        check(cfg).map(|_| ())
    }

    fn plan(&self, cfg: &StageConfig, input: SchemaRef) -> Result<Arc<dyn StagePlan>> {
        let (c, rules) = check(cfg)?;
        let cols: Vec<String> = rules.iter().map(|(c, _)| c.clone()).collect();
        let idx = super::column_indexes(cfg, "mask", &input, &cols)?;
        let by_index: Vec<(usize, Rule)> = idx
            .iter()
            .copied()
            .zip(rules.into_iter().map(|(_, r)| r))
            .collect();
        let key = match &c.key {
            Some(k) => Some(
                load_key(k)
                    .map_err(|e| Error::Config(format!("stage {} (mask): {e}", cfg.index())))?,
            ),
            None => None,
        };
        Ok(Arc::new(MaskPlan {
            schema: super::retyped(&input, &idx, DataType::Utf8),
            rules: by_index,
            key: key.map(Arc::new),
        }))
    }
}

struct MaskPlan {
    schema: SchemaRef,
    rules: Vec<(usize, Rule)>,
    key: Option<Arc<Vec<u8>>>,
}

impl StagePlan for MaskPlan {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn start(&self) -> Result<Box<dyn Stage>> {
        Ok(Box::new(Masker {
            schema: self.schema.clone(),
            rules: self.rules.clone(),
            key: self.key.clone(),
        }))
    }
}

struct Masker {
    schema: SchemaRef,
    rules: Vec<(usize, Rule)>,
    key: Option<Arc<Vec<u8>>>,
}

/// Masks every value of `col` (cast to text) by `rule`; NULL stays NULL.
/// `key` is the pseudonym key (required by pseudonym rules only).
pub(crate) fn mask_array(col: &ArrayRef, rule: Rule, key: Option<&[u8]>) -> Result<ArrayRef> {
    let text = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| Error::Internal(format!("mask: {e}")))?;
    let s = text.as_string::<i32>();
    let mut b = StringBuilder::with_capacity(s.len(), s.value_data().len());
    let mut buf = String::new();
    let mac = match (rule, key) {
        (Rule::Pseudonym, Some(k)) => {
            Some(Hmac::<Sha256>::new_from_slice(k).map_err(|e| Error::Internal(e.to_string()))?)
        }
        (Rule::Pseudonym, None) => return Err(Error::Internal("pseudonym without key".into())),
        _ => None,
    };
    for i in 0..s.len() {
        if s.is_null(i) {
            b.append_null();
            continue;
        }
        buf.clear();
        let v = s.value(i);
        match rule {
            Rule::Partial { prefix, suffix } => mask_partial(v, prefix, suffix, &mut buf),
            Rule::Email { prefix } => mask_email(v, prefix, &mut buf),
            Rule::Pseudonym => {
                let mut mac = mac.clone().expect("checked above");
                mac.update(v.as_bytes());
                for byte in &mac.finalize().into_bytes()[..16] {
                    use std::fmt::Write;
                    let _ = write!(buf, "{byte:02x}");
                }
            }
        }
        b.append_value(&buf);
    }
    Ok(Arc::new(b.finish()))
}

impl Stage for Masker {
    fn process(&mut self, batch: RecordBatch, _rejects: &mut Rejects) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        for &(i, rule) in &self.rules {
            cols[i] = mask_array(&cols[i], rule, self.key.as_deref().map(|k| k.as_slice()))?;
        }
        RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| Error::Internal(format!("mask: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rule: &str, v: &str) -> String {
        let mut out = String::new();
        match parse_rule(rule).unwrap() {
            Rule::Partial { prefix, suffix } => mask_partial(v, prefix, suffix, &mut out),
            Rule::Email { prefix } => mask_email(v, prefix, &mut out),
            Rule::Pseudonym => unreachable!(),
        }
        out
    }

    #[test]
    fn masks_by_kind_in_characters() {
        assert_eq!(m("phone", "13812345678"), "138****5678");
        assert_eq!(m("id_card", "11010119900307123X"), "110101********123X");
        assert_eq!(m("name", "张三丰"), "张**");
        assert_eq!(m("address", "北京市朝阳区建国路88号"), "北京市朝阳区******");
        assert_eq!(m("email", "zhang.san@example.com"), "z***@example.com");
        assert_eq!(m("partial:2:2", "abcdef"), "ab**ef");
        assert_eq!(m("phone", "12345"), "*****", "too short to keep anything");
        assert!(parse_rule("phone:x").is_err());
        assert!(parse_rule("passport")
            .unwrap_err()
            .contains("unknown mask kind"));
    }
}
