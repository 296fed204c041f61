//! What the database connectors (PostgreSQL, MySQL/MariaDB, SQLite) share:
//! their spec sections, connection URLs with `?table=`/`?query=`
//! parameters, identifier checking and quoting, key-range partition plans,
//! incremental cursors, and the commit markers that make a database sink
//! exactly-once.
//!
//! Identifiers from specs and URLs are never spliced into SQL as written:
//! each part of `schema.table` and every column name must be a plain
//! identifier (letters, digits, `_`, `$`, any non-ASCII letter) or a
//! double-quoted one, and is then quoted for the dialect.

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use serde::{Deserialize, Serialize};
use tidex_engine::{CommittedPart, ConnectorConfig, Error, Registry, SpecError};

/// Registers every database source and sink compiled into this build.
pub fn register(r: &mut Registry) {
    #[cfg(feature = "postgres")]
    postgres::register(r);
    #[cfg(feature = "mysql")]
    mysql::register(r);
    #[cfg(feature = "sqlite")]
    sqlite::register(r);
    let _ = r;
}

/// The connector type for a database URL (`postgres://`, `postgresql://`,
/// `mysql://`, `mariadb://`, `sqlite://`), if it is one.
pub fn kind_for_url(url: &str) -> Option<&'static str> {
    let scheme = url.split_once("://")?.0.to_ascii_lowercase();
    Some(match scheme.as_str() {
        "postgres" | "postgresql" => "postgres",
        "mysql" | "mariadb" => "mysql",
        "sqlite" => "sqlite",
        _ => return None,
    })
}

/// SQL dialect, for quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL and SQLite: `"name"`.
    Ansi,
    /// MySQL/MariaDB: `` `name` ``.
    Mysql,
}

/// One checked identifier (a schema, table or column name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ident(pub String);

impl Ident {
    /// Checks a single identifier: plain (`people`, `人员`, `a$1`) or
    /// double-quoted (`"Odd Name"`, with `""` for a quote). Anything else,
    /// such as `people;drop table x`, is rejected.
    pub fn parse(s: &str) -> std::result::Result<Ident, String> {
        let (ident, rest) = split_ident(s)?;
        if !rest.is_empty() {
            return Err(bad_ident(s));
        }
        Ok(ident)
    }

    /// The identifier quoted for `dialect`.
    pub fn quoted(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::Ansi => format!("\"{}\"", self.0.replace('"', "\"\"")),
            Dialect::Mysql => format!("`{}`", self.0.replace('`', "``")),
        }
    }
}

impl std::fmt::Display for Ident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad_ident(s: &str) -> String {
    format!(
        "{s:?} is not a valid identifier: use letters, digits, `_` and `$`, or double-quote the name"
    )
}

