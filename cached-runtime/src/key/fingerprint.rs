//! Fingerprints of key arguments: an exact record of the calls an
//! argument's `Serialize` makes, cheaper to write than its canonical JSON.
//!
//! Writing canonical JSON escapes strings, formats numbers and sorts object
//! keys; a fingerprint just appends each call, tagged, to a buffer. The
//! key memo ([`super::KeyMemo`]) maps fingerprints to digests, so an
//! argument seen before is keyed for the price of its fingerprint and one
//! lookup. Two rules keep that exact:
//!
//! - **Injective.** Every call is a tag byte followed by its operands, each
//!   string behind its length, every compound closed by [`END`]: the record
//!   decodes back into the very calls that made it ([`Replay`] does so), so
//!   two arguments share a fingerprint only if they make the same calls,
//!   and then they share their canonical JSON too.
//! - **Serialized once.** On a memo miss, the canonical JSON is made by
//!   replaying the fingerprint, never by serializing the argument again: an
//!   argument that changes meanwhile (interior mutability) or serializes
//!   only once cannot have one text recorded and another keyed.
//!
//! Errors are sticky, as in canonical JSON: an error that a compound's
//! element, key, value or field returns fails the whole fingerprint even if
//! the `Serialize` swallows it and goes on, so no partial record is ever
//! remembered. The recorder's own errors are those of canonical JSON that
//! do not depend on values: a `Display` that fails in `collect_str`, and
//! nesting deeper than [`MAX_DEPTH`] (counted alike; that also bounds the
//! replay's stack). The others (a NaN, a map key that is not a string)
//! surface in the replay, which never gets to the memo.

use std::cell::Cell;
use std::fmt::{Display, Write as _};

use serde::ser::{self, Serialize, Serializer};

use super::CanonicalError;

use super::canonical::{display_failed, too_deep, MAX_DEPTH};

// One tag per `Serializer` call. Operands follow the tag: integers and
// floats as little-endian bytes; lengths and indices as one byte below
// 255, else 255 and sixteen bytes; `Option<usize>` as 0 for `None` and
// `n + 1` for `Some(n)`; strings and names as their length, their bytes
// going to the record's text (kept apart so that a replay takes them back
// as `&str` without validating them again as UTF-8).
const BOOL_FALSE: u8 = 0;
const BOOL_TRUE: u8 = 1;
const I8: u8 = 2;
const I16: u8 = 3;
const I32: u8 = 4;
const I64: u8 = 5;
const I128: u8 = 6;
const U8: u8 = 7;
const U16: u8 = 8;
const U32: u8 = 9;
const U64: u8 = 10;
const U128: u8 = 11;
const F32: u8 = 12;
const F64: u8 = 13;
const CHAR: u8 = 14;
const STR: u8 = 15;
/// `collect_str`: the length of the text the `Display` wrote.
const DISPLAYED: u8 = 16;
const BYTES: u8 = 17;
const NONE: u8 = 18;
/// Then the value.
const SOME: u8 = 19;
const UNIT: u8 = 20;
/// Then the name.
const UNIT_STRUCT: u8 = 21;
/// Then the name, index, variant.
const UNIT_VARIANT: u8 = 22;
/// Then the name and the value.
const NEWTYPE_STRUCT: u8 = 23;
/// Then the name, index, variant and the value.
const NEWTYPE_VARIANT: u8 = 24;
/// Then the optional length, the elements, [`END`].
const SEQ: u8 = 25;
/// Then the length, the elements, [`END`].
const TUPLE: u8 = 26;
/// Then the name, the length, the fields, [`END`].
const TUPLE_STRUCT: u8 = 27;
/// Then the name, index, variant, length, the fields, [`END`].
const TUPLE_VARIANT: u8 = 28;
/// Then the optional length, [`KEY`]s and [`VALUE`]s, [`END`].
const MAP: u8 = 29;
/// Then the name, the length, [`FIELD`]s and [`SKIP`]s, [`END`].
const STRUCT: u8 = 30;
/// Then the name, index, variant, length, [`FIELD`]s and [`SKIP`]s, [`END`].
const STRUCT_VARIANT: u8 = 31;
/// In a map: the key that follows.
const KEY: u8 = 32;
/// In a map: the value that follows.
const VALUE: u8 = 33;
/// In a struct: the field's name, then its value.
const FIELD: u8 = 34;
/// In a struct: a skipped field's name.
const SKIP: u8 = 35;
/// Closes a compound.
const END: u8 = 36;

