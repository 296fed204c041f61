//! The job spec: one TOML file is the whole job.
//!
//! Parsing happens in two passes over the same text so that every error,
//! including those in connector-specific fields, points at a line: the
//! engine reads the sections it owns, then each connector deserializes its
//! own section from the original text through [`ConnectorConfig::parse`].
//! The structs below double as the reference documentation of the format.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use toml::Spanned;

/// A spec error that names the line, the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The spec file, when it came from one.
    pub file: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted path of the field at fault, e.g. `source.delimiter`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}:")?;
        }
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(col) = self.column {
                write!(f, "{col}:")?;
            }
        }
        if self.file.is_some() || self.line.is_some() {
            write!(f, " ")?;
        }
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.field, self.message)
        }
    }
}

/// Line and column (1-based) of a byte offset in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// The dotted field path for an error at `offset`: the enclosing table
/// header plus the key written on that line.
fn field_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let mut table = String::new();
    let line_start = text[..offset].rfind('\n').map_or(0, |p| p + 1);
    for line in text[..line_start].lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = match line.split_once('=') {
        Some((k, _)) if !line.trim_start().starts_with('[') => {
            k.trim().trim_matches('"').to_string()
        }
        _ => String::new(),
    };
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

impl SpecError {
    /// An error at a byte span of the spec text.
    pub fn at(
        text: &str,
        span: Option<std::ops::Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = line_col(text, s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        SpecError {
            file: None,
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }

    fn from_toml(text: &str, err: toml::de::Error) -> Self {
        let span = err.span();
        let field = span
            .clone()
            .map(|s| field_at(text, s.start))
            .unwrap_or_default();
        let message = err.message().trim().to_string();
        SpecError::at(text, span, field, message)
    }

    /// Names the spec file in the error.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
}

/// `[job]`: who provides the data and why it is exchanged.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    /// Unique job name; run history and resume are keyed by it.
    pub name: String,
    /// Providing department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Declared use of the data, recorded with every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A quantity of bytes: an integer, or a string such as `"200MB"` or `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("expected a size such as \"200MB\" or \"1GiB\", found {s:?}"))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" | "k" => 1e3,
            "mb" | "m" => 1e6,
            "gb" | "g" => 1e9,
            "tb" | "t" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "unknown size unit {other:?}; use B, KB, MB, GB, KiB, MiB or GiB"
                ))
            }
        };
        Ok(ByteSize((num * mult).round() as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a size: an integer number of bytes or a string such as \"200MB\"",
            )
        })? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn default_batch_rows() -> usize {
    8192
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `[limits]`: how much of the machine a job may use.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Rows per Arrow batch (default 8192: a batch of typical records, its
    /// field offsets and its Arrow columns then fit a core's 2 MiB L2 cache
    /// while it is parsed and encoded).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Worker threads processing partitions (default: the number of cores).
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Cap on input bytes read per second, e.g. `"200MB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_sec: Option<ByteSize>,
    /// Cap on rows read per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_per_sec: Option<u64>,
    /// A partition that has run at least this long, and more than twice
    /// as long as the median of the partitions that finished before it,
    /// is cut in two while it runs when its source can split it (CSV and
    /// JSON-lines byte ranges, Parquet row groups); the rest becomes a new partition that an
    /// idle worker takes. `"30s"` by default, `"off"` never.
    #[serde(default)]
    pub split_lagging_after: SplitAfter,
}

/// When a lagging partition is split: a duration such as `"30s"`,
/// `"500ms"`, `"2m"`, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SplitAfter(pub Option<f64>);

impl Default for SplitAfter {
    fn default() -> Self {
        SplitAfter(Some(crate::scheduler::rebalance::MIN_LAG_SECS))
    }
}

impl std::str::FromStr for SplitAfter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(SplitAfter(None));
        }
        let bad = || {
            format!(
                "expected a duration such as \"30s\", \"500ms\" or \"2m\", or \"off\", found {s:?}"
            )
        };
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "ms" => num / 1e3,
            "s" | "" => num,
            "m" | "min" => num * 60.0,
            "h" => num * 3600.0,
            _ => return Err(bad()),
        };
        Ok(SplitAfter(Some(secs)))
    }
}

impl<'de> Deserialize<'de> for SplitAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)
            .map_err(|_| {
                serde::de::Error::custom(
                    "expected a duration such as \"30s\" or \"500ms\", or \"off\"",
                )
            })?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_rows: default_batch_rows(),
            parallelism: default_parallelism(),
            max_bytes_per_sec: None,
            max_rows_per_sec: None,
            split_lagging_after: SplitAfter::default(),
        }
    }
}

/// What to do with a row that cannot be read as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Stop the run, naming file, row and column (default).
    #[default]
    Fail,
    /// Write the row to the dead-letter output with the reason and go on.
    Skip,
}

/// `[errors]`: the error policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsSection {
    /// `fail` (default) or `skip`.
    #[serde(default)]
    pub policy: Policy,
    /// Stop the run once more than this many rows were rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Stop the run when more than this percentage of rows was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_percent: Option<f64>,
    /// Local directory that receives rejected rows as JSON lines
    /// (required with `policy = "skip"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// How urgently a job's runs take workers from the shared pool of
/// `tidex serve`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Takes the next free worker before any other work, at partition
    /// boundaries (a running partition is never interrupted mid-commit).
    Urgent,
    /// Ordinary exchanges (default).
    #[default]
    Normal,
    /// Large loads that yield to everything else.
    Bulk,
}

impl Priority {
    /// `urgent`, `normal` or `bulk`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "urgent" => Ok(Priority::Urgent),
            "normal" => Ok(Priority::Normal),
            "bulk" => Ok(Priority::Bulk),
            _ => Err(format!(
                "unknown priority {s:?}; expected urgent, normal or bulk"
            )),
        }
    }
}

