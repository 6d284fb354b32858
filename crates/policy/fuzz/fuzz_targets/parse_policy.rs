//! Any bytes as a policy document: parsing and validation must never panic, and a document
//! that validates must compile and evaluate without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::parse(text) {
        let _ = policy.warnings();
        let _ = policy.evaluate("tool", &serde_json::json!({"a": 1}));
    }
});