/// A fingerprint being written: the record of calls, its text (strings
/// and names, in order) and its names as serde gave them.
///
/// `record ‖ text` identifies the calls: the record of one value decodes
/// from its first byte and says how long each text is.
#[derive(Default)]
pub(crate) struct Fingerprint {
    pub(crate) record: Vec<u8>,
    pub(crate) text: String,
    /// The names, in order: a replay needs them `'static`, and the text
    /// holds only their bytes.
    pub(crate) names: Vec<&'static str>,
}

impl Fingerprint {
    pub(crate) fn clear(&mut self) {
        self.record.clear();
        self.text.clear();
        self.names.clear();
    }

    /// Bytes held, for deciding whether to keep the buffers.
    pub(crate) fn capacity(&self) -> usize {
        self.record.capacity() + self.text.capacity() + self.names.capacity() * 16
    }
}

/// Appends the fingerprint of `value` to `fp`. On error `fp` is left as it
/// was.
pub(crate) fn record<T: Serialize + ?Sized>(
    value: &T,
    fp: &mut Fingerprint,
) -> Result<(), CanonicalError> {
    let starts = (fp.record.len(), fp.text.len(), fp.names.len());
    // The buffers are moved in and back: held by value, each write is one
    // indirection away rather than two.
    let mut recorder = Recorder {
        out: std::mem::take(&mut fp.record),
        text: std::mem::take(&mut fp.text),
        names: std::mem::take(&mut fp.names),
        depth: 0,
        failure: None,
    };
    let result = value.serialize(&mut recorder);
    (fp.record, fp.text, fp.names) = (recorder.out, recorder.text, recorder.names);
    // A failure the `Serialize` swallowed still fails the record: part of
    // the argument is missing from it.
    let result = match recorder.failure {
        Some(failure) => Err(failure),
        None => result,
    };
    if result.is_err() {
        fp.record.truncate(starts.0);
        fp.text.truncate(starts.1);
        fp.names.truncate(starts.2);
    }
    result
}

/// Writes the canonical JSON of the argument whose fingerprint [`record`]
/// wrote (its record, text and names) to `out`: the same bytes as
/// [`super::to_canonical_json`] of the argument itself.
pub(crate) fn replay_canonical_json(
    record: &[u8],
    text: &str,
    names: &[&'static str],
    out: &mut Vec<u8>,
) -> Result<(), CanonicalError> {
    let (pos, text_pos, name_pos) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let replay = Replay {
        record,
        pos: &pos,
        text,
        text_pos: &text_pos,
        names,
        name_pos: &name_pos,
    };
    super::to_canonical_json(&replay, out)?;
    if pos.get() == record.len() && text_pos.get() == text.len() && name_pos.get() == names.len() {
        Ok(())
    } else {
        Err(corrupt())
    }
}

fn corrupt() -> CanonicalError {
    ser::Error::custom("key fingerprint does not decode (a bug in cached-redis)")
}

/// The serializer that writes fingerprints.
struct Recorder {
    out: Vec<u8>,
    text: String,
    names: Vec<&'static str>,
    /// Compounds, options and newtypes open around the current call.
    depth: u32,
    /// The first failure, kept even if the `Serialize` ignores it.
    failure: Option<CanonicalError>,
}

impl Recorder {
    #[inline]
    fn tag(&mut self, tag: u8) {
        self.out.push(tag);
    }

    #[inline]
    fn len(&mut self, n: usize) {
        if n < LONG as usize {
            self.out.push(n as u8);
        } else {
            self.long(n as u128);
        }
    }

    /// 128 bits: a length hint of `Some(usize::MAX)` is `usize::MAX + 1`.
    #[cold]
    fn long(&mut self, n: u128) {
        self.out.push(LONG);
        self.out.extend_from_slice(&n.to_le_bytes());
    }

    /// A tag and a length, in one write when the length is short.
    #[inline]
    fn tag_len(&mut self, tag: u8, n: u128) {
        if n < u128::from(LONG) {
            self.out.extend_from_slice(&[tag, n as u8]);
        } else {
            self.tag(tag);
            self.long(n);
        }
    }

    #[inline]
    fn text(&mut self, s: &str) {
        self.len(s.len());
        self.text.push_str(s);
    }

    /// A name: its bytes in the text (they are what is compared), the
    /// name itself on the side.
    #[inline]
    fn name(&mut self, name: &'static str) {
        self.text(name);
        self.names.push(name);
    }

    fn variant(&mut self, name: &'static str, index: u32, variant: &'static str) {
        self.name(name);
        self.len(index as usize);
        self.name(variant);
    }

    /// Keeps `error` as the record's failure unless one came first: the
    /// whole fingerprint fails, even if the `Serialize` swallows it.
    fn note(&mut self, error: &CanonicalError) {
        if self.failure.is_none() {
            self.failure = Some(ser::Error::custom(error));
        }
    }

    /// One of the recorder's own errors, noted.
    fn fail(&mut self, error: CanonicalError) -> CanonicalError {
        self.note(&error);
        error
    }

    /// Enters one level of nesting.
    #[inline]
    fn open(&mut self) -> Result<(), CanonicalError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    #[cold]
    fn too_deep(&mut self) -> CanonicalError {
        self.fail(too_deep())
    }

    #[inline]
    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// A value nested one level down (`Some`, a newtype).
    fn nested<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.open()?;
        let result = value.serialize(&mut *self);
        self.close();
        result
    }

    /// A compound's element, key, value or field: an error it returns
    /// fails the record even if the `Serialize` goes on past it (as it
    /// fails canonical JSON).
    fn child<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        let result = value.serialize(&mut *self);
        if let Err(e) = &result {
            self.note(e);
        }
        result
    }

    /// A struct's field, of a struct or a struct variant.
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.tag(FIELD);
        self.name(key);
        self.child(value)
    }

    /// A struct's skipped field.
    fn skip(&mut self, key: &'static str) -> Result<(), CanonicalError> {
        self.tag(SKIP);
        self.name(key);
        Ok(())
    }

    fn end(&mut self) -> Result<(), CanonicalError> {
        self.tag(END);
        self.close();
        Ok(())
    }
}