/// What `tidex serve` does with fire times it missed while it was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Run once for the newest missed fire time (default).
    #[default]
    Latest,
    /// Run once for every missed fire time, oldest first (at most 100).
    All,
    /// Skip missed fire times; wait for the next one.
    None,
}

/// `[schedule]`: when `tidex serve` runs the job and how it competes for
/// workers. `tidex run` ignores it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// Cron expression: five fields (minute hour day-of-month month
    /// day-of-week), or six with seconds first; `L` is the last day of the
    /// month, e.g. `"0 2 * * *"` (nightly at 02:00) or `"0 22 L * *"`
    /// (month end). Without it the job runs only when submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA time zone of `cron` and `window`, e.g. `"Asia/Shanghai"`
    /// (default: the machine's zone). DST changes are honoured: a time
    /// skipped by the change runs at the first minute after it, a repeated
    /// time runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `"HH:MM-HH:MM"` local window the scheduled run must finish inside,
    /// e.g. `"02:00-06:00"`; may cross midnight (`"22:00-04:00"`). The
    /// planner sizes the run to end inside it and `tidex plan` flags jobs
    /// predicted to miss it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// `urgent`, `normal` (default) or `bulk`.
    #[serde(default)]
    pub priority: Priority,
    /// Runs missed while the service was down: `latest` (default), `all`
    /// or `none`.
    #[serde(default)]
    pub catch_up: CatchUp,
}

#[derive(Debug, Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    job: Option<JobSection>,
    source: Option<Spanned<Head>>,
    #[serde(default)]
    stage: Vec<Spanned<Head>>,
    sink: Option<Spanned<Head>>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    errors: ErrorsSection,
    schedule: Option<ScheduleSection>,
}

/// One connector section (`[source]` or `[sink]`) of a spec. Connectors read
/// their typed, `deny_unknown_fields` config from it with [`Self::parse`].
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    text: std::sync::Arc<str>,
    section: &'static str,
    kind: String,
    kind_span: Option<std::ops::Range<usize>>,
}

/// One `[[stage]]` section of a spec. Stage types read their typed,
/// `deny_unknown_fields` config from it with [`Self::parse`].
#[derive(Debug, Clone)]
pub struct StageConfig {
    text: std::sync::Arc<str>,
    index: usize,
    kind: String,
    span: std::ops::Range<usize>,
}

