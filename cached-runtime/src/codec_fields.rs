//! How many fields a value writes for each of its structs.
//!
//! bincode writes a struct as its fields one after the other, with no
//! names and no count, so a reader takes as many as its type declares. A
//! field that the value does not write (`skip_serializing_if` that fired,
//! `skip_serializing`) leaves the reader short of one: it reads the next
//! field's bytes in its place and, when they happen to parse, returns a
//! different value without an error. Decoding a payload back therefore
//! proves nothing by itself; [`written`] lists the fields each struct
//! wrote, the reader lists those each struct read
//! (`wire::from_slice_counting_fields`), and the lists must be equal.
//! Tuple structs and tuple variants count too (serde lets their fields be
//! skipped), and a struct that skipped a field by `skip_serializing_if`
//! (serde's `skip_field`) counts as [`SKIPPED`], which no reader matches:
//! its count alone could agree with a reader that also skips one, another.

use std::fmt;

use serde::ser::{self, Serialize, Serializer};

/// The count of a struct that skipped a field: never a reader's.
pub(crate) const SKIPPED: u32 = u32::MAX;

/// The fields `value` writes for each struct, tuple struct and variant of
/// either in it, in the order it serializes them (each counted where it
/// starts), as a binary format sees it (`is_human_readable` is false, as
/// for bincode: some types serialize otherwise for JSON).
pub(crate) fn written<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u32>, CountError> {
    let mut counter = Counter {
        counts: Vec::new(),
        open: Vec::new(),
    };
    value.serialize(&mut counter)?;
    Ok(counter.counts)
}

/// A value whose `Serialize` failed while its fields were counted.
#[derive(Debug)]
pub(crate) struct CountError(String);

impl fmt::Display for CountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CountError {}

impl ser::Error for CountError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CountError(crate::codec::bounded_message(msg))
    }
}

struct Counter {
    /// One count per struct met, in the order met.
    counts: Vec<u32>,
    /// The indices in `counts` of the structs being written.
    open: Vec<usize>,
}

impl Counter {
    fn start_struct(&mut self) {
        self.open.push(self.counts.len());
        self.counts.push(0);
    }

    fn field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CountError> {
        if let Some(&at) = self.open.last() {
            self.counts[at] = self.counts[at].saturating_add(1);
        }
        value.serialize(self)
    }

    fn skip_field(&mut self) {
        if let Some(&at) = self.open.last() {
            self.counts[at] = SKIPPED;
        }
    }

    fn end_struct(&mut self) {
        self.open.pop();
    }
}

type Done = Result<(), CountError>;

impl<'a> Serializer for &'a mut Counter {
    type Ok = ();
    type Error = CountError;
    type SerializeSeq = Elements<'a>;
    type SerializeTuple = Elements<'a>;
    type SerializeTupleStruct = Fields<'a>;
    type SerializeTupleVariant = Fields<'a>;
    type SerializeMap = Elements<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Fields<'a>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, _: bool) -> Done {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Done {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Done {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Done {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Done {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Done {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Done {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Done {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Done {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Done {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Done {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Done {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Done {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Done {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Done {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Done {
        Ok(())
    }
    fn serialize_none(self) -> Done {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Done {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Elements<'a>, CountError> {
        Ok(Elements(self))
    }
    fn serialize_tuple(self, _: usize) -> Result<Elements<'a>, CountError> {
        Ok(Elements(self))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, CountError> {
        self.start_struct();
        Ok(Fields(self))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, CountError> {
        self.start_struct();
        Ok(Fields(self))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Elements<'a>, CountError> {
        Ok(Elements(self))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, CountError> {
        self.start_struct();
        Ok(Fields(self))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, CountError> {
        self.start_struct();
        Ok(Fields(self))
    }
}

/// The elements of a sequence, tuple or map: counted only for the structs
/// inside them.
pub(crate) struct Elements<'a>(&'a mut Counter);

impl Elements<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(&mut *self.0)
    }
}

impl ser::SerializeSeq for Elements<'_> {
    type Ok = ();
    type Error = CountError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.element(value)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeTuple for Elements<'_> {
    type Ok = ();
    type Error = CountError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.element(value)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeMap for Elements<'_> {
    type Ok = ();
    type Error = CountError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        self.element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.element(value)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

/// The fields of a struct, tuple struct or variant of either: each written
/// one counts; a skipped one (`skip_field`) marks the struct [`SKIPPED`].
pub(crate) struct Fields<'a>(&'a mut Counter);

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = CountError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Done {
        self.0.field(value)
    }
    fn skip_field(&mut self, _: &'static str) -> Done {
        self.0.skip_field();
        Ok(())
    }
    fn end(self) -> Done {
        self.0.end_struct();
        Ok(())
    }
}

impl ser::SerializeStructVariant for Fields<'_> {
    type Ok = ();
    type Error = CountError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Done {
        self.0.field(value)
    }
    fn skip_field(&mut self, _: &'static str) -> Done {
        self.0.skip_field();
        Ok(())
    }
    fn end(self) -> Done {
        self.0.end_struct();
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Fields<'_> {
    type Ok = ();
    type Error = CountError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.0.field(value)
    }
    fn end(self) -> Done {
        self.0.end_struct();
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Fields<'_> {
    type Ok = ();
    type Error = CountError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.0.field(value)
    }
    fn end(self) -> Done {
        self.0.end_struct();
        Ok(())
    }
}
