//! Fuzz target: arbitrary bytes parsed as a `TaskSpec` must serialize back to JSON that
//! parses to the same value and serializes to the same bytes (a lossless round trip).
#![no_main]

use fabric_types::wire::TaskSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<TaskSpec>(data) else {
        return;
    };
    let json = serde_json::to_vec(&spec).expect("a parsed TaskSpec always serializes");
    let again: TaskSpec = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "the re-serialized TaskSpec does not parse: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(spec, again, "the round trip changed the TaskSpec");
    let json_again = serde_json::to_vec(&again).expect("a parsed TaskSpec always serializes");
    assert_eq!(json, json_again, "serialization is not stable");
});
