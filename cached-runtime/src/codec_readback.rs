//! Whether a value read back from bincode is the value that was written.
//!
//! bincode writes no field names, no field counts and no variant names, so
//! a reader takes as many fields as its type declares, in its order, and a
//! variant by its position among the variants it reads. Whenever what a
//! type writes and what it reads disagree (a field that `skip_serializing_if`
//! left out, `skip_serializing` on one field and `skip_deserializing` on
//! another, a skipped variant, `#[serde(into)]` writing fields in another
//! order), the reader takes some bytes for something else and, when they
//! happen to parse, returns another value without an error.
//!
//! So [`same`] serializes the value written and the value read back and
//! compares what they serialize: every call, tagged, with its names and
//! values, hashed (one 128-bit XXH3 under a secret drawn at random for the
//! process, fed a few KiB at a time, so a check holds no copy of the value
//! and no one can choose bytes that make two walks agree); a map as the sum
//! of its entries' hashes, so that a `HashMap` that iterates in another
//! order once read back still counts as the same (its entries keep their
//! pairs, so a misread that moves values between entries still shows). A
//! value whose serialization does not come back the same is not stored as
//! bincode.
//!
//! Sequences count in order. A `HashSet` iterates in another order once
//! read back, so values holding one go to JSON; taking sequences in any
//! order would let through a misread that permutes elements (fields written
//! in another order swap `(1, 2)` and `(2, 1)` within one `Vec`).
//!
//! The walk is a serializer that writes nothing: the same view of the value
//! as bincode's (`is_human_readable` is false).

use std::fmt;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use serde::ser::{self, Serialize, Serializer};
use xxhash_rust::xxh3::{xxh3_128_with_secret, Xxh3};

/// Whether `back` (read back) serializes as `value` (written) does, map
/// entries in any order. `Err` when either's `Serialize` fails.
pub(crate) fn same<T: Serialize + ?Sized>(
    value: &T,
    back: &T,
) -> Result<bool, crate::codec::CodecError> {
    same_in(value, back, false)
}

/// [`same`] for a value read back from JSON, whose sequences count in any
/// order too: JSON keeps an array's order, so only a `HashSet` (which
/// iterates in another order once read back) moves elements, never a
/// misread. What it catches is what JSON writes alike for two values:
/// `Some(x)` where `x` is written `null` (`Some(Value::Null)`, `Some(None)`)
/// reads back as `None`; an untagged enum's variant whose contents another
/// reads (`Int(5)` comes back `Float(5.0)`); a field skipped on read only.
/// Not untagged variants whose contents are of one type: serde gives the
/// serializer no variant for them, so both walks are the same.
pub(crate) fn same_in_any_order<T: Serialize + ?Sized>(
    value: &T,
    back: &T,
) -> Result<bool, crate::codec::CodecError> {
    same_in(value, back, true)
}

fn same_in<T: Serialize + ?Sized>(
    value: &T,
    back: &T,
    any_order: bool,
) -> Result<bool, crate::codec::CodecError> {
    let digest = |v: &T| {
        let mut out = Stream::with_chunk();
        out.any_order = any_order;
        walk_into(&mut out, v).map_err(|e| {
            crate::codec::CodecError::Encode(format!("checking the read-back: {e}"))
        })?;
        Ok::<_, crate::codec::CodecError>(out.finish())
    };
    Ok(digest(value)? == digest(back)?)
}

/// A serializer's failure during the walk. A `Box<str>` rather than a
/// `String`: every call of the walk returns a `Result<_, WalkError>`, and
/// at two words it comes back in registers rather than through memory.
#[derive(Debug)]
pub(crate) struct WalkError(Box<str>);

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        WalkError(crate::codec::bounded_message(msg).into())
    }
}

/// A 128-bit XXH3 of what a value serializes, under [`secret`]: 128 bits
/// keep a chance agreement out of the question.
type Sum = u128;

/// The length of the secret `Xxh3::with_secret` takes.
const SECRET_LEN: usize = 192;