impl StageConfig {
    /// The `type` of the stage.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Position among the spec's stages (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Deserializes this stage into its config type, straight from the spec
    /// text so errors point at their line. The type must accept `type`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, SpecError> {
        let de = toml::Deserializer::parse(&self.text)
            .map_err(|e| SpecError::from_toml(&self.text, e))?;
        serde::de::DeserializeSeed::deserialize(
            NthStage::<T>(self.index, std::marker::PhantomData),
            de,
        )
        .map_err(|e| SpecError::from_toml(&self.text, e))
    }

    /// An error about this stage, pointing at `field` when it is written in
    /// the section, else at the section.
    pub fn error(&self, field: &str, message: impl Into<String>) -> SpecError {
        // The section runs from its header to the next header.
        let start = self.span.start;
        let end = self.text[start + 1..]
            .find("\n[")
            .map_or(self.text.len(), |i| start + 1 + i);
        let section = &self.text[start..end];
        let at = section
            .match_indices(field)
            .find(|(i, _)| section[i + field.len()..].trim_start().starts_with('='))
            .map(|(i, _)| start + i..start + i + field.len());
        SpecError::at(
            &self.text,
            at.or(Some(self.span.clone())),
            format!("stage[{}].{field}", self.index),
            message,
        )
    }
}

/// Deserializes the `index`-th element of the top-level `stage` array as
/// `T`, skipping everything else.
struct NthStage<T>(usize, std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for NthStage<T> {
    type Value = T;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        struct Top<T>(usize, std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Top<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job spec")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "stage" {
                        found = Some(
                            map.next_value_seed(Elements::<T>(self.0, std::marker::PhantomData))?,
                        );
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                found.ok_or_else(|| serde::de::Error::custom("no [[stage]] sections"))
            }
        }
        struct Elements<T>(usize, std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for Elements<T> {
            type Value = T;
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
                d.deserialize_seq(self)
            }
        }
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Elements<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of [[stage]] tables")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
                let mut i = 0;
                while i < self.0 {
                    if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                        return Err(serde::de::Error::custom("stage index out of range"));
                    }
                    i += 1;
                }
                let value = seq
                    .next_element::<T>()?
                    .ok_or_else(|| serde::de::Error::custom("stage index out of range"))?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(value)
            }
        }
        d.deserialize_map(Top::<T>(self.0, self.1))
    }
}

#[derive(Deserialize)]
struct SourceSection<T> {
    source: T,
}
#[derive(Deserialize)]
struct SinkSection<T> {
    sink: T,
}

impl ConnectorConfig {
    /// The `type` of the connector.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// `"source"` or `"sink"`.
    pub fn section(&self) -> &'static str {
        self.section
    }

    /// Deserializes this section into the connector's config type. Errors
    /// point at the line and field in the spec text. The config type must
    /// accept the `type` field.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, SpecError> {
        let res = match self.section {
            "source" => toml::from_str::<SourceSection<T>>(&self.text).map(|s| s.source),
            _ => toml::from_str::<SinkSection<T>>(&self.text).map(|s| s.sink),
        };
        res.map_err(|e| SpecError::from_toml(&self.text, e))
    }

    /// An error about a field of this section, pointing at its line when
    /// the field is written in the spec.
    pub fn error(&self, field: &str, message: impl Into<String>) -> SpecError {
        let path = format!("{}.{}", self.section, field);
        let span = find_key(&self.text, self.section, field);
        SpecError::at(&self.text, span, path, message)
    }
}

/// Byte span of `key = …` inside `[table]`, for errors found after parsing.
fn find_key(text: &str, table: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut current = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    let start = offset + line.find(k.trim()).unwrap_or(0);
                    return Some(start..start + key.len());
                }
            }
        }
        offset += line.len();
    }
    None
}

