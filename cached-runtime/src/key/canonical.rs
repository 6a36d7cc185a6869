//! Canonical JSON of key arguments: the bytes that get hashed into a key.
//!
//! The output is byte-identical to
//! `serde_json::to_string(&serde_json::to_value(v)?)` (without serde_json's
//! `preserve_order`): no whitespace, object keys sorted by their bytes at every
//! depth (structs, maps, struct variants, flattened maps), enums externally
//! tagged. It is produced by a
//! `serde::Serializer` writing straight into the output, without building a
//! `serde_json::Value`: keying is on every cached call's path.
//!
//! Five deliberate departures, none of which can make two different
//! arguments share a key:
//! - A key repeated in one object (a `flatten`ed map holding a field's
//!   name, two map keys that serialize alike) is an error, where `to_value`
//!   keeps the last value: arguments differing only in a dropped value
//!   would share a key, and with a `HashMap` which value is last changes
//!   from run to run.
//! - NaN and infinite floats are an error rather than `null` (which would
//!   collide with `None`), so that the call bypasses the cache.
//! - `Some(x)` where `x` itself is written `null` (`Some(None)`, `Some(())`)
//!   is written `{"\u0000some":x}` rather than `null`, which would collide
//!   with `None`; likewise when `x` already starts with that wrapper.
//! - 128-bit integers outside the 64-bit range are written as their digits,
//!   where `to_value` fails; no other value spells a bare integer that large.
//! - An `f32` is written as the `f64` its shortest decimal names (`0.1`),
//!   where `to_value` widens it to the `f64` it converts to
//!   (`0.10000000149011612`): the number a database event carries for it,
//!   from which `invalidate_args` builds the key.
//!
//! How objects are sorted without an allocation per object: entries are
//! written in arrival order, in final form (`"key":value`), into the output
//! itself and recorded on a stack of `Entry` shared by all nesting levels. When
//! the object ends, it is already canonical if its keys arrive in order (a
//! `BTreeMap`, a struct with fields declared alphabetically); otherwise its
//! region is copied to a scratch buffer and the entries written back in key
//! order. Keys compare unescaped, as serde_json's `BTreeMap` does: the rare key
//! that needs escaping keeps its raw bytes on a side stack. An inner object is
//! finished before its parent's next entry starts, so these few buffers serve
//! every depth.

use std::cell::Cell;
use std::cmp::Ordering;
use std::ops::Range;

use serde::ser::{self, Impossible, Serialize};

/// Why arguments cannot be made canonical. A `Box<str>` rather than a
/// `String`: every serializer call of a key returns a
/// `Result<_, CanonicalError>`, and at two words it comes back in registers
/// rather than through memory (about 7 % of a 1 KB key's instructions).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CanonicalError(Box<str>);

impl ser::Error for CanonicalError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CanonicalError(msg.to_string().into())
    }
}

impl CanonicalError {
    fn json(e: serde_json::Error) -> Self {
        CanonicalError(e.to_string().into())
    }
}

/// Arguments nested deeper than this (compounds, options and newtypes
/// count one level each, map keys' newtypes included) are not keyed: the
/// call runs uncached. serde_json's parser stops at about the same depth
/// (127 levels); and a key is built on the caller's stack (a tokio worker
/// has 2 MiB): the key memo's replay of 128 levels takes under 1 MiB even
/// in a debug build. Fingerprints count levels the same way.
pub(crate) const MAX_DEPTH: u32 = 128;

/// The error of arguments nested deeper than [`MAX_DEPTH`].
#[cold]
pub(crate) fn too_deep() -> CanonicalError {
    CanonicalError(format!("key arguments are nested more than {MAX_DEPTH} levels deep").into())
}

/// The error of a `Display` that failed in `collect_str`.
pub(crate) fn display_failed() -> CanonicalError {
    CanonicalError("a key argument's Display implementation failed".into())
}

/// `value`'s `Display` text, or an error where serde's default
/// `collect_str` (`to_string`) would panic.
fn displayed<T: std::fmt::Display + ?Sized>(value: &T) -> Result<String, CanonicalError> {
    use std::fmt::Write as _;
    let mut text = String::new();
    write!(text, "{value}").map_err(|_| display_failed())?;
    Ok(text)
}

/// Writes the canonical JSON of `value` to `out`.
///
/// On error `out` is left as it was.
pub(crate) fn to_canonical_json<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CanonicalError> {
    let len = out.len();
    // `try_with`: no panic when keying from another thread-local's destructor.
    let mut spare = SPARE.try_with(Cell::take).unwrap_or_default();
    let mut ctx = Ctx {
        out,
        spare: &mut spare,
        depth: 0,
        failure: None,
    };
    let res = value.serialize(&mut ctx);
    // Sticky: a `Serialize` that swallowed an error left part of itself
    // out (or wrote half of it), so the whole argument has no key.
    let res = match ctx.failure.take() {
        Some(failure) => Err(failure),
        None => res,
    };
    if res.is_err() {
        ctx.out.truncate(len);
    }
    if spare.entries.capacity() <= SPARE_MAX_ENTRIES
        && spare.scratch.capacity() <= SPARE_MAX_BYTES
        && spare.raw_keys.capacity() <= SPARE_MAX_BYTES
    {
        spare.entries.clear();
        spare.scratch.clear();
        spare.raw_keys.clear();
        let _ = SPARE.try_with(|cell| cell.set(spare));
    }
    res
}

/// The opening of `Some(x)` when `x` alone would read as `None` or as
/// another wrapped value (see `serialize_some`). The key `"\u0000some"`, NUL
/// first, is one no JSON object written from a struct can start with.
const SOME_WRAPPER: &[u8] = br#"{"\u0000some":"#;

thread_local! {
    /// Spare buffers for the next call on this thread: keying a small struct
    /// then allocates nothing but its output. Taken, not borrowed, so that a
    /// `Serialize` impl that itself makes a key just starts without spares.
    static SPARE: Cell<Buffers> = const {
        Cell::new(Buffers {
            entries: Vec::new(),
            scratch: Vec::new(),
            raw_keys: Vec::new(),
        })
    };
}

/// Larger buffers (a huge map argument) are freed rather than kept.
const SPARE_MAX_ENTRIES: usize = 1024;
const SPARE_MAX_BYTES: usize = 64 * 1024;

/// Working memory of one serialization, kept between calls.
#[derive(Default)]
struct Buffers {
    /// Entries of every object being built, innermost last.
    entries: Vec<Entry>,
    /// Where an object's region is copied while written back sorted.
    scratch: Vec<u8>,
    /// Raw bytes of keys that were escaped, innermost object last.
    raw_keys: Vec<u8>,
}