/// The hash's secret, drawn once per process. Hashes compare within one
/// process only, so nothing needs them stable; a secret no one knows keeps
/// anyone from choosing bytes (say, at the end of a cached upload) that
/// cancel what came before them, as they could under a published one.
fn secret() -> &'static [u8; SECRET_LEN] {
    static SECRET: OnceLock<[u8; SECRET_LEN]> = OnceLock::new();
    SECRET.get_or_init(|| {
        // std's `RandomState` carries keys from the OS's randomness.
        let keys = std::collections::hash_map::RandomState::new();
        let mut secret = [0u8; SECRET_LEN];
        for (i, word) in secret.chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&keys.hash_one(i).to_le_bytes());
        }
        secret
    })
}

/// Feeds what `value` serializes to `h`.
fn walk_into<T: Serialize + ?Sized>(h: &mut Stream, value: &T) -> Done {
    value.serialize(&mut Walk { h })
}

/// Hashes summed, so that their order does not count: a map's entries.
#[derive(Default)]
struct Entries {
    sum: Sum,
    count: u64,
}

impl Entries {
    fn add(&mut self, hash: Sum) {
        self.sum = self.sum.wrapping_add(hash);
        self.count += 1;
    }
}

/// What a value serializes, gathered a chunk at a time and hashed once per
/// chunk (one pass of XXH3 over long runs of bytes is far cheaper than a
/// hasher call per serializer call).
struct Stream {
    chunk: Vec<u8>,
    /// The chunks hashed so far, once the stream has outgrown one chunk.
    spilled: Option<Box<Xxh3>>,
    /// Whether sequences count in any order (see [`same_in_any_order`]),
    /// at every depth.
    any_order: bool,
}

impl Stream {
    /// Bytes gathered before they are hashed.
    const CHUNK: usize = 4096;

    /// A stream whose chunk grows as needed: a map entry's, mostly a few
    /// bytes.
    fn new(any_order: bool) -> Self {
        Stream {
            chunk: Vec::new(),
            spilled: None,
            any_order,
        }
    }

    /// A whole value's stream, its chunk allocated once.
    fn with_chunk() -> Self {
        Stream {
            chunk: Vec::with_capacity(Self::CHUNK),
            spilled: None,
            any_order: false,
        }
    }

    /// The hash so far, and a fresh start that keeps the chunk's memory
    /// (one per map entry).
    fn take(&mut self) -> Sum {
        let sum = match &mut self.spilled {
            // Most streams never fill a chunk: one call hashes them whole.
            None => xxh3_128_with_secret(&self.chunk, secret()),
            Some(hasher) => {
                hasher.update(&self.chunk);
                let sum = hasher.digest128();
                hasher.reset();
                sum
            }
        };
        self.chunk.clear();
        sum
    }

    fn finish(mut self) -> Sum {
        self.take()
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if self.chunk.len() + bytes.len() > Self::CHUNK {
            self.spill(bytes);
        } else {
            self.chunk.extend_from_slice(bytes);
        }
    }

    /// Hashes the full chunk (and `bytes`, when they would not fit in
    /// one), keeping the state for what follows.
    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        let hasher = self
            .spilled
            .get_or_insert_with(|| Box::new(Xxh3::with_secret(*secret())));
        hasher.update(&self.chunk);
        self.chunk.clear();
        if bytes.len() > Self::CHUNK {
            hasher.update(bytes);
        } else {
            self.chunk.extend_from_slice(bytes);
        }
    }

    #[inline]
    fn u8(&mut self, v: u8) {
        if self.chunk.len() < Self::CHUNK {
            self.chunk.push(v);
        } else {
            self.spill(&[v]);
        }
    }

    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }

    /// An integer behind its tag: eight bytes when it fits in 64 bits (the
    /// tag says which), sixteen otherwise, so each value has one encoding.
    fn int(&mut self, short: Tag, long: Tag, v: u128, fits: bool) {
        if fits {
            self.tag(short);
            self.u64(v as u64);
        } else {
            self.tag(long);
            self.put(&v.to_le_bytes());
        }
    }

    /// A name serde gives (a type's, a field's, a variant's): `'static`,
    /// and the same in both walks, which compare within one process, so its
    /// address and length stand for its bytes (names at two addresses only
    /// tell apart more, never less).
    fn name(&mut self, name: &'static str) {
        self.u64(name.as_ptr() as u64);
        self.u64(name.len() as u64);
    }

    /// Bytes behind their length, so that neighbours cannot trade bytes.
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.put(v);
    }

    fn tag(&mut self, tag: Tag) {
        self.u8(tag as u8);
    }

    fn entries(&mut self, hashes: &Entries) {
        self.u64(hashes.count);
        self.put(&hashes.sum.to_le_bytes());
    }
}

