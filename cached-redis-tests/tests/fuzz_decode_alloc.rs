//! The decoder's memory under hostile entries, measured by a counting
//! global allocator (this test binary's own): whatever the entry claims
//! (a huge length, a zlib or LZ4 bomb, a length that lies), decoding allocates at
//! most `max_value_bytes` of working buffers plus a small constant.
//!
//! Decoded into `IgnoredAny` (a type that keeps nothing), the peak is the
//! decoder's own: at most `max_value_bytes + SLACK`. Decoded into a `String`
//! or `Vec<u8>`, the value itself adds at most the payload it is read from
//! (at most `max_value_bytes` more; with JSON, serde_json's scratch copy of
//! an escaped string may add as much again).
//!
//! One case is bounded only by a larger multiple: a JSON entry whose value
//! does not match the type (a corrupt or hostile writer). serde_json's error
//! then quotes the mistyped string, escaped as `Debug` does (DEL: one byte
//! in, six out), and builds that message before the decoder sees it. The
//! decoder keeps only its first bytes, but the transient peak reaches about
//! 13 × `max_value_bytes` ([`JSON_ERROR_FACTOR`]). Signed entries
//! (`signing_key`) are never decoded unless written by the service.
//!
//! `PROPTEST_CASES` sets the number of cases per property (64 by default
//! here; `scripts/fuzz-long.sh` runs a million).

mod fuzzing;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cached_redis::__private::fuzz::{self, Codec, Compression};
use fuzzing::{codec, compression, config, mutate, mutation};
use proptest::prelude::*;
use serde::de::IgnoredAny;

/// Counts the bytes live on the current thread while tracking is on.
struct Tracking;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: allocations during thread teardown are not counted.
    if ON.try_with(Cell::get).unwrap_or(false) {
        let live = LIVE.with(Cell::get) + delta;
        LIVE.with(|c| c.set(live));
        PEAK.with(|c| c.set(c.get().max(live)));
    }
}

// SAFETY: every call is forwarded to `System` unchanged; only counters of
// const-initialized thread-locals (no destructor, no allocation) change.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // The old and the new block may both be live for a moment.
            note(new_size as isize);
            note(-(layout.size() as isize));
        }
        p
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// The largest entry payload the decoding process accepts.
const MAX: usize = 64 << 10;
/// Besides the buffers bounded by `MAX`: error messages, the inflater's
/// state on first use, small bookkeeping.
const SLACK: usize = 64 << 10;
/// The peak of a failed typed JSON decode, in multiples of `MAX` (see the
/// module docs): the payload, serde_json's message quoting a mistyped
/// string at up to six bytes per payload byte, and that message's growth
/// by doubling while it is formatted.
const JSON_ERROR_FACTOR: usize = 14;

/// The peak allowed for decoding `entry` into a `String` or `Vec<u8>`
/// (`decoded`: whether it decoded).
fn typed_bound(entry: &[u8], decoded: bool) -> usize {
    let json = entry.get(1) == Some(&Codec::Json.id());
    match (json, decoded) {
        (false, _) => 2 * MAX + SLACK,
        (true, true) => 3 * MAX + SLACK,
        (true, false) => JSON_ERROR_FACTOR * MAX + SLACK,
    }
}

/// Runs `f` and returns its result with the peak of bytes allocated on
/// this thread meanwhile (the result's own allocations included).
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|c| c.set(0));
    PEAK.with(|c| c.set(0));
    ON.with(|c| c.set(true));
    let r = f();
    ON.with(|c| c.set(false));
    (r, PEAK.with(Cell::get).max(0) as usize)
}

/// An entry of a highly compressible string of `len` bytes, written by a
/// process with a larger limit than the reader's.
fn big_entry(
    len: usize,
    fill: char,
    codec: Codec,
    compression: Compression,
    compress_min: usize,
) -> Vec<u8> {
    let value: String = std::iter::repeat_n(fill, len).collect();
    fuzz::encode_entry(&value, codec, compression, compress_min, 1 << 30)
        .expect("encodes under 1 GiB")
}

/// Every (codec, compression) pair the decoder reads.
fn kinds() -> impl Iterator<Item = (Codec, Compression)> {
    fuzz::CODECS
        .iter()
        .flat_map(|&c| fuzz::COMPRESSIONS.iter().map(move |&z| (c, z)))
}

/// Where the header says how long the payload is (its little-endian
/// `raw_len` field), found by value so that this test does not hard-code
/// the header layout.
fn len_field(entry: &[u8], raw_len: usize) -> Option<usize> {
    let needle = u32::try_from(raw_len).ok()?.to_le_bytes();
    entry[..fuzz::HEADER_LEN]
        .windows(4)
        .rposition(|w| w == needle)
}

/// A hostile entry: a big value, optionally with its length field lowered
/// to `lie` (a zlib or LZ4 bomb whose header claims a small payload), then
/// edited.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![0usize..MAX, MAX - 16..MAX + 16, MAX..4 * MAX],
        any::<char>(),
        (codec(), compression()),
        prop_oneof![Just(0usize), Just(usize::MAX)],
        prop::option::of(0usize..MAX),
        prop::collection::vec(mutation(), 0..4),
    )
        .prop_map(|(len, fill, (codec, compression), min, lie, mutations)| {
            let mut entry = big_entry(len, fill, codec, compression, min);
            if let Some(lie) = lie {
                let plain = fuzz::encode_entry(
                    &std::iter::repeat_n(fill, len).collect::<String>(),
                    codec,
                    compression,
                    usize::MAX,
                    1 << 30,
                )
                .unwrap();
                if let Some(at) = len_field(&entry, plain.len() - fuzz::HEADER_LEN) {
                    entry[at..at + 4].copy_from_slice(&(lie as u32).to_le_bytes());
                }
            }
            mutate(&mut entry, &mutations);
            entry
        })
}