/// A length at least this large is this byte, then sixteen bytes.
const LONG: u8 = 255;

impl Serializer for &mut Recorder {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.tag(if v { BOOL_TRUE } else { BOOL_FALSE });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.tag(I8);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.tag(I16);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.tag(I32);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        self.tag(I64);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        self.tag(I128);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.tag(U8);
        self.out.push(v);
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.tag(U16);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.tag(U32);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        self.tag(U64);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        self.tag(U128);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    // Floats by their bits: `0.0` and `-0.0` stay apart, as their JSON
    // does; a NaN is recorded and fails at the replay, as it fails
    // canonical JSON.
    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        self.tag(F32);
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        self.tag(F64);
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        self.tag(CHAR);
        self.out.extend_from_slice(&u32::from(v).to_le_bytes());
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        self.tag_len(STR, v.len() as u128);
        self.text.push_str(v);
        Ok(())
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        self.tag(DISPLAYED);
        let start = self.text.len();
        if write!(self.text, "{value}").is_err() {
            return Err(self.fail(display_failed()));
        }
        self.len(self.text.len() - start);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        // A level, as in canonical JSON (an array).
        self.open()?;
        self.close();
        self.tag(BYTES);
        self.len(v.len());
        self.out.extend_from_slice(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.tag(NONE);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        self.tag(SOME);
        self.nested(value)
    }

    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.tag(UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<(), CanonicalError> {
        self.tag(UNIT_STRUCT);
        self.name(name);
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.tag(UNIT_VARIANT);
        self.variant(name, index, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.tag(NEWTYPE_STRUCT);
        self.name(name);
        self.nested(value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.tag(NEWTYPE_VARIANT);
        self.variant(name, index, variant);
        self.nested(value)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self, CanonicalError> {
        self.open()?;
        self.tag_len(SEQ, len.map_or(0, |n| n as u128 + 1));
        Ok(self)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self, CanonicalError> {
        self.open()?;
        self.tag(TUPLE);
        self.len(len);
        Ok(self)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self, CanonicalError> {
        self.open()?;
        self.tag(TUPLE_STRUCT);
        self.name(name);
        self.len(len);
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, CanonicalError> {
        self.open()?;
        self.tag(TUPLE_VARIANT);
        self.variant(name, index, variant);
        self.len(len);
        Ok(self)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self, CanonicalError> {
        self.open()?;
        self.tag_len(MAP, len.map_or(0, |n| n as u128 + 1));
        Ok(self)
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self, CanonicalError> {
        self.open()?;
        self.tag(STRUCT);
        self.name(name);
        self.len(len);
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, CanonicalError> {
        self.open()?;
        self.tag(STRUCT_VARIANT);
        self.variant(name, index, variant);
        self.len(len);
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Recorder {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_element<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.child(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        Recorder::end(self)
    }
}

impl ser::SerializeTuple for &mut Recorder {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_element<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.child(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        Recorder::end(self)
    }
}

impl ser::SerializeTupleStruct for &mut Recorder {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.child(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        Recorder::end(self)
    }
}

impl ser::SerializeTupleVariant for &mut Recorder {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.child(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        Recorder::end(self)
    }
}

impl ser::SerializeMap for &mut Recorder {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CanonicalError> {
        self.tag(KEY);
        self.child(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.tag(VALUE);
        self.child(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        Recorder::end(self)
    }
}

impl ser::SerializeStruct for &mut Recorder {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        Recorder::field(self, key, value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), CanonicalError> {
        Recorder::skip(self, key)
    }

    fn end(self) -> Result<(), CanonicalError> {
        Recorder::end(self)
    }
}

impl ser::SerializeStructVariant for &mut Recorder {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        Recorder::field(self, key, value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), CanonicalError> {
        Recorder::skip(self, key)
    }

    fn end(self) -> Result<(), CanonicalError> {
        Recorder::end(self)
    }
}

/// One value of a fingerprint, read from `pos` on: serializing it makes
/// the calls that recorded it. Every `Replay` of one fingerprint shares
/// the cursor, so a compound's elements are the values that follow it.
#[derive(Clone, Copy)]
struct Replay<'r> {
    record: &'r [u8],
    pos: &'r Cell<usize>,
    /// The record's text, and where the next string starts.
    text: &'r str,
    text_pos: &'r Cell<usize>,
    /// The record's names, in order, and the next one's index.
    names: &'r [&'static str],
    name_pos: &'r Cell<usize>,
}

impl<'r> Replay<'r> {
    fn take<E: ser::Error>(&self, n: usize) -> Result<&'r [u8], E> {
        let start = self.pos.get();
        let bytes = start
            .checked_add(n)
            .and_then(|end| self.record.get(start..end))
            .ok_or_else(|| E::custom(corrupt()))?;
        self.pos.set(start + n);
        Ok(bytes)
    }

    fn array<const N: usize, E: ser::Error>(&self) -> Result<[u8; N], E> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn byte<E: ser::Error>(&self) -> Result<u8, E> {
        Ok(self.take(1)?[0])
    }

    fn raw_len<E: ser::Error>(&self) -> Result<u128, E> {
        match self.byte()? {
            LONG => Ok(u128::from_le_bytes(self.array()?)),
            n => Ok(u128::from(n)),
        }
    }

    fn len<E: ser::Error>(&self) -> Result<usize, E> {
        usize::try_from(self.raw_len::<E>()?).map_err(|_| E::custom(corrupt()))
    }

    fn opt_len<E: ser::Error>(&self) -> Result<Option<usize>, E> {
        match self.raw_len::<E>()?.checked_sub(1) {
            None => Ok(None),
            Some(n) => usize::try_from(n)
                .map(Some)
                .map_err(|_| E::custom(corrupt())),
        }
    }

    /// The next string of the text.
    fn text<E: ser::Error>(&self) -> Result<&'r str, E> {
        let len = self.len()?;
        let start = self.text_pos.get();
        let s = start
            .checked_add(len)
            .and_then(|end| self.text.get(start..end))
            .ok_or_else(|| E::custom(corrupt()))?;
        self.text_pos.set(start + len);
        Ok(s)
    }

    /// A name (of a struct, field, variant) as the `&'static str` serde
    /// wants: the next one on the side, which must be the one recorded.
    fn name<E: ser::Error>(&self) -> Result<&'static str, E> {
        let recorded = self.text::<E>()?;
        let i = self.name_pos.get();
        match self.names.get(i) {
            Some(&name) if name == recorded => {
                self.name_pos.set(i + 1);
                Ok(name)
            }
            _ => Err(E::custom(corrupt())),
        }
    }

    fn index<E: ser::Error>(&self) -> Result<u32, E> {
        u32::try_from(self.len::<E>()?).map_err(|_| E::custom(corrupt()))
    }

    /// Consumes [`END`] if it is next.
    fn at_end<E: ser::Error>(&self) -> Result<bool, E> {
        match self.record.get(self.pos.get()) {
            Some(&END) => {
                self.pos.set(self.pos.get() + 1);
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(E::custom(corrupt())),
        }
    }
}

impl Serialize for Replay<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Compounds are replayed out of line, so that this frame, repeated
        // once per level of nesting, stays small.
        match self.byte()? {
            BOOL_FALSE => s.serialize_bool(false),
            BOOL_TRUE => s.serialize_bool(true),
            I8 => s.serialize_i8(i8::from_le_bytes(self.array()?)),
            I16 => s.serialize_i16(i16::from_le_bytes(self.array()?)),
            I32 => s.serialize_i32(i32::from_le_bytes(self.array()?)),
            I64 => s.serialize_i64(i64::from_le_bytes(self.array()?)),
            I128 => s.serialize_i128(i128::from_le_bytes(self.array()?)),
            U8 => s.serialize_u8(self.byte()?),
            U16 => s.serialize_u16(u16::from_le_bytes(self.array()?)),
            U32 => s.serialize_u32(u32::from_le_bytes(self.array()?)),
            U64 => s.serialize_u64(u64::from_le_bytes(self.array()?)),
            U128 => s.serialize_u128(u128::from_le_bytes(self.array()?)),
            F32 => s.serialize_f32(f32::from_bits(u32::from_le_bytes(self.array()?))),
            F64 => s.serialize_f64(f64::from_bits(u64::from_le_bytes(self.array()?))),
            CHAR => {
                let c = char::from_u32(u32::from_le_bytes(self.array()?))
                    .ok_or_else(|| ser::Error::custom(corrupt()))?;
                s.serialize_char(c)
            }
            STR => s.serialize_str(self.text()?),
            DISPLAYED => s.collect_str(self.text()?),
            BYTES => {
                let len = self.len()?;
                s.serialize_bytes(self.take(len)?)
            }
            NONE => s.serialize_none(),
            SOME => s.serialize_some(self),
            UNIT => s.serialize_unit(),
            UNIT_STRUCT => s.serialize_unit_struct(self.name()?),
            UNIT_VARIANT => s.serialize_unit_variant(self.name()?, self.index()?, self.name()?),
            NEWTYPE_STRUCT => s.serialize_newtype_struct(self.name()?, self),
            NEWTYPE_VARIANT => {
                s.serialize_newtype_variant(self.name()?, self.index()?, self.name()?, self)
            }
            SEQ => self.seq(s),
            TUPLE => self.tuple(s),
            TUPLE_STRUCT => self.tuple_struct(s),
            TUPLE_VARIANT => self.tuple_variant(s),
            MAP => self.map(s),
            STRUCT => self.strukt(s),
            STRUCT_VARIANT => self.struct_variant(s),
            _ => Err(ser::Error::custom(corrupt())),
        }
    }
}

impl Replay<'_> {
    #[inline(never)]
    fn seq<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeSeq as _;
        let mut seq = s.serialize_seq(self.opt_len()?)?;
        while !self.at_end()? {
            seq.serialize_element(self)?;
        }
        seq.end()
    }

    #[inline(never)]
    fn tuple<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeTuple as _;
        let mut tuple = s.serialize_tuple(self.len()?)?;
        while !self.at_end()? {
            tuple.serialize_element(self)?;
        }
        tuple.end()
    }

    #[inline(never)]
    fn tuple_struct<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeTupleStruct as _;
        let mut tuple = s.serialize_tuple_struct(self.name()?, self.len()?)?;
        while !self.at_end()? {
            tuple.serialize_field(self)?;
        }
        tuple.end()
    }

    #[inline(never)]
    fn tuple_variant<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeTupleVariant as _;
        let (name, index, variant) = (self.name()?, self.index()?, self.name()?);
        let mut tuple = s.serialize_tuple_variant(name, index, variant, self.len()?)?;
        while !self.at_end()? {
            tuple.serialize_field(self)?;
        }
        tuple.end()
    }

    #[inline(never)]
    fn map<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeMap as _;
        let mut map = s.serialize_map(self.opt_len()?)?;
        loop {
            match self.byte()? {
                KEY => map.serialize_key(self)?,
                VALUE => map.serialize_value(self)?,
                END => return map.end(),
                _ => return Err(ser::Error::custom(corrupt())),
            }
        }
    }

    #[inline(never)]
    fn strukt<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeStruct as _;
        let mut st = s.serialize_struct(self.name()?, self.len()?)?;
        loop {
            match self.byte()? {
                FIELD => st.serialize_field(self.name()?, self)?,
                SKIP => st.skip_field(self.name()?)?,
                END => return st.end(),
                _ => return Err(ser::Error::custom(corrupt())),
            }
        }
    }

    #[inline(never)]
    fn struct_variant<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeStructVariant as _;
        let (name, index, variant) = (self.name()?, self.index()?, self.name()?);
        let mut st = s.serialize_struct_variant(name, index, variant, self.len()?)?;
        loop {
            match self.byte()? {
                FIELD => st.serialize_field(self.name()?, self)?,
                SKIP => st.skip_field(self.name()?)?,
                END => return st.end(),
                _ => return Err(ser::Error::custom(corrupt())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::ser::{SerializeSeq, SerializeStruct};
    use serde::{Serialize, Serializer};

    use super::{record, replay_canonical_json, Fingerprint, MAX_DEPTH};
    use crate::key::to_canonical_json;

    /// What the memo compares: the record, then the text.
    fn fingerprint<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        let fp = recorded(v);
        [fp.record, fp.text.into_bytes()].concat()
    }

    fn recorded<T: Serialize + ?Sized>(v: &T) -> Fingerprint {
        let mut fp = Fingerprint::default();
        record(v, &mut fp).expect("fingerprint");
        fp
    }

    fn replay(fp: &Fingerprint, out: &mut Vec<u8>) -> Result<(), crate::key::CanonicalError> {
        replay_canonical_json(&fp.record, &fp.text, &fp.names, out)
    }

    /// The replay of a fingerprint is the argument's own canonical JSON.
    fn assert_replays<T: Serialize + ?Sized + fmt::Debug>(v: &T) {
        let mut direct = Vec::new();
        let direct = to_canonical_json(v, &mut direct).map(|()| direct);
        let mut replayed = Vec::new();
        let mut fp = Fingerprint::default();
        let replayed = record(v, &mut fp)
            .and_then(|()| replay(&fp, &mut replayed))
            .map(|()| replayed);
        match (direct, replayed) {
            (Ok(d), Ok(r)) => assert_eq!(
                String::from_utf8_lossy(&d),
                String::from_utf8_lossy(&r),
                "{v:?}"
            ),
            (Err(d), Err(r)) => assert_eq!(d.to_string(), r.to_string(), "{v:?}"),
            (d, r) => panic!("{v:?}: direct {d:?}, replayed {r:?}"),
        }
    }

    #[derive(Debug, Serialize)]
    enum Shape {
        Unit,
        New(u8),
        Tuple(i32, String),
        Struct { b: f64, a: Option<char> },
    }

    #[derive(Debug, Serialize)]
    struct Wrapper(Vec<u8>);

    #[derive(Debug, Serialize)]
    struct Marker;

    #[derive(Debug, Serialize)]
    struct Pair(u16, i128);

    #[derive(Debug, Serialize)]
    struct Query {
        zeta: u64,
        alpha: Vec<Shape>,
        #[serde(skip_serializing_if = "Option::is_none")]
        gone: Option<u8>,
        map: BTreeMap<String, Option<Option<()>>>,
        #[serde(with = "serde_bytes_like")]
        raw: Vec<u8>,
        marker: Marker,
        pair: Pair,
        wrapper: Wrapper,
        tuple: (u32, i8, bool),
        wide: u128,
        small: (i16, u16, f32),
    }

    mod serde_bytes_like {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[test]
    fn replays_every_kind_of_call() {
        let q = Query {
            zeta: u64::MAX,
            alpha: vec![
                Shape::Unit,
                Shape::New(7),
                Shape::Tuple(-3, "x\"y\u{1}".into()),
                Shape::Struct {
                    b: -0.0,
                    a: Some('é'),
                },
            ],
            gone: None,
            map: [
                ("b".to_owned(), Some(None)),
                ("a".to_owned(), None),
                ("c".to_owned(), Some(Some(()))),
            ]
            .into(),
            raw: vec![0, 255, 3],
            marker: Marker,
            pair: Pair(9, i128::MIN),
            wrapper: Wrapper(vec![1, 2]),
            tuple: (1, -1, true),
            wide: u128::MAX,
            small: (-5, 5, 1.5),
        };
        assert_replays(&q);
        assert_replays(&(&q, "second", 3u8));
        assert_replays(&serde_json::json!({"z": [1, 2.5, null, {"y": "x", "b": false}], "a": {}}));
        assert_replays(&std::collections::HashMap::from([
            (1u32, "one"),
            (2, "two"),
        ]));
        assert_replays(&f64::NAN);
        assert_replays(&(1u8, f32::INFINITY));
        assert_replays(&std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert_replays(&(Shown("10.0.0.1"), Shown("")));
    }

    /// Serialized with `collect_str`.
    #[derive(Debug)]
    struct Shown(&'static str);

    impl Serialize for Shown {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self.0)
        }
    }

    /// Fingerprints that differ wherever the calls differ, including where
    /// a careless encoding would run operands together.
    #[test]
    fn different_calls_differ() {
        let values: Vec<Vec<u8>> = vec![
            fingerprint(&("ab", "c")),
            fingerprint(&("a", "bc")),
            fingerprint(&0u64),
            fingerprint(&""),
            fingerprint(&0i64),
            fingerprint(&0.0f64),
            fingerprint(&-0.0f64),
            fingerprint(&None::<u8>),
            fingerprint(&Some(())),
            fingerprint(&()),
            fingerprint(&Vec::<u8>::new()),
            fingerprint(&Vec::<Vec<u8>>::from([vec![]])),
            fingerprint(&Shape::Unit),
            fingerprint(&Shape::New(0)),
            fingerprint(&Marker),
            fingerprint(&Shown("1.2.3.4")),
            fingerprint(&"1.2.3.4"),
        ];
        for (i, a) in values.iter().enumerate() {
            for b in &values[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    /// A `Display` that ignores its formatter's error, or writes after it:
    /// whatever it writes is recorded, and the replay matches.
    #[test]
    fn displays_are_recorded_whole() {
        struct Loud(String);
        impl fmt::Display for Loud {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let _ = f.write_str(&self.0);
                f.write_str("|tail")
            }
        }
        impl Serialize for Loud {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl fmt::Debug for Loud {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Loud")
            }
        }
        let big = "x".repeat(40_000);
        let a = fingerprint(&Loud(big.clone() + "a"));
        let b = fingerprint(&Loud(big + "b"));
        assert_ne!(a, b);
        assert_replays(&Loud("é\"".into()));
    }

    /// A failing `Display` fails the fingerprint even when the `Serialize`
    /// ignores the error and goes on.
    #[test]
    fn a_swallowed_failure_still_fails() {
        struct Broken;
        impl fmt::Display for Broken {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                Err(fmt::Error)
            }
        }
        struct Swallows;
        impl Serialize for Swallows {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                let _ = seq.serialize_element(&Collected(&Broken));
                seq.serialize_element("after")?;
                seq.end()
            }
        }
        struct Collected<'a>(&'a Broken);
        impl Serialize for Collected<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self.0)
            }
        }
        let mut fp = Fingerprint::default();
        fp.record.extend_from_slice(b"kept");
        fp.text.push_str("kept");
        assert!(record(&Swallows, &mut fp).is_err());
        assert_eq!(
            fp.record, b"kept",
            "a failed record leaves the buffers as they were"
        );
        assert_eq!(fp.text, "kept");
        assert!(fp.names.is_empty());
    }

