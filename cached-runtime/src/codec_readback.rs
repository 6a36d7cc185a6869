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
//! values, written down; a map as the sum of its entries' hashes, so that a
//! `HashMap` that iterates in another order once read back still counts as
//! the same. A value whose serialization does not come back the same is not
//! stored as bincode.
//! (Sequences keep their order: a `HashSet` read back usually iterates in
//! another order, so such values go to JSON.)
//!
//! The walk is a serializer that writes nothing: the same view of the value
//! as bincode's (`is_human_readable` is false).

use std::fmt;
use std::hash::BuildHasher;

use serde::ser::{self, Serialize, Serializer};

/// Whether `back` (read back) serializes as `value` (written) does, map
/// entries in any order. `Err` when either's `Serialize` fails.
pub(crate) fn same<T: Serialize + ?Sized>(
    value: &T,
    back: &T,
) -> Result<bool, crate::codec::CodecError> {
    thread_local! {
        /// The two streams' buffers, kept per thread (up to 64 KiB each):
        /// a check per store, no allocation once warm.
        static STREAMS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    const KEPT: usize = 64 << 10;
    let record = |v: &T, buf: &mut Vec<u8>| {
        buf.clear();
        let mut out = Stream(std::mem::take(buf));
        let walked = v.serialize(&mut Walk { h: &mut out });
        *buf = out.0;
        walked.map_err(|e| {
            crate::codec::CodecError::Encode(format!("bincode: checking the read-back: {e}"))
        })
    };
    let compare = |(a, b): &mut (Vec<u8>, Vec<u8>)| {
        record(value, a)?;
        record(back, b)?;
        let same = a == b;
        for buf in [a, b] {
            if buf.capacity() > KEPT {
                *buf = Vec::new();
            }
        }
        Ok(same)
    };
    // Re-entered (a `Serialize` that stores a value itself): fresh buffers.
    STREAMS.with(|streams| match streams.try_borrow_mut() {
        Ok(mut streams) => compare(&mut streams),
        Err(_) => compare(&mut (Vec::new(), Vec::new())),
    })
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

/// A map's entries, each hashed on its own and the hashes summed: two
/// independent 64-bit hashes with fixed seeds (the sums compare within one
/// process only, so they need not resist anyone; 128 bits keep a chance
/// agreement out of the question).
type Sum = (u64, u64);

fn entry_hash(entry: &[u8]) -> Sum {
    const A: foldhash::quality::FixedState =
        foldhash::quality::FixedState::with_seed(0x243f_6a88_85a3_08d3);
    const B: foldhash::quality::FixedState =
        foldhash::quality::FixedState::with_seed(0x1319_8a2e_0370_7344);
    (A.hash_one(entry), B.hash_one(entry))
}

/// What a value serializes, written down.
struct Stream(Vec<u8>);

impl Stream {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// Bytes behind their length, so that neighbours cannot trade bytes.
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }

    fn tag(&mut self, tag: Tag) {
        self.u8(tag as u8);
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
}

impl Walk<'_> {
    fn variant(&mut self, tag: Tag, name: &str, index: u32, variant: &str) {
        self.h.tag(tag);
        self.h.bytes(name.as_bytes());
        self.h.u64(u64::from(index));
        self.h.bytes(variant.as_bytes());
    }
}

type Done = Result<(), WalkError>;

impl<'a, 'h> Serializer for &'a mut Walk<'h> {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = &'a mut Walk<'h>;
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
        self.h.bytes(name.as_bytes());
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
        self.h.bytes(name.as_bytes());
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
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, WalkError> {
        self.h.tag(Tag::Seq);
        self.h.u64(len.map_or(u64::MAX, |n| n as u64));
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, WalkError> {
        self.h.tag(Tag::Tuple);
        self.h.u64(len as u64);
        Ok(self)
    }
    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Self, WalkError> {
        self.h.tag(Tag::TupleStruct);
        self.h.bytes(name.as_bytes());
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
            sum: (0, 0),
            entries: 0,
            entry: Stream(Vec::new()),
            keyed: false,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self, WalkError> {
        self.h.tag(Tag::Struct);
        self.h.bytes(name.as_bytes());
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
        self.h.bytes(key.as_bytes());
        value.serialize(self)
    }

    fn end(&mut self) -> Done {
        self.h.tag(Tag::End);
        Ok(())
    }
}

impl ser::SerializeSeq for &mut Walk<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.element(value)
    }
    fn end(self) -> Done {
        Walk::end(self)
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

/// A map: each entry (key, then value) written down on its own and hashed,
/// the entries' hashes summed, so that their order does not count.
pub(crate) struct MapWalk<'a, 'h> {
    walk: &'a mut Walk<'h>,
    sum: Sum,
    entries: u64,
    /// The entry being written, its buffer kept from one entry to the next.
    entry: Stream,
    /// Whether `entry` holds a key whose value has not come yet.
    keyed: bool,
}

impl MapWalk<'_, '_> {
    fn add_entry(&mut self) {
        let (a, b) = entry_hash(&self.entry.0);
        self.sum = (self.sum.0.wrapping_add(a), self.sum.1.wrapping_add(b));
        self.entries += 1;
        self.entry.0.clear();
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
        key.serialize(&mut Walk { h: &mut self.entry })?;
        self.keyed = true;
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.entry.tag(Tag::Field);
        value.serialize(&mut Walk { h: &mut self.entry })?;
        self.add_entry();
        Ok(())
    }

    fn end(mut self) -> Done {
        if self.keyed {
            self.add_entry();
        }
        let h = &mut *self.walk.h;
        h.tag(Tag::Map);
        h.u64(self.entries);
        h.u64(self.sum.0);
        h.u64(self.sum.1);
        Ok(())
    }
}
