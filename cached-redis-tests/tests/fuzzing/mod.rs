//! Shared parts of the property tests of the stored format: value types,
//! proptest strategies for them and for valid entries, and the mutations
//! applied to entries.
//!
//! Case counts come from `PROPTEST_CASES` (proptest's default, 256, in the
//! normal test run; `scripts/fuzz-long.sh` sets a million).
#![allow(dead_code)]

use std::collections::BTreeMap;

use cached_redis::__private::fuzz::{self, Codec, Compression};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::{Deserialize, Serialize};

/// `PROPTEST_CASES` cases (default 256), no regression files written: a
/// failure prints its minimal input.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A generous limit for round trips (values here are far smaller).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    Unit,
    New(i32),
    Tup(u8, String),
    Rec { a: Option<u16>, b: Vec<i64> },
}

/// A value with most of serde's data model in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub id: u64,
    pub neg: i64,
    pub flag: bool,
    pub name: String,
    pub ch: char,
    pub tags: Vec<String>,
    pub score: f64,
    pub opt: Option<u32>,
    pub nested: Option<Option<u8>>,
    pub kinds: Vec<Kind>,
    pub map: BTreeMap<String, u32>,
    pub big: u128,
    pub bigi: i128,
    pub raw: Vec<u8>,
    pub unit: (),
}

pub fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Unit),
        any::<i32>().prop_map(Kind::New),
        (any::<u8>(), ".{0,12}").prop_map(|(a, b)| Kind::Tup(a, b)),
        (
            any::<Option<u16>>(),
            prop::collection::vec(any::<i64>(), 0..6)
        )
            .prop_map(|(a, b)| Kind::Rec { a, b }),
    ]
}

prop_compose! {
    fn doc_head()(
        id in any::<u64>(),
        neg in any::<i64>(),
        flag in any::<bool>(),
        name in ".{0,40}",
        ch in any::<char>(),
        tags in prop::collection::vec(".{0,10}", 0..5),
        // Finite: the value must equal itself after a round trip.
        score in -1e300f64..1e300,
    ) -> (u64, i64, bool, String, char, Vec<String>, f64) {
        (id, neg, flag, name, ch, tags, score)
    }
}

prop_compose! {
    /// A `Doc`, from tiny to a few KB (long enough to be compressed).
    pub fn doc()(
        head in doc_head(),
        opt in any::<Option<u32>>(),
        nested in any::<Option<Option<u8>>>(),
        kinds in prop::collection::vec(kind(), 0..8),
        map in prop::collection::btree_map(".{0,8}", any::<u32>(), 0..8),
        big in any::<u128>(),
        bigi in any::<i128>(),
        raw in prop::collection::vec(any::<u8>(), 0..3000),
    ) -> Doc {
        let (id, neg, flag, name, ch, tags, score) = head;
        Doc { id, neg, flag, name, ch, tags, score, opt, nested, kinds, map, big, bigi, raw, unit: () }
    }
}

/// One of the codecs the decoder reads (see `fuzz::CODECS`).
pub fn codec() -> impl Strategy<Value = Codec> {
    prop::sample::select(fuzz::CODECS)
}

/// One of the compressions the decoder reads (see `fuzz::COMPRESSIONS`).
pub fn compression() -> impl Strategy<Value = Compression> {
    prop::sample::select(fuzz::COMPRESSIONS)
}

/// A compression threshold: always, never, or around typical sizes.
pub fn compress_min_bytes() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(usize::MAX), 0usize..4096]
}

/// A valid entry of a random `Doc`, of any codec and compression: the doc,
/// its codec and the entry bytes.
pub fn entry() -> impl Strategy<Value = (Doc, Codec, Vec<u8>)> {
    (doc(), codec(), compression(), compress_min_bytes()).prop_map(|(d, c, z, min)| {
        let bytes = fuzz::encode_entry(&d, c, z, min, MAX_VALUE_BYTES).expect("a Doc encodes");
        (d, c, bytes)
    })
}

/// What a valid entry of `doc` written with `codec` reads back as: `doc`
/// itself, except that JSON spells `Some(None)` and `None` alike (the
/// `nested` field), so the JSON codec gives back what serde_json does.
pub fn read_back(doc: &Doc, codec: Codec) -> Result<Doc, String> {
    if codec == Codec::Json {
        serde_json::to_vec(doc)
            .and_then(|json| serde_json::from_slice::<Doc>(&json))
            .map_err(|e| e.to_string())
    } else {
        Ok(doc.clone())
    }
}

/// One edit of an entry's bytes.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite one byte.
    Set(Index, u8),
    /// Keep only a prefix.
    Truncate(Index),
    /// Insert bytes at a position.
    Insert(Index, Vec<u8>),
    /// Remove up to n bytes from a position.
    Remove(Index, usize),
    /// Copy a run of the entry over another place (repeats structure).
    Splice(Index, Index, usize),
    /// Overwrite 4 bytes with an extreme little-endian u32 (lengths).
    Length(Index, u32),
    /// Append bytes.
    Append(Vec<u8>),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let small = prop::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), small.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..64).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        2 => (any::<Index>(), prop_oneof![Just(0u32), Just(u32::MAX), Just(1 << 24), any::<u32>()])
            .prop_map(|(i, v)| Mutation::Length(i, v)),
        1 => small.prop_map(Mutation::Append),
    ]
}

/// Applies `mutations` to `bytes` in turn.
pub fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            Mutation::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Splice(from, to, n) if len > 0 => {
                let (from, to) = (from.index(len), to.index(len));
                let n = (*n).min(len - from).min(len - to);
                bytes.copy_within(from..from + n, to);
            }
            Mutation::Length(i, v) if len >= 4 => {
                let at = i.index(len - 3);
                bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            Mutation::Append(b) => bytes.extend_from_slice(b),
            _ => {}
        }
    }
}

/// Decodes `bytes` as every type below, none of which may panic; returns
/// the `Doc` result, the one type the entry may actually hold.
pub fn decode_as_everything(bytes: &[u8], max: usize) -> Result<Doc, String> {
    let _ = fuzz::decode_entry::<String>(bytes, max);
    let _ = fuzz::decode_entry::<Vec<u8>>(bytes, max);
    let _ = fuzz::decode_entry::<Vec<u64>>(bytes, max);
    let _ = fuzz::decode_entry::<Kind>(bytes, max);
    let _ = fuzz::decode_entry::<Vec<Kind>>(bytes, max);
    let _ = fuzz::decode_entry::<BTreeMap<String, Option<i128>>>(bytes, max);
    let _ = fuzz::decode_entry::<(u8, char, f32, bool)>(bytes, max);
    let _ = fuzz::decode_entry::<serde::de::IgnoredAny>(bytes, max);
    let _ = fuzz::decode_entry::<serde_json::Value>(bytes, max);
    fuzz::decode_entry::<Doc>(bytes, max)
}
