//! Mapping one record to its HTTP request.

use crate::config::Config;
use crate::header::{Header, PathPart};
use crate::parser::check_record;
use crate::record::Request;
use crate::template::push_encoded;
use crate::tokenizer::{Field, Step, Tokenizer};

/// The content type of every request body.
pub const CONTENT_TYPE: &str = "application/json";

/// Splits `raw` again with `tokenizer` and builds the record's request.
///
/// # Errors
///
/// Returns a message when `raw` is not exactly one well-formed record with
/// the header's number of fields, or when a path placeholder's value is
/// empty or null.
pub fn map_record(
    raw: &[u8],
    header: &Header,
    config: &Config,
    tokenizer: &mut Tokenizer,
) -> Result<Request, String> {
    tokenizer.reset();
    let mut step = tokenizer.advance(raw, usize::MAX);
    if step == Step::Incomplete {
        step = tokenizer.finish(raw);
    }

    let len = match step {
        Step::Record { len: 0, .. } => return Err("the record is empty".to_owned()),
        Step::Record { len, next } if next == raw.len() => len,
        Step::Record { .. } => {
            return Err(
                "the record holds a line break outside quotes, so it is more than \
                        one record"
                    .to_owned(),
            )
        }
        Step::Unterminated | Step::BrokenQuote => {
            return Err("the record has an unterminated quoted field".to_owned())
        }
        Step::Overflow | Step::Incomplete => {
            return Err("the record could not be split into fields".to_owned())
        }
    };

    let fields = tokenizer.fields();
    let text = check_record(&raw[..len], fields, tokenizer.quote_error(), header)?;
    let null = config.null.as_deref();

    Ok(Request {
        method: config.method.clone(),
        path: build_path(text, fields, header, null)?,
        headers: vec![("content-type".to_owned(), CONTENT_TYPE.to_owned())],
        body: build_body(text, fields, header, null)?,
    })
}

/// Fills the path template with the record's percent-encoded values.
fn build_path(
    text: &str,
    fields: &[Field],
    header: &Header,
    null: Option<&str>,
) -> Result<String, String> {
    let mut path = String::with_capacity(64);
    for part in header.path() {
        let index = match part {
            PathPart::Literal(literal) => {
                path.push_str(literal);
                continue;
            }
            PathPart::Column(index) => *index,
        };

        let name = header.names().get(index).map_or("", String::as_str);
        let value = fields.get(index).map(|f| f.value(text)).unwrap_or_default();
        if value.is_empty() {
            return Err(format!(
                "column {name:?} is empty but the path template needs it"
            ));
        }
        if null == Some(value.as_ref()) {
            return Err(format!(
                "column {name:?} is null ({value:?}) but the path template needs it"
            ));
        }
        push_encoded(&mut path, &value);
    }
    Ok(path)
}

/// Builds the JSON object from column names to the record's values, in
/// header order, with `null` for values equal to the null token.
fn build_body(
    text: &str,
    fields: &[Field],
    header: &Header,
    null: Option<&str>,
) -> Result<Vec<u8>, String> {
    // Names, quotes and separators add roughly as much as the values.
    let mut body = Vec::with_capacity(2 * text.len() + 2);
    body.push(b'{');
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(header.json_name(index));

        let value = field.value(text);
        if null == Some(value.as_ref()) {
            body.extend_from_slice(b"null");
        } else {
            serde_json::to_writer(&mut body, value.as_ref()).map_err(|error| {
                let label = header.field_label(index);
                format!("cannot write field {label} as JSON: {error}")
            })?;
        }
    }
    body.push(b'}');
    Ok(body)
}
