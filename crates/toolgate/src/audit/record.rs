//! One audit record, and the redaction of the arguments that go into it.
//!
//! Secrets are masked in every mode: values under keys that name secrets (token, password,
//! api_key, authorization...) and strings that look like credentials (bearer strings, JWTs,
//! `tg_` tokens, cloud keys), plus any pattern the operator configures.

use std::borrow::Cow;
use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// What the gateway did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded and answered by the upstream.
    Allow,
    /// Denied by a rule, the default, or the lack of a policy.
    Deny,
    /// A hidden tool, answered as unknown.
    Hidden,
    /// A tool the upstream never listed, answered as unknown.
    Unknown,
    /// Over a rate limit.
    Limited,
    /// Refused before any decision: 401, 403, 404, 413, malformed JSON-RPC...
    Refused,
    /// Forwarded, but the upstream failed (JSON-RPC error, unreachable, died).
    UpstreamError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Hidden => "hidden",
            Outcome::Unknown => "unknown",
            Outcome::Limited => "limited",
            Outcome::Refused => "refused",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the trail, from 1.
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339 time the request arrived (UTC, milliseconds).
    pub time: String,
    // Shared, not copied: the request path fills a record on every call, and most of these
    // are values it already holds (the request id, the grant's, the session's, the
    // decision's); the server name is the one copy. Copies were eight allocations a call.
    pub request_id: Arc<str>,
    pub grant_id: Option<Arc<str>>,
    pub grant_label: Option<Arc<str>>,
    pub session: Option<Arc<str>>,
    pub server: Arc<str>,
    pub method: Option<Cow<'static, str>>,
    pub tool: Option<Arc<str>>,
    pub argument_keys: Vec<String>,
    /// Per `[audit] arguments`; absent in `keys` mode.
    pub arguments: Option<RecordedArguments>,
    pub outcome: Option<Outcome>,
    pub rule: Option<String>,
    pub policy_version: Option<u64>,
    /// The HTTP status the agent got.
    pub http_status: u16,
    /// What the upstream answered: `ok`, `error <code>`, `is_error`, `http <status>`, or none.
    pub upstream_status: Option<Cow<'static, str>>,
    /// Time to decide (microseconds).
    pub decision_us: u64,
    /// Time the upstream took (microseconds), when it was called.
    pub upstream_us: Option<u64>,
    /// Why a refused request was refused.
    pub message: Option<String>,
}

impl AuditRecord {
    /// The record as a journal line (without its newline): the same bytes as serde_json
    /// writes for it (a test compares them), written field by field. serde_json's derived
    /// serialisation escapes each of the 19 field names for every record and goes through its
    /// generic writer per piece: about 8,800 instructions per record, 3,400 more than this
    /// (`bench/scripts/instructions.sh`, realistic, when a writer thread wrote the records).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_with_seq(self.seq, out);
    }

    /// The same line numbered `seq`.
    pub fn write_json_with_seq(&self, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        self.write_json_fields(out);
    }

    /// The line after its sequence number, from `,"time":` to the closing brace: the journal
    /// numbers a record as it claims its place in the file.
    pub fn write_json_fields(&self, out: &mut Vec<u8>) {
        let mut json = JsonLine { out };
        json.raw(",\"time\":");
        json.string(&self.time);
        json.raw(",\"request_id\":");
        json.string(&self.request_id);
        json.raw(",\"grant_id\":");
        json.opt_string(self.grant_id.as_deref());
        json.raw(",\"grant_label\":");
        json.opt_string(self.grant_label.as_deref());
        json.raw(",\"session\":");
        json.opt_string(self.session.as_deref());
        json.raw(",\"server\":");
        json.string(&self.server);
        json.raw(",\"method\":");
        json.opt_string(self.method.as_deref());
        json.raw(",\"tool\":");
        json.opt_string(self.tool.as_deref());
        json.raw(",\"argument_keys\":[");
        for (i, key) in self.argument_keys.iter().enumerate() {
            if i > 0 {
                json.raw(",");
            }
            json.string(key);
        }
        json.raw("],\"arguments\":");
        match &self.arguments {
            Some(a) => serde_json::to_writer(&mut *json.out, a).expect("JSON values serialise"),
            None => json.raw("null"),
        }
        json.raw(",\"outcome\":");
        json.opt_string(self.outcome.map(Outcome::as_str));
        json.raw(",\"rule\":");
        json.opt_string(self.rule.as_deref());
        json.raw(",\"policy_version\":");
        json.opt_number(self.policy_version);
        json.raw(",\"http_status\":");
        json.number(self.http_status);
        json.raw(",\"upstream_status\":");
        json.opt_string(self.upstream_status.as_deref());
        json.raw(",\"decision_us\":");
        json.number(self.decision_us);
        json.raw(",\"upstream_us\":");
        json.opt_number(self.upstream_us);
        json.raw(",\"message\":");
        json.opt_string(self.message.as_deref());
        json.raw("}");
    }
}

