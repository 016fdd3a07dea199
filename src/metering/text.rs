//! `Text`: a string that is either static or shared behind an `Arc`, for the fields of a usage
//! record. Filling a record per request then copies a pointer (or bumps a count) instead of
//! allocating, and the ledger's thread, which drops the record, frees only what was made for
//! that record alone (its id): frees across threads are the expensive kind.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Immutable text, cheap to clone. Compares, hashes and prints as the `str` it holds.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Text {
    /// Empty text; allocates nothing.
    pub const EMPTY: Text = Text(Repr::Static(""));

    /// Text that lives as long as the program: no allocation, no reference count.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Repr::Static(s))
    }

    /// A shared copy of `s` (one allocation; clones of it then share it).
    pub fn copy(s: &str) -> Text {
        if s.is_empty() {
            Text::EMPTY
        } else {
            Text(Repr::Shared(Arc::from(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl Default for Text {
    fn default() -> Text {
        Text::EMPTY
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::from_static(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::copy(&s)
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Text {
        Text(Repr::Shared(s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.as_str().to_owned()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

// Hashes as `str`, which `Borrow<str>` requires: maps keyed by `Text` are looked up by `&str`.
impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

/// Comparisons with the other string types, both ways round, as `String` has them.
macro_rules! eq_str {
    ($($other:ty),*) => {$(
        impl PartialEq<$other> for Text {
            fn eq(&self, other: &$other) -> bool {
                self.as_str() == &other[..]
            }
        }
        impl PartialEq<Text> for $other {
            fn eq(&self, other: &Text) -> bool {
                &self[..] == other.as_str()
            }
        }
    )*};
}

eq_str!(str, &str, String);

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

impl ToSql for Text {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_bytes())))
    }
}

impl FromSql for Text {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Text> {
        value.as_str().map(Text::copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn text_behaves_as_the_str_it_holds() {
        let shared = Text::copy("cpu");
        let from_static = Text::from("cpu");
        let owned = Text::from(String::from("cpu"));
        for t in [&shared, &from_static, &owned] {
            assert_eq!(*t, shared);
            assert_eq!(t, "cpu");
            assert_eq!(*t, "cpu".to_string());
            let (borrowed, owned) = ("cpu", String::from("cpu"));
            assert!(borrowed == *t && *"cpu" == *t && owned == *t);
            assert_eq!(t.len(), 3);
            assert_eq!(t.to_string(), "cpu");
            assert_eq!(format!("{t:?}"), "\"cpu\"");
            assert_eq!(serde_json::to_string(t).ok().as_deref(), Some("\"cpu\""));
        }
        assert_ne!(shared, Text::from("gpu"));
        let (a, b) = (Text::from("a"), Text::copy("b"));
        assert!(a < b && b.cmp(&a).is_gt());
        assert_eq!(Text::default(), "");
        assert_eq!(Text::copy(""), Text::EMPTY);
        let mut map = HashMap::new();
        map.insert(shared.clone(), 1);
        assert_eq!(map.get("cpu"), Some(&1));
        assert_eq!(String::from(owned), "cpu");
    }

    #[test]
    fn clones_share_one_allocation() {
        let a = Text::copy("tenant-name");
        let b = a.clone();
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        let s = Text::from_static("static");
        assert!(std::ptr::eq(s.as_str(), s.clone().as_str()));
    }

    #[test]
    fn text_round_trips_through_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory db");
        let back: Text = conn
            .query_row("SELECT ?1", [Text::copy("é \"x\"")], |r| r.get(0))
            .expect("round trip");
        assert_eq!(back, "é \"x\"");
        let not_text = conn.query_row("SELECT 1", [], |r| r.get::<_, Text>(0));
        assert!(not_text.is_err());
    }
}
