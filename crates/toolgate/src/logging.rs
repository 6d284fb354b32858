//! Log output help: the fields of each request's span, formatted once and cheaply.
//!
//! Every request runs in a span, `request{request_id server method}`, so that whatever is
//! logged while it is handled says which request it belongs to. tracing-subscriber's fmt layer
//! formats a new span's fields as it opens, through `fmt::Write` into a `String` that grows
//! field by field: about 4,000 instructions per call more than this layer takes
//! (`bench/scripts/instructions.sh`), for text that most requests never print.
//! [`RequestSpanFields`] writes the same text into one allocation first, into the very
//! extension the fmt layer keeps its formatted fields in; the fmt layer then finds it there and
//! formats nothing. What gets printed does not change: a test compares the two, line for
//! line.

use std::fmt::Write as _;

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{ExtensionsMut, LookupSpan};

/// The name of each request's span (its fields must all be strings to be formatted here).
pub const REQUEST_SPAN: &str = "request";

/// Which of tracing-subscriber's field formats to write: the one its fmt layer is set to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldFormat {
    /// `DefaultFields`, without colours: `name="value" name="value"`.
    Text,
    /// `JsonFields`: `{"name":"value",...}`.
    Json,
}

/// Formats the fields of toolgate's request spans before the fmt layer sees them. It must be
/// added to the subscriber below (before) the fmt layer, and only when the fmt layer writes no
/// colours (with colours, field names are painted, which this does not do).
pub struct RequestSpanFields {
    format: FieldFormat,
}

impl RequestSpanFields {
    pub fn new(format: FieldFormat) -> RequestSpanFields {
        RequestSpanFields { format }
    }
}

impl<S> Layer<S> for RequestSpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if meta.name() != REQUEST_SPAN || !meta.target().starts_with("toolgate") {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields {
            format: self.format,
            // Three short fields fit: names, a 16-digit id, a server and a method name.
            out: String::with_capacity(96),
            only_strings: true,
        };
        if self.format == FieldFormat::Json {
            fields.out.push('{');
        }
        attrs.record(&mut fields);
        if !fields.only_strings {
            return; // the fmt layer formats it, as it does every other span
        }
        let mut extensions = span.extensions_mut();
        match self.format {
            FieldFormat::Text => insert_once::<DefaultFields>(&mut extensions, fields.out),
            FieldFormat::Json => {
                fields.out.push('}');
                insert_once::<JsonFields>(&mut extensions, fields.out);
            }
        }
    }
}

/// Stores `text` as the span's fields formatted by `N`, unless something formatted them first
/// (the layers in another order): `insert` panics on an extension that is already there.
fn insert_once<N: 'static>(extensions: &mut ExtensionsMut<'_>, text: String) {
    if extensions.get_mut::<FormattedFields<N>>().is_none() {
        extensions.insert(FormattedFields::<N>::new(text));
    }
}

/// Writes string fields as the fmt layer's visitors would; anything else gives up.
struct Fields {
    format: FieldFormat,
    out: String,
    only_strings: bool,
}

