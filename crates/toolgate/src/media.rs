//! Media types in `Content-Type` and `Accept` headers, compared without allocating: these
//! headers are read on every call, in both directions.

/// Whether a `Content-Type` value is `essence` (given in lower case), parameters aside:
/// `Application/JSON; charset=utf-8` is `application/json`.
pub fn is(value: &str, essence: &str) -> bool {
    value
        .get(..essence.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(essence))
}

/// Whether an `Accept` value names `media` (given in lower case) anywhere in it.
pub fn names(value: &str, media: &str) -> bool {
    let media = media.as_bytes();
    debug_assert!(!media.is_empty() && !media.iter().any(u8::is_ascii_uppercase));
    // Windows are compared in full only where the first byte matches: comparing every window
    // cost about 1,000 instructions a call for a two-type `Accept`.
    let first = media[0];
    value
        .as_bytes()
        .windows(media.len())
        .any(|w| w[0].to_ascii_lowercase() == first && w.eq_ignore_ascii_case(media))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_compare_without_case_and_parameters() {
        assert!(is("application/json", "application/json"));
        assert!(is("Application/JSON; charset=utf-8", "application/json"));
        assert!(is("TEXT/EVENT-STREAM", "text/event-stream"));
        assert!(!is("application/jso", "application/json"));
        assert!(!is("text/plain", "application/json"));
        assert!(!is("", "application/json"));
        // A multi-byte character where the essence would end is not a panic.
        assert!(!is("application/jsoé", "application/json"));
    }

    #[test]
    fn accept_lists_are_searched_without_case() {
        assert!(names(
            "application/json, text/event-stream",
            "text/event-stream"
        ));
        assert!(names(
            "Application/Json, Text/Event-Stream;q=0.9",
            "text/event-stream"
        ));
        assert!(names("*/*", "*/*"));
        assert!(!names("application/json", "text/event-stream"));
        assert!(!names("", "*/*"));
    }
}