/// One object entry: `out[segment]` is `"key":value`; the raw (unescaped)
/// key is `out[key]`, or `raw_keys[key]` if escaping changed it.
struct Entry {
    /// The raw key's first 8 bytes, zero-padded, big-endian: ordering these
    /// orders most keys without comparing slices.
    prefix: u64,
    key: Range<usize>,
    escaped: bool,
    segment: Range<usize>,
    /// Whether its value was written: a second value for one key, or a
    /// key without one, is an error rather than JSON that another
    /// argument could spell.
    valued: bool,
}

impl Entry {
    #[inline]
    fn key<'b>(&self, out: &'b [u8], raw_keys: &'b [u8]) -> &'b [u8] {
        if self.escaped {
            &raw_keys[self.key.clone()]
        } else {
            &out[self.key.clone()]
        }
    }
}

/// Key order, as `String`'s; equal prefixes are ambiguous ("a" and "a\0")
/// and fall back to the bytes.
#[inline]
fn cmp_keys(a: &Entry, b: &Entry, out: &[u8], raw_keys: &[u8]) -> Ordering {
    a.prefix
        .cmp(&b.prefix)
        .then_with(|| a.key(out, raw_keys).cmp(b.key(out, raw_keys)))
}

/// Whether serde_json would escape any byte of `s`: control characters,
/// the quote and the backslash (nothing else). Eight bytes at a time: for
/// each test, `(x - k) & !x & 0x80…` is non-zero exactly when some byte of
/// `x` is below `k`'s byte, `x` being the bytes themselves (below 0x20) or
/// their XOR with the quote or the backslash (below 1: zero where they
/// match). Bytes of 0x80 and above never count, as `!x` clears their bit.
#[inline]
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    #[inline]
    fn any(x: u64) -> bool {
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        let q = x ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let b = x ^ (ONES * u64::from(b'\\'));
        let backslash = b.wrapping_sub(ONES) & !b;
        (control | quote | backslash) & HIGH != 0
    }
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        if any(x) {
            return true;
        }
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        return false;
    }
    // The tail, padded with a byte that needs no escape.
    let mut last = [b' '; 8];
    last[..rest.len()].copy_from_slice(rest);
    any(u64::from_le_bytes(last))
}

/// State of one serialization.
struct Ctx<'o> {
    out: &'o mut Vec<u8>,
    spare: &'o mut Buffers,
    /// Compounds, options and newtypes open around the current call.
    depth: u32,
    /// The first error a compound's element, key, value or field returned,
    /// kept even if the `Serialize` swallowed it.
    failure: Option<CanonicalError>,
}

impl Ctx<'_> {
    /// Enters one level of nesting.
    #[inline]
    fn open(&mut self) -> Result<(), CanonicalError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.note(Err(too_deep()));
        }
        Ok(())
    }

    /// Keeps the first error of `result`, then returns it.
    fn note(&mut self, result: Result<(), CanonicalError>) -> Result<(), CanonicalError> {
        if let Err(e) = &result {
            if self.failure.is_none() {
                self.failure = Some(CanonicalError(e.0.clone()));
            }
        }
        result
    }

    #[inline]
    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// A value one level down (`Some`, a newtype).
    #[inline]
    fn nested<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.open()?;
        let res = value.serialize(&mut *self);
        self.close();
        res
    }

    /// Writes a scalar (number, string) the way serde_json does.
    #[inline]
    fn json<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        serde_json::to_writer(&mut *self.out, v).map_err(CanonicalError::json)
    }

    /// Writes a string as serde_json does: quoted, and escaped through
    /// serde_json when it holds a byte that needs it.
    #[inline]
    fn string(&mut self, v: &str) -> Result<(), CanonicalError> {
        if needs_escape(v.as_bytes()) {
            return self.json(v);
        }
        let out = &mut *self.out;
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
        Ok(())
    }

    /// Writes an integer's digits, as serde_json does (it uses `itoa` too).
    #[inline]
    fn integer<I: itoa::Integer>(&mut self, v: I) -> Result<(), CanonicalError> {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }

    fn float(&mut self, v: f64) -> Result<(), CanonicalError> {
        if v.is_finite() {
            self.json(&v)
        } else {
            Err(CanonicalError(
                format!("{v} cannot be part of a cache key: JSON has no spelling for it").into(),
            ))
        }
    }

    /// `{"variant":`, the head of a newtype, tuple or struct variant.
    fn variant_head(&mut self, variant: &str) -> Result<(), CanonicalError> {
        self.out.push(b'{');
        self.string(variant)?;
        self.out.push(b':');
        Ok(())
    }

    /// Opens an object at the end of `out`.
    fn begin_object(&mut self) -> Object {
        self.out.push(b'{');
        Object {
            body: self.out.len(),
            base: self.spare.entries.len(),
            raw_keys: self.spare.raw_keys.len(),
        }
    }

    /// Starts an entry of `obj` whose raw key `write_key` appends to `out`:
    /// writes `,"key":`.
    fn begin_entry(
        &mut self,
        obj: &Object,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<(), CanonicalError>,
    ) -> Result<(), CanonicalError> {
        let out = &mut *self.out;
        let entries = &mut self.spare.entries;
        if entries.len() > obj.base {
            if entries.last().is_some_and(|e| !e.valued) {
                return Err(key_without_value());
            }
            out.push(b',');
        }
        let segment_start = out.len();
        out.push(b'"');
        let key_start = out.len();
        write_key(out)?;
        let raw = &out[key_start..];
        let mut prefix = [0; 8];
        let n = raw.len().min(8);
        prefix[..n].copy_from_slice(&raw[..n]);
        let prefix = u64::from_be_bytes(prefix);
        // serde_json escapes exactly control characters, `"` and `\`.
        let escaped = needs_escape(raw);
        let key = if escaped {
            let raw_keys = &mut self.spare.raw_keys;
            let start = raw_keys.len();
            raw_keys.extend_from_slice(raw);
            let key = start..raw_keys.len();
            let text = std::str::from_utf8(&raw_keys[key.clone()])
                .map_err(|e| CanonicalError(e.to_string().into()))?;
            out.truncate(segment_start);
            serde_json::to_writer(&mut *out, text).map_err(CanonicalError::json)?;
            key
        } else {
            let key = key_start..out.len();
            out.push(b'"');
            key
        };
        out.push(b':');
        entries.push(Entry {
            prefix,
            key,
            escaped,
            segment: segment_start..out.len(),
            valued: false,
        });
        Ok(())
    }

    /// Closes `obj`, putting its entries in key order. A repeated key is an
    /// error (see the module docs); the object is still closed, keeping the
    /// last value, so that the buffers stay consistent for a `Serialize`
    /// that ignores the error and goes on.
    fn end_object(&mut self, obj: Object) -> Result<(), CanonicalError> {
        let mut repeated = false;
        let Buffers {
            entries,
            scratch,
            raw_keys,
        } = &mut *self.spare;
        let out = &mut *self.out;
        let mine = &mut entries[obj.base..];
        let in_order = mine
            .windows(2)
            .all(|w| cmp_keys(&w[0], &w[1], out, raw_keys).is_lt());
        if !in_order {
            // Unstable sort (no allocation); ties broken by arrival order so
            // that the last of a repeated key comes last.
            mine.sort_unstable_by(|a, b| {
                cmp_keys(a, b, out, raw_keys).then(a.segment.start.cmp(&b.segment.start))
            });
            for i in 1..mine.len() {
                let (before, after) = mine.split_at_mut(i);
                let (prev, next) = (&mut before[i - 1], &after[0]);
                if prev.prefix == next.prefix && prev.key(out, raw_keys) == next.key(out, raw_keys)
                {
                    // Overwritten by a later entry: nothing to copy back.
                    prev.segment.end = prev.segment.start;
                    repeated = true;
                }
            }
            scratch.clear();
            scratch.extend_from_slice(&out[obj.body..]);
            out.truncate(obj.body);
            let mut first = true;
            for e in mine.iter().filter(|e| !e.segment.is_empty()) {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(
                    &scratch[e.segment.start - obj.body..e.segment.end - obj.body],
                );
            }
        }
        out.push(b'}');
        entries.truncate(obj.base);
        raw_keys.truncate(obj.raw_keys);
        if repeated {
            return Err(repeated_key());
        }
        Ok(())
    }
}