/// What each serializer call writes first.
#[derive(Clone, Copy)]
enum Tag {
    Bool,
    Int,
    Int128,
    Uint,
    Uint128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    None,
    Some,
    Unit,
    UnitStruct,
    UnitVariant,
    NewtypeStruct,
    NewtypeVariant,
    Seq,
    Tuple,
    TupleStruct,
    TupleVariant,
    Map,
    Struct,
    StructVariant,
    Field,
    End,
}

struct Walk<'h> {
    h: &'h mut Stream,
}

impl Walk<'_> {
    fn variant(&mut self, tag: Tag, name: &'static str, index: u32, variant: &'static str) {
        self.h.tag(tag);
        self.h.name(name);
        self.h.u64(u64::from(index));
        self.h.name(variant);
    }
}

type Done = Result<(), WalkError>;

impl<'a, 'h> Serializer for &'a mut Walk<'h> {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = SeqWalk<'a, 'h>;
    type SerializeTuple = &'a mut Walk<'h>;
    type SerializeTupleStruct = &'a mut Walk<'h>;
    type SerializeTupleVariant = &'a mut Walk<'h>;
    type SerializeMap = MapWalk<'a, 'h>;
    type SerializeStruct = &'a mut Walk<'h>;
    type SerializeStructVariant = &'a mut Walk<'h>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Done {
        self.h.tag(Tag::Bool);
        self.h.u8(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Done {
        self.serialize_i128(i128::from(v))
    }
    fn serialize_i16(self, v: i16) -> Done {
        self.serialize_i128(i128::from(v))
    }
    fn serialize_i32(self, v: i32) -> Done {
        self.serialize_i128(i128::from(v))
    }
    fn serialize_i64(self, v: i64) -> Done {
        self.serialize_i128(i128::from(v))
    }
    fn serialize_i128(self, v: i128) -> Done {
        let fits = i64::try_from(v).is_ok();
        self.h.int(Tag::Int, Tag::Int128, v as u128, fits);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Done {
        self.serialize_u128(u128::from(v))
    }
    fn serialize_u16(self, v: u16) -> Done {
        self.serialize_u128(u128::from(v))
    }
    fn serialize_u32(self, v: u32) -> Done {
        self.serialize_u128(u128::from(v))
    }
    fn serialize_u64(self, v: u64) -> Done {
        self.serialize_u128(u128::from(v))
    }
    fn serialize_u128(self, v: u128) -> Done {
        let fits = u64::try_from(v).is_ok();
        self.h.int(Tag::Uint, Tag::Uint128, v, fits);
        Ok(())
    }
    // Floats by their bits: a NaN read back is the same NaN.
    fn serialize_f32(self, v: f32) -> Done {
        self.h.tag(Tag::F32);
        self.h.u64(u64::from(v.to_bits()));
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Done {
        self.h.tag(Tag::F64);
        self.h.u64(v.to_bits());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Done {
        self.h.tag(Tag::Char);
        self.h.u64(u64::from(v));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Done {
        self.h.tag(Tag::Str);
        self.h.bytes(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Done {
        self.h.tag(Tag::Bytes);
        self.h.bytes(v);
        Ok(())
    }
    fn serialize_none(self) -> Done {
        self.h.tag(Tag::None);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
        self.h.tag(Tag::Some);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        self.h.tag(Tag::Unit);
        Ok(())
    }
    fn serialize_unit_struct(self, name: &'static str) -> Done {
        self.h.tag(Tag::UnitStruct);
        self.h.name(name);
        Ok(())
    }
    fn serialize_unit_variant(self, name: &'static str, index: u32, variant: &'static str) -> Done {
        self.variant(Tag::UnitVariant, name, index, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Done {
        self.h.tag(Tag::NewtypeStruct);
        self.h.name(name);
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Done {
        self.variant(Tag::NewtypeVariant, name, index, variant);
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqWalk<'a, 'h>, WalkError> {
        self.h.tag(Tag::Seq);
        self.h.u64(len.map_or(u64::MAX, |n| n as u64));
        let any_order = self.h.any_order;
        Ok(SeqWalk {
            walk: self,
            any_order: any_order.then(|| (Entries::default(), Stream::new(true))),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, WalkError> {
        self.h.tag(Tag::Tuple);
        self.h.u64(len as u64);
        Ok(self)
    }
    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Self, WalkError> {
        self.h.tag(Tag::TupleStruct);
        self.h.name(name);
        self.h.u64(len as u64);
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, WalkError> {
        self.variant(Tag::TupleVariant, name, index, variant);
        self.h.u64(len as u64);
        Ok(self)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapWalk<'a, 'h>, WalkError> {
        let any_order = self.h.any_order;
        Ok(MapWalk {
            walk: self,
            entries: Entries::default(),
            entry: Stream::new(any_order),
            keyed: false,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self, WalkError> {
        self.h.tag(Tag::Struct);
        self.h.name(name);
        self.h.u64(len as u64);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, WalkError> {
        self.variant(Tag::StructVariant, name, index, variant);
        self.h.u64(len as u64);
        Ok(self)
    }
}

impl Walk<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(self)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Done {
        self.h.tag(Tag::Field);
        self.h.name(key);
        value.serialize(self)
    }

    fn end(&mut self) -> Done {
        self.h.tag(Tag::End);
        Ok(())
    }
}

/// A sequence: its elements in order or, in [`Stream::any_order`], each
/// hashed on its own and summed, as a map's entries are.
pub(crate) struct SeqWalk<'a, 'h> {
    walk: &'a mut Walk<'h>,
    /// The elements' hashes so far and the element being hashed, when
    /// their order does not count.
    any_order: Option<(Entries, Stream)>,
}

impl ser::SerializeSeq for SeqWalk<'_, '_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        match &mut self.any_order {
            Some((elements, element)) => {
                walk_into(element, value)?;
                elements.add(element.take());
                Ok(())
            }
            None => self.walk.element(value),
        }
    }
    fn end(self) -> Done {
        if let Some((elements, _)) = &self.any_order {
            self.walk.h.entries(elements);
        }
        Walk::end(self.walk)
    }
}

impl ser::SerializeTuple for &mut Walk<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.element(value)
    }
    fn end(self) -> Done {
        Walk::end(self)
    }
}

impl ser::SerializeTupleStruct for &mut Walk<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.element(value)
    }
    fn end(self) -> Done {
        Walk::end(self)
    }
}

impl ser::SerializeTupleVariant for &mut Walk<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.element(value)
    }
    fn end(self) -> Done {
        Walk::end(self)
    }
}

impl ser::SerializeStruct for &mut Walk<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Done {
        self.field(key, value)
    }
    fn end(self) -> Done {
        Walk::end(self)
    }
}

impl ser::SerializeStructVariant for &mut Walk<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Done {
        self.field(key, value)
    }
    fn end(self) -> Done {
        Walk::end(self)
    }
}

/// A map: each entry (key, then value) hashed on its own, the entries'
/// hashes summed, so that their order does not count.
pub(crate) struct MapWalk<'a, 'h> {
    walk: &'a mut Walk<'h>,
    entries: Entries,
    /// The entry being hashed.
    entry: Stream,
    /// Whether `entry` holds a key whose value has not come yet.
    keyed: bool,
}

impl MapWalk<'_, '_> {
    fn add_entry(&mut self) {
        self.entries.add(self.entry.take());
        self.keyed = false;
    }
}

impl ser::SerializeMap for MapWalk<'_, '_> {
    type Ok = ();
    type Error = WalkError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        // A key without a value (a broken `Serialize`) is an entry too.
        if self.keyed {
            self.add_entry();
        }
        walk_into(&mut self.entry, key)?;
        self.keyed = true;
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.entry.tag(Tag::Field);
        walk_into(&mut self.entry, value)?;
        self.add_entry();
        Ok(())
    }

    fn end(mut self) -> Done {
        if self.keyed {
            self.add_entry();
        }
        let h = &mut *self.walk.h;
        h.tag(Tag::Map);
        h.entries(&self.entries);
        Ok(())
    }
}
