//! The `?before=` cursor of the sync logs: anything decodes to a cursor or to nothing, and a decoded
//! cursor encodes back to a cursor that decodes to itself.
#![no_main]
use crmsync_store::LogCursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(cursor) = LogCursor::decode(&text) {
        assert_eq!(LogCursor::decode(&cursor.encode()), Some(cursor));
    }
});