    /// Nesting past the limit fails, even if swallowed; at the limit it
    /// replays.
    #[test]
    fn depth_is_bounded() {
        fn nested(depth: u32) -> serde_json::Value {
            (0..depth).fold(serde_json::json!(1), |v, _| serde_json::json!([v]))
        }
        assert_replays(&nested(MAX_DEPTH - 1));
        let mut fp = Fingerprint::default();
        assert!(record(&(nested(MAX_DEPTH),), &mut fp).is_err());
        assert!(record(&nested(1_000), &mut fp).is_err());
        struct Swallows(serde_json::Value);
        impl Serialize for Swallows {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut st = s.serialize_struct("Swallows", 2)?;
                let _ = st.serialize_field("deep", &self.0);
                st.serialize_field("after", &1u8)?;
                st.end()
            }
        }
        assert!(record(&Swallows(nested(MAX_DEPTH + 5)), &mut fp).is_err());
        assert!(fp.record.is_empty() && fp.text.is_empty() && fp.names.is_empty());
    }

    /// A `Serialize` that swallows an error and goes on gets no key, with
    /// the memo or without it, whatever the error: canonical JSON's own (a
    /// NaN, a map key that is no string, a value before its key), its own
    /// custom error, nesting too deep.
    #[test]
    fn swallowed_errors_fail_both_ways() {
        use serde::ser::{Error as _, SerializeMap};
        #[derive(Debug)]
        struct Swallows<T>(T);
        impl<T: Serialize> Serialize for Swallows<T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                let _ = seq.serialize_element(&self.0);
                seq.serialize_element(&1)?;
                seq.end()
            }
        }
        #[derive(Debug)]
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let _ = s;
                Err(S::Error::custom("refused"))
            }
        }
        #[derive(Debug)]
        struct ValueFirst;
        impl Serialize for ValueFirst {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                let _ = map.serialize_value(&1);
                map.serialize_entry("a", &2)?;
                map.end()
            }
        }
        #[derive(Debug)]
        struct HalfValue;
        impl Serialize for HalfValue {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                map.serialize_key("b")?;
                let _ = map.serialize_value(&Fails);
                map.serialize_entry("a", &2)?;
                map.end()
            }
        }
        let nested = (0..MAX_DEPTH + 2).fold(serde_json::json!(0), |v, _| serde_json::json!([v]));
        fn both_fail<T: Serialize + fmt::Debug>(v: &T) {
            let mut direct = Vec::new();
            assert!(to_canonical_json(v, &mut direct).is_err(), "{v:?} direct");
            let mut fp = Fingerprint::default();
            let mut json = Vec::new();
            let memo = record(v, &mut fp).and_then(|()| replay(&fp, &mut json));
            assert!(memo.is_err(), "{v:?} through the fingerprint");
        }
        both_fail(&Swallows(f64::NAN));
        both_fail(&Swallows(BTreeMap::from([((1, 2), 3)])));
        both_fail(&Swallows(Fails));
        both_fail(&Swallows(nested));
        both_fail(&ValueFirst);
        both_fail(&HalfValue);
        // Two values for one key, a key without a value: not JSON another
        // argument could spell (`"a":12`), an error.
        #[derive(Debug)]
        struct TwoValues;
        impl Serialize for TwoValues {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                map.serialize_key("a")?;
                map.serialize_value(&1)?;
                map.serialize_value(&2)?;
                map.end()
            }
        }
        #[derive(Debug)]
        struct KeyAlone(bool);
        impl Serialize for KeyAlone {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                map.serialize_key("a")?;
                if self.0 {
                    map.serialize_entry("b", &1)?;
                }
                map.end()
            }
        }
        both_fail(&TwoValues);
        both_fail(&KeyAlone(false));
        both_fail(&KeyAlone(true));
        assert_replays(&BTreeMap::from([("a", 12)]));
        assert_replays(&Swallows(1));
    }

    /// An argument is serialized once, even when its fingerprint is
    /// replayed: one that serializes differently each time is keyed by the
    /// one serialization that was recorded.
    #[test]
    fn replay_does_not_serialize_again() {
        struct Counter(Cell<u32>);
        impl Serialize for Counter {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.set(self.0.get() + 1);
                s.serialize_u32(self.0.get())
            }
        }
        let c = Counter(Cell::new(0));
        let fp = recorded(&c);
        let mut json = Vec::new();
        replay(&fp, &mut json).unwrap();
        assert_eq!(c.0.get(), 1);
        assert_eq!(json, b"1");
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let fp = recorded(&(
            serde_json::json!({"a": [1, "x", {"b": null}]}),
            Shape::Struct { b: 1.0, a: None },
            "é".repeat(300),
        ));
        let (record, text, names) = (&fp.record, fp.text.as_str(), &fp.names[..]);
        let mut out = Vec::new();
        assert!(replay(&fp, &mut out).is_ok());
        for cut in 0..record.len() {
            assert!(
                replay_canonical_json(&record[..cut], text, names, &mut out).is_err(),
                "{cut}"
            );
        }
        let extra = [&record[..], &[0]].concat();
        assert!(replay_canonical_json(&extra, text, names, &mut out).is_err());
        assert!(replay_canonical_json(&[255], "", &[], &mut out).is_err());
        // The text must be the recorded one, all of it, cut nowhere inside
        // a character.
        assert!(replay_canonical_json(record, &text[..text.len() - 2], names, &mut out).is_err());
        assert!(replay_canonical_json(record, &format!("{text}x"), names, &mut out).is_err());
        assert!(replay_canonical_json(record, &format!("x{text}"), names, &mut out).is_err());
        // So must the names on the side.
        assert!(replay_canonical_json(record, text, &names[1..], &mut out).is_err());
        let more = [names, &["extra"]].concat();
        assert!(replay_canonical_json(record, text, &more, &mut out).is_err());
        let mut other = names.to_vec();
        other[0] = "Other";
        assert!(replay_canonical_json(record, text, &other, &mut out).is_err());
    }
}
