//! The header row of one file, bound to the configuration: key columns and
//! path placeholders resolved to column indices or to the derived id.

use std::collections::HashMap;

use crate::config::Config;
use crate::template::{PathTemplate, Segment};
use crate::tokenizer::Tokenizer;

/// The error for a header row with a CR outside quotes that does not end the
/// row. The tokenizer ends records only at LF, so a file with CR-only line
/// endings is one record, and without this error its rows would all be lost
/// in the header.
pub const CR_IN_HEADER: &str = "the header row contains a carriage return outside quotes, so \
                                the file seems to use CR-only line endings, which are not \
                                supported; convert the file to LF or CRLF line endings";

/// A path template piece with its column resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPart {
    Literal(String),
    /// Index of the column whose value fills the placeholder.
    Column(usize),
    /// A placeholder named after `id_field`, filled with the derived id.
    Id,
}

/// The header row of a file.
#[derive(Clone, Debug)]
pub struct Header {
    names: Vec<String>,
    /// The row's exact bytes, without a byte order mark or line terminator.
    raw: Vec<u8>,
    key_columns: Vec<usize>,
    path: Vec<PathPart>,
    /// The `read_path` template, when one is configured.
    read_path: Option<Vec<PathPart>>,
    /// Each column name as a JSON string followed by `:`, ready to start a
    /// member of the request body.
    json_names: Vec<Vec<u8>>,
}

impl Header {
    /// Builds the header from the first record of a file, which `tokenizer`
    /// has just split.
    ///
    /// # Errors
    ///
    /// Returns a message for a CR outside quotes that does not end the row, a
    /// quoting error or invalid UTF-8. Also for a column name with a line
    /// break, a duplicate column name, a column named like `id_field`, or a
    /// key column or path placeholder that the header lacks.
    pub fn parse(raw: &[u8], tokenizer: &Tokenizer, config: &Config) -> Result<Header, String> {
        if tokenizer.data_cr() {
            return Err(CR_IN_HEADER.to_owned());
        }
        if let Some(error) = tokenizer.quote_error() {
            return Err(format!(
                "invalid header row: unexpected {} after the closing quote of field {}",
                describe_byte(error.byte),
                error.field + 1
            ));
        }
        let text = std::str::from_utf8(raw).map_err(|error| {
            format!(
                "invalid UTF-8 in the header row at byte {} of the row; save the file as UTF-8",
                error.valid_up_to()
            )
        })?;

        let names: Vec<String> = tokenizer
            .fields()
            .iter()
            .map(|f| f.value(text).into_owned())
            .collect();
        // After the `data_cr` check, a CR or LF can only be inside quotes.
        if let Some(index) = names.iter().position(|name| name.contains(['\r', '\n'])) {
            return Err(format!(
                "column {} ({:?}) of the header row contains a line break inside quotes, but \
                 a column name cannot contain one; remove it from the header row",
                index + 1,
                names[index]
            ));
        }
        Header::bind(names, raw.to_vec(), config)
    }

