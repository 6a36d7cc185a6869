//! Which codec a function's values are written with.
//!
//! Readers need no choice: an entry's header names its codec and `decode`
//! follows it. Writers pick per function:
//!
//! - **Automatic** (the default): bincode is tried first, being smaller and
//!   faster; a value that bincode writes but cannot read back (serde's
//!   `flatten`, untagged and internally tagged enums, `skip_serializing_if`
//!   that fired, `serde_json::Value` anywhere inside) is written as JSON, and
//!   from then on the function prefers JSON. Every store is verified (the
//!   payload is decoded again before it is compressed and written), because
//!   whether bincode can read a value back can depend on the value itself:
//!   `Option<serde_json::Value>` is fine as `None` and not as `Some`. A
//!   value that neither codec reads back (JSON: a NaN float, a map with
//!   non-string keys; bincode: the above) is returned and not stored, counted
//!   as an error; the next value is tried again. The function never stops
//!   being cached.
//! - **Forced** (`codec = "bincode"` or `"json"`): that codec, unverified,
//!   except for the first store, which checks that it reads back. A forced
//!   codec that does not is logged once and the function falls back to the
//!   automatic choice. (So a forced bincode on a type whose
//!   `skip_serializing_if` fires for some values only is the user's risk;
//!   the README says so.)
//!
//! "Reads back" means more than decoding without an error: the value read
//! back must serialize as the value did ([`crate::codec_readback`]). With
//! bincode, a field skipped on one side only would have been filled from
//! another field's bytes; with JSON, `Some(Value::Null)` comes back `None`
//! and an untagged enum's `Int(5)` comes back `Float(5.0)` (sequences
//! compare in any order there, so a `HashSet` still reads back).
//!
//! The verification costs one decode of the uncompressed payload per store;
//! a store follows a run of the function body, so this is small next to it
//! (figures in BENCHMARKS.md).

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, Codec, CodecError, CodecLimits, Encoded};

/// What the attribute's `codec = "..."` option says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecOption {
    /// No option: chosen per function, see the module docs.
    Auto,
    /// `codec = "bincode"`.
    Bincode,
    /// `codec = "json"`.
    Json,
}

/// Automatic choice, bincode preferred.
const AUTO_BINCODE: u8 = 0;
/// Automatic choice, JSON preferred (a value needed it).
const AUTO_JSON: u8 = 1;
/// Forced codec, not yet checked.
const FORCED_UNCHECKED: u8 = 2;
/// Forced codec, its first value read back.
const FORCED_CHECKED: u8 = 3;

/// A function's codec choice, remembered across its stores.
#[derive(Debug)]
pub(crate) struct CodecChoice {
    forced: Option<Codec>,
    state: AtomicU8,
}

impl CodecChoice {
    pub(crate) fn new(option: CodecOption) -> Self {
        let forced = match option {
            CodecOption::Auto => None,
            CodecOption::Bincode => Some(Codec::Bincode),
            CodecOption::Json => Some(Codec::Json),
        };
        let state = if forced.is_some() {
            FORCED_UNCHECKED
        } else {
            AUTO_BINCODE
        };
        Self {
            forced,
            state: AtomicU8::new(state),
        }
    }

    /// The codec the next store tries first.
    pub(crate) fn preferred(&self) -> Codec {
        match (self.state.load(Relaxed), self.forced) {
            (FORCED_UNCHECKED | FORCED_CHECKED, Some(codec)) => codec,
            (AUTO_JSON, _) => Codec::Json,
            _ => Codec::Bincode,
        }
    }

