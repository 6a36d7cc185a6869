//! Property tests of the entry decoder: whatever bytes are in the store
//! (random, a valid entry of another type, a valid entry with edits), a
//! lookup decodes them or reports them malformed, and never panics; valid
//! entries of every codec read back equal.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 by default;
//! `scripts/fuzz-long.sh` runs a million).

mod fuzzing;

use cached_redis::__private::fuzz;
use fuzzing::{
    config, decode_as_everything, entry, mutate, mutation, read_back, Doc, Kind, Mutation,
    MAX_VALUE_BYTES,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_entries_read_back_equal((doc, codec, bytes) in entry()) {
        let expected = read_back(&doc, codec);
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
        (doc, codec, bytes) in entry(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut mutated = bytes.clone();
        mutate(&mut mutated, &mutations);
        let got = decode_as_everything(&mutated, MAX_VALUE_BYTES);
        if mutated == bytes {
            // Edits that cancel out leave a valid entry.
            prop_assert_eq!(got, read_back(&doc, codec));
        }
    }

    #[test]
    fn entries_over_the_limit_are_refused((doc, codec, bytes) in entry(), cut in 1usize..64) {
        // The same entry read by a process with a smaller max_value_bytes
        // than its payload: refused, whatever the codec and compression.
        let payload = fuzz::encode_entry(&doc, codec, fuzz::Compression::Zlib, usize::MAX, MAX_VALUE_BYTES)
            .unwrap()
            .len()
            - fuzz::HEADER_LEN;
        let max = payload.saturating_sub(cut);
        prop_assert!(fuzz::decode_entry::<Doc>(&bytes, max).is_err());
    }
}

/// Found by the long run: a JSON entry of a `Doc` whose `nested` is
/// `Some(None)`, "edited" by writing a byte over itself, reads back with
/// `nested: None` (JSON has one `null` for both), as the unedited entry
/// does; the property compared it with the original `Doc`.
#[test]
fn an_edit_that_changes_nothing_reads_back_as_the_codec_does() {
    let doc = Doc {
        id: 1,
        neg: -1,
        flag: false,
        name: "n".into(),
        ch: ' ',
        tags: vec![],
        score: 0.5,
        opt: None,
        nested: Some(None),
        kinds: vec![Kind::Unit],
        map: Default::default(),
        big: 0,
        bigi: 0,
        raw: vec![],
        unit: (),
    };
    let bytes = fuzz::encode_entry(
        &doc,
        fuzz::Codec::Json,
        fuzz::Compression::Zlib,
        usize::MAX,
        MAX_VALUE_BYTES,
    )
    .unwrap();
    let mut mutated = bytes.clone();
    use proptest::strategy::ValueTree;
    let at = any::<prop::sample::Index>()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .unwrap()
        .current();
    let same = bytes[at.index(bytes.len())];
    mutate(&mut mutated, &[Mutation::Set(at, same)]);
    assert_eq!(mutated, bytes);
    let got = decode_as_everything(&mutated, MAX_VALUE_BYTES);
    assert_eq!(got, read_back(&doc, fuzz::Codec::Json));
    assert_eq!(got.unwrap().nested, None, "JSON reads Some(None) as None");
}