/// Pieces of a JSON line, as serde_json writes them.
struct JsonLine<'a> {
    out: &'a mut Vec<u8>,
}

impl JsonLine<'_> {
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn number(&mut self, n: impl itoa::Integer) {
        self.raw(itoa::Buffer::new().format(n));
    }

    fn opt_number(&mut self, n: Option<impl itoa::Integer>) {
        match n {
            Some(n) => self.number(n),
            None => self.raw("null"),
        }
    }

    fn string(&mut self, s: &str) {
        if needs_no_escape(s.as_bytes()) {
            self.out.push(b'"');
            self.raw(s);
            self.out.push(b'"');
        } else {
            serde_json::to_writer(&mut *self.out, s).expect("strings serialise");
        }
    }

    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.raw("null"),
        }
    }
}

/// Whether JSON can quote `s` as it is: no control character, quote or backslash.
///
/// Eight bytes at a time, with the word tricks for "a byte below n" and "a zero byte" (exact
/// as a yes or no, whatever the borrows between bytes do): the journal checks every string of
/// every record. A byte-at-a-time loop spent about 1,000 instructions per record on it, this
/// about 250 (callgrind, `SESSIONS=64 bench/scripts/instructions.sh`, realistic).
fn needs_no_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * n as u64) & !word & HIGH != 0;
    let has = |word: u64, b: u8| below(word ^ (ONES * b as u64), 1);
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        if below(word, 0x20) || has(word, b'"') || has(word, b'\\') {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The arguments in a record: a call's own, masked as the record is written, or what a
/// journal holds (masked when it was written).
///
/// A call's record keeps the arguments the policy read (shared, not copied) and masks them
/// while the journal serialises it: a masked copy, built and freed before, cost about 1,700
/// instructions more per call (`bench/scripts/instructions.sh`, realistic).
///
/// Opaque: it is made only by [`Redactor::arguments`] (masked) or read back from a journal, so
/// raw arguments cannot leave through it.
#[derive(Clone)]
pub struct RecordedArguments(Recorded);

#[derive(Clone)]
enum Recorded {
    Call {
        arguments: Arc<Value>,
        redactor: Arc<Redactor>,
        /// Cut long strings (`redacted` mode) or not (`full`).
        cut: bool,
    },
    Written(Value),
}

impl RecordedArguments {
    /// The arguments as they are (or were) written.
    pub fn to_value(&self) -> Value {
        match &self.0 {
            Recorded::Call { .. } => serde_json::to_value(self).expect("JSON values serialise"),
            Recorded::Written(v) => v.clone(),
        }
    }
}

impl Serialize for RecordedArguments {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Recorded::Call {
                arguments,
                redactor,
                cut,
            } => Masked {
                value: arguments,
                redactor,
                cut: *cut,
            }
            .serialize(s),
            Recorded::Written(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RecordedArguments {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| RecordedArguments(Recorded::Written(v)))
    }
}

/// Only ever the masked form: a record may be printed.
impl std::fmt::Debug for RecordedArguments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

impl PartialEq for RecordedArguments {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

/// A value serialised with its secrets masked (see [`Redactor`]).
struct Masked<'a> {
    value: &'a Value,
    redactor: &'a Redactor,
    cut: bool,
}

impl Masked<'_> {
    fn of<'a>(&'a self, value: &'a Value) -> Masked<'a> {
        Masked {
            value,
            redactor: self.redactor,
            cut: self.cut,
        }
    }
}

