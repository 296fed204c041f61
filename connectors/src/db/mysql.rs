//! MySQL/MariaDB source and sink (`type = "mysql"`, URLs `mysql://` and
//! `mariadb://`), over mysql_async.
//!
//! This module owns what both directions share: the connection options
//! (utf8mb4, session time zone UTC, so TIMESTAMP values are read and
//! compared as UTC), connecting from a worker thread, and the database a
//! table lives in. The type mapping is in [`types`], the partitioned,
//! incremental reader in [`source`], the exactly-once writer in [`sink`].

mod sink;
mod source;
mod types;

pub use sink::{MysqlSink, MysqlSinkFactory};
pub use source::{MysqlSource, MysqlSourceFactory};

use super::{db_error, Ident, TableName};
use mysql_async::{Conn, Opts, OptsBuilder};
use tidex_engine::{ConnectorConfig, Error, Registry, Result, SpecError};

/// The connector's name in errors and specs.
const KIND: &str = "mysql";

/// Registers the mysql source and sink.
pub fn register(r: &mut Registry) {
    r.register_source(MysqlSourceFactory);
    r.register_sink(MysqlSinkFactory);
}

/// Where a connector connects: the URL (with the password, for errors to
/// redact) and the driver options built from it.
#[derive(Clone)]
struct Endpoint {
    url: url::Url,
    opts: Opts,
    /// The database named in the URL path, if any.
    database: Option<String>,
}

impl Endpoint {
    fn new(cfg: &ConnectorConfig, url: &url::Url) -> std::result::Result<Self, SpecError> {
        let scheme = url.scheme().to_ascii_lowercase();
        if scheme != "mysql" && scheme != "mariadb" {
            return Err(cfg.error(
                "url",
                format!(
                    "{} is not a MySQL URL: expected mysql://user@host:3306/database or mariadb://…",
                    super::redact(url)
                ),
            ));
        }
        // mysql_async only knows the `mysql` scheme.
        let mut driver = url.clone();
        if scheme != "mysql" && driver.set_scheme("mysql").is_err() {
            return Err(cfg.error("url", "cannot use this URL as a mysql:// URL"));
        }
        let opts = Opts::from_url(driver.as_str()).map_err(|e| {
            let msg = e.to_string();
            let msg = match url.password().filter(|p| !p.is_empty()) {
                Some(pw) => msg.replace(pw, "***"),
                None => msg,
            };
            cfg.error("url", format!("{}: {msg}", super::redact(url)))
        })?;
        let database = opts.db_name().map(str::to_string);
        let opts = OptsBuilder::from_opts(opts)
            .init(vec![
                "SET NAMES utf8mb4",
                // TIMESTAMP columns are read and bound as UTC.
                "SET time_zone = '+00:00'",
            ])
            .into();
        Ok(Endpoint {
            url: url.clone(),
            opts,
            database,
        })
    }

    /// The database holding `table`: its own qualifier, else the URL's.
    fn database_of(&self, table: &TableName) -> Result<Ident> {
        match (&table.schema, &self.database) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(d)) => Ok(Ident(d.clone())),
            (None, None) => Err(Error::Config(format!(
                "{KIND} ({}): no database for table {}: name it in the URL (mysql://host:3306/DATABASE) or qualify the table (database.table)",
                super::redact(&self.url),
                table
            ))),
        }
    }

    /// A connector error about this endpoint, password redacted.
    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        db_error(KIND, &self.url, what, e)
    }

    /// Opens a connection; called from worker threads.
    fn connect(&self, io: &tokio::runtime::Handle) -> Result<Conn> {
        let opts = self.opts.clone();
        io.block_on(async move { Conn::new(opts).await })
            .map_err(|e| self.error("connecting", e))
    }

    /// A table as summaries show it: unqualified in the URL's database.
    fn table_label(&self, t: &TableName) -> String {
        match (&t.schema, &self.database) {
            (Some(s), Some(d)) if s.0 == *d => t.name.to_string(),
            _ => t.to_string(),
        }
    }

    /// The URL for logs and summaries.
    fn redacted(&self) -> String {
        super::redact(&self.url)
    }
}

/// A table name with its database made explicit.
fn qualified(db: &Ident, table: &TableName) -> TableName {
    TableName {
        schema: Some(db.clone()),
        name: table.name.clone(),
    }
}

/// The server's error number, when the server refused a statement.
fn server_error_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}
