//! JSON-RPC 2.0 envelopes: read only what the gateway must see, forward the original bytes.
//!
//! Parsing is borrowed (`RawValue` slices into the input), so a relayed message is never
//! re-serialized: payloads stay byte-faithful (SPEC 2.1). The envelope structs are derived,
//! and serde refuses a struct field that appears twice: a message with two `"method"` or two
//! `"name"` keys is refused instead of being read one way here and another way upstream.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// A request delivered upstream and not answered in time (the MCP SDKs' code for a timeout).
pub const REQUEST_TIMEOUT: i64 = -32001;
/// The 2026-07-28 transport's code for `Mcp-Method`/`Mcp-Name` headers that disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// The top level of one JSON-RPC message, borrowed from its bytes.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub jsonrpc: Option<Cow<'a, str>>,
    /// `"id": null` is kept as `Some("null")`, not read as absent: a request with a null id
    /// must be refused, not mistaken for a notification.
    #[serde(borrow, default, deserialize_with = "keep_null")]
    pub id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub params: Option<&'a RawValue>,
    #[serde(borrow)]
    pub result: Option<&'a RawValue>,
    #[serde(borrow)]
    pub error: Option<&'a RawValue>,
}

fn keep_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// What a message is, by the JSON-RPC rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// Why a message was refused before anything else looked at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i64,
    pub message: String,
}

impl Refusal {
    fn new(code: i64, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl<'a> Envelope<'a> {
    /// Parses one message. Batches (arrays) are refused: see `is_batch`.
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, Refusal> {
        let env: Envelope<'a> = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                // Valid JSON of the wrong shape (duplicate key, wrong type, not an object).
                Refusal::new(INVALID_REQUEST, format!("Invalid Request: {e}"))
            } else {
                Refusal::new(PARSE_ERROR, format!("Parse error: {e}"))
            }
        })?;
        Ok(env)
    }

    /// Classifies the message, refusing shapes that are none of the three kinds.
    pub fn kind(&self) -> Result<Kind, Refusal> {
        if self.jsonrpc.as_deref() != Some("2.0") {
            return Err(Refusal::new(
                INVALID_REQUEST,
                "Invalid Request: jsonrpc must be \"2.0\"",
            ));
        }
        if let Some(id) = self.id {
            let text = id.get();
            let first = text.as_bytes().first().copied().unwrap_or(b'n');
            // MCP ids are strings or integers; null, objects and arrays are not ids.
            if !(first == b'"' || first == b'-' || first.is_ascii_digit()) {
                return Err(Refusal::new(
                    INVALID_REQUEST,
                    "Invalid Request: id must be a string or a number",
                ));
            }
        }
        match (
            &self.method,
            self.id,
            self.result.is_some() || self.error.is_some(),
        ) {
            (Some(_), Some(_), false) => Ok(Kind::Request),
            // Only `notifications/...` are notifications in MCP; anything else without an id
            // (a `tools/call` with no id) would skip the decision step, so it is refused.
            (Some(m), None, false) if m.starts_with("notifications/") => Ok(Kind::Notification),
            (None, Some(_), true) if !(self.result.is_some() && self.error.is_some()) => {
                Ok(Kind::Response)
            }
            _ => Err(Refusal::new(
                INVALID_REQUEST,
                "Invalid Request: not a request, notification or response",
            )),
        }
    }

    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }
}

/// Whether a message is a JSON-RPC response (to find the answer in a stream of messages).
pub fn is_response(message: &[u8]) -> bool {
    Envelope::parse(message).is_ok_and(|e| e.kind() == Ok(Kind::Response))
}

/// Whether a message is a response carrying a result (not an error).
pub fn is_result(message: &[u8]) -> bool {
    Envelope::parse(message).is_ok_and(|e| e.result.is_some())
}

/// What an upstream's answer to a call says, for the counters and the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSummary {
    /// A result; `is_error` is the tool's own `isError` flag.
    Result { is_error: bool },
    /// A result that asks the client for more input before the call can complete
    /// (`resultType: "input_required"`, 2026-07-28): the call has not happened yet.
    InputRequired,
    /// A JSON-RPC error, with its code when it has an integer one.
    Error { code: Option<i64> },
    /// A JSON object with neither (not an answer).
    Neither,
}