/// JSON text read only to see that none of its objects repeats a key.
struct NoRepeatedKey;

impl<'de> serde::Deserialize<'de> for NoRepeatedKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoRepeatedKey)
    }
}

impl<'de> serde::de::Visitor<'de> for NoRepeatedKey {
    type Value = NoRepeatedKey;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoRepeatedKey>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("repeated key"));
            }
            map.next_value::<NoRepeatedKey>()?;
        }
        Ok(self)
    }
}

/// The error of an object that holds one key twice.
#[cold]
fn repeated_key() -> CanonicalError {
    CanonicalError(
        "a key argument holds an object with a repeated key (a `flatten`ed map with a \
         field's name?): its key would drop one of the values"
            .into(),
    )
}

/// An object being built: where its body starts in `out`, its first entry,
/// and where its escaped keys start in `raw_keys`.
#[derive(Clone, Copy)]
struct Object {
    body: usize,
    base: usize,
    raw_keys: usize,
}

/// A sequence, tuple or tuple variant being written.
struct Seq<'a, 'o> {
    ctx: &'a mut Ctx<'o>,
    first: bool,
    /// `]`, or `]}` for a tuple variant.
    close: &'static [u8],
}

impl Seq<'_, '_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        if !self.first {
            self.ctx.out.push(b',');
        }
        self.first = false;
        let result = value.serialize(&mut *self.ctx);
        self.ctx.note(result)
    }

    fn finish(self) -> Result<(), CanonicalError> {
        self.ctx.out.extend_from_slice(self.close);
        self.ctx.close();
        Ok(())
    }
}

/// A map, struct or struct variant being written.
struct Map<'a, 'o> {
    ctx: &'a mut Ctx<'o>,
    obj: Object,
    kind: MapKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MapKind {
    /// A map or struct.
    Object,
    /// A struct variant, which closes its wrapping `{"variant":…}` too.
    Variant,
    /// A `serde_json::Number` or `RawValue` in disguise (below).
    Token(Token),
}

/// serde_json's `arbitrary_precision` and `raw_value` features, which another
/// crate in the build may turn on, serialize a `Number` or `RawValue` as a
/// one-field struct with these (private, but stable since 2018) names, the
/// field holding JSON text. `to_value` reads them back as JSON; so do we.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Number,
    RawValue,
}

const NUMBER_TOKEN: &str = "$serde_json::private::Number";
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl Map<'_, '_> {
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), CanonicalError> {
        let result = self.ctx.begin_entry(&self.obj, |out| {
            out.extend_from_slice(key.as_bytes());
            Ok(())
        });
        self.ctx.note(result)?;
        self.value(value)
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        let result = self.write_value(value);
        self.ctx.note(result)
    }

    fn write_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        if self.ctx.spare.entries.len() <= self.obj.base {
            return Err(CanonicalError("map value serialized before its key".into()));
        }
        if self.ctx.spare.entries.last().is_some_and(|e| e.valued) {
            return Err(CanonicalError(
                "map value serialized twice for one key".into(),
            ));
        }
        value.serialize(&mut *self.ctx)?;
        // Inner objects have popped their entries: the last one is ours.
        let end = self.ctx.out.len();
        if let Some(e) = self.ctx.spare.entries.last_mut() {
            e.segment.end = end;
            e.valued = true;
        }
        Ok(())
    }

    /// The field of a [`Token`] struct: its JSON text.
    fn token_field<T: Serialize + ?Sized>(
        &mut self,
        token: Token,
        value: &T,
    ) -> Result<(), CanonicalError> {
        let depth = self.ctx.depth;
        let result = match token {
            // A number's text is printed as is (`to_value` keeps it verbatim).
            Token::Number => value.serialize(KeySerializer {
                out: self.ctx.out,
                depth,
            }),
            // Raw JSON may hold objects, whose keys need sorting.
            Token::RawValue => {
                let text = &mut self.ctx.spare.scratch;
                text.clear();
                value
                    .serialize(KeySerializer { out: text, depth })
                    .and_then(|()| {
                        let json = serde_json::from_slice::<serde_json::Value>(text)
                            .map_err(CanonicalError::json)?;
                        // A `Value` keeps the last of a repeated key, which
                        // would give `{"a":1,"a":2}` the key of `{"a":2}`.
                        // The text parsed: a repeated key is all that fails.
                        serde_json::from_slice::<NoRepeatedKey>(text)
                            .map_err(|_| repeated_key())?;
                        Ok(json)
                    })
                    .and_then(|json| json.serialize(&mut *self.ctx))
            }
        };
        self.ctx.note(result)
    }

    fn finish(self) -> Result<(), CanonicalError> {
        self.ctx.close();
        let entries = &self.ctx.spare.entries;
        if !matches!(self.kind, MapKind::Token(_))
            && entries.len() > self.obj.base
            && entries.last().is_some_and(|e| !e.valued)
        {
            return Err(key_without_value());
        }
        let ended = match self.kind {
            MapKind::Object => self.ctx.end_object(self.obj),
            MapKind::Variant => {
                let ended = self.ctx.end_object(self.obj);
                self.ctx.out.push(b'}');
                ended
            }
            MapKind::Token(_) => Ok(()),
        };
        self.ctx.note(ended)
    }
}

