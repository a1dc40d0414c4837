//! [`ConfigError`] and where in the file an error is: key paths, and the
//! line and column computed from the TOML parser's byte spans.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why a configuration was refused.
///
/// `Display` gives `file:line:col: key.path: message` when the place is
/// known, `file: key.path: message` otherwise. No variant ever holds the
/// cluster cookie.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Io {
        /// The file asked for.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{location}: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// The parser's message.
        message: String,
    },
    /// Valid TOML that does not fit the schema: an unknown key, a value of
    /// the wrong type, a missing required key.
    #[error("{location}: {path}{}{message}", if path.is_empty() { "" } else { ": " })]
    Schema {
        /// Where in the file.
        location: Location,
        /// The key path, e.g. `listeners[1].port` (empty at the top level).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Well-formed but refused by validation: a port out of range, a
    /// duplicate host, a reference to an unknown ACL, ...
    #[error("{location}: {path}{}{message}", if path.is_empty() { "" } else { ": " })]
    Invalid {
        /// Where in the file, when the configuration came from a file.
        location: Location,
        /// The key path, e.g. `access_rules.c2s[0]`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// Where the error is, when it came from a text.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Io { .. } => None,
            Self::Syntax { location, .. }
            | Self::Schema { location, .. }
            | Self::Invalid { location, .. } => Some(location),
        }
    }

    /// The key path (`listeners[1].port`), when known.
    pub fn key_path(&self) -> Option<&str> {
        match self {
            Self::Schema { path, .. } | Self::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A place in a configuration: the origin (file name) and, when known, the
/// 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Location {
    /// The file name given to [`Config::from_file`](super::Config::from_file)
    /// or the origin given to [`Config::from_str`](super::Config::from_str);
    /// `<default>` for a configuration built in code.
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column in characters, when known.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `listeners[1].port`, built while validating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The text a configuration was read from, kept so that errors found after
/// parsing (validation, a module checking its options) can still name the
/// line. Its `Debug` shows only the origin: the text holds the cookie.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) origin: String,
    pub(crate) text: Option<String>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Source {
    pub(crate) fn new(origin: &str, text: Option<&str>) -> Self {
        Self {
            origin: origin.to_owned(),
            text: text.map(str::to_owned),
        }
    }

    /// The location of a byte offset.
    pub(crate) fn location_at(&self, offset: Option<usize>) -> Location {
        let (line, column) = match (&self.text, offset) {
            (Some(text), Some(offset)) => {
                let (l, c) = line_col(text, offset);
                (Some(l), Some(c))
            }
            _ => (None, None),
        };
        Location {
            origin: self.origin.clone(),
            line,
            column,
        }
    }

    /// The location of a key path: the start of its value (or of the key
    /// when the value cannot be placed), else the nearest ancestor found.
    pub(crate) fn location_of(&self, path: &KeyPath) -> Location {
        let offset = self.text.as_deref().and_then(|t| {
            DeTable::parse(t)
                .ok()
                .and_then(|doc| span_of(&doc, &path.0))
        });
        self.location_at(offset)
    }

    /// An [`ConfigError::Invalid`] at `path`.
    pub(crate) fn invalid(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            location: self.location_of(path),
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// Turns a deserialisation error into a [`ConfigError::Schema`] with the
    /// key path found from its span.
    pub(crate) fn schema_error(&self, err: &toml::de::Error) -> ConfigError {
        let span = err.span();
        let path = match (&self.text, &span) {
            (Some(text), Some(span)) => DeTable::parse(text)
                .ok()
                .map(|doc| path_at(&doc, span.start))
                .unwrap_or_default(),
            _ => KeyPath::root(),
        };
        ConfigError::Schema {
            location: self.location_at(span.map(|s| s.start)),
            path: path.to_string(),
            message: err.message().trim_end().to_owned(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The offset of the value at `path` (the key's when the value spans
/// nothing useful), falling back to the deepest ancestor that exists.
fn span_of(doc: &Spanned<DeTable<'_>>, path: &[Seg]) -> Option<usize> {
    let mut best = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
    for seg in path {
        let value = match (seg, table, array) {
            (Seg::Key(k), Some(t), _) => match t.get_key_value(k.as_str()) {
                Some((key, value)) => {
                    best = Some(start_of(key.span(), value.span()));
                    value
                }
                None => return best,
            },
            (Seg::Index(i), _, Some(items)) => match items.get(*i) {
                Some(value) => {
                    best = Some(value.span().start);
                    value
                }
                None => return best,
            },
            _ => return best,
        };
        table = value.get_ref().as_table();
        array = value.get_ref().as_array().map(|a| &a[..]);
    }
    best
}

/// A table opened by a `[header]` may get a span that starts at the header
/// while its key is written inside a dotted key elsewhere; prefer the value
/// unless it starts before its key (then the key is what the reader wrote).
fn start_of(key: Range<usize>, value: Range<usize>) -> usize {
    if value.start >= key.start {
        value.start
    } else {
        key.start
    }
}

/// The deepest key path whose key or value covers `offset`.
fn path_at(doc: &Spanned<DeTable<'_>>, offset: usize) -> KeyPath {
    let mut best = KeyPath::root();
    walk_table(doc.get_ref(), &KeyPath::root(), offset, &mut best);
    best
}

fn walk_table(table: &DeTable<'_>, here: &KeyPath, offset: usize, best: &mut KeyPath) {
    for (key, value) in table.iter() {
        let path = here.key(key.get_ref());
        if key.span().contains(&offset) || covers(value.span(), offset) {
            consider(&path, best);
        }
        walk_value(value.get_ref(), &path, offset, best);
    }
}

fn walk_value(value: &DeValue<'_>, here: &KeyPath, offset: usize, best: &mut KeyPath) {
    match value {
        DeValue::Table(t) => walk_table(t, here, offset, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = here.index(i);
                if covers(item.span(), offset) {
                    consider(&path, best);
                }
                walk_value(item.get_ref(), &path, offset, best);
            }
        }
        _ => {}
    }
}

/// An empty span (some tables get one) covers its start.
fn covers(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

fn consider(path: &KeyPath, best: &mut KeyPath) {
    if path.0.len() > best.0.len() {
        *best = path.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // "é" is two bytes: the `=` after it is the 4th character.
        assert_eq!(line_col(text, 10), (2, 4));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn key_paths_display_like_toml() {
        let p = KeyPath::root().key("listeners").index(1).key("port");
        assert_eq!(p.to_string(), "listeners[1].port");
        let q = KeyPath::root().key("acl").key("a b");
        assert_eq!(q.to_string(), "acl.\"a b\"");
    }

    #[test]
    fn span_and_path_agree() {
        let text = "[[l]]\nport = 1\n[[l]]\nport = 2\n[t]\nx.y = 3\n";
        let doc = DeTable::parse(text).expect("valid toml");
        let path = KeyPath::root().key("l").index(1).key("port");
        let off = span_of(&doc, &path.0).expect("found");
        assert_eq!(line_col(text, off), (4, 8));
        assert_eq!(path_at(&doc, off), path);
        let deep = KeyPath::root().key("t").key("x").key("y");
        let off = span_of(&doc, &deep.0).expect("found");
        assert_eq!(line_col(text, off).0, 6);
        assert_eq!(path_at(&doc, off), deep);
    }
}
