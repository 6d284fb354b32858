//! Any bytes as a tools/call's arguments, against a policy using every op: the strict
//! arguments parser and evaluation must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use toolgate_policy::{Policy, json::parse_strict};

const POLICY: &str = r#"{"version":"1","default":"allow","hide":["h"],
 "tools":{"t":{"require":[{"conditions":[{"path":"args.a","op":"exists","value":true}]}],
  "deny_if":[
   {"conditions":[{"path":"args.a","op":"gt","value":10},{"path":"args.b.c","op":"lte","value":2.5}]},
   {"conditions":[{"path":"args.s","op":"regex","value":"(?i)x+y*"}]},
   {"conditions":[{"path":"args.l","op":"contains","value":"p"}]},
   {"conditions":[{"path":"args.e","op":"in","value":[1,"x",null,{"k":[]}]}]},
   {"conditions":[{"path":"args.e","op":"not_in","value":[]},{"path":"args.n","op":"neq","value":0}]},
   {"conditions":[{"path":"args.l.0","op":"eq","value":{"z":1}}]}]}}}"#;

fuzz_target!(|data: &[u8]| {
    static P: OnceLock<Policy> = OnceLock::new();
    let policy = P.get_or_init(|| Policy::parse(POLICY).expect("fuzz policy is valid"));
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(args) = parse_strict(text) {
        let _ = policy.evaluate("t", &args);
        let _ = policy.evaluate("h", &args);
        let _ = policy.evaluate("other", &args);
    }
});