fn warm_up() {
    // The first inflate on a thread sets up the inflater's state: not part
    // of what one decode costs.
    for (codec, compression) in kinds() {
        let entry = big_entry(1000, 'a', codec, compression, 0);
        let _ = fuzz::decode_entry::<String>(&entry, MAX);
    }
}

/// Each case encodes values of up to a few hundred KB: 64 cases by
/// default keep the normal test run short; `PROPTEST_CASES` still rules.
fn alloc_config() -> ProptestConfig {
    let mut c = config();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c
}

proptest! {
    #![proptest_config(alloc_config())]

    #[test]
    fn decoding_holds_at_most_max_value_bytes(entry in hostile()) {
        warm_up();
        let (_, peak) = peak_during(|| fuzz::decode_entry::<IgnoredAny>(&entry, MAX).is_ok());
        prop_assert!(peak <= MAX + SLACK, "peak {} B decoding a {}-byte entry", peak, entry.len());
    }

    #[test]
    fn a_decoded_string_adds_at_most_its_payload(entry in hostile()) {
        warm_up();
        let (ok, peak) = peak_during(|| fuzz::decode_entry::<String>(&entry, MAX).is_ok());
        prop_assert!(peak <= typed_bound(&entry, ok), "peak {} B decoding a {}-byte entry", peak, entry.len());
        let (ok, peak) = peak_during(|| fuzz::decode_entry::<Vec<u8>>(&entry, MAX).is_ok());
        prop_assert!(peak <= typed_bound(&entry, ok), "peak {} B decoding a {}-byte entry", peak, entry.len());
    }

    #[test]
    fn arbitrary_bytes_allocate_little(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        warm_up();
        let (_, peak) = peak_during(|| fuzz::decode_entry::<IgnoredAny>(&bytes, MAX).is_ok());
        prop_assert!(peak <= MAX + SLACK, "peak {} B", peak);
    }
}

/// The bound is not vacuous: an honest entry just under the limit decodes,
/// and the allocator sees its payload.
#[test]
fn the_counter_sees_a_decoded_value() {
    warm_up();
    for (codec, compression) in kinds() {
        for min in [0, usize::MAX] {
            let entry = big_entry(MAX - 64, 'z', codec, compression, min);
            let (value, peak) = peak_during(|| fuzz::decode_entry::<String>(&entry, MAX));
            assert_eq!(value.unwrap().len(), MAX - 64);
            assert!(peak >= MAX - 64, "{peak}");
            assert!(peak <= 2 * MAX + SLACK, "{peak}");
        }
    }
}

/// A bomb (zlib or LZ4: the name predates LZ4): 16 MiB of one byte (256
/// times the limit) whose header claims a payload within the limit is
/// refused without inflating past that claim.
#[test]
fn a_lying_zlib_bomb_is_refused_within_the_bound() {
    warm_up();
    for (codec, compression) in kinds() {
        let len = 16 << 20;
        let mut entry = big_entry(len, 'a', codec, compression, 0);
        let plain_len = len + 16; // at most: a string's length prefix
        let at = (len..plain_len)
            .find_map(|raw| len_field(&entry, raw))
            .expect("the header names the payload length");
        entry[at..at + 4].copy_from_slice(&((MAX / 2) as u32).to_le_bytes());
        let (res, peak) = peak_during(|| fuzz::decode_entry::<String>(&entry, MAX));
        assert!(res.is_err());
        assert!(peak <= MAX + SLACK, "{peak}");
    }
}

/// A JSON entry whose value does not match the type: the characters with
/// the longest `Debug` escapes per payload byte (DEL, a C1 control, an
/// unassigned and a non-printable plane-14 character) stay within
/// [`JSON_ERROR_FACTOR`]; a bincode entry read as the wrong type stays
/// within the strict bound, and the error kept is short either way.
#[test]
fn a_mistyped_entry_is_bounded_and_its_error_is_short() {
    warm_up();
    for fill in ['\u{7f}', '0', '\u{80}', '\u{378}', '\u{e0000}'] {
        for (codec, compression) in kinds() {
            for min in [0, usize::MAX] {
                let n = (MAX - 8) / fill.len_utf8();
                let entry = big_entry(n, fill, codec, compression, min);
                let (res, peak) = peak_during(|| fuzz::decode_entry::<u64>(&entry, MAX));
                let err = res.expect_err("a string is not a u64");
                assert!(err.len() < 1024, "{} bytes of error", err.len());
                assert!(
                    peak <= typed_bound(&entry, false),
                    "{codec:?} {fill:?}: {peak}"
                );
                if codec == Codec::Bincode {
                    assert!(peak <= 2 * MAX + SLACK, "{fill:?}: {peak}");
                }
            }
        }
    }
}