impl Serialize for Masked<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.redactor;
        match self.value {
            Value::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    // Under a secret name everything is masked, objects and lists included.
                    if r.is_secret_key(k) {
                        map.serialize_entry(k, MASK)?;
                    } else {
                        map.serialize_entry(k, &self.of(v))?;
                    }
                }
                map.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&self.of(v))?;
                }
                seq.end()
            }
            Value::String(text) if r.is_secret_value(text) => s.serialize_str(&r.redact_text(text)),
            Value::String(text) if self.cut && text.chars().count() > CUT_AT => {
                s.serialize_str(&format!(
                    "{}… ({} chars)",
                    text.chars().take(CUT_AT).collect::<String>(),
                    text.chars().count()
                ))
            }
            other => other.serialize(s),
        }
    }
}

/// How much of the arguments an audit record keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArgumentsMode {
    /// Only the argument names.
    Keys,
    /// Values, with secrets masked and long strings cut at 256 characters (the default).
    #[default]
    Redacted,
    /// Values in full, with secrets masked.
    Full,
}

pub const MASK: &str = "[REDACTED]";
const CUT_AT: usize = 256;

/// Names and values that are secrets.
pub struct Redactor {
    secret_keys: regex::Regex,
    /// `SECRET_KEYS` spelled out as the words it matches, for ASCII names (nearly all of
    /// them): the record masks by name for every argument of every call, and the regex cost
    /// about 550 instructions a name, most of it set-up for a search of a few bytes; this
    /// about a third of that (callgrind, realistic). Names with other characters go to the
    /// regex, whose Unicode case folding ("ſecret" with a long s) this does not do.
    secret_key_words: aho_corasick::AhoCorasick,
    secret_values: regex::RegexSet,
    /// The same patterns one by one, to mask matches inside free text.
    secret_value_list: Vec<regex::Regex>,
}

/// Argument names whose values are secrets.
const SECRET_KEYS: &str = r"(?i)(pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth(orization)?|credential|cookie|session[_-]?id|private[_-]?key|access[_-]?key|signature)";
/// The words `SECRET_KEYS` finds in a name, one per spelling (a test checks the two agree).
/// The optional tails (`pass(word)?`, `auth(orization)?`) need no words of their own: the
/// shorter spelling is in every longer one.
const SECRET_KEY_WORDS: &[&str] = &[
    "pass",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "auth",
    "credential",
    "cookie",
    "sessionid",
    "session_id",
    "session-id",
    "privatekey",
    "private_key",
    "private-key",
    "accesskey",
    "access_key",
    "access-key",
    "signature",
];

/// Values that are credentials whatever their key.
const SECRET_VALUES: &[&str] = &[
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}",
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    r"\btga?_[A-Za-z0-9_-]{20,}",
    r"\b(sk|pk|rk)[-_](live|test|proj)?[-_]?[A-Za-z0-9]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bxox[abpr]-[A-Za-z0-9-]{10,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
];

impl Redactor {
    /// The built-in patterns plus the operator's (`[audit] secret_patterns`).
    pub fn new(extra: &[String]) -> Result<Redactor, String> {
        let mut values: Vec<String> = SECRET_VALUES.iter().map(|s| s.to_string()).collect();
        for p in extra {
            regex::Regex::new(p)
                .map_err(|e| format!("audit.secret_patterns: {p:?} is not a valid regex: {e}"))?;
            values.push(p.clone());
        }
        let secret_value_list = values
            .iter()
            .map(|v| regex::Regex::new(v).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Redactor {
            secret_keys: regex::Regex::new(SECRET_KEYS).expect("built-in pattern compiles"),
            secret_key_words: aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(SECRET_KEY_WORDS)
                .expect("built-in words compile"),
            secret_values: regex::RegexSet::new(&values).map_err(|e| e.to_string())?,
            secret_value_list,
        })
    }