/// A parsed, validated job spec.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The spec text as written (or as generated by `tidex copy`).
    pub text: std::sync::Arc<str>,
    /// `[job]`.
    pub job: JobSection,
    /// `[source]`.
    pub source: ConnectorConfig,
    /// `[[stage]]` sections, in order.
    pub stages: Vec<StageConfig>,
    /// `[sink]`.
    pub sink: ConnectorConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[errors]`.
    pub errors: ErrorsSection,
    /// `[schedule]`, when the job recurs or has a priority.
    pub schedule: Option<ScheduleSection>,
}

impl JobSpec {
    /// Parses and validates the engine-owned parts of a spec. Connector
    /// sections are checked by [`crate::Registry::validate`].
    pub fn parse(text: &str) -> Result<JobSpec, SpecError> {
        let text: std::sync::Arc<str> = text.into();
        let doc: Doc = toml::from_str(&text).map_err(|e| SpecError::from_toml(&text, e))?;
        let job = doc.job.ok_or_else(|| {
            SpecError::at(
                &text,
                None,
                "job",
                "missing [job] section; expected at least `name = \"…\"`",
            )
        })?;
        if job.name.trim().is_empty() {
            return Err(SpecError::at(
                &text,
                find_key(&text, "job", "name"),
                "job.name",
                "must not be empty",
            ));
        }
        let connector = |head: Option<Spanned<Head>>,
                         section: &'static str|
         -> Result<ConnectorConfig, SpecError> {
            let head = head.ok_or_else(|| {
                SpecError::at(
                    &text,
                    None,
                    section,
                    format!("missing [{section}] section; every job needs a source and a sink"),
                )
            })?;
            let span = head.span();
            let kind = head.into_inner().kind.ok_or_else(|| {
                SpecError::at(
                    &text,
                    Some(span),
                    format!("{section}.type"),
                    "missing `type`, the connector to use",
                )
            })?;
            Ok(ConnectorConfig {
                text: text.clone(),
                section,
                kind_span: Some(kind.span()),
                kind: kind.into_inner(),
            })
        };
        let source = connector(doc.source, "source")?;
        let sink = connector(doc.sink, "sink")?;
        let mut stages = Vec::new();
        for (index, st) in doc.stage.into_iter().enumerate() {
            let span = st.span();
            match st.into_inner().kind {
                Some(k) => stages.push(StageConfig {
                    text: text.clone(),
                    index,
                    kind: k.into_inner(),
                    span,
                }),
                None => {
                    return Err(SpecError::at(
                        &text,
                        Some(span),
                        "stage.type",
                        "missing `type`, the stage to apply",
                    ))
                }
            }
        }
        let limits = doc.limits;
        if limits.batch_rows == 0 {
            return Err(SpecError::at(
                &text,
                find_key(&text, "limits", "batch_rows"),
                "limits.batch_rows",
                "must be at least 1",
            ));
        }
        if limits.parallelism == 0 {
            return Err(SpecError::at(
                &text,
                find_key(&text, "limits", "parallelism"),
                "limits.parallelism",
                "must be at least 1",
            ));
        }
        let errors = doc.errors;
        if errors.policy == Policy::Skip && errors.dead_letter.is_none() {
            return Err(SpecError::at(
                &text,
                find_key(&text, "errors", "policy"),
                "errors.dead_letter",
                "required with policy = \"skip\": the directory that receives rejected rows",
            ));
        }
        if let Some(p) = errors.max_percent {
            if !(0.0..=100.0).contains(&p) {
                return Err(SpecError::at(
                    &text,
                    find_key(&text, "errors", "max_percent"),
                    "errors.max_percent",
                    "expected a percentage between 0 and 100",
                ));
            }
        }
        if let Some(sec) = &doc.schedule {
            if let Err((field, message)) = crate::scheduler::cron::Schedule::compile(sec) {
                return Err(SpecError::at(
                    &text,
                    find_key(&text, "schedule", field),
                    format!("schedule.{field}"),
                    message,
                ));
            }
        }
        let schedule = doc.schedule;
        Ok(JobSpec {
            schedule,
            job,
            source,
            stages,
            sink,
            limits,
            errors,
            text,
        })
    }

    /// An error about the connector `type` of a section.
    pub fn unknown_connector(&self, cfg: &ConnectorConfig, known: &[&str]) -> SpecError {
        SpecError::at(
            &self.text,
            cfg.kind_span.clone(),
            format!("{}.type", cfg.section),
            format!(
                "unknown {} type `{}`; known {} types: {}",
                cfg.section,
                cfg.kind,
                cfg.section,
                known.join(", ")
            ),
        )
    }

    /// BLAKE3 of the spec text, recorded with each run.
    pub fn fingerprint(&self) -> String {
        blake3::hash(self.text.as_bytes()).to_hex()[..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[job]
name = "people-daily"
owner = "civil-affairs"

[source]
type = "csv"
url = "fixtures/people.csv"

[sink]
type = "parquet"
url = "out/people/"

[limits]
batch_rows = 1000
max_bytes_per_sec = "200MB"

[errors]
policy = "skip"
max_rows = 10
dead_letter = "out/dead/"
"#;

    #[test]
    fn split_lagging_after_takes_durations_or_off() {
        let p = |s: &str| s.parse::<SplitAfter>();
        assert_eq!(p("30s"), Ok(SplitAfter(Some(30.0))));
        assert_eq!(p("500ms"), Ok(SplitAfter(Some(0.5))));
        assert_eq!(p("2m"), Ok(SplitAfter(Some(120.0))));
        assert_eq!(p("45"), Ok(SplitAfter(Some(45.0))));
        assert_eq!(p("off"), Ok(SplitAfter(None)));
        assert!(p("soon").unwrap_err().contains("\"soon\""));
        assert!(p("3 days").is_err());
        assert_eq!(
            Limits::default().split_lagging_after,
            SplitAfter(Some(30.0))
        );
    }

    #[test]
    fn parses_reference_spec() {
        let spec = JobSpec::parse(GOOD).unwrap();
        assert_eq!(spec.job.name, "people-daily");
        assert_eq!(spec.source.kind(), "csv");
        assert_eq!(spec.sink.kind(), "parquet");
        assert_eq!(spec.limits.batch_rows, 1000);
        assert_eq!(spec.limits.max_bytes_per_sec, Some(ByteSize(200_000_000)));
        assert_eq!(spec.errors.policy, Policy::Skip);
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let text = GOOD.replace("batch_rows = 1000", "batch_rowz = 1000");
        let err = JobSpec::parse(&text).unwrap_err();
        assert_eq!(err.line, Some(15), "{err}");
        assert_eq!(err.field, "limits.batch_rowz");
        assert!(err.message.contains("unknown field `batch_rowz`"), "{err}");
        assert!(
            err.message.contains("batch_rows"),
            "lists expected fields: {err}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let text = GOOD.replace("max_rows = 10", "max_rows = \"ten\"");
        let err = JobSpec::parse(&text).unwrap_err();
        assert_eq!(err.line, Some(20), "{err}");
        assert_eq!(err.field, "errors.max_rows");
    }

    #[test]
    fn missing_source_is_reported() {
        let text = GOOD.replace(
            "[source]\ntype = \"csv\"\nurl = \"fixtures/people.csv\"\n",
            "",
        );
        let err = JobSpec::parse(&text).unwrap_err();
        assert_eq!(err.field, "source");
        assert!(err.message.contains("missing [source]"), "{err}");
    }

    #[test]
    fn skip_requires_dead_letter() {
        let text = GOOD.replace("dead_letter = \"out/dead/\"\n", "");
        let err = JobSpec::parse(&text).unwrap_err();
        assert_eq!(err.field, "errors.dead_letter");
    }

    #[test]
    fn connector_section_errors_point_at_line() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Csv {
            #[serde(rename = "type")]
            kind: String,
            url: String,
        }
        let text = GOOD.replace(
            "url = \"fixtures/people.csv\"",
            "url = \"fixtures/people.csv\"\ndelimitr = \";\"",
        );
        let spec = JobSpec::parse(&text).unwrap();
        let err = spec.source.parse::<Csv>().unwrap_err();
        assert_eq!(err.line, Some(9), "{err}");
        assert_eq!(err.field, "source.delimitr");
    }

    #[test]
    fn schedule_errors_name_line_and_field() {
        let with = |sched: &str| format!("{GOOD}\n[schedule]\n{sched}\n");
        let ok = JobSpec::parse(&with(
            "cron = \"0 2 * * *\"\ntimezone = \"Asia/Shanghai\"\nwindow = \"02:00-06:00\"\npriority = \"bulk\"\ncatch_up = \"all\"",
        ))
        .unwrap();
        let sec = ok.schedule.unwrap();
        assert_eq!(sec.priority, Priority::Bulk);
        assert_eq!(sec.catch_up, CatchUp::All);
        let line = GOOD.lines().count() + 3;
        for (body, field, says) in [
            (
                "cron = \"0 25 * * *\"",
                "schedule.cron",
                "invalid cron expression",
            ),
            (
                "cron = \"0 2 * * *\"\ntimezone = \"Asia/Atlantis\"",
                "schedule.timezone",
                "unknown time zone",
            ),
            (
                "cron = \"0 2 * * *\"\nwindow = \"2am-6am\"",
                "schedule.window",
                "HH:MM-HH:MM",
            ),
            (
                "cron = \"0 2 * * *\"\npriority = \"high\"",
                "schedule.priority",
                "unknown variant",
            ),
            (
                "cron = \"0 2 * * *\"\ncron_tz = \"UTC\"",
                "schedule.cron_tz",
                "unknown field",
            ),
        ] {
            let err = JobSpec::parse(&with(body)).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(says), "{err}");
            let expected = line + body.lines().count() - 1;
            assert_eq!(err.line, Some(expected), "{err}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("200MB".parse::<ByteSize>().unwrap(), ByteSize(200_000_000));
        assert_eq!("1GiB".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }
}