impl<'a, 'o> ser::Serializer for &'a mut Ctx<'o> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Seq<'a, 'o>;
    type SerializeTuple = Seq<'a, 'o>;
    type SerializeTupleStruct = Seq<'a, 'o>;
    type SerializeTupleVariant = Seq<'a, 'o>;
    type SerializeMap = Map<'a, 'o>;
    type SerializeStruct = Map<'a, 'o>;
    type SerializeStructVariant = Map<'a, 'o>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        self.integer(v)
    }

    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        // As the f64 its shortest decimal names (0.1f32 is 0.1, written
        // "0.1"), not widened as `to_value` stores it (0.10000000149011612):
        // a database sends a `real` column as that decimal, and
        // `invalidate_args` keys the f64 a JSON parser reads from it. Not
        // the f32's own spelling either, which takes the exponent form at
        // other magnitudes than an f64's (1e14 against 100000000000000.0).
        // Distinct f32s have distinct shortest decimals, hence keys.
        let decimal: f64 = if v.is_finite() {
            v.to_string().parse().unwrap_or(f64::NAN)
        } else {
            f64::from(v)
        };
        self.float(decimal)
    }

    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        self.float(v)
    }

    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        self.string(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        self.string(v)
    }

    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        self.serialize_str(&displayed(value)?)
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        let mut seq = ser::Serializer::serialize_seq(self, Some(v.len()))?;
        for b in v {
            ser::SerializeSeq::serialize_element(&mut seq, b)?;
        }
        seq.finish()
    }

    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        let start = self.out.len();
        self.nested(value)?;
        // `Some(x)` is written as `x`, except where that would be ambiguous:
        // when `x` is written `null` (`None`, `()`) or starts like the
        // wrapper itself, it is wrapped as `{"\u0000some":x}`. So `None`,
        // `Some(None)` and `Some(Some(None))` never share a key. (Nothing
        // is moved in an enclosing object: the entry this value belongs to
        // gets its end only once the value is written.)
        let written = &self.out[start..];
        if written == b"null" || written.starts_with(SOME_WRAPPER) {
            self.out.splice(start..start, SOME_WRAPPER.iter().copied());
            self.out.push(b'}');
        }
        Ok(())
    }

    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.string(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.nested(value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.variant_head(variant)?;
        self.nested(value)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a, 'o>, CanonicalError> {
        self.open()?;
        self.out.push(b'[');
        Ok(Seq {
            ctx: self,
            first: true,
            close: b"]",
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Seq<'a, 'o>, CanonicalError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Seq<'a, 'o>, CanonicalError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a, 'o>, CanonicalError> {
        self.open()?;
        self.variant_head(variant)?;
        self.out.push(b'[');
        Ok(Seq {
            ctx: self,
            first: true,
            close: b"]}",
        })
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'a, 'o>, CanonicalError> {
        self.open()?;
        let obj = self.begin_object();
        Ok(Map {
            ctx: self,
            obj,
            kind: MapKind::Object,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Map<'a, 'o>, CanonicalError> {
        let token = match name {
            NUMBER_TOKEN => Token::Number,
            RAW_VALUE_TOKEN => Token::RawValue,
            _ => return self.serialize_map(Some(len)),
        };
        // Not an object: nothing is opened (but it is a level).
        self.open()?;
        let obj = Object {
            body: self.out.len(),
            base: self.spare.entries.len(),
            raw_keys: self.spare.raw_keys.len(),
        };
        Ok(Map {
            ctx: self,
            obj,
            kind: MapKind::Token(token),
        })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Map<'a, 'o>, CanonicalError> {
        self.open()?;
        self.variant_head(variant)?;
        let obj = self.begin_object();
        Ok(Map {
            ctx: self,
            obj,
            kind: MapKind::Variant,
        })
    }
}

impl ser::SerializeSeq for Seq<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Seq<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Seq<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Seq<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl ser::SerializeMap for Map<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        let depth = self.ctx.depth;
        let result = self
            .ctx
            .begin_entry(&self.obj, |out| key.serialize(KeySerializer { out, depth }));
        self.ctx.note(result)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.value(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Map<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        match self.kind {
            MapKind::Token(token) => self.token_field(token, value),
            _ => self.field(key, value),
        }
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Map<'_, '_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.field(key, value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

/// Writes a map key as its raw (unquoted, unescaped) string, accepting what
/// serde_json's `MapKeySerializer` of `to_value` accepts: strings, chars,
/// bools, integers, finite floats, unit variants and newtypes of those.
struct KeySerializer<'a> {
    out: &'a mut Vec<u8>,
    /// Levels open around the key: its newtypes count too, as everywhere.
    depth: u32,
}

impl KeySerializer<'_> {
    #[inline]
    fn json<T: Serialize + ?Sized>(self, v: &T) -> Result<(), CanonicalError> {
        serde_json::to_writer(self.out, v).map_err(CanonicalError::json)
    }

    fn raw(self, s: &str) -> Result<(), CanonicalError> {
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn key_without_value() -> CanonicalError {
    CanonicalError("map key serialized without its value".into())
}

fn key_must_be_a_string() -> CanonicalError {
    CanonicalError("key must be a string".into())
}

fn float_key_must_be_finite() -> CanonicalError {
    CanonicalError("float key must be finite (got NaN or +/-inf)".into())
}

impl ser::Serializer for KeySerializer<'_> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Impossible<(), CanonicalError>;
    type SerializeTuple = Impossible<(), CanonicalError>;
    type SerializeTupleStruct = Impossible<(), CanonicalError>;
    type SerializeTupleVariant = Impossible<(), CanonicalError>;
    type SerializeMap = Impossible<(), CanonicalError>;
    type SerializeStruct = Impossible<(), CanonicalError>;
    type SerializeStructVariant = Impossible<(), CanonicalError>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.raw(if v { "true" } else { "false" })
    }

    // Integers print as digits, the same in a key and in serde_json's
    // integer writer (itoa).
    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        self.raw(itoa::Buffer::new().format(v))
    }

    // Unlike values, float keys are formatted at their own width: an f32 key
    // 0.1 stays "0.1", as in serde_json.
    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        if v.is_finite() {
            self.json(&v)
        } else {
            Err(float_key_must_be_finite())
        }
    }

    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        if v.is_finite() {
            self.json(&v)
        } else {
            Err(float_key_must_be_finite())
        }
    }

    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        self.raw(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        self.raw(v)
    }

    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        self.serialize_str(&displayed(value)?)
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_none(self) -> Result<(), CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit(self) -> Result<(), CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.raw(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        value.serialize(KeySerializer {
            out: self.out,
            depth,
        })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, CanonicalError> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::ser::SerializeMap as _;
    use serde::{Serialize, Serializer};
    use serde_json::json;

    use super::to_canonical_json;

    fn canon<T: Serialize + ?Sized>(v: &T) -> Result<String, super::CanonicalError> {
        let mut out = Vec::new();
        to_canonical_json(v, &mut out)?;
        Ok(String::from_utf8(out).expect("canonical JSON is UTF-8"))
    }

    fn reference<T: Serialize + ?Sized>(v: &T) -> String {
        serde_json::to_string(&serde_json::to_value(v).expect("to_value")).expect("to_string")
    }

    /// Asserts identical output to serde_json's `to_value` then `to_string`,
    /// and returns it.
    #[track_caller]
    fn same<T: Serialize + ?Sized>(v: &T) -> String {
        let ours = canon(v).expect("canonical");
        assert_eq!(ours, reference(v));
        ours
    }

    /// The word-at-a-time scan agrees with the byte-at-a-time rule at
    /// every length and position, for every byte value.
    #[test]
    fn escape_scan_matches_the_rule() {
        let rule = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in 0..40 {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[pos] = b;
                    assert_eq!(super::needs_escape(&s), rule(&s), "{len} {pos} {b}");
                }
            }
            let plain: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(!super::needs_escape(&plain));
        }
        // Multi-byte UTF-8 needs no escape.
        assert!(!super::needs_escape("é€😀 ünïcødé ✓".as_bytes()));
    }

    #[test]
    fn primitives() {
        same(&true);
        same(&false);
        for v in [i8::MIN, -1, 0, 1, i8::MAX] {
            same(&v);
        }
        for v in [i16::MIN, -1, 0, i16::MAX] {
            same(&v);
        }
        for v in [i32::MIN, -1, 0, i32::MAX] {
            same(&v);
        }
        for v in [i64::MIN, -1, 0, i64::MAX] {
            same(&v);
        }
        for v in [0u8, u8::MAX] {
            same(&v);
        }
        for v in [0u16, u16::MAX] {
            same(&v);
        }
        for v in [0u32, u32::MAX] {
            same(&v);
        }
        for v in [0u64, u64::MAX] {
            same(&v);
        }
        for v in [0i128, -1, i128::from(i64::MIN), i128::from(u64::MAX)] {
            same(&v);
        }
        for v in [0u128, u128::from(u64::MAX)] {
            same(&v);
        }
        for v in [
            0.0f64,
            -0.0,
            1.0,
            0.1,
            -1.5e-300,
            1e20,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            same(&v);
        }
        for v in [
            0.0f32,
            -0.0,
            1.0,
            0.1,
            3.4e38,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
        ] {
            // As the f64 of its shortest decimal (see the module's
            // departures from `to_value`).
            let decimal: f64 = v.to_string().parse().unwrap();
            assert_eq!(canon(&v).unwrap(), canon(&decimal).unwrap());
        }
        assert_eq!(canon(&0.1f32).unwrap(), "0.1");
        same(&'a');
        same(&'"');
        same(&'\u{0}');
        same(&'é');
        same(&'😀');
        assert_eq!(same(&()), "null");
        same("");
    }

    /// Nesting past [`super::MAX_DEPTH`] is an error, even when the
    /// `Serialize` swallows it; a failing `Display` is an error, not a
    /// panic.
    #[test]
    fn depth_and_display_failures_are_errors() {
        use serde::ser::SerializeSeq;
        let nest =
            |depth: u32| (0..depth).fold(serde_json::json!(0), |v, _| serde_json::json!([v]));
        assert!(canon(&nest(super::MAX_DEPTH)).is_ok());
        let err = canon(&(nest(super::MAX_DEPTH),)).unwrap_err();
        assert!(err.to_string().contains("128 levels"), "{err}");
        assert!(canon(&Some(nest(super::MAX_DEPTH))).is_err());
        struct Swallows<T>(T);
        impl<T: Serialize> Serialize for Swallows<T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                let _ = seq.serialize_element(&self.0);
                seq.serialize_element(&1)?;
                seq.end()
            }
        }
        assert!(canon(&Swallows(nest(super::MAX_DEPTH + 3))).is_err());
        // Any error a swallowing `Serialize` ignored, not only depth.
        assert!(canon(&Swallows(f64::NAN)).is_err());
        assert!(canon(&Swallows(std::collections::BTreeMap::from([((1, 2), 3)]))).is_err());
        assert_eq!(canon(&Swallows(nest(3))).unwrap(), "[[[[0]]],1]");
        struct Broken;
        impl std::fmt::Display for Broken {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                Err(std::fmt::Error)
            }
        }
        impl Serialize for Broken {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        assert!(canon(&Broken).is_err());
        assert!(canon(&std::collections::BTreeMap::from([(1, Broken)])).is_err());
    }

    /// `to_value` rejects 128-bit integers outside the 64-bit range; we write
    /// their digits, which nothing else spells (a float always has `.` or
    /// `e`).
    #[test]
    fn wide_integers_are_digits() {
        assert!(serde_json::to_value(u128::MAX).is_err());
        assert_eq!(canon(&u128::MAX).unwrap(), u128::MAX.to_string());
        assert_eq!(canon(&i128::MIN).unwrap(), i128::MIN.to_string());
        assert_eq!(
            canon(&(u128::from(u64::MAX) + 1)).unwrap(),
            "18446744073709551616"
        );
        assert_eq!(
            canon(&1.8446744073709552e19f64).unwrap(),
            "1.8446744073709552e+19"
        );
    }

    #[test]
    fn strings_need_escapes() {
        for s in [
            "plain",
            "quote \" and backslash \\ and slash /",
            "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "unicode é ü 中文 😀 \u{2028}\u{2029}\u{feff}",
            "</script>",
        ] {
            same(s);
            same(&s.to_owned());
            let mut m = HashMap::new();
            m.insert(s, s);
            m.insert("z", "y");
            m.insert("\u{1}", "ctrl");
            m.insert("A", "upper");
            m.insert("\\", "bs");
            same(&m);
        }
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct Newtype(u32);

    #[derive(Serialize)]
    struct Pair(i32, &'static str);

    #[derive(Serialize)]
    struct Inner {
        zeta: Vec<u8>,
        alpha: Option<String>,
        mid: (u8, char),
    }

    #[derive(Serialize)]
    struct Outer {
        z: Inner,
        b: Vec<Inner>,
        #[serde(rename = "A")]
        renamed: bool,
        a: Unit,
        n: Newtype,
        p: Pair,
        e: Vec<Kind>,
        empty: BTreeMap<String, u8>,
    }

    #[derive(Serialize)]
    enum Kind {
        Unit,
        Newtype(Inner),
        Tuple(u8, Inner, Option<u8>),
        Struct {
            y: u8,
            x: Inner,
            w: Vec<Kind>,
        },
        #[serde(rename = "renamed \"variant\"")]
        Renamed,
    }

    fn inner(n: u8) -> Inner {
        Inner {
            zeta: vec![n, n.wrapping_add(1)],
            alpha: (n % 2 == 0).then(|| format!("a{n}")),
            mid: (n, 'm'),
        }
    }

    fn outer() -> Outer {
        Outer {
            z: inner(1),
            b: vec![inner(2), inner(3)],
            renamed: true,
            a: Unit,
            n: Newtype(7),
            p: Pair(-3, "p"),
            e: vec![
                Kind::Unit,
                Kind::Newtype(inner(4)),
                Kind::Tuple(5, inner(6), None),
                Kind::Struct {
                    y: 1,
                    x: inner(8),
                    w: vec![Kind::Unit, Kind::Renamed, Kind::Newtype(inner(9))],
                },
                Kind::Renamed,
            ],
            empty: BTreeMap::new(),
        }
    }

    #[test]
    fn structs_and_enums() {
        let s = same(&inner(2));
        assert_eq!(s, r#"{"alpha":"a2","mid":[2,"m"],"zeta":[2,3]}"#);
        same(&outer());
        same(&Unit);
        same(&Newtype(3));
        same(&Pair(1, "x"));
        same(&Kind::Unit);
        same(&Kind::Newtype(inner(0)));
        same(&Kind::Tuple(1, inner(1), Some(2)));
        same(&Kind::Struct {
            y: 0,
            x: inner(0),
            w: vec![],
        });
        same(&Kind::Renamed);
        same(&Some(outer()));
        same(&None::<Outer>);
        same(&(1u8, "two", 3.0f64, Unit, (), Some(Kind::Unit)));
        same(&vec![outer(), outer()]);
    }

    #[test]
    fn bytes_and_collections() {
        let bytes: &[u8] = &[0, 1, 127, 128, 255];
        same(bytes);
        same(&bytes.to_vec());
        same(&[1u8; 3]);
        same(&Vec::<u8>::new());
        same(&vec![vec![1u8], vec![]]);
        same(&std::collections::BTreeSet::from([3, 1, 2]));

        // The `serialize_bytes` path itself (serde_bytes is not available).
        struct Raw(&'static [u8]);
        impl Serialize for Raw {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        assert_eq!(same(&Raw(&[1, 2, 255])), "[1,2,255]");
        same(&Raw(&[]));
    }

    #[test]
    fn maps_of_every_key_kind() {
        let m: HashMap<String, u8> = (0..30).map(|i| (format!("k{i}"), i)).collect();
        same(&m);
        let m: HashMap<i64, &str> = [(-10, "a"), (2, "b"), (10, "c"), (-2, "d"), (1, "e")]
            .into_iter()
            .collect();
        // Integer keys sort as strings, as serde_json does.
        assert_eq!(same(&m), r#"{"-10":"a","-2":"d","1":"e","10":"c","2":"b"}"#);
        let m: BTreeMap<u128, u8> = [(u128::MAX, 1), (0, 2)].into_iter().collect();
        same(&m);
        let m: BTreeMap<i128, u8> = [(i128::MIN, 1), (0, 2)].into_iter().collect();
        same(&m);
        same(&BTreeMap::from([(true, 1), (false, 0)]));
        same(&BTreeMap::from([('b', 1), ('a', 0), ('"', 2)]));
        same(&BTreeMap::from([(Newtype(10), 1), (Newtype(9), 0)]));
        same(&BTreeMap::from([(1u8, 1), (2, 0)]));
        same(&BTreeMap::from([(1u16, 1)]));
        same(&BTreeMap::from([(1u32, 1)]));
        same(&BTreeMap::from([(1u64, 1)]));
        same(&BTreeMap::from([(1i8, 1)]));
        same(&BTreeMap::from([(1i16, 1)]));
        same(&BTreeMap::from([(1i32, 1)]));

        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum K {
            B,
            A,
        }
        same(&BTreeMap::from([(K::B, 1), (K::A, 2)]));

        // Nested maps, maps inside sequences and structs.
        type Leaf = BTreeMap<String, Option<u8>>;
        let mut nested: HashMap<String, HashMap<i64, Vec<Leaf>>> = HashMap::new();
        for i in 0..5 {
            let mut inner = HashMap::new();
            for j in 0..4 {
                let v = (0..3)
                    .map(|k| BTreeMap::from([(format!("x{k}"), Some(k)), ("a".into(), None)]))
                    .collect();
                inner.insert(i * 10 + j, v);
            }
            nested.insert(format!("outer{i}"), inner);
        }
        same(&nested);
    }

    /// Float keys: to_value formats an f32 key at f32 width.
    #[test]
    fn float_keys() {
        struct FloatKeys;
        impl Serialize for FloatKeys {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry(&0.1f32, &1)?;
                m.serialize_entry(&0.25f64, &2)?;
                m.serialize_entry(&-3.0f64, &3)?;
                m.end()
            }
        }
        assert_eq!(same(&FloatKeys), r#"{"-3.0":3,"0.1":1,"0.25":2}"#);
        struct NanKey;
        impl Serialize for NanKey {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry(&f64::NAN, &1)?;
                m.end()
            }
        }
        assert!(serde_json::to_value(NanKey).is_err());
        assert!(canon(&NanKey).is_err());
    }

    #[test]
    fn unsupported_map_keys_fail_like_serde_json() {
        fn both_fail<T: Serialize>(v: &T) {
            assert!(serde_json::to_value(v).is_err());
            assert!(canon(v).is_err());
        }
        both_fail(&BTreeMap::from([(Some(1), 1)]));
        both_fail(&BTreeMap::from([((), 1)]));
        both_fail(&BTreeMap::from([((1, 2), 1)]));
        both_fail(&BTreeMap::from([(vec![1], 1)]));
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum K {
            N(u8),
        }
        both_fail(&BTreeMap::from([(K::N(1), 1)]));
    }

    #[test]
    fn flatten_and_rename() {
        #[derive(Serialize)]
        struct Flat {
            zz: u8,
            #[serde(flatten)]
            extra: HashMap<String, serde_json::Value>,
            #[serde(flatten)]
            more: Inner,
            #[serde(rename = "0first")]
            first: u8,
        }
        let extra = (0..10)
            .map(|i| {
                (
                    format!("e{i}"),
                    json!({"b": [i, {"d": 1, "c": 2}], "a": null}),
                )
            })
            .collect();
        same(&Flat {
            zz: 1,
            extra,
            more: inner(3),
            first: 0,
        });

        #[derive(Serialize)]
        #[serde(tag = "type")]
        enum Internal {
            B { z: u8, a: u8 },
        }
        same(&Internal::B { z: 1, a: 2 });

        #[derive(Serialize)]
        #[serde(tag = "t", content = "c")]
        enum Adjacent {
            V(Inner),
        }
        same(&Adjacent::V(inner(1)));

        #[derive(Serialize)]
        #[serde(untagged)]
        enum Untagged {
            S { b: u8, a: u8 },
        }
        same(&Untagged::S { b: 1, a: 2 });
    }

    #[test]
    fn json_values() {
        let v = json!({
            "z": [1, {"y": 2, "x": [{"b": 1, "a": 2}]}, "s", null, true, 1.5, -7],
            "a": {"c": {}, "b": [], "a": {"z": "\u{1}", "\u{1}": "z"}},
            "m": "é\"\\\n",
        });
        same(&v);
        same(&vec![v.clone(), json!([v])]);
    }

    /// serde_json keeps the last value of a repeated key (a `BTreeMap`
    /// insert); a key made so would drop a value, so it is an error, at any
    /// depth, whichever order the entries come in.
    #[test]
    fn repeated_keys_are_an_error() {
        struct Dup(&'static [&'static str]);
        impl Serialize for Dup {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                for (i, k) in self.0.iter().enumerate() {
                    m.serialize_entry(k, &i)?;
                }
                m.end()
            }
        }
        for keys in [&["b", "a", "b"][..], &["a", "a"], &["a", "b", "c", "a"]] {
            let err = canon(&Dup(keys)).unwrap_err();
            assert!(err.to_string().contains("repeated key"), "{keys:?}: {err}");
            assert!(canon(&vec![json!(1), json!({"x": [1]})]).is_ok());
        }
        assert!(canon(&json!([{"x": 1}])).is_ok());
        let nested = vec![(1u8, Dup(&["k", "k"]))];
        assert!(canon(&nested).is_err(), "nested");
        assert_eq!(same(&Dup(&["b", "a"])), r#"{"a":1,"b":0}"#);

        // The case that made two arguments share a key: a flattened map
        // holding a field's name.
        #[derive(Serialize)]
        struct FlatDup {
            a: u8,
            #[serde(flatten)]
            m: BTreeMap<&'static str, u8>,
        }
        for a in [1, 2] {
            let err = canon(&FlatDup {
                a,
                m: BTreeMap::from([("a", 7), ("b", 3)]),
            });
            assert!(err.is_err(), "{a}");
        }
        same(&FlatDup {
            a: 1,
            m: BTreeMap::from([("b", 3)]),
        });
    }

    #[test]
    fn hashmap_order_does_not_matter() {
        let forward: HashMap<String, (u32, Vec<u32>)> = (0..100)
            .map(|i| (format!("key-{i}"), (i, vec![i; 2])))
            .collect();
        let mut backward = HashMap::with_capacity(7);
        for i in (0..100).rev() {
            backward.insert(format!("key-{i}"), (i, vec![i; 2]));
        }
        let a = canon(&forward).unwrap();
        let b = canon(&backward).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, reference(&forward));
    }

    #[test]
    fn non_finite_floats_fail() {
        #[derive(Serialize)]
        struct S32 {
            ok: u8,
            x: f32,
        }
        #[derive(Serialize)]
        struct S64 {
            ok: u8,
            x: f64,
        }
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(canon(&f).is_err(), "{f}");
            assert!(canon(&S64 { ok: 1, x: f }).is_err(), "{f}");
            assert!(canon(&vec![1.0, f]).is_err(), "{f}");
            assert!(canon(&Some(f)).is_err(), "{f}");
        }
        for f in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(canon(&f).is_err(), "{f}");
            assert!(canon(&S32 { ok: 1, x: f }).is_err(), "{f}");
            assert!(canon(&vec![1.0, f]).is_err(), "{f}");
        }
        assert_eq!(canon(&None::<f64>).unwrap(), "null");
        assert_eq!(
            canon(&S64 { ok: 1, x: 2.0 }).unwrap(),
            r#"{"ok":1,"x":2.0}"#
        );
    }

    #[test]
    fn error_leaves_output_untouched() {
        let mut out = b"prefix".to_vec();
        let err = to_canonical_json(&BTreeMap::from([("a", vec![1.0, f64::NAN])]), &mut out);
        assert!(err.is_err());
        assert_eq!(out, b"prefix");
        to_canonical_json(&[1], &mut out).unwrap();
        assert_eq!(out, b"prefix[1]");
    }

    #[test]
    fn failing_serialize_reports_its_message() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope, not today"))
            }
        }
        let err = canon(&(1, vec![Fails])).unwrap_err();
        assert_eq!(err.to_string(), "nope, not today");
    }

    /// What serde_json's `arbitrary_precision` / `raw_value` features make of
    /// a `Number` / `RawValue` (not enabled in this build, so simulated):
    /// read back as JSON, as `to_value` does with those features on.
    #[test]
    fn serde_json_private_tokens() {
        use serde::ser::SerializeStruct as _;
        struct Tok(&'static str, &'static str);
        impl Serialize for Tok {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut st = s.serialize_struct(self.0, 1)?;
                st.serialize_field(self.0, self.1)?;
                st.end()
            }
        }
        let number = Tok("$serde_json::private::Number", "12.50");
        assert_eq!(canon(&[&number]).unwrap(), "[12.50]");
        let raw = Tok(
            "$serde_json::private::RawValue",
            r#" {"b": 1, "a": [{"d": 2, "c": "\u0041"}]} "#,
        );
        assert_eq!(
            canon(&BTreeMap::from([("k", &raw)])).unwrap(),
            r#"{"k":{"a":[{"c":"A","d":2}],"b":1}}"#
        );
        let err = canon(&Tok("$serde_json::private::RawValue", "[1e400]")).unwrap_err();
        assert!(!err.to_string().contains("repeated key"), "{err}");
        assert!(canon(&Tok("$serde_json::private::RawValue", "{")).is_err());
        // A repeated key is an error, as in any other object: read as a
        // `Value`, `{"a":1,"a":2}` would key as `{"a":2}`.
        for text in [r#"{"a":1,"a":2}"#, r#"[{"b":{"a":1,"a":1}}]"#] {
            let err = canon(&Tok("$serde_json::private::RawValue", text)).unwrap_err();
            assert!(err.to_string().contains("repeated key"), "{err}");
        }
        let escaped = Tok("$serde_json::private::RawValue", r#"{"a":1,"\u0061":2}"#);
        assert!(canon(&escaped).is_err());
        let backslash = Tok("$serde_json::private::RawValue", r#"{"a":1,"\\u0061":2}"#);
        assert_eq!(canon(&backslash).unwrap(), r#"{"\\u0061":2,"a":1}"#);
        assert!(canon(&Tok(
            "$serde_json::private::RawValue",
            r#"{"a":1,"b":{"a":1}}"#
        ))
        .is_ok());
        // Any other struct name is a plain struct.
        assert_eq!(canon(&Tok("Number", "1")).unwrap(), r#"{"Number":"1"}"#);
    }

    /// Keys that tie on the 8-byte prefix used to speed up sorting.
    #[test]
    fn keys_sharing_prefixes() {
        let keys = [
            "",
            "a",
            "a\0",
            "a\0\0",
            "ab",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\0",
            "abcdefgh\0\0",
            "abcdefg",
            "abcdefgz",
            "\u{7f}",
            "\u{80}",
            "é",
            "\u{ffff}",
            "😀",
            "\"",
            "\\",
            "\n",
        ];
        let m: HashMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        same(&m);
        let rev: HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .rev()
            .map(|(i, k)| (*k, i))
            .collect();
        assert_eq!(canon(&m).unwrap(), canon(&rev).unwrap());
    }

    /// Serializes a `Value` with every object's entries in a scrambled order,
    /// as a `HashMap` would.
    struct Scrambled<'a>(&'a serde_json::Value, u64);

    impl Serialize for Scrambled<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq as _;
            match self.0 {
                serde_json::Value::Object(map) => {
                    let mut entries: Vec<_> = map.iter().collect();
                    let n = entries.len().max(1);
                    entries.rotate_left((self.1 as usize) % n);
                    if self.1 & 1 == 1 {
                        entries.reverse();
                    }
                    let mut m = s.serialize_map(None)?;
                    for (i, (k, v)) in entries.into_iter().enumerate() {
                        m.serialize_entry(k, &Scrambled(v, self.1.wrapping_mul(31) + i as u64))?;
                    }
                    m.end()
                }
                serde_json::Value::Array(items) => {
                    let mut seq = s.serialize_seq(Some(items.len()))?;
                    for (i, v) in items.iter().enumerate() {
                        seq.serialize_element(&Scrambled(v, self.1.wrapping_add(i as u64)))?;
                    }
                    seq.end()
                }
                other => other.serialize(s),
            }
        }
    }

    /// xorshift64: deterministic pseudo-random values without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn string(&mut self) -> String {
            const PIECES: [&str; 12] = [
                "a", "b", "ab", "\0", "\"", "\\", "\n", "\u{1f}", "é", "😀", "abcdefgh", "\u{7f}",
            ];
            (0..self.below(5))
                .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
                .collect()
        }

        fn value(&mut self, depth: u32) -> serde_json::Value {
            use serde_json::Value;
            // Half of the values are containers while depth remains.
            let kind = if depth > 0 && self.next() & 1 == 0 {
                6 + self.below(3)
            } else {
                self.below(6)
            };
            match kind {
                0 => Value::Null,
                1 => Value::Bool(self.next() & 1 == 1),
                2 => Value::from(self.next()),
                3 => Value::from(self.next() as i64),
                4 => {
                    let f = f64::from_bits(self.next());
                    if f.is_finite() {
                        Value::from(f)
                    } else {
                        Value::from(self.below(1000) as f64 / 7.0)
                    }
                }
                5 => Value::String(self.string()),
                6 => (0..self.below(4)).map(|_| self.value(depth - 1)).collect(),
                _ => Value::Object(
                    (0..self.below(6))
                        .map(|_| (self.string(), self.value(depth - 1)))
                        .collect(),
                ),
            }
        }
    }

    #[test]
    fn random_values_in_scrambled_order() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut nested_objects = 0;
        for round in 0..2000 {
            let v = rng.value(4);
            let expected = reference(&v);
            nested_objects += usize::from(expected.matches(":{").count() >= 2);
            assert_eq!(canon(&v).unwrap(), expected);
            assert_eq!(canon(&Scrambled(&v, round)).unwrap(), expected, "{v}");
        }
        assert!(
            nested_objects > 50,
            "generator too shallow: {nested_objects}"
        );
    }

    /// Rough timing: `cargo test --release -p cached-runtime --lib
    /// key::canonical::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run by hand in release"]
    fn timing() {
        #[derive(Serialize)]
        struct Query {
            user_id: u64,
            term: String,
            page: u32,
            filters: Vec<&'static str>,
            exact: bool,
        }
        let q = Query {
            user_id: 123_456,
            term: "rust serde".into(),
            page: 2,
            filters: vec!["lang:en", "recent"],
            exact: false,
        };
        let salt = [7u8; 32];
        // Best of a few rounds: the machine is shared.
        fn best_ns(mut f: impl FnMut()) -> u128 {
            let n = 200_000u32;
            (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    for _ in 0..n {
                        f();
                    }
                    t.elapsed().as_nanos() / u128::from(n)
                })
                .min()
                .unwrap_or_default()
        }
        let mut out = Vec::with_capacity(128);
        let canon_ns = best_ns(|| {
            out.clear();
            to_canonical_json(std::hint::black_box(&q), &mut out).unwrap();
            std::hint::black_box(&out);
        });
        let key_ns = best_ns(|| {
            std::hint::black_box(super::super::hash_segment(&salt, std::hint::black_box(&q)))
                .unwrap();
        });
        let plain_ns = best_ns(|| {
            out.clear();
            serde_json::to_writer(&mut out, std::hint::black_box(&q)).unwrap();
            std::hint::black_box(&out);
        });
        let ref_ns = best_ns(|| {
            std::hint::black_box(reference(std::hint::black_box(&q)));
        });
        println!(
            "canonical JSON {canon_ns} ns, hash_segment {key_ns} ns, \
             unsorted serde_json::to_writer {plain_ns} ns, \
             to_value+to_string {ref_ns} ns ({})",
            canon(&q).unwrap()
        );
    }
}