/// Reads an answer once, keeping only what `AnswerSummary` needs: the counters (was the call
/// carried out?) and the audit record (how did it end?) both ask, on every call. None when
/// the body is not a JSON object.
pub fn summarize(body: &[u8]) -> Option<AnswerSummary> {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(default)]
        result: Option<ResultShape>,
        // Any value: an error that is not a well-formed object ("error": "boom") is still an
        // error, and the call it answers did not happen.
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    // serde would also read a struct from an array ([result, error]); an answer is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let shape: Shape = serde_json::from_slice(body).ok()?;
    Some(match (shape.result, shape.error) {
        (_, Some(e)) => AnswerSummary::Error {
            code: e.get("code").and_then(serde_json::Value::as_i64),
        },
        (Some(r), None) if r.input_required => AnswerSummary::InputRequired,
        (Some(r), None) => AnswerSummary::Result {
            is_error: r.is_error,
        },
        (None, None) => AnswerSummary::Neither,
    })
}

/// A result read for its `isError` flag alone; a result of any other shape (it should be an
/// object, but an upstream may send anything) reads as `is_error: false`.
struct ResultShape {
    is_error: bool,
    input_required: bool,
}

impl<'de> serde::Deserialize<'de> for ResultShape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ResultShape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON-RPC result")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ResultShape, A::Error> {
                let mut is_error = false;
                let mut input_required = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "isError" {
                        is_error = map.next_value::<serde_json::Value>()?.as_bool() == Some(true);
                    } else if key == "resultType" {
                        input_required = map.next_value::<serde_json::Value>()?.as_str()
                            == Some("input_required");
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(ResultShape {
                    is_error,
                    input_required,
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ResultShape, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ResultShape {
                    is_error: false,
                    input_required: false,
                })
            }
            fn visit_unit<E>(self) -> Result<ResultShape, E> {
                Ok(ResultShape {
                    is_error: false,
                    input_required: false,
                })
            }
            fn visit_bool<E>(self, _: bool) -> Result<ResultShape, E> {
                Ok(ResultShape {
                    is_error: false,
                    input_required: false,
                })
            }
            fn visit_i64<E>(self, _: i64) -> Result<ResultShape, E> {
                Ok(ResultShape {
                    is_error: false,
                    input_required: false,
                })
            }
            fn visit_u64<E>(self, _: u64) -> Result<ResultShape, E> {
                Ok(ResultShape {
                    is_error: false,
                    input_required: false,
                })
            }
            fn visit_f64<E>(self, _: f64) -> Result<ResultShape, E> {
                Ok(ResultShape {
                    is_error: false,
                    input_required: false,
                })
            }
            fn visit_str<E>(self, _: &str) -> Result<ResultShape, E> {
                Ok(ResultShape {
                    is_error: false,
                    input_required: false,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// True when the body's first non-blank byte opens an array.
pub fn is_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// The byte range of a borrowed slice inside the buffer it was parsed from.
///
/// serde_json hands out `RawValue`s that point into the input, so the position of the id is
/// known without searching: the id can be replaced in place and everything else stays as sent.
pub fn span_in(buffer: &[u8], part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(buffer.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= buffer.len()).then_some(start..end)
}

/// `message` with the bytes at `range` replaced by `with`.
pub fn splice(message: &[u8], range: std::ops::Range<usize>, with: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() - range.len() + with.len());
    out.extend_from_slice(&message[..range.start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&message[range.end..]);
    Bytes::from(out)
}

/// A JSON-RPC error response. `id` is raw JSON (`null` when the request's id is unknown).
pub fn error_response(id: Option<&str>, code: i64, message: &str) -> Bytes {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "error": { "code": code, "message": message },
    });
    // Splice the id in raw so that it is echoed exactly as the client sent it.
    let mut text = body.to_string();
    let id = id.unwrap_or("null");
    text.insert_str(1, &format!("\"id\":{id},"));
    Bytes::from(text)
}

/// A JSON-RPC error response to a message whose id was never read, without an `id` member:
/// what MCP's 2026-07-28 schema allows there (JSON-RPC 2.0 writes `"id": null`, which no MCP
/// schema accepts).
pub fn error_response_without_id(code: i64, message: &str) -> Bytes {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "error": { "code": code, "message": message },
    });
    Bytes::from(body.to_string())
}