impl Fields {
    /// Plain ASCII text with nothing to escape, in either format: written as it is.
    fn plain(s: &str) -> bool {
        s.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Names the fmt layer's visitors treat specially are left to them.
        let name = field.name();
        if name == "message" || name.starts_with("r#") || name.starts_with("log.") {
            self.only_strings = false;
        }
        if !self.only_strings {
            return;
        }
        match self.format {
            FieldFormat::Text => {
                // `DefaultVisitor` writes a string field as `name=` and the string's `Debug`.
                if !self.out.is_empty() {
                    self.out.push(' ');
                }
                self.out.push_str(name);
                self.out.push('=');
                if Self::plain(value) {
                    self.out.push('"');
                    self.out.push_str(value);
                    self.out.push('"');
                } else {
                    let _ = write!(self.out, "{value:?}");
                }
            }
            FieldFormat::Json => {
                // `JsonVisitor` collects the fields into a map and writes it with serde_json
                // (in key order; the fmt layer parses it back before it prints a line, so the
                // order here does not show).
                if self.out.len() > 1 {
                    self.out.push(',');
                }
                self.push_json_string(name);
                self.out.push(':');
                self.push_json_string(value);
            }
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {
        self.only_strings = false;
    }
}

impl Fields {
    fn push_json_string(&mut self, s: &str) {
        if Self::plain(s) {
            self.out.push('"');
            self.out.push_str(s);
            self.out.push('"');
        } else {
            // serde_json's own escaping, as `JsonFields` would write it.
            self.out
                .push_str(&serde_json::to_string(s).expect("a string serialises"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    /// Everything the fmt layer wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Between the two layers: counts the request spans that reach the fmt layer with their
    /// fields already formatted, so that the comparison below cannot pass with a layer that
    /// does nothing.
    struct Probe(Arc<Mutex<usize>>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Probe {
        fn on_new_span(&self, _: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let span = ctx.span(id).unwrap();
            let ext = span.extensions();
            if ext.get::<FormattedFields<DefaultFields>>().is_some()
                || ext.get::<FormattedFields<JsonFields>>().is_some()
            {
                *self.0.lock().unwrap() += 1;
            }
        }
    }

    /// Logs a line inside request spans of awkward values, with or without the layer, and
    /// returns the log without its timestamps, and how many spans the layer formatted.
    fn log(format: FieldFormat, prefill: bool) -> (String, usize) {
        let out = Captured::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(writer);
        let fmt = match format {
            FieldFormat::Text => fmt.boxed(),
            FieldFormat::Json => fmt.json().boxed(),
        };
        let formatted = Arc::new(Mutex::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(prefill.then(|| RequestSpanFields::new(format)))
            .with(Probe(formatted.clone()))
            .with(fmt);
        tracing::subscriber::with_default(subscriber, || {
            let servers = [
                "rec",
                "with space",
                "quote\"and\\backslash",
                "esc\x1b[31mred",
                "tab\tnew\nline",
                "naïve ünïcode",
                "bidi\u{202e}override",
                "",
            ];
            for server in servers {
                let span = tracing::info_span!(
                    target: "toolgate::downstream::http",
                    "request",
                    request_id = "00ff00ff00ff00ff",
                    server = server,
                    method = "tools/call"
                );
                span.in_scope(|| tracing::warn!(target: "toolgate::x", "inside {server:?}"));
                let early = tracing::info_span!(
                    target: "toolgate::downstream::http",
                    "request",
                    request_id = "0123456789abcdef",
                    server = server
                );
                early.in_scope(|| tracing::warn!(target: "toolgate::x", n = 3, "refused"));
            }
            // Not all strings: left to the fmt layer.
            let other = tracing::info_span!(target: "toolgate::x", "request", n = 5, s = "x");
            other.in_scope(|| tracing::info!(target: "toolgate::x", "other"));
            let theirs = tracing::info_span!(target: "hyper", "request", s = "y");
            theirs.in_scope(|| tracing::info!(target: "toolgate::x", "theirs"));
            // Names the fmt layer's visitor treats specially: left to it.
            for special in [
                tracing::info_span!(target: "toolgate::x", "request", message = "m\x1b"),
                tracing::info_span!(target: "toolgate::x", "request", r#type = "t"),
            ] {
                special.in_scope(|| tracing::info!(target: "toolgate::x", "special"));
            }
            // A field recorded later is appended by the fmt layer to the text formatted here.
            let late = tracing::info_span!(
                target: "toolgate::downstream::http",
                "request",
                request_id = "1111222233334444",
                method = tracing::field::Empty
            );
            late.record("method", "initialize");
            late.in_scope(|| tracing::info!(target: "toolgate::x", "late"));
            // Formatted twice (another layer first): no panic, the first text stays.
            let again = tracing_subscriber::registry()
                .with(RequestSpanFields::new(format))
                .with(RequestSpanFields::new(format));
            tracing::subscriber::with_default(again, || {
                tracing::info_span!(target: "toolgate::x", "request", s = "x").in_scope(|| {})
            });
        });
        let formatted = *formatted.lock().unwrap();
        (out.text(), formatted)
    }

    #[test]
    fn request_spans_print_as_the_fmt_layer_prints_them() {
        for format in [FieldFormat::Text, FieldFormat::Json] {
            let (theirs, none) = log(format, false);
            let (ours, formatted) = log(format, true);
            assert_eq!(ours, theirs, "{format:?}");
            assert_eq!(ours.lines().count(), 21, "{ours}");
            assert_eq!(none, 0);
            // The 16 request spans of toolgate with string fields, the late one, and the
            // `r#type` one (tracing's macros name its field `type`); not the other three.
            assert_eq!(formatted, 18, "{format:?}");
        }
        let (text, _) = log(FieldFormat::Text, true);
        assert!(
            text.contains(
                r#"request{request_id="00ff00ff00ff00ff" server="rec" method="tools/call"}"#
            ),
            "{text}"
        );
        // An agent's escape sequence is never written raw.
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains(r#"server="esc\u{1b}[31mred""#), "{text}");
        assert!(
            text.contains(r#"request{request_id="1111222233334444" method="initialize"}"#),
            "{text}"
        );
        let (json, _) = log(FieldFormat::Json, true);
        for line in json.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect(line);
            if v["fields"]["message"] == "inside \"rec\"" {
                assert_eq!(v["span"]["server"], "rec");
                assert_eq!(v["span"]["method"], "tools/call");
                assert_eq!(v["span"]["request_id"], "00ff00ff00ff00ff");
            }
        }
    }
}