    /// Resolves the configured key columns and path placeholders against
    /// the column `names`.
    fn bind(names: Vec<String>, raw: Vec<u8>, config: &Config) -> Result<Header, String> {
        let id_field = config.id_field.as_deref();
        if let Some(id_field) = id_field {
            if let Some(index) = names.iter().position(|name| name == id_field) {
                return Err(format!(
                    "column {} of the header row is named {id_field:?}, like the id_field \
                     that the plugin adds to each body; rename the column or choose another \
                     id_field",
                    index + 1
                ));
            }
        }

        let mut indices: HashMap<&str, usize> = HashMap::with_capacity(names.len());
        for (index, name) in names.iter().enumerate() {
            if let Some(first) = indices.insert(name, index) {
                return Err(format!(
                    "duplicate column {name:?} in the header row (columns {} and {}); \
                     rename one of them",
                    first + 1,
                    index + 1
                ));
            }
        }
        let find = |column: &str, role: &str| {
            indices.get(column).copied().ok_or_else(|| {
                format!(
                    "{role} column {column:?} is not in the header row; the header has {}",
                    names.join(", ")
                )
            })
        };

        // Placeholders first: the key columns default to them, and a missing
        // one is a mistake in the template.
        let resolve = |template: &PathTemplate, role: &str| {
            let mut parts = Vec::with_capacity(template.segments().len());
            for segment in template.segments() {
                parts.push(match segment {
                    Segment::Literal(text) => PathPart::Literal(text.clone()),
                    Segment::Column(column) if Some(column.as_str()) == id_field => PathPart::Id,
                    Segment::Column(column) => PathPart::Column(find(column, role)?),
                });
            }
            Ok::<_, String>(parts)
        };
        let path = resolve(&config.path, "path template")?;
        let read_path = match &config.read_path {
            Some(template) => Some(resolve(template, "read_path template")?),
            None => None,
        };

        let mut key_columns = Vec::with_capacity(config.key_columns.len());
        for column in &config.key_columns {
            key_columns.push(find(column, "key")?);
        }

        let mut json_names = Vec::with_capacity(names.len());
        for name in &names {
            let mut json = serde_json::to_vec(name).map_err(|error| {
                format!("column name {name:?} cannot be written as JSON: {error}")
            })?;
            json.push(b':');
            json_names.push(json);
        }

        Ok(Header {
            names,
            raw,
            key_columns,
            path,
            read_path,
            json_names,
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Indices of the key columns, in key order.
    pub fn key_columns(&self) -> &[usize] {
        &self.key_columns
    }

    pub fn path(&self) -> &[PathPart] {
        &self.path
    }

    /// Returns the `read_path` template's parts, when one is configured.
    pub fn read_path(&self) -> Option<&[PathPart]> {
        self.read_path.as_deref()
    }

    /// Column `index`'s name as a JSON string followed by `:`.
    pub fn json_name(&self, index: usize) -> &[u8] {
        self.json_names.get(index).map_or(&[], Vec::as_slice)
    }

    /// Names field `index` (0-based) for a message, such as `3 ("city")`.
    pub fn field_label(&self, index: usize) -> String {
        match self.names.get(index) {
            Some(name) => format!("{} ({name:?})", index + 1),
            None => (index + 1).to_string(),
        }
    }
}

/// Describes a byte for a message: a printable ASCII character in quotes, or
/// its hex value.
pub fn describe_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() || byte == b' ' {
        format!("{:?}", byte as char)
    } else {
        format!("byte 0x{byte:02X}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::from_pairs(pairs).unwrap()
    }

    fn header(row: &str, config: &Config) -> Result<Header, String> {
        let mut tokenizer = Tokenizer::new(config.delimiter);
        let _ = tokenizer.advance(row.as_bytes(), usize::MAX);
        let _ = tokenizer.finish(row.as_bytes());
        Header::parse(row.as_bytes(), &tokenizer, config)
    }

    #[test]
    fn resolves_columns() {
        let config = config(&[
            ("path", "/f/{flight}?c={carrier}"),
            ("key", "carrier,flight"),
        ]);
        let header = header("year,carrier,flight", &config).unwrap();
        assert_eq!(header.names(), ["year", "carrier", "flight"]);
        assert_eq!(header.key_columns(), [1, 2]);
        let expected = [
            PathPart::Literal("/f/".to_owned()),
            PathPart::Column(2),
            PathPart::Literal("?c=".to_owned()),
            PathPart::Column(1),
        ];
        assert_eq!(header.path(), expected);
        assert_eq!(header.json_name(0), b"\"year\":");
    }

    #[test]
    fn rejects_duplicate_columns() {
        let config = config(&[("path", "/x")]);
        let message = header("id,name,city,name", &config).unwrap_err();
        assert_eq!(
            message,
            "duplicate column \"name\" in the header row (columns 2 and 4); rename one of them"
        );
    }

    #[test]
    fn rejects_missing_key_column() {
        let config = config(&[("path", "/x"), ("key", "iaat")]);
        let message = header("iata,name,city", &config).unwrap_err();
        assert_eq!(
            message,
            "key column \"iaat\" is not in the header row; the header has iata, name, city"
        );
    }

    #[test]
    fn rejects_missing_placeholder() {
        let config = config(&[("path", "/a/{iata}/{zip}"), ("key", "")]);
        let message = header("iata,name,city", &config).unwrap_err();
        assert_eq!(
            message,
            "path template column \"zip\" is not in the header row; the header has iata, \
             name, city"
        );
    }

    #[test]
    fn rejects_bad_header_bytes() {
        let config = config(&[("path", "/x")]);
        let message = header("a,\"b\"c", &config).unwrap_err();
        assert!(
            message.contains("unexpected 'c' after the closing quote of field 2"),
            "{message}"
        );

        let config = Config::from_pairs(&[("path", "/x")]).unwrap();
        let mut tokenizer = Tokenizer::new(b',');
        let row = b"a,\xFF";
        let _ = tokenizer.advance(row, usize::MAX);
        let _ = tokenizer.finish(row);
        let message = Header::parse(row, &tokenizer, &config).unwrap_err();
        assert!(
            message.contains("invalid UTF-8 in the header row at byte 2"),
            "{message}"
        );
    }

    #[test]
    fn rejects_line_breaks_in_names() {
        let config = config(&[("path", "/x")]);
        for row in ["id\r,name", "id,na\rme", "\"id\"\r,name"] {
            assert_eq!(header(row, &config).unwrap_err(), CR_IN_HEADER, "{row:?}");
        }

        let message = header("id,\"na\nme\"", &config).unwrap_err();
        assert_eq!(
            message,
            "column 2 (\"na\\nme\") of the header row contains a line break inside quotes, \
             but a column name cannot contain one; remove it from the header row"
        );
        assert!(header("id,\"na\rme\"", &config).is_err());
        assert!(header("id,name\r", &config).is_ok());
    }

    #[test]
    fn id_placeholders_resolve_to_id() {
        let config = config(&[
            ("path", "/r/{id}"),
            ("key", "iata"),
            ("id_field", "id"),
            ("read_path", "/r/{id}?c={city}"),
        ]);
        let header = header("iata,name,city", &config).unwrap();
        assert_eq!(
            header.path(),
            [PathPart::Literal("/r/".to_owned()), PathPart::Id]
        );
        let expected = [
            PathPart::Literal("/r/".to_owned()),
            PathPart::Id,
            PathPart::Literal("?c=".to_owned()),
            PathPart::Column(2),
        ];
        assert_eq!(header.read_path(), Some(expected.as_slice()));
    }

    #[test]
    fn rejects_column_named_like_id_field() {
        let config = config(&[("path", "/r"), ("key", "iata"), ("id_field", "id")]);
        let message = header("iata,id,city", &config).unwrap_err();
        assert_eq!(
            message,
            "column 2 of the header row is named \"id\", like the id_field that the plugin \
             adds to each body; rename the column or choose another id_field"
        );
    }

    #[test]
    fn rejects_missing_read_path_column() {
        let config = config(&[("path", "/r"), ("read_path", "/r/{code}")]);
        let message = header("iata,city", &config).unwrap_err();
        assert_eq!(
            message,
            "read_path template column \"code\" is not in the header row; the header has \
             iata, city"
        );
    }

    #[test]
    fn quoted_names_are_unescaped() {
        let config = config(&[("path", "/{a,b}")]);
        let header = header("\"a,b\",\"say \"\"x\"\"\"", &config).unwrap();
        assert_eq!(header.names(), ["a,b", "say \"x\""]);
        assert_eq!(header.json_name(1), br#""say \"x\"":"#);
    }
}