/// `params` of `tools/call`, `prompts/get` (`name`) and `resources/read` (`uri`): what
/// `Mcp-Name` must agree with, and what the policy engine will decide on.
#[derive(Debug, Deserialize)]
pub struct NamedParams<'a> {
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub uri: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub arguments: Option<&'a RawValue>,
    #[serde(borrow, rename = "_meta")]
    pub meta: Option<&'a RawValue>,
}

/// `params` of a `tools/call` as the decision reads them: like [`NamedParams`], with the
/// arguments read strictly (duplicate keys refused) in the same pass instead of kept as raw
/// text to be parsed again. `uri` and `_meta` are declared, and not read, so that a second
/// one (or a `uri` that is not a string) is refused as `NamedParams` refuses it.
#[derive(Debug, Deserialize)]
pub struct CallParams<'a> {
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    pub arguments: Option<toolgate_policy::json::Strict>,
    #[serde(borrow)]
    pub uri: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "_meta")]
    pub meta: Option<&'a RawValue>,
}

/// `_meta` of a request's params: the progress token the gateway routes notifications by.
#[derive(Debug, Deserialize)]
pub struct Meta<'a> {
    #[serde(borrow, rename = "progressToken")]
    pub progress_token: Option<&'a RawValue>,
}

/// The params of a `notifications/progress` or `notifications/cancelled`.
#[derive(Debug, Deserialize)]
pub struct RoutingParams<'a> {
    #[serde(borrow, rename = "progressToken")]
    pub progress_token: Option<&'a RawValue>,
    #[serde(borrow, rename = "requestId")]
    pub request_id: Option<&'a RawValue>,
}