    /// Encodes `value` for storing, with the codec this function uses.
    ///
    /// Errors: [`CodecError::TooLarge`] (returned, not stored, not an
    /// error), and otherwise the reason neither codec could write and read
    /// it back.
    pub(crate) fn encode<V: Serialize + DeserializeOwned>(
        &self,
        prefix: &str,
        value: &V,
        compute: Duration,
        limits: CodecLimits,
    ) -> Result<Encoded, CodecError> {
        match self.state.load(Relaxed) {
            FORCED_CHECKED => {
                let codec = self.forced.unwrap_or(Codec::Bincode);
                return codec::encode_with(codec, value, compute, limits);
            }
            FORCED_UNCHECKED => {
                let codec = self.forced.unwrap_or(Codec::Bincode);
                match codec::encode_verified(codec, value, compute, limits) {
                    Ok(encoded) => {
                        self.state.store(FORCED_CHECKED, Relaxed);
                        return Ok(encoded);
                    }
                    Err(CodecError::TooLarge(n)) => return Err(CodecError::TooLarge(n)),
                    Err(e) => {
                        tracing::warn!(
                            prefix,
                            codec = codec.name(),
                            error = %e,
                            "cache error: the forced codec cannot store this function's values \
                             and read them back; choosing the codec automatically instead \
                             (remove the `codec` option)"
                        );
                        let fallback = match codec {
                            Codec::Bincode => AUTO_JSON,
                            Codec::Json => AUTO_BINCODE,
                        };
                        self.state.store(fallback, Relaxed);
                    }
                }
            }
            _ => {}
        }
        let first = self.preferred();
        let first_error = match codec::encode_verified(first, value, compute, limits) {
            Ok(encoded) => return Ok(encoded),
            // Too large as one codec may fit as the other, either way:
            // JSON spells a string of digits longer than bincode, and an
            // f64 `0.0` in 4 bytes where bincode takes 8.
            Err(e) => e,
        };
        let first_too_large = matches!(first_error, CodecError::TooLarge(_));
        let second = first.other();
        match codec::encode_verified(second, value, compute, limits) {
            Ok(encoded) => {
                // Taken for its size alone: the preference stays.
                if second == Codec::Json && !first_too_large {
                    // Remembered: the next values of this type most likely
                    // need JSON too, and JSON reads back whatever bincode does
                    // apart from NaN floats and non-string map keys, for which
                    // bincode is tried again.
                    if self.state.swap(AUTO_JSON, Relaxed) != AUTO_JSON {
                        tracing::debug!(
                            prefix,
                            reason = %first_error,
                            "values of this function are stored as JSON"
                        );
                    }
                }
                Ok(encoded)
            }
            Err(CodecError::TooLarge(n)) => Err(CodecError::TooLarge(n)),
            Err(_) if first_too_large => Err(first_error),
            Err(second_error) => Err(CodecError::Encode(format!(
                "{}: {first_error}; {}: {second_error}",
                first.name(),
                second.name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    const LIMITS: CodecLimits = CodecLimits {
        compress_min_bytes: 256,
        compression: crate::Compression::Zlib,
        zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
        max_value_bytes: 1 << 20,
    };

    /// What JSON writes alike for two values is never stored: a hit would
    /// return the other value. Sets, which come back in another order, are.
    #[test]
    fn json_never_stores_what_reads_back_as_another_value() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Doc {
            id: u32,
            extra: Option<serde_json::Value>,
            maybe: Option<Option<u32>>,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        #[serde(untagged)]
        enum Num {
            Float(f64),
            Int(u64),
        }
        let choice = CodecChoice::new(CodecOption::Auto);
        for doc in [
            Doc {
                id: 1,
                extra: Some(serde_json::Value::Null),
                maybe: None,
            },
            // A `Value` keeps it from bincode.
            Doc {
                id: 2,
                extra: Some(json!(1)),
                maybe: Some(None),
            },
        ] {
            let refused = choice.encode("p", &doc, Duration::ZERO, LIMITS);
            assert!(refused.is_err(), "{doc:?} stored");
        }
        let fine = Doc {
            id: 3,
            extra: Some(json!({"a": null})),
            maybe: Some(Some(4)),
        };
        assert_eq!(stored_codec(&choice, &fine), Codec::Json);
        let choice = CodecChoice::new(CodecOption::Auto);
        let mixed = vec![Num::Int(5), Num::Float(1.5)];
        assert!(choice.encode("p", &mixed, Duration::ZERO, LIMITS).is_err());
        let floats = vec![Num::Float(5.5), Num::Float(1.5)];
        assert_eq!(stored_codec(&choice, &floats), Codec::Json);
        // A set holding values JSON alone reads back, in any order.
        let choice = CodecChoice::new(CodecOption::Auto);
        let tags: std::collections::HashSet<(String, Option<serde_json::Value>)> =
            (0..50).map(|i| (format!("tag-{i}"), None)).collect();
        let tagged: HashMap<String, _> = [("tags".to_owned(), (tags, json!(1)))].into();
        assert_eq!(stored_codec(&choice, &tagged), Codec::Json);
    }

    fn stored_codec<V: Serialize + DeserializeOwned>(choice: &CodecChoice, value: &V) -> Codec {
        let enc = choice
            .encode("p", value, Duration::ZERO, LIMITS)
            .expect("encodes");
        codec::decode::<V>(&enc.bytes, LIMITS)
            .expect("decodes")
            .1
            .codec
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Doc {
        id: u32,
        extra: Option<serde_json::Value>,
    }

    #[test]
    fn auto_prefers_bincode_and_remembers_json() {
        let choice = CodecChoice::new(CodecOption::Auto);
        assert_eq!(stored_codec(&choice, &vec![1u8, 2]), Codec::Bincode);
        // Reads back from bincode while `extra` is None...
        let plain = Doc { id: 1, extra: None };
        assert_eq!(stored_codec(&choice, &plain), Codec::Bincode);
        assert_eq!(choice.preferred(), Codec::Bincode);
        // ...not once it holds a Value: that value goes out as JSON, and so
        // do the next ones.
        let rich = Doc {
            id: 2,
            extra: Some(json!({"a": [1, "b"]})),
        };
        assert_eq!(stored_codec(&choice, &rich), Codec::Json);
        assert_eq!(choice.preferred(), Codec::Json);
        assert_eq!(stored_codec(&choice, &plain), Codec::Json);
    }

    /// Values whose skipped field bincode would fill from the next field's
    /// bytes, which parse: read back without an error, as other values.
    #[test]
    fn a_skipped_field_is_never_read_back_as_another_value() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Flags {
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            archived: bool,
            ids: Vec<u32>,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Note {
            #[serde(skip_serializing_if = "Option::is_none", default)]
            note: Option<u32>,
            id: u32,
            tags: Vec<u32>,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum Wrapped {
            Flagged {
                inner: Vec<Flags>,
                #[serde(skip_serializing, default)]
                cache: u8,
                n: u8,
            },
        }
        fn round_trip<V: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
            value: &V,
        ) -> Codec {
            let choice = CodecChoice::new(CodecOption::Auto);
            let enc = choice.encode("p", value, Duration::ZERO, LIMITS).unwrap();
            let (back, header) = codec::decode::<V>(&enc.bytes, LIMITS).unwrap();
            assert_eq!(&back, value, "read back as another value");
            header.codec
        }
        let flags = Flags {
            archived: false,
            ids: vec![0],
        };
        assert_eq!(round_trip(&flags), Codec::Json);
        let note = Note {
            note: None,
            id: 1,
            tags: vec![2, 0],
        };
        assert_eq!(round_trip(&note), Codec::Json);
        // Nothing skipped: bincode, as before.
        let full = Note {
            note: Some(5),
            id: 1,
            tags: vec![2, 0],
        };
        assert_eq!(round_trip(&full), Codec::Bincode);
        let shown = Flags {
            archived: true,
            ids: vec![],
        };
        assert_eq!(round_trip(&shown), Codec::Bincode);
        // Deeper: inside a sequence inside a struct variant, and a field
        // never written.
        let nested = Wrapped::Flagged {
            inner: vec![shown, flags],
            cache: 0,
            n: 3,
        };
        let choice = CodecChoice::new(CodecOption::Auto);
        let enc = choice.encode("p", &nested, Duration::ZERO, LIMITS).unwrap();
        let (back, header) = codec::decode::<Wrapped>(&enc.bytes, LIMITS).unwrap();
        assert_eq!(back, nested);
        assert_eq!(header.codec, Codec::Json);

        // Tuple structs and tuple variants may skip fields too. Neither codec
        // reads these back (JSON's array is short of an element): returned,
        // not stored, never misread.
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct TupleFlags(
            #[serde(skip_serializing_if = "std::ops::Not::not")] bool,
            Vec<u32>,
        );
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum TupleVariant {
            V(
                #[serde(skip_serializing_if = "std::ops::Not::not")] bool,
                Vec<u32>,
            ),
        }
        let choice = CodecChoice::new(CodecOption::Auto);
        let skipped = TupleFlags(false, vec![0]);
        assert!(choice
            .encode("p", &skipped, Duration::ZERO, LIMITS)
            .is_err());
        let skipped = TupleVariant::V(false, vec![0]);
        assert!(choice
            .encode("p", &skipped, Duration::ZERO, LIMITS)
            .is_err());
        assert_eq!(round_trip(&TupleFlags(true, vec![0])), Codec::Bincode);
        // A field never read and one skipped: the counts agree, the fields
        // do not (`{1, None, [0]}` read `{0, Some(1), []}`).
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Combo {
            #[serde(skip_deserializing)]
            computed: u32,
            #[serde(skip_serializing_if = "Option::is_none", default)]
            note: Option<u32>,
            ids: Vec<u32>,
        }
        let combo = Combo {
            computed: 1,
            note: None,
            ids: vec![0],
        };
        // JSON reads it by names, but `computed` comes back as its default:
        // another value too. Returned, not stored.
        let choice = CodecChoice::new(CodecOption::Auto);
        assert!(choice.encode("p", &combo, Duration::ZERO, LIMITS).is_err());
        let unset = Combo {
            computed: 0,
            note: None,
            ids: vec![0],
        };
        let enc = choice.encode("p", &unset, Duration::ZERO, LIMITS).unwrap();
        assert_eq!(codec::decode::<Combo>(&enc.bytes, LIMITS).unwrap().0, unset);
    }

    /// Equal field counts, another value: caught by writing the value read
    /// back again.
    #[test]
    fn another_value_with_equal_counts_is_caught() {
        // A field never written and one never read: `display` lands in
        // `password_hash`.
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Account {
            #[serde(skip_serializing, default)]
            password_hash: String,
            #[serde(skip_deserializing)]
            display: String,
            id: u32,
        }
        // A skipped variant shifts the later ones: `Active` reads `Closed`.
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum Status {
            #[serde(skip)]
            #[allow(dead_code)]
            Pending(u32),
            Active(u32),
            Closed(u32),
        }
        // Written through another struct, its fields in another order, and
        // read as itself: JSON reads the names, bincode the order.
        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
        #[serde(into = "PointOut")]
        struct Point {
            x: u32,
            y: u32,
        }
        #[derive(Serialize)]
        struct PointOut {
            y: u32,
            x: u32,
        }
        impl From<Point> for PointOut {
            fn from(p: Point) -> Self {
                PointOut { y: p.y, x: p.x }
            }
        }
        let account = Account {
            password_hash: "h".into(),
            display: "user7".into(),
            id: 7,
        };
        // JSON reads `display` as its default: neither codec gives it back.
        let choice = CodecChoice::new(CodecOption::Auto);
        assert!(choice
            .encode("p", &account, Duration::ZERO, LIMITS)
            .is_err());
        // Without `display`, JSON reads it back; `password_hash`, never
        // written, is not part of what is cached.
        let account = Account {
            display: String::new(),
            ..account
        };
        let enc = choice
            .encode("p", &account, Duration::ZERO, LIMITS)
            .unwrap();
        let back = codec::decode::<Account>(&enc.bytes, LIMITS).unwrap().0;
        assert_eq!((back.password_hash.as_str(), back.id), ("", 7));
        let choice = CodecChoice::new(CodecOption::Auto);
        let enc = choice
            .encode("p", &Status::Active(5), Duration::ZERO, LIMITS)
            .unwrap();
        assert_eq!(
            codec::decode::<Status>(&enc.bytes, LIMITS).unwrap().0,
            Status::Active(5)
        );
        let choice = CodecChoice::new(CodecOption::Auto);
        let point = Point { x: 1, y: 2 };
        let enc = choice.encode("p", &point, Duration::ZERO, LIMITS).unwrap();
        let (back, header) = codec::decode::<Point>(&enc.bytes, LIMITS).unwrap();
        assert_eq!((back, header.codec), (point, Codec::Json));
        // Both orientations in one `Vec`: the misread swaps the elements,
        // which no comparison of the elements in any order would see.
        let path = vec![
            Point { x: 1, y: 2 },
            Point { x: 2, y: 1 },
            Point { x: 3, y: 3 },
        ];
        let choice = CodecChoice::new(CodecOption::Auto);
        let enc = choice.encode("p", &path, Duration::ZERO, LIMITS).unwrap();
        let (back, header) = codec::decode::<Vec<Point>>(&enc.bytes, LIMITS).unwrap();
        assert_eq!((back, header.codec), (path, Codec::Json));
    }

    /// Bytes the value chooses cannot make the check forget what came
    /// before them: under a published seed, a tail that zeroes the hash
    /// state would hide a misread ahead of it.
    #[test]
    fn chosen_bytes_cannot_hide_a_misread() {
        /// Written as serde bytes, one run of bytes for the walk.
        struct Blob(Vec<u8>);
        impl Serialize for Blob {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
        /// What a skipped variant's misread does: `Active` read as `Closed`.
        #[derive(Serialize)]
        enum Status {
            Active(u32),
            Closed(u32),
        }
        // A tail that zeroed both lanes of the earlier fixed-seed hash
        // (foldhash's first global seed, eight times).
        let mut data = vec![b'x'; 5000];
        for _ in 0..8 {
            data.extend_from_slice(&0xc0ac_29b7_c97c_50ddu64.to_ne_bytes());
        }
        let written = (Status::Active(5), Blob(data.clone()));
        let misread = (Status::Closed(5), Blob(data));
        assert!(!crate::codec_readback::same(&written, &misread).unwrap());
        let a = (1u64, "abc", Blob(vec![7; 6000]));
        let b = (2u64, "abc", Blob(vec![7; 6000]));
        assert!(!crate::codec_readback::same(&a, &b).unwrap());
        assert!(crate::codec_readback::same(&a, &(1u64, "abc", Blob(vec![7; 6000]))).unwrap());
    }

    /// No false alarms: what bincode reads back equal stays bincode, even
    /// when the type's field list names aliases or it serializes otherwise
    /// for JSON.
    #[test]
    fn bincode_stays_where_it_reads_back() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Aliased {
            #[serde(alias = "old_name", alias = "older")]
            name: String,
            score: f64,
        }
        /// A string for JSON, a struct for bincode (serde's pattern).
        #[derive(Debug, PartialEq)]
        struct Stamp(u64);
        impl Serialize for Stamp {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct as _;
                if s.is_human_readable() {
                    s.serialize_str(&self.0.to_string())
                } else {
                    let mut st = s.serialize_struct("Stamp", 1)?;
                    st.serialize_field("secs", &self.0)?;
                    st.end()
                }
            }
        }
        impl<'de> Deserialize<'de> for Stamp {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                struct Secs {
                    secs: u64,
                }
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map(Stamp).map_err(serde::de::Error::custom)
                } else {
                    Secs::deserialize(d).map(|s| Stamp(s.secs))
                }
            }
        }
        let choice = CodecChoice::new(CodecOption::Auto);
        let aliased = Aliased {
            name: "a".into(),
            score: f64::NAN,
        };
        // A NaN: JSON cannot hold it, so a false alarm would not store it.
        let enc = choice
            .encode("p", &aliased, Duration::ZERO, LIMITS)
            .unwrap();
        let (back, header) = codec::decode::<Aliased>(&enc.bytes, LIMITS).unwrap();
        assert_eq!(header.codec, Codec::Bincode);
        assert!(back.name == "a" && back.score.is_nan());
        assert_eq!(
            stored_codec(&choice, &vec![Stamp(7), Stamp(8)]),
            Codec::Bincode
        );
        let nested = (
            std::time::Duration::from_millis(1500),
            Some(std::ops::Range { start: 1u8, end: 4 }),
        );
        assert_eq!(stored_codec(&choice, &nested), Codec::Bincode);
        // A field skipped on write and on read reads back equal.
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Debugged {
            #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
            debug: Option<String>,
            score: f64,
        }
        let debugged = Debugged {
            debug: None,
            score: f64::NAN,
        };
        let enc = choice
            .encode("p", &debugged, Duration::ZERO, LIMITS)
            .unwrap();
        assert_eq!(
            codec::decode::<Debugged>(&enc.bytes, LIMITS)
                .unwrap()
                .1
                .codec,
            Codec::Bincode
        );
        // A map iterates in another order once read back: still the value,
        // even with keys JSON cannot spell.
        let many: HashMap<(u32, u32), String> =
            (0..64).map(|i| ((i, i * 7), format!("v{i}"))).collect();
        assert_eq!(stored_codec(&choice, &many), Codec::Bincode);
        let named: HashMap<String, Vec<u32>> =
            (0..64).map(|i| (format!("k{i}"), vec![i; 3])).collect();
        assert_eq!(stored_codec(&choice, &named), Codec::Bincode);
        // A set iterates in another order once read back: not bincode, and
        // beside what JSON cannot hold, not stored at all.
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Tagged {
            tags: std::collections::HashSet<String>,
            edges: HashMap<(u32, u32), f64>,
            score: f64,
        }
        let tags: std::collections::HashSet<String> = (0..64).map(|i| format!("t{i}")).collect();
        assert_eq!(stored_codec(&choice, &tags), Codec::Json);
        let tagged = Tagged {
            tags,
            edges: (0..64).map(|i| ((i, i + 1), f64::from(i))).collect(),
            score: f64::NAN,
        };
        let choice = CodecChoice::new(CodecOption::Auto);
        assert!(choice.encode("p", &tagged, Duration::ZERO, LIMITS).is_err());
    }

    #[test]
    fn json_falls_back_to_bincode_per_value() {
        let choice = CodecChoice::new(CodecOption::Auto);
        assert_eq!(stored_codec(&choice, &json!(1)), Codec::Json);
        // Not expressible in JSON: a NaN and a map with tuple keys.
        let nan = vec![f64::NAN];
        let enc = choice.encode("p", &nan, Duration::ZERO, LIMITS).unwrap();
        let (back, header) = codec::decode::<Vec<f64>>(&enc.bytes, LIMITS).unwrap();
        assert!(back[0].is_nan());
        assert_eq!(header.codec, Codec::Bincode);
        let keyed = HashMap::from([((1u8, 2u8), 3u8)]);
        assert_eq!(stored_codec(&choice, &keyed), Codec::Bincode);
        // Still JSON first.
        assert_eq!(choice.preferred(), Codec::Json);
    }

    #[test]
    fn neither_codec_is_an_error_not_a_verdict() {
        #[derive(Serialize, Deserialize)]
        struct Both {
            v: serde_json::Value,
            x: f64,
        }
        let choice = CodecChoice::new(CodecOption::Auto);
        let bad = Both {
            v: json!(1),
            x: f64::NAN,
        };
        let err = choice
            .encode("p", &bad, Duration::ZERO, LIMITS)
            .unwrap_err();
        assert!(matches!(err, CodecError::Encode(_)), "{err}");
        let good = Both {
            v: json!(1),
            x: 1.5,
        };
        assert_eq!(stored_codec(&choice, &good), Codec::Json);
    }

    #[test]
    fn forced_codecs() {
        let json = CodecChoice::new(CodecOption::Json);
        assert_eq!(stored_codec(&json, &5u32), Codec::Json);
        assert_eq!(stored_codec(&json, &6u32), Codec::Json);
        let bin = CodecChoice::new(CodecOption::Bincode);
        assert_eq!(stored_codec(&bin, &5u32), Codec::Bincode);
        // A forced codec that cannot read the type back gives way.
        let wrong = CodecChoice::new(CodecOption::Bincode);
        assert_eq!(stored_codec(&wrong, &json!({"a": 1})), Codec::Json);
        assert_eq!(wrong.preferred(), Codec::Json);
    }

    #[test]
    fn too_large_is_reported_as_such() {
        let choice = CodecChoice::new(CodecOption::Auto);
        let tiny = CodecLimits {
            compress_min_bytes: 0,
            compression: crate::Compression::Zlib,
            zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
            max_value_bytes: 8,
        };
        let err = choice
            .encode("p", &"x".repeat(100), Duration::ZERO, tiny)
            .unwrap_err();
        assert!(matches!(err, CodecError::TooLarge(_)), "{err}");
    }

    /// A value too large as the preferred codec is stored as the other when
    /// it fits (bincode for a long JSON, JSON for many zero floats), and
    /// the preference stays; one that fits neither is too large, not an
    /// error.
    #[test]
    fn too_large_as_json_is_tried_as_bincode() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Doc {
            extra: Option<serde_json::Value>,
            ids: Vec<u32>,
        }
        let limits = CodecLimits {
            max_value_bytes: 1000,
            ..LIMITS
        };
        let choice = CodecChoice::new(CodecOption::Auto);
        let with_value = Doc {
            extra: Some(json!(1)),
            ids: vec![],
        };
        let enc = choice
            .encode("p", &with_value, Duration::ZERO, limits)
            .unwrap();
        assert_eq!(
            codec::decode::<Doc>(&enc.bytes, limits).unwrap().1.codec,
            Codec::Json
        );
        assert_eq!(choice.preferred(), Codec::Json);
        // 400 × "200," is 1600 bytes of JSON; bincode writes 400 bytes.
        let long = Doc {
            extra: None,
            ids: vec![200; 400],
        };
        let enc = choice.encode("p", &long, Duration::ZERO, limits).unwrap();
        let (back, header) = codec::decode::<Doc>(&enc.bytes, limits).unwrap();
        assert_eq!((back, header.codec), (long, Codec::Bincode));
        assert_eq!(choice.preferred(), Codec::Json, "still prefers JSON");
        let longer = Doc {
            extra: Some(json!(1)),
            ids: vec![200; 400],
        };
        let err = choice
            .encode("p", &longer, Duration::ZERO, limits)
            .unwrap_err();
        assert!(matches!(err, CodecError::TooLarge(_)), "{err}");
        // The other way: 200 zeros are 1 600 bytes as bincode, 801 as
        // JSON. Stored as JSON; the preference stays bincode.
        let choice = CodecChoice::new(CodecOption::Auto);
        let zeros = vec![0.0f64; 200];
        let enc = choice.encode("p", &zeros, Duration::ZERO, limits).unwrap();
        let (back, header) = codec::decode::<Vec<f64>>(&enc.bytes, limits).unwrap();
        assert_eq!((back, header.codec), (zeros, Codec::Json));
        assert_eq!(choice.preferred(), Codec::Bincode, "still prefers bincode");
    }
}
