//! Property tests of the entry decoder: whatever bytes are in the store
//! (random, a valid entry of another type, a valid entry with edits), a
//! lookup decodes them or reports them malformed, and never panics; valid
//! entries of every codec read back equal.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 by default;
//! `scripts/fuzz-long.sh` runs a million).

mod fuzzing;

use cached_redis::__private::fuzz;
use fuzzing::{config, decode_as_everything, entry, mutate, mutation, Doc, MAX_VALUE_BYTES};
use proptest::prelude::*;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_entries_read_back_equal((doc, codec, bytes) in entry()) {
        let expected = if codec == fuzz::Codec::Json {
            // JSON spells `Some(None)` and `None` alike: the JSON codec
            // gives back what serde_json does.
            serde_json::to_vec(&doc)
                .and_then(|json| serde_json::from_slice::<Doc>(&json))
                .map_err(|e| e.to_string())
        } else {
            Ok(doc)
        };
        prop_assert!(expected.is_ok(), "serde_json reads its own output");
        prop_assert_eq!(fuzz::decode_entry::<Doc>(&bytes, MAX_VALUE_BYTES), expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        // Random bytes almost never pass the header check...
        let _ = decode_as_everything(&bytes, MAX_VALUE_BYTES);
    }

    #[test]
    fn a_valid_header_before_arbitrary_bytes_never_panics(
        (_doc, _codec, entry) in entry(),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        // ...so these get past it to the payload's reader and inflater.
        let mut bytes = entry[..fuzz::HEADER_LEN].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = decode_as_everything(&bytes, MAX_VALUE_BYTES);
    }

    #[test]
    fn entries_of_another_type_never_panic((_doc, _codec, bytes) in entry()) {
        // `decode_as_everything` reads a Doc's entry as ten other types.
        let _ = decode_as_everything(&bytes, MAX_VALUE_BYTES);
    }

    #[test]
    fn mutated_entries_decode_or_fail_cleanly(
        (doc, _codec, bytes) in entry(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut mutated = bytes.clone();
        mutate(&mut mutated, &mutations);
        let got = decode_as_everything(&mutated, MAX_VALUE_BYTES);
        if mutated == bytes {
            // Edits that cancel out leave a valid entry.
            prop_assert_eq!(got, Ok(doc));
        }
    }

    #[test]
    fn entries_over_the_limit_are_refused((doc, codec, bytes) in entry(), cut in 1usize..64) {
        // The same entry read by a process with a smaller max_value_bytes
        // than its payload: refused, whatever the codec and compression.
        let payload = fuzz::encode_entry(&doc, codec, usize::MAX, MAX_VALUE_BYTES).unwrap().len()
            - fuzz::HEADER_LEN;
        let max = payload.saturating_sub(cut);
        prop_assert!(fuzz::decode_entry::<Doc>(&bytes, max).is_err());
    }
}
