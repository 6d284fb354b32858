//! Strict JSON: like `serde_json::from_str::<Value>`, except that an object with the same key
//! twice is an error naming where it happened.
//!
//! serde_json keeps the last of duplicate keys; another parser may keep the first. A gateway
//! that reads `{"amount": 5, "amount": 5000}` one way while the upstream reads it the other is
//! a bypass, so both policy documents and tool arguments are read with this parser.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Where in the document the parser is: a stack-allocated path, turned into a JSON pointer
/// only when there is an error to report (parsing well-formed input allocates no pointers).
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl At<'_> {
    fn pointer(&self) -> String {
        match self {
            At::Root => String::new(),
            At::Key(parent, key) => format!("{}/{}", parent.pointer(), escape(key)),
            At::Index(parent, i) => format!("{}/{i}", parent.pointer()),
        }
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Why a text is not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// JSON pointer of the duplicated key, when that is the problem.
    pub pointer: Option<String>,
    pub message: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pointer {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for JsonError {}

const DUPLICATE_MARK: &str = "\u{0}duplicate\u{0}";

/// Parses `text` as JSON, refusing duplicate object keys.
pub fn parse_strict(text: &str) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Seed(At::Root).deserialize(&mut de).map_err(to_error)?;
    de.end().map_err(to_error)?;
    Ok(value)
}

/// Strict JSON as one member of a larger message read with serde: the message's own parse reads
/// it (`Option<Strict>` as a field), where `parse_strict` would scan again text that parse had
/// already scanned, to keep it as raw text. The pointer of a duplicate key starts at this value.
#[derive(Debug)]
pub struct Strict(pub Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        Seed(At::Root).deserialize(d).map(Strict)
    }
}

/// The error of a serde_json parse that read [`Strict`] values: a duplicate key in one of them is
/// reported as `parse_strict` reports it (with its pointer); any other error keeps its text.
impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> JsonError {
        to_error(e)
    }
}

fn to_error(e: serde_json::Error) -> JsonError {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix(DUPLICATE_MARK) {
        // "<pointer>\0<key>" followed by serde_json's " at line L column C".
        let (pointer, tail) = rest.split_once('\u{0}').unwrap_or((rest, ""));
        return JsonError {
            pointer: Some(pointer.to_string()),
            message: format!("duplicate key: {tail}"),
        };
    }
    JsonError {
        pointer: None,
        message: text,
    }
}

struct Seed<'a>(At<'a>);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor(self.0))
    }
}

struct StrictVisitor<'a>(At<'a>);

impl<'de> Visitor<'de> for StrictVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Seed(self.0).deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(Seed(At::Index(&self.0, out.len())))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if out.contains_key(key.as_ref()) {
                let at = At::Key(&self.0, &key);
                return Err(de::Error::custom(format_args!(
                    "{DUPLICATE_MARK}{}\u{0}{:?} appears twice",
                    at.pointer(),
                    key.as_ref()
                )));
            }
            let value = map.next_value_seed(Seed(At::Key(&self.0, &key)))?;
            out.insert(key.into_owned(), value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strict_member_is_read_in_its_parents_pass() {
        #[derive(serde::Deserialize)]
        struct Params {
            arguments: Option<Strict>,
        }
        let read = |text: &str| serde_json::from_str::<Params>(text).map_err(JsonError::from);
        let args = r#"{"a":{"b":[1,{"c":true}]}}"#;
        let p = read(&format!(r#"{{"x":1,"arguments":{args}}}"#)).unwrap();
        assert_eq!(p.arguments.unwrap().0, parse_strict(args).unwrap());
        assert!(read(r#"{"arguments":null}"#).unwrap().arguments.is_none());
        // The pointer starts at the member, as parse_strict's starts at its text.
        let e = read(r#"{"arguments":{"a":{"k":1,"k":2}}}"#).err().unwrap();
        assert_eq!(e.pointer.as_deref(), Some("/a/k"));
        assert!(e.message.contains("duplicate key"), "{e}");
        let e = read(r#"{"arguments":{"a":1,"\u0061":2}}"#).err().unwrap();
        assert_eq!(e.pointer.as_deref(), Some("/a"));
        // Any other error is serde_json's own, without a pointer.
        assert!(
            read(r#"{"arguments":{"a":1}"#)
                .err()
                .unwrap()
                .pointer
                .is_none()
        );
    }

    #[test]
    fn parses_like_serde_json() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":"\u00e9\n"}"#;
        assert_eq!(
            parse_strict(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_pointer() {
        let e = parse_strict(r#"{"tools":{"a":{},"a":{"deny_if":[]}}}"#).unwrap_err();
        assert_eq!(e.pointer.as_deref(), Some("/tools/a"));
        assert!(e.message.contains("\"a\" appears twice"), "{e}");
        let e = parse_strict(r#"[{"x":1},{"y/z":1,"y/z":2}]"#).unwrap_err();
        assert_eq!(e.pointer.as_deref(), Some("/1/y~1z"));
        // Escaped spellings of the same key are the same key.
        let e = parse_strict(r#"{"amount":5,"\u0061mount":5000}"#).unwrap_err();
        assert_eq!(e.pointer.as_deref(), Some("/amount"));
    }

    #[test]
    fn syntax_errors_and_trailing_garbage() {
        assert!(parse_strict("{").unwrap_err().pointer.is_none());
        assert!(parse_strict("{} x").is_err());
        assert!(parse_strict("").is_err());
    }
}