    pub fn is_secret_key(&self, key: &str) -> bool {
        if key.is_ascii() {
            self.secret_key_words.is_match(key)
        } else {
            self.secret_keys.is_match(key)
        }
    }

    pub fn is_secret_value(&self, s: &str) -> bool {
        self.secret_values.is_match(s)
    }

    /// Free text with every secret-looking match masked.
    pub fn redact_text(&self, text: &str) -> String {
        if !self.secret_values.is_match(text) {
            return text.to_string();
        }
        let mut out = text.to_string();
        for re in &self.secret_value_list {
            out = re.replace_all(&out, MASK).into_owned();
        }
        out
    }

    /// The arguments as a record keeps them in `mode` (None in `keys` mode), masked as they
    /// are written.
    pub fn arguments(
        self: &Arc<Self>,
        args: &Arc<Value>,
        mode: ArgumentsMode,
    ) -> Option<RecordedArguments> {
        let cut = match mode {
            ArgumentsMode::Keys => return None,
            ArgumentsMode::Redacted => true,
            ArgumentsMode::Full => false,
        };
        Some(RecordedArguments(Recorded::Call {
            arguments: args.clone(),
            redactor: self.clone(),
            cut,
        }))
    }
}

/// The top-level argument names, with secret-looking names kept (a name is not a secret).
pub fn argument_keys(args: &Value) -> Vec<String> {
    match args {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// RFC 3339 UTC with milliseconds, from a Unix time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm): no date crate needed for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z");
    }
    // Digits written in place: every audited call stamps a time, and `format!` with padding
    // cost about 3,000 instructions of the request path (callgrind).
    let mut out = *b"0000-00-00T00:00:00.000Z";
    for (at, width, value) in [
        (0, 4, y),
        (5, 2, m),
        (8, 2, d),
        (11, 2, hh),
        (14, 2, mm),
        (17, 2, ss),
        (20, 3, millis),
    ] {
        let mut v = value;
        for slot in out[at..at + width].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    String::from_utf8(out.to_vec()).expect("ASCII digits and separators")
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (`2026-11-26T07:15:36Z`,
/// `…36.703+01:00`) or a date (`2026-11-26`, midnight UTC); None when it is neither.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = text.trim();
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (date, rest) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (the inverse of `rfc3339`'s).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let Some(rest) = rest else {
        return Some(days * 86_400_000);
    };
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (c, off) = (&rest[..i], &rest[i..]);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut hm = off[1..].split(':');
        let (oh, om) = (num(hm.next()?)?, num(hm.next()?)?);
        (c, sign * (oh * 3600 + om * 60) * 1000)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, f),
        None => (clock, ""),
    };
    let mut c = hms.split(':');
    let (h, mi, sec) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    if c.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let millis = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<3}")[..3])?
    };
    Some(days * 86_400_000 + (h * 3600 + mi * 60 + sec) * 1000 + millis - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_key_words_agree_with_the_pattern() {
        let r = Redactor::new(&[]).unwrap();
        let by_regex = |k: &str| r.secret_keys.is_match(k);
        // Every spelling the pattern spells out (written here again, not taken from
        // SECRET_KEY_WORDS, so that a word missing there shows), and near misses.
        let spellings = [
            "pass",
            "password",
            "passwd",
            "passphrase",
            "secret",
            "token",
            "apikey",
            "api_key",
            "api-key",
            "auth",
            "authorization",
            "credential",
            "cookie",
            "sessionid",
            "session_id",
            "session-id",
            "privatekey",
            "private_key",
            "private-key",
            "accesskey",
            "access_key",
            "access-key",
            "signature",
        ];
        let misses = [
            "pas",
            "secre",
            "tokn",
            "cooki",
            "signatur",
            "api__key",
            "session--id",
            "private key",
            "user",
            "message",
            "",
            "sign",
            "api",
            "key",
            "id",
        ];
        for w in spellings.iter().chain(&misses) {
            for k in [
                w.to_string(),
                w.to_uppercase(),
                format!("x_{w}_y"),
                format!("{}{}", &w[..w.len() / 2], w[w.len() / 2..].to_uppercase()),
            ] {
                assert_eq!(r.is_secret_key(&k), by_regex(&k), "{k:?}");
            }
        }
        assert!(spellings.iter().all(|w| r.is_secret_key(w)));
        // Every ASCII byte in every place of every spelling: one changed byte never makes
        // the two disagree.
        for w in spellings {
            for at in 0..w.len() {
                for b in 0..128u8 {
                    let mut k = w.as_bytes().to_vec();
                    k[at] = b;
                    let k = String::from_utf8(k).unwrap();
                    assert_eq!(r.is_secret_key(&k), by_regex(&k), "{k:?}");
                }
            }
        }
        // Names with other characters are the regex's, case folding included.
        assert!(r.is_secret_key("\u{17f}ecret"));
        assert!(r.is_secret_key("to\u{212a}en"));
        assert!(r.is_secret_key("caf\u{e9}_password"));
        assert!(!r.is_secret_key("caf\u{e9}"));
    }

    #[test]
    fn word_at_a_time_escape_check_agrees_with_the_byte_loop() {
        let plain = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        // Every byte at every place of a string spanning two words and a remainder, between
        // neighbours that make borrows: the largest bytes, and the ones just above a boundary.
        for filler in [b'a', 0xff, 0x20, 0x21, b'"' + 1, b'\\' + 1, 0x80] {
            for len in [1, 7, 8, 9, 16, 19] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut s = vec![filler; len];
                        s[at] = b;
                        assert_eq!(needs_no_escape(&s), plain(&s), "{s:?}");
                    }
                }
            }
        }
        assert!(needs_no_escape(b""));
        assert!(needs_no_escape(
            "2026-11-27T12:00:00.000Z caf\u{e9}".as_bytes()
        ));
        let mut line = JsonLine {
            out: &mut Vec::new(),
        };
        line.string("tab\there \"quoted\" back\\slash, and long enough for words");
        let written = String::from_utf8(line.out.clone()).unwrap();
        assert_eq!(
            serde_json::from_str::<String>(&written).unwrap(),
            "tab\there \"quoted\" back\\slash, and long enough for words"
        );
    }

    #[test]
    fn secrets_are_masked_in_every_mode() {
        let r = Arc::new(Redactor::new(&["INTERNAL-[0-9]{4}".into()]).unwrap());
        let args = Arc::new(json!({
            "query": "select 1",
            "api_key": "plain-looking",
            "nested": {"password": "hunter2", "note": "Bearer abcdefghijklmnop"},
            "list": ["ok", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"],
            "ticket": "INTERNAL-1234",
            "token_count": 5
        }));
        for mode in [ArgumentsMode::Redacted, ArgumentsMode::Full] {
            let recorded = r.arguments(&args, mode).unwrap();
            let out = serde_json::to_string(&recorded).unwrap();
            // Printed for debugging, a record shows what it writes, never the secrets.
            assert_eq!(format!("{recorded:?}"), out);
            // Read back, it is the same.
            let back: RecordedArguments = serde_json::from_str(&out).unwrap();
            assert_eq!(back, recorded);
            assert_eq!(back.to_value(), recorded.to_value());
            for secret in [
                "plain-looking",
                "hunter2",
                "abcdefghijklmnop",
                "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
                "INTERNAL-1234",
            ] {
                assert!(!out.contains(secret), "{mode:?} leaked {secret}: {out}");
            }
            assert!(out.contains("select 1"));
        }
        assert_eq!(r.arguments(&args, ArgumentsMode::Keys), None);
        assert!(Redactor::new(&["(".into()]).is_err());
    }

    #[test]
    fn masking_writes_exactly_this() {
        let r = Arc::new(Redactor::new(&[]).unwrap());
        let args = Arc::new(json!({
            "token_count": 5,
            "auth": {"user": "u", "n": [1, 2]},
            "items": [{"password": "p", "name": "n"}, "Bearer abcdefghijklmnop", 3, null],
            "note": "before Bearer abcdefghijklmnop after",
            "ok": true,
        }));
        let want = r#"{"auth":"[REDACTED]","items":[{"name":"n","password":"[REDACTED]"},"[REDACTED]",3,null],"note":"before [REDACTED] after","ok":true,"token_count":"[REDACTED]"}"#;
        for mode in [ArgumentsMode::Redacted, ArgumentsMode::Full] {
            let out = serde_json::to_string(&r.arguments(&args, mode).unwrap()).unwrap();
            assert_eq!(out, want, "{mode:?}");
        }
        let long = Arc::new(json!({"s": "é".repeat(300)}));
        let cut =
            serde_json::to_string(&r.arguments(&long, ArgumentsMode::Redacted).unwrap()).unwrap();
        assert_eq!(
            cut,
            format!(r#"{{"s":"{}… (300 chars)"}}"#, "é".repeat(256))
        );
    }

    #[test]
    fn redacted_cuts_long_strings_full_does_not() {
        let r = Arc::new(Redactor::new(&[]).unwrap());
        let long = "x".repeat(1000);
        let args = Arc::new(json!({"body": long, "list": [long]}));
        let cut = r
            .arguments(&args, ArgumentsMode::Redacted)
            .unwrap()
            .to_value();
        assert_eq!(cut["list"][0], cut["body"]);
        assert!(cut["body"].as_str().unwrap().len() < 300);
        assert_eq!(
            r.arguments(&args, ArgumentsMode::Full).unwrap().to_value()["body"]
                .as_str()
                .unwrap()
                .len(),
            1000
        );
    }

    #[test]
    fn parses_what_it_prints_and_common_forms() {
        for ms in [0, 1_795_674_840_123, 951_782_400_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2026-11-26T06:34:00Z"),
            Some(1_795_674_840_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-26T07:34:00+01:00"),
            Some(1_795_674_840_000)
        );
        assert_eq!(parse_rfc3339("2026-11-26"), Some(1_795_651_200_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-26T25:00:00Z",
            "2026-11-26T06:34Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn journal_lines_are_what_serde_json_writes() {
        let r = Arc::new(Redactor::new(&[]).unwrap());
        let empty = AuditRecord::default();
        let full = AuditRecord {
            seq: u64::MAX,
            time: rfc3339(1_795_674_840_123),
            request_id: "00ff00ff00ff00ff".into(),
            grant_id: Some("g-1".into()),
            grant_label: Some("ci \"bot\" \\ é ✓ \u{1b}[31m \u{7f} \u{2028}".into()),
            session: Some("s\n\t\r\u{0}".into()),
            server: "rec".into(),
            method: Some("tools/call".into()),
            tool: Some("naïve/tool".into()),
            argument_keys: vec!["a".into(), "quote\"".into(), "".into()],
            arguments: r.arguments(
                &Arc::new(
                    json!({"a": 1.5, "quote\"": [null, true, "x\u{1}"], "": {}, "password": "p"}),
                ),
                ArgumentsMode::Redacted,
            ),
            outcome: Some(Outcome::UpstreamError),
            rule: Some("/tools/echo".into()),
            policy_version: Some(0),
            http_status: 200,
            upstream_status: Some("error -32000".into()),
            decision_us: 12,
            upstream_us: Some(u64::MAX),
            message: Some(String::new()),
        };
        let written = AuditRecord {
            arguments: Some(RecordedArguments(Recorded::Written(json!([1, "two"])))),
            outcome: Some(Outcome::Deny),
            ..AuditRecord::default()
        };
        let mut records = vec![empty, full, written];
        // Every outcome's name, and the other modes' arguments.
        for (outcome, mode) in [
            (Outcome::Allow, ArgumentsMode::Full),
            (Outcome::Hidden, ArgumentsMode::Keys),
            (Outcome::Unknown, ArgumentsMode::Redacted),
            (Outcome::Limited, ArgumentsMode::Full),
            (Outcome::Refused, ArgumentsMode::Redacted),
        ] {
            records.push(AuditRecord {
                outcome: Some(outcome),
                arguments: r.arguments(&Arc::new(json!({"long": "é".repeat(300)})), mode),
                ..AuditRecord::default()
            });
        }
        for record in records {
            let mut line = Vec::new();
            record.write_json(&mut line);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_674_840_123), "2026-11-26T06:34:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
