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
//! values, hashed (two independent 64-bit hashes, fed a few KiB at a time,
//! so a check holds no copy of the value); a map as the sum of its
//! entries' hashes, so that a `HashMap` that iterates in another order once
//! read back still counts as the same. When the two differ, a second
//! comparison takes sequences as sums of their elements' hashes too (a
//! `HashSet` iterates in another order once read back). A value whose
//! serialization does not come back the same is not stored as bincode.
//!
//! The walk is a serializer that writes nothing: the same view of the value
//! as bincode's (`is_human_readable` is false).

use std::fmt;
use std::hash::BuildHasher;

use serde::ser::{self, Serialize, Serializer};

/// Whether `back` (read back) serializes as `value` (written) does, map
/// entries (and, failing that, sequence elements) in any order. `Err` when
/// either's `Serialize` fails.
pub(crate) fn same<T: Serialize + ?Sized>(
    value: &T,
    back: &T,
) -> Result<bool, crate::codec::CodecError> {
    let digest = |v: &T, unordered: bool| {
        let mut out = Stream::with_chunk();
        walk_into(&mut out, unordered, v).map_err(|e| {
            crate::codec::CodecError::Encode(format!("bincode: checking the read-back: {e}"))
        })?;
        Ok::<_, crate::codec::CodecError>(out.finish())
    };
    if digest(value, false)? == digest(back, false)? {
        return Ok(true);
    }
    // A misread does not permute elements; a `HashSet` read back does.
    Ok(digest(value, true)? == digest(back, true)?)
}

/// A serializer's failure during the walk.
#[derive(Debug)]
pub(crate) struct WalkError(String);

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        WalkError(crate::codec::bounded_message(msg))
    }
}

/// Two independent 64-bit hashes with fixed seeds: they compare within one
/// process only, so they need not resist anyone; 128 bits keep a chance
/// agreement out of the question.
type Sum = (u64, u64);

/// Feeds what `value` serializes to `h`.
fn walk_into<T: Serialize + ?Sized>(h: &mut Stream, unordered: bool, value: &T) -> Done {
    value.serialize(&mut Walk { h, unordered })
}

/// Hashes summed, so that their order does not count: a map's entries, an
/// unordered sequence's elements.
#[derive(Default)]
struct Unordered {
    sum: Sum,
    count: u64,
}

impl Unordered {
    fn add(&mut self, (a, b): Sum) {
        self.sum = (self.sum.0.wrapping_add(a), self.sum.1.wrapping_add(b));
        self.count += 1;
    }
}

/// What a value serializes, hashed a chunk at a time.
struct Stream {
    chunk: Vec<u8>,
    a: foldhash::quality::FoldHasher<'static>,
    b: foldhash::quality::FoldHasher<'static>,
}

impl Stream {
    /// Bytes gathered before they are hashed.
    const CHUNK: usize = 4096;

    const A: foldhash::quality::FixedState =
        foldhash::quality::FixedState::with_seed(0x243f_6a88_85a3_08d3);
    const B: foldhash::quality::FixedState =
        foldhash::quality::FixedState::with_seed(0x1319_8a2e_0370_7344);

    /// A stream whose chunk grows as needed: a map entry's or an element's,
    /// mostly a few bytes.
    fn new() -> Self {
        Stream {
            chunk: Vec::new(),
            a: Self::A.build_hasher(),
            b: Self::B.build_hasher(),
        }
    }

    /// A whole value's stream, its chunk allocated once.
    fn with_chunk() -> Self {
        Stream {
            chunk: Vec::with_capacity(Self::CHUNK),
            ..Self::new()
        }
    }

    /// The hashes so far, and a fresh start that keeps the chunk's memory
    /// (one per map entry or unordered element).
    fn take(&mut self) -> Sum {
        use std::hash::Hasher as _;
        self.flush();
        let sum = (self.a.finish(), self.b.finish());
        self.a = Self::A.build_hasher();
        self.b = Self::B.build_hasher();
        sum
    }

    fn flush(&mut self) {
        use std::hash::Hasher as _;
        self.a.write(&self.chunk);
        self.b.write(&self.chunk);
        self.chunk.clear();
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

    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        use std::hash::Hasher as _;
        self.flush();
        if bytes.len() > Self::CHUNK {
            self.a.write(bytes);
            self.b.write(bytes);
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

    fn u128(&mut self, v: u128) {
        self.put(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
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

    fn unordered(&mut self, hashes: &Unordered) {
        self.u64(hashes.count);
        self.u64(hashes.sum.0);
        self.u64(hashes.sum.1);
    }
}

/// What each serializer call writes first.
#[derive(Clone, Copy)]
enum Tag {
    Bool,
    Int,
    Uint,
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
    /// Whether sequences count as sums of their elements, in any order.
    unordered: bool,
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
        self.h.tag(Tag::Int);
        self.h.u128(v as u128);
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
        self.h.tag(Tag::Uint);
        self.h.u128(v);
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
        let element = self.unordered.then(Stream::new);
        Ok(SeqWalk {
            walk: self,
            element,
            elements: Unordered::default(),
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
        Ok(MapWalk {
            walk: self,
            entries: Unordered::default(),
            entry: Stream::new(),
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

/// A sequence: its elements in order, or, in the unordered comparison,
/// each hashed on its own and the hashes summed.
pub(crate) struct SeqWalk<'a, 'h> {
    walk: &'a mut Walk<'h>,
    /// The element being hashed, in the unordered comparison.
    element: Option<Stream>,
    elements: Unordered,
}

impl ser::SerializeSeq for SeqWalk<'_, '_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        let Some(element) = &mut self.element else {
            return self.walk.element(value);
        };
        walk_into(element, true, value)?;
        self.elements.add(element.take());
        Ok(())
    }
    fn end(self) -> Done {
        if self.element.is_some() {
            self.walk.h.unordered(&self.elements);
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
    entries: Unordered,
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
        walk_into(&mut self.entry, self.walk.unordered, key)?;
        self.keyed = true;
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.entry.tag(Tag::Field);
        walk_into(&mut self.entry, self.walk.unordered, value)?;
        self.add_entry();
        Ok(())
    }

    fn end(mut self) -> Done {
        if self.keyed {
            self.add_entry();
        }
        let h = &mut *self.walk.h;
        h.tag(Tag::Map);
        h.unordered(&self.entries);
        Ok(())
    }
}