/// Splits the first identifier off `s`; returns it and the rest.
fn split_ident(s: &str) -> std::result::Result<(Ident, &str), String> {
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if matches!(chars.peek(), Some((_, '"'))) {
                    chars.next();
                    out.push('"');
                } else {
                    if out.is_empty() || out.contains('\0') {
                        return Err(bad_ident(s));
                    }
                    return Ok((Ident(out), &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return Err(bad_ident(s));
    }
    let end = s
        .char_indices()
        .find(|(i, c)| {
            !(c.is_alphabetic() || *c == '_' || (*i > 0 && (c.is_ascii_digit() || *c == '$')))
        })
        .map_or(s.len(), |(i, _)| i);
    if end == 0 {
        return Err(bad_ident(s));
    }
    Ok((Ident(s[..end].to_string()), &s[end..]))
}

/// A table name, optionally qualified by its schema (PostgreSQL) or
/// database (MySQL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableName {
    /// Schema or database.
    pub schema: Option<Ident>,
    /// Table.
    pub name: Ident,
}

impl TableName {
    /// Parses `table` or `schema.table` (parts plain or double-quoted).
    pub fn parse(s: &str) -> std::result::Result<TableName, String> {
        let s = s.trim();
        let (first, rest) = split_ident(s)?;
        if rest.is_empty() {
            return Ok(TableName {
                schema: None,
                name: first,
            });
        }
        let Some(rest) = rest.strip_prefix('.') else {
            return Err(bad_ident(s));
        };
        let (second, tail) = split_ident(rest)?;
        if !tail.is_empty() {
            return Err(bad_ident(s));
        }
        Ok(TableName {
            schema: Some(first),
            name: second,
        })
    }

    /// The name quoted for `dialect`.
    pub fn quoted(&self, dialect: Dialect) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", s.quoted(dialect), self.name.quoted(dialect)),
            None => self.name.quoted(dialect),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// `incremental = { cursor = "updated_at" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// A column that grows with every insert or update (an integer or a
    /// timestamp). Each run reads the rows whose cursor is above the last
    /// completed run's high-water mark and at most the mark taken when the
    /// run was planned.
    pub cursor: String,
}

/// `[source] type = "postgres" | "mysql" | "sqlite"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSourceConfig {
    /// The connector type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Connection URL; may carry `?table=`, `?query=`, `?partition_by=`,
    /// `?partitions=` and `?cursor=`.
    pub url: String,
    /// Table to read, `table` or `schema.table`.
    pub table: Option<String>,
    /// A query to read instead of a table (one partition unless
    /// `partition_by` names one of its output columns).
    pub query: Option<String>,
    /// Columns to read (default: all).
    pub columns: Option<Vec<String>>,
    /// Integer or timestamp column whose value ranges make the partitions
    /// (default: the table's single-column integer primary key).
    pub partition_by: Option<String>,
    /// How many partitions (default: four per worker).
    pub partitions: Option<usize>,
    /// Incremental loads by a cursor column.
    pub incremental: Option<IncrementalConfig>,
    /// Password, when not in the URL (prefer `password_env`).
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
}

/// What a database source reads, resolved from its section and URL.
#[derive(Debug, Clone)]
pub struct SourceTarget {
    /// The connection URL without tidex's parameters, with the password.
    pub conn: url::Url,
    /// The table, when reading a table.
    pub table: Option<TableName>,
    /// The query, when reading a query.
    pub query: Option<String>,
    /// Projection.
    pub columns: Option<Vec<Ident>>,
    /// Partition key.
    pub partition_by: Option<Ident>,
    /// Partition count.
    pub partitions: Option<usize>,
    /// Incremental cursor.
    pub cursor: Option<Ident>,
}

/// How a database sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DbMode {
    /// Adds rows.
    #[default]
    Append,
    /// Empties the table when a run starts (in the same transaction as its
    /// first committed partition's marker cleanup), then adds rows.
    TruncateInsert,
    /// Inserts new keys, updates existing ones (by `key`).
    Upsert,
}

/// `[sink] type = "postgres" | "mysql" | "sqlite"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSinkConfig {
    /// The connector type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Connection URL; may carry `?table=`, `?mode=` and `?key=a,b`.
    pub url: String,
    /// Target table, `table` or `schema.table`.
    pub table: Option<String>,
    /// `append` (default), `truncate-insert` or `upsert`.
    pub mode: Option<DbMode>,
    /// Key columns for `upsert` (and the primary key of a created table).
    pub key: Option<Vec<String>>,
    /// Create the table from the incoming schema when it does not exist
    /// (default true).
    pub create: Option<bool>,
    /// Password, when not in the URL (prefer `password_env`).
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
}

/// What a database sink writes to, resolved from its section and URL.
#[derive(Debug, Clone)]
pub struct SinkTarget {
    /// The connection URL without tidex's parameters, with the password.
    pub conn: url::Url,
    /// Target table.
    pub table: TableName,
    /// Write mode.
    pub mode: DbMode,
    /// Key columns.
    pub key: Vec<Ident>,
    /// Create a missing table.
    pub create: bool,
}