/// The progress token of a request, if it set one (raw JSON text).
pub fn progress_token(params: Option<&RawValue>) -> Option<Box<str>> {
    let params = params?;
    // Cheap pre-check: most requests carry no token, and this spares them a second parse.
    if !params.get().contains("progressToken") {
        return None;
    }
    #[derive(Deserialize)]
    struct WithMeta<'a> {
        #[serde(borrow, rename = "_meta")]
        meta: Option<&'a RawValue>,
    }
    let with: WithMeta = serde_json::from_str(params.get()).ok()?;
    let meta: Meta = serde_json::from_str(with.meta?.get()).ok()?;
    meta.progress_token.map(|t| t.get().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_answers() {
        let sum = |s: &str| summarize(s.as_bytes());
        let ok =
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"isError"}]}}"#;
        assert_eq!(sum(ok), Some(AnswerSummary::Result { is_error: false }));
        let tool_error = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#;
        assert_eq!(
            sum(tool_error),
            Some(AnswerSummary::Result { is_error: true })
        );
        let nested = r#"{"id":1,"result":{"meta":{"isError":true},"isError":false}}"#;
        assert_eq!(sum(nested), Some(AnswerSummary::Result { is_error: false }));
        let odd_flag = r#"{"id":1,"result":{"isError":"yes"}}"#;
        assert_eq!(
            sum(odd_flag),
            Some(AnswerSummary::Result { is_error: false })
        );
        assert_eq!(sum(r#"{"result":null}"#), Some(AnswerSummary::Neither));
        for odd in [
            r#"{"result":[1,{"isError":true}]}"#,
            r#"{"result":"x"}"#,
            r#"{"result":7}"#,
        ] {
            assert_eq!(
                sum(odd),
                Some(AnswerSummary::Result { is_error: false }),
                "{odd}"
            );
        }
        let timeout = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"timed out"}}"#;
        assert_eq!(
            sum(timeout),
            Some(AnswerSummary::Error { code: Some(-32001) })
        );
        let no_code = r#"{"id":1,"error":{"code":"E1","message":"x"}}"#;
        assert_eq!(sum(no_code), Some(AnswerSummary::Error { code: None }));
        for odd_error in [
            r#"{"id":1,"error":"boom"}"#,
            r#"{"id":1,"error":42}"#,
            r#"{"id":1,"error":[1]}"#,
        ] {
            assert_eq!(
                sum(odd_error),
                Some(AnswerSummary::Error { code: None }),
                "{odd_error}"
            );
        }
        let both = r#"{"id":1,"result":{},"error":{"code":-32603}}"#;
        assert_eq!(sum(both), Some(AnswerSummary::Error { code: Some(-32603) }));
        assert_eq!(
            sum(r#"{"jsonrpc":"2.0","method":"ping"}"#),
            Some(AnswerSummary::Neither)
        );
        for bad in [
            "",
            "nope",
            "[1]",
            "5",
            r#"{"result":{}"#,
            r#"{"error":{"code":1},"error":{"code":2}}"#,
        ] {
            assert_eq!(sum(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn classifies_messages() {
        let kind = |s: &str| Envelope::parse(s.as_bytes()).and_then(|e| e.kind());
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Kind::Request)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Kind::Notification)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Kind::Response)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"x"}}"#),
            Ok(Kind::Response)
        );
        for bad in [
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"x"}}"#,
        ] {
            assert_eq!(kind(bad).unwrap_err().code, INVALID_REQUEST, "{bad}");
        }
    }

    #[test]
    fn malformed_json_is_a_parse_error_and_wrong_shapes_are_invalid() {
        assert_eq!(
            Envelope::parse(b"{\"jsonrpc\":").unwrap_err().code,
            PARSE_ERROR
        );
        assert_eq!(Envelope::parse(b"").unwrap_err().code, PARSE_ERROR);
        assert_eq!(
            Envelope::parse(b"\"str\"").unwrap_err().code,
            INVALID_REQUEST
        );
        assert_eq!(
            Envelope::parse(br#"{"method":5}"#).unwrap_err().code,
            INVALID_REQUEST
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e =
            Envelope::parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#)
                .unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        assert!(e.message.contains("duplicate"), "{}", e.message);
        let p: Result<NamedParams, _> = serde_json::from_str(r#"{"name":"a","name":"b"}"#);
        assert!(p.is_err());
    }

    #[test]
    fn escaped_method_names_are_decoded() {
        let env = Envelope::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#).unwrap();
        assert_eq!(env.method(), "tools/call");
    }

    #[test]
    fn batches_are_detected() {
        assert!(is_batch(b"  \n[{}]"));
        assert!(!is_batch(b"{}"));
    }

    #[test]
    fn id_splice_keeps_everything_else() {
        let msg = br#"{"jsonrpc":"2.0", "id" : "abc","method":"x","params":{"$defs":{}}}"#;
        let env = Envelope::parse(msg).unwrap();
        let range = span_in(msg, env.id.unwrap().get()).unwrap();
        let out = splice(msg, range, b"17");
        assert_eq!(
            &out[..],
            br#"{"jsonrpc":"2.0", "id" : 17,"method":"x","params":{"$defs":{}}}"#
        );
    }

    #[test]
    fn error_responses_echo_the_id_exactly() {
        let b = error_response(Some("\"x\""), PARSE_ERROR, "bad");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["code"], PARSE_ERROR);
        let b = error_response(None, PARSE_ERROR, "bad");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v["id"].is_null());
    }

    #[test]
    fn progress_tokens() {
        let p =
            RawValue::from_string(r#"{"_meta":{"progressToken":"t1"},"name":"x"}"#.into()).unwrap();
        assert_eq!(progress_token(Some(&p)).as_deref(), Some("\"t1\""));
        let p = RawValue::from_string(r#"{"name":"progressToken"}"#.into()).unwrap();
        assert_eq!(progress_token(Some(&p)), None);
    }
}
