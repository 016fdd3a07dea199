//! What the reports need from a database, whichever holds the ledger: a statement written once
//! with SQLite's `?N` parameters, bound values, and rows of plain cells. The SQLite and
//! PostgreSQL readers each run it their own way (PostgreSQL reads `?N` as `$N`); the few
//! expressions the two spell differently come from `Dialect`.

use super::LedgerError;

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Int(i64),
    Text(String),
}

/// One value of a result row. Booleans arrive as `Int` 0 or 1, as SQLite has them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Cell {
    pub(super) fn int(&self) -> Result<i64, LedgerError> {
        match self {
            Cell::Int(v) => Ok(*v),
            Cell::Null => Ok(0),
            other => Err(LedgerError::Corrupt(format!(
                "expected an integer, found {other:?}"
            ))),
        }
    }

    /// Counters are stored signed; a negative one can only be corruption and reads as 0.
    pub(super) fn count(&self) -> Result<u64, LedgerError> {
        Ok(u64::try_from(self.int()?).unwrap_or(0))
    }

    pub(super) fn real(&self) -> Result<f64, LedgerError> {
        match self {
            Cell::Real(v) => Ok(*v),
            // SQLite hands back a whole-number REAL sum as it was stored.
            Cell::Int(v) => Ok(*v as f64),
            Cell::Null => Ok(0.0),
            other => Err(LedgerError::Corrupt(format!(
                "expected a number, found {other:?}"
            ))),
        }
    }

    pub(super) fn text(&self) -> Result<&str, LedgerError> {
        match self {
            Cell::Text(v) => Ok(v),
            other => Err(LedgerError::Corrupt(format!(
                "expected text, found {other:?}"
            ))),
        }
    }

    pub(super) fn into_text(self) -> Result<String, LedgerError> {
        match self {
            Cell::Text(v) => Ok(v),
            other => Err(LedgerError::Corrupt(format!(
                "expected text, found {other:?}"
            ))),
        }
    }
}

/// Where the ledger lives, for the expressions that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The value of tag `key` in a row's `tags` JSON ("" when absent), with parameter `n` bound
    /// to what `tag_param` gives.
    pub(super) fn tag_expr(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("COALESCE(CAST(json_extract(tags, ?{n}) AS TEXT), '')"),
            Dialect::Postgres => format!("COALESCE(CAST(tags AS JSONB) ->> ?{n}, '')"),
        }
    }

    pub(super) fn tag_param(self, key: &str) -> Param {
        match self {
            // A JSON path; tag keys are checked to hold no `"` (`query::check_tag_key`).
            Dialect::Sqlite => Param::Text(format!("$.\"{key}\"")),
            Dialect::Postgres => Param::Text(key.to_string()),
        }
    }
}

/// A ledger's read side: runs one statement and hands back every row (the reports' results are
/// grouped sums, a few thousand rows at most).
pub(super) trait Read {
    fn dialect(&self) -> Dialect;
    fn rows(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Cell>>, LedgerError>;
}

/// `?N` parameters as PostgreSQL's `$N`. Statements here hold no `?` inside literals.
pub(super) fn numbered_as_dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// A statement's result as cells, from a row iterator of SQLite.
pub(super) fn sqlite_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Param],
) -> Result<Vec<Vec<Cell>>, LedgerError> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare_cached(sql)?;
    let width = stmt.column_count();
    let bound = params.iter().map(|p| match p {
        Param::Int(v) => rusqlite::types::Value::Integer(*v),
        Param::Text(v) => rusqlite::types::Value::Text(v.clone()),
    });
    let mut rows = stmt.query(rusqlite::params_from_iter(bound))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(width);
        for i in 0..width {
            cells.push(match row.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Real(v) => Cell::Real(v),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(_) => {
                    return Err(LedgerError::Corrupt("a blob in a ledger column".into()))
                }
            });
        }
        out.push(cells);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollars() {
        let cases = [
            ("SELECT ?1, ?12 FROM t", "SELECT $1, $12 FROM t"),
            ("a = ?3 AND b <> ?6", "a = $3 AND b <> $6"),
            ("no parameters", "no parameters"),
            ("a lone ? stays", "a lone ? stays"),
        ];
        for (sqlite, postgres) in cases {
            assert_eq!(numbered_as_dollars(sqlite), postgres);
        }
    }
}