/// Parses a database URL, taking tidex's own query parameters out of it.
/// SQLite URLs (`sqlite://relative/path.db`, `sqlite:///abs/path.db`) are
/// returned with the path in [`url::Url::path`] as written.
fn split_url(
    cfg: &ConnectorConfig,
    raw: &str,
    ours: &[&str],
) -> std::result::Result<(url::Url, Vec<(String, String)>), SpecError> {
    let parsed = if let Some(rest) = raw.strip_prefix("sqlite://") {
        // Keep relative paths relative: `sqlite://data/x.db` is data/x.db.
        let (path, query) = rest
            .split_once('?')
            .map_or((rest, None), |(p, q)| (p, Some(q)));
        let mut u = url::Url::parse("sqlite:///").expect("static URL");
        u.set_path(path);
        u.set_query(query);
        u
    } else {
        url::Url::parse(raw).map_err(|e| {
            cfg.error(
                "url",
                format!("{} is not a valid URL: {e}", redact_str(raw)),
            )
        })?
    };
    let mut keep = Vec::new();
    let mut taken = Vec::new();
    for (k, v) in parsed.query_pairs() {
        if ours.contains(&k.as_ref()) {
            taken.push((k.into_owned(), v.into_owned()));
        } else {
            keep.push((k.into_owned(), v.into_owned()));
        }
    }
    let mut conn = parsed.clone();
    if keep.is_empty() {
        conn.set_query(None);
    } else {
        conn.query_pairs_mut().clear().extend_pairs(keep);
    }
    Ok((conn, taken))
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn ident_field(
    cfg: &ConnectorConfig,
    field: &str,
    s: &str,
) -> std::result::Result<Ident, SpecError> {
    Ident::parse(s).map_err(|e| cfg.error(field, e))
}

fn apply_password(
    cfg: &ConnectorConfig,
    conn: &mut url::Url,
    password: &Option<String>,
    password_env: &Option<String>,
) -> std::result::Result<(), SpecError> {
    let pw = match (password, password_env) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
            cfg.error(
                "password_env",
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, None) => None,
    };
    if let Some(pw) = pw {
        if conn.scheme() != "sqlite" && conn.password().is_none() {
            conn.set_password(Some(&pw))
                .map_err(|_| cfg.error("url", "this URL cannot carry a password"))?;
        }
    }
    Ok(())
}

impl DbSourceConfig {
    /// Resolves the section and its URL parameters, checking every
    /// identifier.
    pub fn resolve(&self, cfg: &ConnectorConfig) -> std::result::Result<SourceTarget, SpecError> {
        let (mut conn, params) = split_url(
            cfg,
            &self.url,
            &["table", "query", "partition_by", "partitions", "cursor"],
        )?;
        apply_password(cfg, &mut conn, &self.password, &self.password_env)?;
        let table = self.table.as_deref().or(param(&params, "table"));
        let query = self.query.as_deref().or(param(&params, "query"));
        let (table, query) = match (table, query) {
            (Some(_), Some(_)) => {
                return Err(cfg.error("table", "give either a table or a query, not both"))
            }
            (None, None) => {
                return Err(cfg.error(
                    "table",
                    "missing: name a table (`table = \"schema.people\"` or `?table=` in the URL) or a query",
                ))
            }
            (Some(t), None) => (
                Some(TableName::parse(t).map_err(|e| cfg.error("table", e))?),
                None,
            ),
            (None, Some(q)) => {
                if q.trim().is_empty() {
                    return Err(cfg.error("query", "is empty"));
                }
                (None, Some(q.trim().trim_end_matches(';').to_string()))
            }
        };
        let columns = match &self.columns {
            Some(cols) if cols.is_empty() => return Err(cfg.error("columns", "is empty")),
            Some(cols) => Some(
                cols.iter()
                    .map(|c| ident_field(cfg, "columns", c))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let partition_by = self
            .partition_by
            .as_deref()
            .or(param(&params, "partition_by"))
            .map(|c| ident_field(cfg, "partition_by", c))
            .transpose()?;
        let partitions = match (self.partitions, param(&params, "partitions")) {
            (Some(n), _) => Some(n),
            (None, Some(s)) => Some(
                s.parse::<usize>()
                    .map_err(|_| cfg.error("url", format!("?partitions={s:?} is not a number")))?,
            ),
            (None, None) => None,
        };
        if partitions == Some(0) {
            return Err(cfg.error("partitions", "must be at least 1"));
        }
        let cursor = self
            .incremental
            .as_ref()
            .map(|i| i.cursor.as_str())
            .or(param(&params, "cursor"))
            .map(|c| ident_field(cfg, "incremental", c))
            .transpose()?;
        Ok(SourceTarget {
            conn,
            table,
            query,
            columns,
            partition_by,
            partitions,
            cursor,
        })
    }
}

impl DbSinkConfig {
    /// Resolves the section and its URL parameters, checking every
    /// identifier.
    pub fn resolve(&self, cfg: &ConnectorConfig) -> std::result::Result<SinkTarget, SpecError> {
        let (mut conn, params) = split_url(cfg, &self.url, &["table", "mode", "key", "create"])?;
        apply_password(cfg, &mut conn, &self.password, &self.password_env)?;
        let table = self
            .table
            .as_deref()
            .or(param(&params, "table"))
            .ok_or_else(|| {
                cfg.error(
                    "table",
                    "missing: name the target table (`table = \"schema.people\"` or `?table=` in the URL)",
                )
            })?;
        let table = TableName::parse(table).map_err(|e| cfg.error("table", e))?;
        let mode = match (self.mode, param(&params, "mode")) {
            (Some(m), _) => m,
            (None, Some(m)) => match m {
                "append" => DbMode::Append,
                "truncate-insert" => DbMode::TruncateInsert,
                "upsert" => DbMode::Upsert,
                other => {
                    return Err(cfg.error(
                        "url",
                        format!("?mode={other:?}: expected append, truncate-insert or upsert"),
                    ))
                }
            },
            (None, None) => DbMode::Append,
        };
        let key: Vec<String> = match (&self.key, param(&params, "key")) {
            (Some(k), _) => k.clone(),
            (None, Some(k)) => k.split(',').map(|s| s.trim().to_string()).collect(),
            (None, None) => Vec::new(),
        };
        let key = key
            .iter()
            .map(|k| ident_field(cfg, "key", k))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if mode == DbMode::Upsert && key.is_empty() {
            return Err(cfg.error(
                "key",
                "mode = \"upsert\" needs key columns, e.g. key = [\"id\"]",
            ));
        }
        let create = match (self.create, param(&params, "create")) {
            (Some(c), _) => c,
            (None, Some(c)) => c != "false" && c != "0",
            (None, None) => true,
        };
        Ok(SinkTarget {
            conn,
            table,
            mode,
            key,
            create,
        })
    }
}

/// A URL with its password replaced by `***`, for logs and errors.
pub fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

/// [`redact`] for a URL that may not parse.
pub fn redact_str(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => redact(&u),
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
    }
}

/// Key ranges for `n` partitions over `min..=max`: inclusive bounds, the
/// first range also takes rows whose key is NULL (see [`range_predicate`]).
pub fn split_range(min: i64, max: i64, n: usize) -> Vec<(i64, i64)> {
    if max < min {
        return vec![(min, max)];
    }
    let span = (max as i128 - min as i128 + 1) as u128;
    let n = (n.max(1) as u128).min(span) as i128;
    let span = span as i128;
    (0..n)
        .map(|i| {
            let lo = min as i128 + span * i / n;
            let hi = min as i128 + span * (i + 1) / n - 1;
            (lo as i64, hi as i64)
        })
        .collect()
}

/// The plan a database source stores with its run (see
/// `tidex_engine::Source::state`): enough to plan the same partitions on
/// resume and to continue from the high-water mark next time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DbPlanState {
    /// Partition key ranges (inclusive), as the key's integer form.
    pub ranges: Vec<(i64, i64)>,
    /// The previous completed run's high-water mark (exclusive lower bound).
    pub mark_from: Option<String>,
    /// This run's high-water mark (inclusive upper bound).
    pub mark_to: Option<String>,
    /// Estimated bytes per partition.
    pub bytes: u64,
}

/// Halves the key range of `partition` in place (the two halves take its
/// place); `None` when it holds a single key or there is no such range.
pub fn split_planned_range(plan: &mut DbPlanState, partition: usize) -> Option<()> {
    let (lo, hi) = *plan.ranges.get(partition)?;
    if hi <= lo {
        return None;
    }
    let mid = (lo as i128 + (hi as i128 - lo as i128) / 2) as i64;
    plan.ranges
        .splice(partition..=partition, [(lo, mid), (mid + 1, hi)]);
    Some(())
}

impl DbPlanState {
    /// Parses a stored state, `None` when absent or from another kind of
    /// source.
    pub fn load(s: Option<&str>) -> Option<DbPlanState> {
        serde_json::from_str(s?).ok()
    }

    /// Serializes for `Source::state`.
    pub fn store(&self) -> String {
        serde_json::to_string(self).expect("plain struct")
    }
}

/// The `WHERE` condition of one range partition on key `col`; the first
/// partition also reads NULL keys, so no row is left out.
pub fn range_predicate(col: &str, lo: &str, hi: &str, first: bool) -> String {
    if first {
        format!("(({col} >= {lo} AND {col} <= {hi}) OR {col} IS NULL)")
    } else {
        format!("({col} >= {lo} AND {col} <= {hi})")
    }
}

/// Name of the table in which database sinks record committed partitions,
/// created in the target table's schema.
pub const MARKER_TABLE: &str = "_tidex_commits";

/// The part a database sink reports for partition `index` of `table`,
/// both when committing it and when finding its marker on resume, so the
/// two agree on its location.
pub fn committed_part(
    table: &dyn std::fmt::Display,
    index: usize,
    rows: u64,
    bytes: u64,
) -> CommittedPart {
    CommittedPart {
        index,
        location: format!("{table}#{index}"),
        rows,
        bytes,
    }
}

/// A connector error: names the connector and where it connects, never the
/// password.
pub fn db_error(kind: &str, url: &url::Url, what: &str, e: impl std::fmt::Display) -> Error {
    let mut msg = e.to_string();
    if let Some(pw) = url.password().filter(|p| !p.is_empty()) {
        msg = msg.replace(pw, "***");
    }
    Error::io(
        format!("{kind} ({}): {what}", redact(url)),
        std::io::Error::other(msg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(
            Ident::parse("people").unwrap().quoted(Dialect::Ansi),
            "\"people\""
        );
        assert_eq!(Ident::parse("人员_1").unwrap().0, "人员_1");
        assert_eq!(
            Ident::parse("\"Odd \"\"Name\"")
                .unwrap()
                .quoted(Dialect::Ansi),
            "\"Odd \"\"Name\""
        );
        assert!(Ident::parse("a`b\"").is_err());
        assert!(Ident::parse("people;drop table x").is_err());
        assert!(Ident::parse("1abc").is_err());
        assert!(Ident::parse("").is_err());
        assert!(TableName::parse("people;drop table x").is_err());
        assert!(TableName::parse("a.b.c").is_err());
        let t = TableName::parse("s1.\"My Table\"").unwrap();
        assert_eq!(t.quoted(Dialect::Mysql), "`s1`.`My Table`");
        assert_eq!(t.quoted(Dialect::Ansi), "\"s1\".\"My Table\"");
        assert_eq!(Ident("a`b".into()).quoted(Dialect::Mysql), "`a``b`");
    }

    #[test]
    fn ranges_cover_every_key_once() {
        assert_eq!(split_range(1, 10, 3), vec![(1, 3), (4, 6), (7, 10)]);
        assert_eq!(split_range(5, 6, 8), vec![(5, 5), (6, 6)]);
        assert_eq!(split_range(7, 7, 4), vec![(7, 7)]);
        let r = split_range(i64::MIN, i64::MAX, 4);
        assert_eq!(r[0].0, i64::MIN);
        assert_eq!(r[3].1, i64::MAX);
        for w in r.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
    }

    #[test]
    fn passwords_are_redacted() {
        let u = url::Url::parse("postgres://bob:s3cret@db:5432/x?table=t").unwrap();
        assert_eq!(redact(&u), "postgres://bob:***@db:5432/x?table=t");
        assert!(!redact_str("postgres://bob:s3cret@db/x").contains("s3cret"));
        let e = db_error("postgres", &u, "connecting", "bad password s3cret");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
