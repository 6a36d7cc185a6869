//! Stored values: a fixed 20-byte header followed by the payload, bincode
//! or JSON as the header's codec id says, compressed (zlib, or LZ4 when the
//! config says so) when it is at least `compress_min_bytes` long.
//!
//! The byte-level format, with a worked example, is in `docs/FORMAT.md`; in
//! short (all integers little-endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | format version, `2` |
//! | 1 | 1 | codec id: `1` = bincode 2, serde API, `config::standard()`; `2` = JSON (serde_json) |
//! | 2 | 1 | flags: bit 0 = payload is zlib-compressed; bit 1 = payload is an LZ4 block; at most one of the two; other bits `0` |
//! | 3 | 1 | reserved, `0` |
//! | 4 | 8 | created at, Unix time in ms (u64) |
//! | 12 | 4 | compute time in µs (u32, saturating) |
//! | 16 | 4 | payload length before compression (u32) |
//! | 20 | .. | payload (zlib stream when flag bit 0 is set, LZ4 block when bit 1 is) |
//!
//! # What decoding guarantees
//!
//! `decode` is fed whatever is in the store, so it treats the bytes as
//! hostile. For any input it returns (`Ok` or [`CodecError::Malformed`])
//! without panicking, in time linear in the input and the claimed payload
//! length, and:
//!
//! - Nothing is allocated before the header is checked: version, codec,
//!   flags and reserved byte must be known values, and the claimed payload
//!   length must be at most `max_value_bytes` (and `u32::MAX`).
//! - An uncompressed payload is read in place (no copy) and must be exactly
//!   as long as the header says.
//! - A claimed length that the compressed bytes could not inflate to, even
//!   at the format's densest, is refused before anything is allocated.
//! - A compressed payload is inflated into one buffer of the claimed length
//!   (hence at most `max_value_bytes`), plus 264 bytes of room for zlib's
//!   fast loop; the stream must end exactly at the claimed length:
//!   inflating one byte more (a decompression bomb) or fewer, or bytes
//!   after the zlib stream or the LZ4 block, is an error.
//! - A bincode value is decoded by a bounded reader of the format (module
//!   `wire` below) rather than by `bincode::serde::decode_from_slice`, whose
//!   `deserialize_string`/`deserialize_byte_buf` run `vec![0u8; len]` on a
//!   length read from the input before checking it against the input (only
//!   bincode's const-generic `LIMIT` guards it, and that limit also counts
//!   every integer at its in-memory width, so no limit both stops a hostile
//!   length and accepts every honest payload). Here every length read from
//!   the payload is checked against the bytes remaining *before* anything is
//!   allocated for it: a string or byte buffer is at most its bytes present
//!   in the payload; a sequence or map announces a size hint of at most the
//!   remaining byte count (serde's own collections further cap their
//!   preallocation at 1 MiB); sequences of elements that encode to zero
//!   bytes (`Vec<()>`) get at most `max(4096, payload length)` such elements
//!   in total; nesting is limited to [`MAX_DEPTH`] levels, so a hostile
//!   recursive value cannot overflow the stack.
//! - Bytes left after the value are an error.
//! - A JSON value is decoded by `serde_json::from_slice` from that same
//!   bounded payload: JSON is self-describing, so every string, number and
//!   element is backed by payload bytes (serde_json never preallocates from
//!   a claimed length; there are none in JSON), and nesting is bounded by
//!   serde_json's own recursion limit of 128 levels.
//!
//! So the decoder itself holds at most `max_value_bytes` (and 264 bytes) of
//! buffers, and every element of the value it builds is backed by at least
//! one payload byte (apart from the budgeted zero-byte elements): a hostile
//! entry can make `decode` build nothing bigger than an honest entry of the
//! same payload size decoding into the same type could. (The in-memory size
//! of a value can exceed its encoded size, e.g. one payload byte per `None`
//! of an `Option<[u64; 16]>`, for honest and hostile entries alike.)
//!
//! Encoding uses bincode itself (the reader above is cross-checked against
//! bincode's decoder by the tests) or `serde_json::to_writer`, and stops as soon as the payload grows
//! past `max_value_bytes`: its payload buffer never exceeds that plus the
//! header.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::now_ms;
use crate::config::Compression;

/// Header length in bytes.
pub(crate) const HEADER_LEN: usize = 20;
/// Byte 0: the layout of everything that follows. Version 2 added the JSON
/// codec and came with keys that name their function (see `key`).
const FORMAT_VERSION: u8 = 2;
/// Byte 1: bincode 2, serde API, `bincode::config::standard()`.
const CODEC_BINCODE: u8 = 1;
/// Byte 1: JSON as serde_json writes it (compact, UTF-8).
const CODEC_JSON: u8 = 2;

/// The serde format of a payload (header byte 1). A reader decodes
/// whatever the entry's id names; which one a writer picks is up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Codec {
    /// bincode 2, standard configuration: compact and fast, but not
    /// self-describing (no `deserialize_any`), so serde's `flatten`,
    /// untagged and internally tagged enums, `skip_serializing_if` and
    /// `serde_json::Value` cannot be read back from it.
    Bincode,
    /// serde_json: self-describing, reads back every type that round-trips
    /// through JSON.
    Json,
}

impl Codec {
    /// The header's codec id.
    pub(crate) const fn id(self) -> u8 {
        match self {
            Codec::Bincode => CODEC_BINCODE,
            Codec::Json => CODEC_JSON,
        }
    }

    /// The codec an id names, if any.
    pub(crate) const fn from_id(id: u8) -> Option<Codec> {
        match id {
            CODEC_BINCODE => Some(Codec::Bincode),
            CODEC_JSON => Some(Codec::Json),
            _ => None,
        }
    }

    /// The other codec.
    pub(crate) const fn other(self) -> Codec {
        match self {
            Codec::Bincode => Codec::Json,
            Codec::Json => Codec::Bincode,
        }
    }

    /// The name used in logs and in the `codec = "..."` option.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Codec::Bincode => "bincode",
            Codec::Json => "json",
        }
    }
}
/// Byte 2, bit 0: the payload is a zlib stream.
const FLAG_ZLIB: u8 = 1;
/// Byte 2, bit 1: the payload is an LZ4 block (no frame, no size prefix:
/// the header's `raw_len` is the size). A reader that predates it sees an
/// unknown flag and takes the entry for a miss rather than misreading it.
const FLAG_LZ4: u8 = 2;
/// Every flag this version knows; any other bit set is an error.
const KNOWN_FLAGS: u8 = FLAG_ZLIB | FLAG_LZ4;

// The zlib level is `CodecLimits::zlib_level` (`Config::zlib_level`).
// Measured with zlib-rs (release build, reused compressor and inflater,
// one machine), compressing the bincode payloads of the benchmark
// fixtures; the 2 KB row after `INFLATE_SLACK`, the others before:
//
// | payload | level 1 | level 2 | level 3 | level 6 |
// | --- | --- | --- | --- | --- |
// | 2 KB search response (1 614 B) | 1 161 B, 7.5 µs, inflate 2.9 µs | 931 B, 16.8 µs, 4.8 µs | 929 B, 17.1 µs, 4.8 µs | 930 B, 17.6 µs, 4.8 µs |
// | 64 KB rows (51 798 B) | 18 656 B, 95 µs, 39 µs | 15 842 B, 151 µs, 42 µs | 15 121 B, 199 µs, 41 µs | 14 192 B, 678 µs, 37 µs |
// | 1 MB rows (827 592 B) | 288 954 B, 2.0 ms, 0.79 ms | 242 967 B, 3.7 ms, 0.82 ms | 228 798 B, 4.9 ms, 0.76 ms | 211 239 B, 13.7 ms, 0.71 ms |
//
// Level 1 is zlib-rs's quick strategy (fixed Huffman codes: nothing to
// build before inflating, hence its faster inflate of small values).
// Above level 3, each level costs far more CPU for a few percent.

/// Deepest nesting of options, structs, tuples, sequences, maps, enums and
/// newtypes that `decode` follows; deeper input is malformed. Bounds the
/// stack a hostile recursive value can use (serde_json uses 128 too).
const MAX_DEPTH: u32 = 128;

/// Zero-byte elements (`Vec<()>`, structs whose fields are all skipped)
/// allowed in one value at least, whatever the payload length.
const MIN_EMPTY_ELEMENTS: usize = 4096;

/// Compressors kept for reuse, with their level: creating one allocates
/// and clears ~300 KB of tables (about 90 µs, more than compressing a
/// 500-byte value).
const DEFLATE_POOL_MAX: usize = 4;
static DEFLATE_POOL: Mutex<Vec<(u32, Compress)>> = Mutex::new(Vec::new());

/// Encoding settings taken from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodecLimits {
    pub compress_min_bytes: usize,
    /// How payloads of at least `compress_min_bytes` are compressed when
    /// written; decoding follows each entry's header instead.
    pub compression: Compression,
    /// The zlib level of zlib payloads, 1 to 9.
    pub zlib_level: u32,
    pub max_value_bytes: usize,
}

impl CodecLimits {
    /// The largest payload allowed: `max_value_bytes`, and never more than
    /// the header's u32 length field can say.
    fn max_payload(&self) -> usize {
        self.max_value_bytes.min(u32::MAX as usize)
    }
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    /// Encoding: the payload reached this many bytes (the encoder stops
    /// there, so the whole value may be larger), over `max_value_bytes`.
    #[error("value of at least {0} bytes is over max_value_bytes")]
    TooLarge(usize),
    /// Decoding: the bytes are not a valid entry for this type.
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// Encoding: the value's `Serialize` failed or the codec cannot express
    /// it (a map without a length for bincode, a non-string map key for
    /// JSON).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// Verified encoding: the payload does not decode back into the type.
    #[error("written but not read back: {0}")]
    NoReadback(String),
}

fn malformed(what: impl Into<String>) -> CodecError {
    CodecError::Malformed(what.into())
}

/// The longest message kept from a codec's error. Errors may quote the
/// payload (`invalid type: string "..."`), and the payload comes from Redis:
/// a message copied whole would cost a multiple of `max_value_bytes`.
const MAX_MESSAGE_BYTES: usize = 256;

/// `message` as text, cut after [`MAX_MESSAGE_BYTES`] (at a character
/// boundary, marked with `…`) without ever formatting more than that.
pub(crate) fn bounded_message(message: impl fmt::Display) -> String {
    /// Keeps the first bytes written, then refuses the rest (which stops
    /// the formatting early).
    struct Capped(String);

    impl fmt::Write for Capped {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = MAX_MESSAGE_BYTES - self.0.len();
            if s.len() <= room {
                self.0.push_str(s);
                return Ok(());
            }
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.0.push_str(&s[..cut]);
            self.0.push('…');
            Err(fmt::Error)
        }
    }

    let mut out = Capped(String::with_capacity(MAX_MESSAGE_BYTES + 4));
    // An `Err` here only means the message was cut.
    let _ = fmt::write(&mut out, format_args!("{message}"));
    out.0
}

/// The header of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The payload's format.
    pub codec: Codec,
    /// Flag bits 0 and 1: how the payload is compressed, if it is.
    pub compression: Option<Compression>,
    /// When the value was encoded, Unix time in ms.
    pub created_at_ms: u64,
    /// How long computing the value took, µs (saturating at `u32::MAX`).
    pub compute_us: u32,
    /// Payload length before compression.
    pub raw_len: u32,
}

impl Header {
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = FORMAT_VERSION;
        b[1] = self.codec.id();
        b[2] = match self.compression {
            None => 0,
            Some(Compression::Zlib) => FLAG_ZLIB,
            Some(Compression::Lz4) => FLAG_LZ4,
        };
        b[3] = 0;
        b[4..12].copy_from_slice(&self.created_at_ms.to_le_bytes());
        b[12..16].copy_from_slice(&self.compute_us.to_le_bytes());
        b[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        b
    }

    /// Reads and checks the header at the start of `bytes`.
    fn parse(bytes: &[u8]) -> Result<Header, CodecError> {
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(malformed(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        };
        let [version, codec, flags, reserved, c0, c1, c2, c3, c4, c5, c6, c7, t0, t1, t2, t3, l0, l1, l2, l3] =
            *h;
        if version != FORMAT_VERSION {
            return Err(malformed(format!("unknown format version {version}")));
        }
        let Some(codec) = Codec::from_id(codec) else {
            return Err(malformed(format!("unknown codec id {codec}")));
        };
        if flags & !KNOWN_FLAGS != 0 {
            return Err(malformed(format!("unknown flags {flags:#04x}")));
        }
        let compression = match flags {
            0 => None,
            FLAG_ZLIB => Some(Compression::Zlib),
            FLAG_LZ4 => Some(Compression::Lz4),
            _ => {
                return Err(malformed(format!(
                    "flags {flags:#04x}: zlib and LZ4 both set"
                )))
            }
        };
        if reserved != 0 {
            return Err(malformed(format!("reserved byte is {reserved}, not 0")));
        }
        Ok(Header {
            codec,
            compression,
            created_at_ms: u64::from_le_bytes([c0, c1, c2, c3, c4, c5, c6, c7]),
            compute_us: u32::from_le_bytes([t0, t1, t2, t3]),
            raw_len: u32::from_le_bytes([l0, l1, l2, l3]),
        })
    }
}

/// An encoded value and its payload size before compression.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// The whole entry: header and payload.
    pub bytes: Vec<u8>,
    /// Payload length before compression (the header's `raw_len`).
    pub raw_len: usize,
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` with bincode (tests; the call path picks a codec).
#[cfg(test)]
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    compute: Duration,
    limits: CodecLimits,
) -> Result<Encoded, CodecError> {
    encode_with(Codec::Bincode, value, compute, limits)
}

/// Encodes `value` with `codec` and its compute time.
///
/// Fails with [`CodecError::TooLarge`] as soon as the payload grows past
/// `max_value_bytes` (the caller returns the value without storing it).
pub(crate) fn encode_with<T: Serialize + ?Sized>(
    codec: Codec,
    value: &T,
    compute: Duration,
    limits: CodecLimits,
) -> Result<Encoded, CodecError> {
    encode_at(codec, value, compute, limits, now_ms(), |_| Ok(()))
}

/// [`encode_with`], and before compressing, decodes the payload again as a
/// `T`: [`CodecError::NoReadback`] when it does not (a type, or a value,
/// that this codec can write but not read back). With bincode, decoding
/// without an error is not enough: bincode writes no field names and no
/// counts, so a field the value skipped on write (`skip_serializing_if`),
/// a variant skipped on read or fields written in another order make the
/// reader take other bytes for a field, which may parse into another value.
/// So the value read back must also serialize as the value did
/// ([`crate::codec_readback`]). JSON reads names, but writes some values
/// alike (`Some(Value::Null)` and `None`; an untagged enum's `Int(5)` and
/// `Float(5.0)`), so its read-back is compared too, sequences in any order.
/// Costs one decode of the uncompressed payload and two walks of the value.
pub(crate) fn encode_verified<T: Serialize + DeserializeOwned>(
    codec: Codec,
    value: &T,
    compute: Duration,
    limits: CodecLimits,
) -> Result<Encoded, CodecError> {
    encode_at(codec, value, compute, limits, now_ms(), |payload| {
        let back = decode_payload::<T>(codec, payload).map_err(|e| match e {
            CodecError::Malformed(why) => CodecError::NoReadback(why),
            other => other,
        })?;
        match codec {
            Codec::Bincode if !crate::codec_readback::same(value, &back)? => {
                Err(CodecError::NoReadback(
                    "bincode: the value read back is another value (a field or variant skipped \
                     on one side only, or fields written in another order)"
                        .to_owned(),
                ))
            }
            Codec::Json if !crate::codec_readback::same_in_any_order(value, &back)? => {
                Err(CodecError::NoReadback(
                    "json: the value read back is another value (`Some` of a value written \
                     `null`, such as `Some(Value::Null)` or `Some(None)`, reads back as `None`; \
                     an untagged enum's variant read back as another; a field skipped on read)"
                        .to_owned(),
                ))
            }
            _ => Ok(()),
        }
    })
}

fn encode_at<T: Serialize + ?Sized>(
    codec: Codec,
    value: &T,
    compute: Duration,
    limits: CodecLimits,
    created_at_ms: u64,
    check: impl FnOnce(&[u8]) -> Result<(), CodecError>,
) -> Result<Encoded, CodecError> {
    // The payload is written right after room for the header, so an
    // uncompressed entry is this very buffer.
    let mut w = PayloadWriter {
        buf: Vec::with_capacity(HEADER_LEN + 128),
        max_len: HEADER_LEN + limits.max_payload(),
        wanted: 0,
    };
    w.buf.resize(HEADER_LEN, 0);
    let written = match codec {
        Codec::Bincode => bincode::serde::encode_into_writer(value, &mut w, bincode_config())
            .map_err(|e| e.to_string()),
        Codec::Json => serde_json::to_writer(&mut w, value).map_err(|e| e.to_string()),
    };
    if let Err(e) = written {
        return Err(if w.wanted > 0 {
            CodecError::TooLarge(w.wanted - HEADER_LEN)
        } else {
            CodecError::Encode(e)
        });
    }
    let mut buf = w.buf;
    check(&buf[HEADER_LEN..])?;
    let raw_len = buf.len() - HEADER_LEN;
    let header = Header {
        codec,
        compression: (raw_len >= limits.compress_min_bytes).then_some(limits.compression),
        created_at_ms,
        compute_us: u32::try_from(compute.as_micros()).unwrap_or(u32::MAX),
        // max_payload() <= u32::MAX
        raw_len: raw_len as u32,
    };
    let mut bytes = match header.compression {
        Some(Compression::Zlib) => {
            let mut out = Vec::with_capacity(HEADER_LEN + raw_len / 2 + 64);
            out.extend_from_slice(&header.to_bytes());
            deflate_into(&buf[HEADER_LEN..], limits.zlib_level, &mut out)?;
            out
        }
        Some(Compression::Lz4) => {
            let mut out = vec![0; HEADER_LEN + lz4_flex::block::get_maximum_output_size(raw_len)];
            out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
            let n = lz4_flex::block::compress_into(&buf[HEADER_LEN..], &mut out[HEADER_LEN..])
                .map_err(|e| CodecError::Encode(format!("lz4: {e}")))?;
            out.truncate(HEADER_LEN + n);
            out
        }
        None => {
            buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
            buf
        }
    };
    bytes.shrink_to_fit();
    Ok(Encoded { bytes, raw_len })
}

/// The payload writer of both codecs: appends to a buffer, refusing to
/// grow it past `max_len` (header plus `max_value_bytes`).
struct PayloadWriter {
    buf: Vec<u8>,
    max_len: usize,
    /// Length the buffer would have had when the limit stopped it; 0 if not.
    wanted: usize,
}

impl bincode::enc::write::Writer for PayloadWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.append(bytes)
            .map_err(|()| bincode::error::EncodeError::Other("over max_value_bytes"))
    }
}

impl std::io::Write for PayloadWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes)
            .map(|()| bytes.len())
            .map_err(|()| std::io::Error::other("over max_value_bytes"))
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.append(bytes)
            .map_err(|()| std::io::Error::other("over max_value_bytes"))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PayloadWriter {
    /// Appends `bytes`, or records the length wanted and refuses.
    fn append(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let new_len = self.buf.len().saturating_add(bytes.len());
        if new_len > self.max_len {
            self.wanted = new_len;
            return Err(());
        }
        if new_len > self.buf.capacity() {
            // Grow geometrically, but never past the limit.
            let target = new_len
                .max(self.buf.capacity().saturating_mul(2))
                .min(self.max_len);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends the zlib stream of `input` at `level` to `out`, with a pooled
/// compressor of that level when there is one.
fn deflate_into(input: &[u8], level: u32, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let pooled = DEFLATE_POOL.lock().ok().and_then(|mut pool| {
        let at = pool.iter().rposition(|(l, _)| *l == level)?;
        Some(pool.swap_remove(at).1)
    });
    let mut z = pooled.unwrap_or_else(|| Compress::new(flate2::Compression::new(level), true));
    let result = deflate_with(&mut z, input, out);
    z.reset();
    if let Ok(mut pool) = DEFLATE_POOL.lock() {
        // Caches of several levels in one process: the oldest goes, freed
        // after the lock is released (its tables are ~300 KB).
        let evicted = (pool.len() >= DEFLATE_POOL_MAX).then(|| pool.remove(0));
        pool.push((level, z));
        drop(pool);
        drop(evicted);
    }
    result
}

fn deflate_with(z: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let in0 = z.total_in();
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(input.len() / 4 + 64);
        }
        let (before_in, before_out) = (z.total_in(), z.total_out());
        let consumed = (before_in - in0) as usize;
        let status = z
            .compress_vec(&input[consumed..], out, FlushCompress::Finish)
            .map_err(|e| CodecError::Encode(format!("zlib: {e}")))?;
        if status == Status::StreamEnd {
            debug_assert_eq!(z.total_in() - in0, input.len() as u64);
            return Ok(());
        }
        if z.total_in() == before_in && z.total_out() == before_out && out.capacity() > out.len() {
            return Err(CodecError::Encode("zlib: no progress".into()));
        }
    }
}

/// Decompresses `input` (as `compression` says) into exactly `raw_len`
/// bytes, or fails, and passes them to `f`. The bytes live in a buffer of
/// this thread, kept between calls (up to [`INFLATED_KEEP_MAX`]): a hit
/// allocates no room for them.
fn with_inflated<R>(
    compression: Compression,
    input: &[u8],
    raw_len: usize,
    f: impl FnOnce(&[u8]) -> Result<R, CodecError>,
) -> Result<R, CodecError> {
    thread_local! {
        static INFLATED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // A claim that `input` could not inflate to even at the format's
    // densest is refused before room is made for it: otherwise a 23-byte
    // entry would have a cache with a large `max_value_bytes` zero-fill
    // gigabytes before finding out.
    let most = most_inflated(compression, input.len());
    if raw_len > most {
        return Err(malformed(format!(
            "header claims {raw_len} bytes, more than {} compressed bytes can hold ({most})",
            input.len()
        )));
    }
    // zlib gets room past the payload: its fast loop (zlib-rs's, from
    // zlib-ng) runs only while 260 bytes of output room are left, so with
    // none the last 260 bytes were decoded symbol by symbol.
    let len = match compression {
        Compression::Zlib => raw_len + INFLATE_SLACK,
        Compression::Lz4 => raw_len,
    };
    // Taken, not borrowed: a `Deserialize` impl that itself decodes an
    // entry just starts with a buffer of its own.
    let mut out = INFLATED.try_with(std::cell::Cell::take).unwrap_or_default();
    // The only buffer whose size comes from the entry: `len` bytes at most
    // (`raw_len` was checked against max_value_bytes), reserved exactly.
    out.clear();
    out.reserve_exact(len);
    out.resize(len, 0);
    let inflated = match compression {
        Compression::Zlib => with_inflater(|z| inflate_into(z, input, &mut out, raw_len)),
        Compression::Lz4 => lz4_into(input, &mut out),
    };
    let result = inflated.and_then(|()| f(&out[..raw_len]));
    if out.capacity() <= INFLATED_KEEP_MAX + INFLATE_SLACK {
        let _ = INFLATED.try_with(|cell| cell.set(out));
    }
    result
}

/// The most `len` compressed bytes can inflate to. DEFLATE's densest code
/// is a 258-byte match in two bits (1032 bytes per byte), after at least
/// one literal; an LZ4 block's densest is one more length byte per 255
/// bytes of match, after a sequence's token, offset and first 19 bytes.
fn most_inflated(compression: Compression, len: usize) -> usize {
    match compression {
        Compression::Zlib => len.saturating_mul(1032).saturating_add(258),
        Compression::Lz4 => len.saturating_mul(255).saturating_add(64),
    }
}

/// Largest inflate buffer kept per thread between decodes.
const INFLATED_KEEP_MAX: usize = 64 << 10;

thread_local! {
    /// One reusable inflater per thread: a fresh one costs ~3 µs of table
    /// set-up, more than inflating a typical entry.
    static INFLATER: std::cell::Cell<Option<Decompress>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's inflater, reset for a new zlib stream.
fn with_inflater<R>(f: impl FnOnce(&mut Decompress) -> R) -> R {
    let mut z = INFLATER
        .with(std::cell::Cell::take)
        .map(|mut z| {
            z.reset(true);
            z
        })
        .unwrap_or_else(|| Decompress::new(true));
    let result = f(&mut z);
    INFLATER.with(|cell| cell.set(Some(z)));
    result
}

/// Room past the payload in the inflate buffer: zlib-rs's fast loop runs
/// only while at least 260 bytes of output room remain
/// (`INFLATE_FAST_MIN_LEFT`, from zlib-ng; zlib's own is 258) and 15 bytes
/// of input, so only a stream's last few input bytes take the slow path.
/// 264: the 260, rounded up to a multiple of 8.
const INFLATE_SLACK: usize = 264;

/// Inflates `input` into the first `raw_len` bytes of `out`, exactly: the
/// stream must end there, with its checksum, and use all of `input`. The
/// room after `raw_len` only lets a stream that is too long show itself.
fn inflate_into(
    z: &mut Decompress,
    input: &[u8],
    out: &mut [u8],
    raw_len: usize,
) -> Result<(), CodecError> {
    let zerr = |e: flate2::DecompressError| malformed(format!("zlib: {e}"));
    loop {
        let (in0, out0) = (z.total_in() as usize, z.total_out() as usize);
        // `Finish`: all of the stream is here and `out` has room for all of
        // it, so the inflater need not copy what it wrote into its window
        // for a next call (zlib's `updatewindow`, ~5 % of a 2 KB inflate).
        let status = z
            .decompress(&input[in0..], &mut out[out0..], FlushDecompress::Finish)
            .map_err(zerr)?;
        if z.total_out() as usize > raw_len {
            return Err(malformed(format!(
                "zlib stream inflates past the {raw_len} bytes the header claims"
            )));
        }
        if status == Status::StreamEnd {
            break;
        }
        if z.total_in() as usize == in0 && z.total_out() as usize == out0 {
            return Err(malformed("zlib stream is truncated"));
        }
    }
    let (used_in, used_out) = (z.total_in() as usize, z.total_out() as usize);
    if used_out != raw_len {
        return Err(malformed(format!(
            "zlib stream inflates to {used_out} bytes, the header claims {raw_len}"
        )));
    }
    if used_in != input.len() {
        return Err(malformed(format!(
            "{} bytes after the zlib stream",
            input.len() - used_in
        )));
    }
    Ok(())
}

/// Decompresses the LZ4 block `input` into all of `out`, exactly.
///
/// The block decoder writes into the slice it is given and refuses to go
/// past its end (a bomb stops there); it reads `input` to its last byte, so
/// bytes after the block are decoded as more sequences, and with `out`
/// already full those fail too. What is left to check is a block that
/// ends short of `out`.
fn lz4_into(input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let raw_len = out.len();
    let n = lz4_flex::block::decompress_into(input, out).map_err(|e| match e {
        lz4_flex::block::DecompressError::OutputTooSmall { .. } => malformed(format!(
            "LZ4 block inflates past the {raw_len} bytes the header claims"
        )),
        other => malformed(format!("lz4: {other}")),
    })?;
    if n != raw_len {
        return Err(malformed(format!(
            "LZ4 block inflates to {n} bytes, the header claims {raw_len}"
        )));
    }
    Ok(())
}

/// Decodes a stored value. See the module docs for what it guarantees on
/// hostile input.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    limits: CodecLimits,
) -> Result<(T, Header), CodecError> {
    let header = Header::parse(bytes)?;
    let raw_len = header.raw_len as usize;
    if raw_len > limits.max_payload() {
        return Err(malformed(format!(
            "header claims a {raw_len}-byte payload, over max_value_bytes ({})",
            limits.max_value_bytes
        )));
    }
    let body = &bytes[HEADER_LEN..];
    let value = if let Some(compression) = header.compression {
        with_inflated(compression, body, raw_len, |payload| {
            decode_payload(header.codec, payload)
        })?
    } else {
        if body.len() != raw_len {
            return Err(malformed(format!(
                "payload is {} bytes, the header claims {raw_len}",
                body.len()
            )));
        }
        decode_payload(header.codec, body)?
    };
    Ok((value, header))
}

/// Decodes an uncompressed payload written with `codec`.
fn decode_payload<T: DeserializeOwned>(codec: Codec, payload: &[u8]) -> Result<T, CodecError> {
    match codec {
        Codec::Bincode => wire::from_slice(payload).map_err(|e| malformed(format!("bincode: {e}"))),
        // `from_slice` refuses anything but whitespace after the value, and
        // nesting past serde_json's recursion limit (128).
        // serde_json has already built its whole message; only the copy
        // kept here is bounded.
        Codec::Json => serde_json::from_slice(payload)
            .map_err(|e| malformed(bounded_message(format_args!("json: {e}")))),
    }
}

/// A bounded serde reader of the bincode 2 `config::standard()` format
/// (little-endian, variable-length integers, no size limit of its own).
///
/// It accepts what `bincode::serde::decode_from_slice` accepts and yields
/// the same values (the tests compare the two on random input), except that
/// it checks every length against the remaining input before acting on it
/// and refuses nesting deeper than [`MAX_DEPTH`] and runs of zero-byte
/// elements past their budget, where bincode would overflow the stack or
/// spin; see the module docs.
mod wire {
    use std::fmt;

    use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

    use super::{MAX_DEPTH, MIN_EMPTY_ELEMENTS};

    /// Why a payload does not decode.
    #[derive(Debug)]
    pub(super) struct Error(String);

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Error {}

    impl de::Error for Error {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            // Bounded as it is formatted: a message may quote the payload.
            Error(super::bounded_message(msg))
        }
    }

    type Result<T> = std::result::Result<T, Error>;

    /// Decodes one `T` that must span all of `payload`.
    pub(super) fn from_slice<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
        let mut de = Reader {
            rest: payload,
            depth: 0,
            empty_left: payload.len().max(MIN_EMPTY_ELEMENTS),
        };
        let value = T::deserialize(&mut de)?;
        if !de.rest.is_empty() {
            return Err(Error(format!("{} bytes after the value", de.rest.len())));
        }
        Ok(value)
    }

    /// Varint markers: a first byte up to 250 is the value itself; 251, 252,
    /// 253, 254 announce a u16, u32, u64, u128 (little-endian) following.
    const U16_BYTE: u8 = 251;
    const U32_BYTE: u8 = 252;
    const U64_BYTE: u8 = 253;
    const U128_BYTE: u8 = 254;

    struct Reader<'de> {
        rest: &'de [u8],
        depth: u32,
        /// Elements of input-sized sequences and maps that may still take
        /// no payload byte.
        empty_left: usize,
    }

    impl<'de> Reader<'de> {
        fn take(&mut self, n: usize) -> Result<&'de [u8]> {
            if n > self.rest.len() {
                return Err(Error(format!("needs {n} bytes, {} left", self.rest.len())));
            }
            let (head, tail) = self.rest.split_at(n);
            self.rest = tail;
            Ok(head)
        }

        fn byte(&mut self) -> Result<u8> {
            Ok(self.take(1)?[0])
        }

        fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
            let mut a = [0u8; N];
            a.copy_from_slice(self.take(N)?);
            Ok(a)
        }

        /// An unsigned varint of an integer `bits` wide.
        fn uvar(&mut self, bits: u32) -> Result<u128> {
            let first = self.byte()?;
            Ok(match first {
                0..=250 => u128::from(first),
                U16_BYTE if bits >= 16 => u128::from(u16::from_le_bytes(self.array()?)),
                U32_BYTE if bits >= 32 => u128::from(u32::from_le_bytes(self.array()?)),
                U64_BYTE if bits >= 64 => u128::from(u64::from_le_bytes(self.array()?)),
                U128_BYTE if bits >= 128 => u128::from_le_bytes(self.array()?),
                _ => {
                    return Err(Error(format!(
                        "varint marker {first} is invalid for a {bits}-bit integer"
                    )))
                }
            })
        }

        /// A signed varint: zigzag (0, -1, 1, -2, ... as 0, 1, 2, 3, ...).
        fn ivar(&mut self, bits: u32) -> Result<i128> {
            let n = self.uvar(bits)?;
            Ok(((n >> 1) as i128) ^ -((n & 1) as i128))
        }

        /// A length (u64 varint) of a string, sequence or map.
        fn len(&mut self) -> Result<usize> {
            let n = self.uvar(64)?;
            usize::try_from(n).map_err(|_| Error(format!("length {n} does not fit in usize")))
        }

        /// A length-prefixed byte string, borrowed from the input.
        fn bytes(&mut self) -> Result<&'de [u8]> {
            let n = self.len()?;
            self.take(n)
        }

        fn str(&mut self) -> Result<&'de str> {
            let bytes = self.bytes()?;
            // Most strings of a cached value are short and ASCII:
            // `is_ascii` checks them a word at a time, where `from_utf8`
            // goes byte by byte. On the 2 KB response that saves 2 800 of
            // the 5 000 instructions validation took (callgrind).
            if bytes.is_ascii() {
                // SAFETY: every ASCII byte sequence is valid UTF-8.
                return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
            }
            std::str::from_utf8(bytes).map_err(|e| Error(format!("string: {e}")))
        }

        fn nest<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
            if self.depth >= MAX_DEPTH {
                return Err(Error(format!("nested deeper than {MAX_DEPTH} levels")));
            }
            self.depth += 1;
            let result = f(self);
            self.depth -= 1;
            result
        }

        /// Accounts for one element that took no payload byte.
        fn empty_element(&mut self) -> Result<()> {
            self.empty_left = self
                .empty_left
                .checked_sub(1)
                .ok_or_else(|| Error("too many elements that take no bytes".into()))?;
            Ok(())
        }
    }

    macro_rules! unsigned {
        ($($method:ident $visit:ident $ty:ty),*) => {$(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
                visitor.$visit(self.uvar(<$ty>::BITS)? as $ty)
            }
        )*};
    }

    macro_rules! signed {
        ($($method:ident $visit:ident $ty:ty),*) => {$(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
                visitor.$visit(self.ivar(<$ty>::BITS)? as $ty)
            }
        )*};
    }

    impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
            Err(Error(
                "bincode is not self-describing: types that need deserialize_any \
                 (serde_json::Value, #[serde(flatten)], untagged or internally tagged enums) \
                 cannot be decoded"
                    .into(),
            ))
        }

        fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            match self.byte()? {
                0 => visitor.visit_bool(false),
                1 => visitor.visit_bool(true),
                b => Err(Error(format!("invalid bool {b}"))),
            }
        }

        fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_u8(self.byte()?)
        }

        fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_i8(self.byte()? as i8)
        }

        unsigned!(deserialize_u16 visit_u16 u16, deserialize_u32 visit_u32 u32,
            deserialize_u64 visit_u64 u64, deserialize_u128 visit_u128 u128);
        signed!(deserialize_i16 visit_i16 i16, deserialize_i32 visit_i32 i32,
            deserialize_i64 visit_i64 i64, deserialize_i128 visit_i128 i128);

        fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_f32(f32::from_le_bytes(self.array()?))
        }

        fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_f64(f64::from_le_bytes(self.array()?))
        }

        fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            // UTF-8, 1 to 4 bytes; the first byte tells how many.
            let first = *self
                .rest
                .first()
                .ok_or_else(|| Error("needs 1 byte, 0 left".into()))?;
            let width = match first {
                0x00..=0x7F => 1,
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => return Err(Error(format!("invalid char: first byte {first:#04x}"))),
            };
            let bytes = self.take(width)?;
            let c = std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.chars().next())
                .ok_or_else(|| Error(format!("invalid char: bytes {bytes:02x?}")))?;
            visitor.visit_char(c)
        }

        fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_borrowed_str(self.str()?)
        }

        fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            // Allocates the string's length only once its bytes are there.
            visitor.visit_string(self.str()?.to_owned())
        }

        fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_borrowed_bytes(self.bytes()?)
        }

        fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_byte_buf(self.bytes()?.to_vec())
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            match self.byte()? {
                0 => visitor.visit_none(),
                1 => self.nest(|de| visitor.visit_some(de)),
                b => Err(Error(format!("invalid Option tag {b}"))),
            }
        }

        fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.visit_unit()
        }

        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value> {
            visitor.visit_unit()
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value> {
            self.nest(|de| visitor.visit_newtype_struct(de))
        }

        fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            let len = self.len()?;
            self.nest(|de| {
                visitor.visit_seq(Seq {
                    de,
                    left: len,
                    from_input: true,
                })
            })
        }

        fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
            self.nest(|de| {
                visitor.visit_seq(Seq {
                    de,
                    left: len,
                    from_input: false,
                })
            })
        }

        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            len: usize,
            visitor: V,
        ) -> Result<V::Value> {
            self.deserialize_tuple(len, visitor)
        }

        fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            let len = self.len()?;
            self.nest(|de| {
                visitor.visit_map(Map {
                    de,
                    left: len,
                    key_start: 0,
                })
            })
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value> {
            self.deserialize_tuple(fields.len(), visitor)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value> {
            self.nest(|de| visitor.visit_enum(Enum { de }))
        }

        fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
            Err(Error("bincode does not encode identifiers".into()))
        }

        fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
            Err(Error("bincode cannot skip an unknown value".into()))
        }

        fn is_human_readable(&self) -> bool {
            false
        }
    }

    /// Elements of a sequence (`from_input`: its length came from the
    /// payload) or of a tuple or struct (length from the type).
    struct Seq<'a, 'de> {
        de: &'a mut Reader<'de>,
        left: usize,
        from_input: bool,
    }

    impl<'de> de::SeqAccess<'de> for Seq<'_, 'de> {
        type Error = Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            let start = self.de.rest.len();
            let value = seed.deserialize(&mut *self.de)?;
            if self.from_input && self.de.rest.len() == start {
                self.de.empty_element()?;
            }
            Ok(Some(value))
        }

        fn size_hint(&self) -> Option<usize> {
            // Never more than the bytes left: an element that takes bytes
            // takes at least one, so a bigger claim is a lie.
            Some(self.left.min(self.de.rest.len()))
        }
    }

    struct Map<'a, 'de> {
        de: &'a mut Reader<'de>,
        left: usize,
        /// Bytes left when the current key started.
        key_start: usize,
    }

    impl<'de> de::MapAccess<'de> for Map<'_, 'de> {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            self.key_start = self.de.rest.len();
            seed.deserialize(&mut *self.de).map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
            let value = seed.deserialize(&mut *self.de)?;
            if self.de.rest.len() == self.key_start {
                self.de.empty_element()?;
            }
            Ok(value)
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.left.min(self.de.rest.len()))
        }
    }

    /// An enum: the variant index (u32 varint), then the variant's fields.
    struct Enum<'a, 'de> {
        de: &'a mut Reader<'de>,
    }

    impl<'de, 'a> de::EnumAccess<'de> for Enum<'a, 'de> {
        type Error = Error;
        type Variant = Self;

        fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
            let index = self.de.uvar(32)? as u32;
            let value = seed.deserialize(IntoDeserializer::<Error>::into_deserializer(index))?;
            Ok((value, self))
        }
    }

    impl<'de> de::VariantAccess<'de> for Enum<'_, 'de> {
        type Error = Error;

        fn unit_variant(self) -> Result<()> {
            Ok(())
        }

        fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
            seed.deserialize(&mut *self.de)
        }

        fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
            de::Deserializer::deserialize_tuple(&mut *self.de, len, visitor)
        }

        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value> {
            de::Deserializer::deserialize_tuple(&mut *self.de, fields.len(), visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::io::{Read as _, Write as _};

    use serde::{Deserialize, Serialize};

    use super::*;

    const LIMITS: CodecLimits = CodecLimits {
        compress_min_bytes: 256,
        compression: Compression::Zlib,
        zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
        max_value_bytes: 8 << 20,
    };
    const NEVER: CodecLimits = CodecLimits {
        compress_min_bytes: usize::MAX,
        compression: Compression::Zlib,
        zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
        max_value_bytes: 8 << 20,
    };
    const ALWAYS: CodecLimits = CodecLimits {
        compress_min_bytes: 0,
        compression: Compression::Zlib,
        zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
        max_value_bytes: 8 << 20,
    };
    const LIMITS_LZ4: CodecLimits = CodecLimits {
        compression: Compression::Lz4,
        ..LIMITS
    };
    const ALWAYS_LZ4: CodecLimits = CodecLimits {
        compression: Compression::Lz4,
        ..ALWAYS
    };

    /// xorshift64*: a tiny deterministic PRNG for the fuzz loops.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
        fn some_bytes(&mut self, max: u64) -> Vec<u8> {
            let n = self.below(max + 1) as usize;
            self.bytes(n)
        }
        fn string(&mut self, max: u64) -> String {
            let n = self.below(max + 1);
            (0..n)
                .map(|_| match self.below(10) {
                    0 => 'é',
                    1 => '😀',
                    _ => (b'a' + self.below(26) as u8) as char,
                })
                .collect()
        }
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    enum Kind {
        Unit,
        New(i32),
        Tup(u8, String),
        Rec { a: Option<u16>, b: Vec<i64> },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Sample {
        id: u64,
        neg: i64,
        small: i8,
        byte: u8,
        flag: bool,
        name: String,
        ch: char,
        tags: Vec<String>,
        scores: Vec<f64>,
        opt: Option<u32>,
        kind: Kind,
        kinds: Vec<Kind>,
        map: BTreeMap<String, u32>,
        big: u128,
        bigi: i128,
        pair: (u16, i16),
        f: f32,
        unit: (),
        raw: Vec<u8>,
        buf: ByteBuf,
    }

    /// Goes through `serialize_bytes` / `deserialize_byte_buf`.
    #[derive(Debug, PartialEq, Clone)]
    struct ByteBuf(Vec<u8>);

    impl Serialize for ByteBuf {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    fn random_kind(r: &mut Rng) -> Kind {
        match r.below(4) {
            0 => Kind::Unit,
            1 => Kind::New(r.next() as i32 >> r.below(32)),
            2 => Kind::Tup(r.next() as u8, r.string(5)),
            _ => Kind::Rec {
                a: (r.below(2) == 0).then(|| r.next() as u16 >> r.below(16)),
                b: (0..r.below(4))
                    .map(|_| (r.next() as i64) >> r.below(64))
                    .collect(),
            },
        }
    }

    /// Random values whose integers span every varint width.
    fn random_sample(r: &mut Rng) -> Sample {
        Sample {
            id: r.next() >> r.below(64),
            neg: (r.next() as i64) >> r.below(64),
            small: r.next() as i8,
            byte: r.next() as u8,
            flag: r.below(2) == 0,
            name: r.string(12),
            ch: char::from_u32(r.below(0x11_0000) as u32).unwrap_or('x'),
            tags: (0..r.below(4)).map(|_| r.string(6)).collect(),
            scores: (0..r.below(4))
                .map(|_| (r.next() >> 11) as f64 / 7.0)
                .collect(),
            opt: (r.below(2) == 0).then(|| r.next() as u32 >> r.below(32)),
            kind: random_kind(r),
            kinds: (0..r.below(3)).map(|_| random_kind(r)).collect(),
            map: (0..r.below(3))
                .map(|_| (r.string(4), r.next() as u32))
                .collect(),
            big: (u128::from(r.next()) << 64 | u128::from(r.next())) >> r.below(128),
            bigi: ((u128::from(r.next()) << 64 | u128::from(r.next())) as i128) >> r.below(128),
            pair: (
                r.next() as u16 >> r.below(16),
                (r.next() as i16) >> r.below(16),
            ),
            f: (r.below(1000) as f32) / 8.0,
            unit: (),
            raw: r.some_bytes(8),
            buf: ByteBuf(r.some_bytes(8)),
        }
    }

    fn sample() -> Sample {
        random_sample(&mut Rng(42))
    }

    fn payload_of<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode_config()).unwrap()
    }

    /// An entry with a hand-made header.
    fn entry(flags: u8, raw_len: u32, body: &[u8]) -> Vec<u8> {
        let mut b = Header {
            codec: Codec::Bincode,
            compression: None,
            created_at_ms: 1,
            compute_us: 2,
            raw_len,
        }
        .to_bytes()
        .to_vec();
        b[2] = flags;
        b.extend_from_slice(body);
        b
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        lz4_flex::block::compress(data)
    }

    /// `data` compressed as `flags` says (0: as it is).
    fn packed(flags: u8, data: &[u8]) -> Vec<u8> {
        match flags {
            0 => data.to_vec(),
            FLAG_ZLIB => zlib(data),
            FLAG_LZ4 => lz4(data),
            _ => unreachable!("one compression at most"),
        }
    }

    #[test]
    fn error_messages_are_cut_at_a_character_boundary() {
        assert_eq!(bounded_message("short"), "short");
        let long = "é".repeat(MAX_MESSAGE_BYTES); // two bytes each
        let cut = bounded_message(format_args!("x{long}"));
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
        assert!(cut.starts_with("xé"));
        // A message quoting a whole payload keeps only its start.
        let quoted = bounded_message(format_args!("{:?}", "\u{7f}".repeat(1 << 20)));
        assert!(quoted.len() <= MAX_MESSAGE_BYTES + 3);
    }

    fn roundtrip<T>(value: &T, limits: CodecLimits)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let enc = encode(value, Duration::from_micros(7), limits).unwrap();
        assert_eq!(enc.raw_len, payload_of(value).len());
        let (back, header) = decode::<T>(&enc.bytes, limits).unwrap();
        assert_eq!(&back, value);
        assert_eq!(header.raw_len as usize, enc.raw_len);
        assert_eq!(header.compute_us, 7);
    }

    fn assert_malformed<T: DeserializeOwned + std::fmt::Debug>(
        bytes: &[u8],
        limits: CodecLimits,
    ) -> String {
        match decode::<T>(bytes, limits) {
            Err(CodecError::Malformed(msg)) => msg,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn strings_are_checked_as_utf8_whether_ascii_or_not() {
        // ASCII (the word-at-a-time path) and not (`from_utf8`).
        for text in ["", "plain ascii, longer than a machine word", "é", "aé😀b"] {
            roundtrip(&text.to_string(), LIMITS);
            roundtrip(&vec![text.to_string(); 3], LIMITS);
        }
        // A length byte, then bytes that are not UTF-8: a lone
        // continuation byte, a cut two-byte sequence, an overlong '/', a
        // surrogate; each after ASCII, so a check that stopped at the
        // first ASCII word would miss it.
        for bad in [&[0x80][..], &[0xC3], &[0xC0, 0xAF], &[0xED, 0xA0, 0x80]] {
            let mut p = b"ascii before".to_vec();
            p.extend_from_slice(bad);
            p.insert(0, p.len() as u8);
            let msg = assert_malformed::<String>(&entry(0, p.len() as u32, &p), LIMITS);
            assert!(msg.contains("string"), "{msg}");
        }
    }

    #[test]
    fn roundtrips_plain_and_compressed() {
        for limits in [NEVER, ALWAYS, LIMITS, ALWAYS_LZ4, LIMITS_LZ4] {
            roundtrip(&sample(), limits);
            roundtrip(&"héllo wörld".to_string(), limits);
            roundtrip(&String::new(), limits);
            roundtrip(&vec![1u64, 250, 251, 65_535, 65_536, u64::MAX], limits);
            roundtrip(&vec![-1i32, 0, i32::MIN, i32::MAX], limits);
            roundtrip(&Some(vec![Some(1u8), None]), limits);
            roundtrip(&None::<String>, limits);
            roundtrip(&(), limits);
            roundtrip(&vec![(); 10], limits);
            roundtrip(&Kind::Unit, limits);
            roundtrip(&Kind::New(-5), limits);
            roundtrip(&Kind::Tup(3, "x".into()), limits);
            roundtrip(
                &Kind::Rec {
                    a: Some(300),
                    b: vec![-1, 1 << 40],
                },
                limits,
            );
            roundtrip(
                &HashMap::from([("a".to_string(), vec![1.5f64]), ("b".into(), vec![])]),
                limits,
            );
            roundtrip(&'\u{10FFFF}', limits);
            roundtrip(&(u128::MAX, i128::MIN, f32::MIN_POSITIVE, true), limits);
            roundtrip(&ByteBuf(vec![0, 255, 7]), limits);
            roundtrip(&"x".repeat(100_000), limits);
        }
        // Result is an enum like any other.
        roundtrip(&Ok::<u8, String>(1), LIMITS);
        roundtrip(&Err::<u8, String>("no".into()), LIMITS);
    }

    #[test]
    fn readers_decode_either_compression_whatever_they_write() {
        let page = search_page();
        for written in [LIMITS, LIMITS_LZ4] {
            let enc = encode(&page, Duration::ZERO, written).unwrap();
            for reader in [LIMITS, LIMITS_LZ4, NEVER] {
                let (back, header) = decode::<Vec<Hit>>(&enc.bytes, reader).unwrap();
                assert_eq!(back, page);
                assert_eq!(header.compression, Some(written.compression));
            }
        }
    }

    #[test]
    fn lz4_entries_are_an_lz4_block_after_the_header() {
        let page = search_page();
        let enc = encode(&page, Duration::ZERO, LIMITS_LZ4).unwrap();
        assert_eq!(enc.bytes[2], FLAG_LZ4);
        let payload = payload_of(&page);
        // No size prefix, no frame: the header's raw_len sizes the output.
        assert_eq!(
            lz4_flex::block::decompress(&enc.bytes[HEADER_LEN..], payload.len()).unwrap(),
            payload
        );
        assert!(enc.bytes.len() < payload.len(), "compresses");
        // And the block a third-party encoder writes reads back.
        let other = entry(FLAG_LZ4, payload.len() as u32, &lz4(&payload));
        assert_eq!(decode::<Vec<Hit>>(&other, NEVER).unwrap().0, page);
    }

    #[test]
    fn compress_flag_set_exactly_at_threshold() {
        let value = sample();
        let len = payload_of(&value).len();
        for (compression, flag) in [(Compression::Zlib, FLAG_ZLIB), (Compression::Lz4, FLAG_LZ4)] {
            for (min, expect) in [
                (len - 1, true),
                (len, true),
                (len + 1, false),
                (0, true),
                (usize::MAX, false),
            ] {
                let limits = CodecLimits {
                    compress_min_bytes: min,
                    compression,
                    zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
                    max_value_bytes: 1 << 20,
                };
                let enc = encode(&value, Duration::ZERO, limits).unwrap();
                assert_eq!(
                    enc.bytes[2],
                    if expect { flag } else { 0 },
                    "{compression:?}, threshold {min}, payload {len}"
                );
                let (back, header) = decode::<Sample>(&enc.bytes, limits).unwrap();
                assert_eq!(back, value);
                assert_eq!(header.compression, expect.then_some(compression));
                if !expect {
                    assert_eq!(enc.bytes.len(), HEADER_LEN + len);
                }
            }
        }
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Hit {
        id: u64,
        title: String,
        url: String,
        score: f64,
        tags: Vec<String>,
        snippet: String,
        views: u32,
        published: Option<String>,
    }

    fn search_page() -> Vec<Hit> {
        let words = [
            "rust", "cache", "redis", "search", "engine", "query", "result", "value", "server",
            "index",
        ];
        let mut r = Rng(7);
        let mut w = |n: usize| {
            (0..n)
                .map(|_| words[r.below(10) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        };
        (0..60u64)
            .map(|i| Hit {
                id: 1_000_000 + i * 37,
                title: w(5),
                url: format!("https://example.com/docs/{i}/{}", w(2).replace(' ', "-")),
                score: 1.0 / (i as f64 + 1.5),
                tags: (0..3).map(|_| w(1)).collect(),
                snippet: w(20),
                views: (i * 7919 % 10_000) as u32,
                published: (i % 3 != 0)
                    .then(|| format!("2024-0{}-1{}T10:00:00Z", i % 9 + 1, i % 9)),
            })
            .collect()
    }

    /// Every level writes a zlib stream any zlib reader inflates, and the
    /// level is the one asked for: level 1 (fixed Huffman codes) stores
    /// this page in more bytes than level 3, and level 9 in no more.
    #[test]
    fn every_zlib_level_roundtrips_and_is_applied() {
        let page = search_page();
        let mut sizes = Vec::new();
        for level in 1..=9 {
            let limits = CodecLimits {
                zlib_level: level,
                ..ALWAYS
            };
            let enc = encode(&page, Duration::ZERO, limits).unwrap();
            assert_eq!(enc.bytes[2], FLAG_ZLIB, "level {level}");
            let (back, _) = decode::<Vec<Hit>>(&enc.bytes, limits).unwrap();
            assert_eq!(back, page, "level {level}");
            let mut inflated = Vec::new();
            flate2::read::ZlibDecoder::new(&enc.bytes[HEADER_LEN..])
                .read_to_end(&mut inflated)
                .unwrap();
            assert_eq!(inflated.len(), enc.raw_len, "level {level}");
            sizes.push(enc.bytes.len());
        }
        assert!(
            sizes[0] > sizes[2],
            "level 1 {} vs 3 {}",
            sizes[0],
            sizes[2]
        );
        assert!(
            sizes[8] <= sizes[2],
            "level 9 {} vs 3 {}",
            sizes[8],
            sizes[2]
        );
    }

    /// The compressor pool hands out only compressors of the level asked
    /// for: interleaving levels gives each level's own bytes every time.
    #[test]
    fn pooled_compressors_keep_their_level() {
        let page = search_page();
        let alone = |level| {
            let limits = CodecLimits {
                zlib_level: level,
                ..ALWAYS
            };
            // The payload: the header holds the time of writing.
            let mut bytes = encode(&page, Duration::ZERO, limits).unwrap().bytes;
            bytes.drain(..HEADER_LEN);
            bytes
        };
        let (one, nine) = (alone(1), alone(9));
        assert!(one != nine, "levels 1 and 9 wrote the same stream");
        for _ in 0..3 {
            for (level, want) in [(1, &one), (9, &nine), (9, &nine), (1, &one)] {
                assert!(&alone(level) == want, "level {level} wrote other bytes");
            }
        }
    }

    #[test]
    fn compressible_20kb_value_is_stored_in_under_a_third_of_its_json() {
        let page = search_page();
        let json = serde_json::to_vec(&page).unwrap().len();
        assert!((18_000..24_000).contains(&json), "json is {json} bytes");
        let enc = encode(&page, Duration::ZERO, LIMITS).unwrap();
        assert!(enc.bytes[2] & FLAG_ZLIB != 0);
        assert!(
            enc.bytes.len() * 3 < json,
            "stored {} bytes for {json} bytes of JSON",
            enc.bytes.len()
        );
        let (back, _) = decode::<Vec<Hit>>(&enc.bytes, LIMITS).unwrap();
        assert_eq!(back, page);
    }

    #[test]
    fn header_fields_read_back() {
        let before = now_ms();
        let enc = encode(&sample(), Duration::from_micros(123_456), LIMITS).unwrap();
        let after = now_ms();
        let (_, h) = decode::<Sample>(&enc.bytes, LIMITS).unwrap();
        assert!(
            (before..=after).contains(&h.created_at_ms),
            "{before} <= {} <= {after}",
            h.created_at_ms
        );
        assert_eq!(h.compute_us, 123_456);
        assert_eq!(h.raw_len as usize, enc.raw_len);
        assert_eq!(
            enc.bytes[..4],
            [
                FORMAT_VERSION,
                CODEC_BINCODE,
                if h.compression.is_some() {
                    FLAG_ZLIB
                } else {
                    0
                },
                0
            ]
        );
        assert_eq!(Header::parse(&enc.bytes).unwrap(), h);
        // The compute time saturates.
        let enc = encode(&1u8, Duration::from_secs(10_000), LIMITS).unwrap();
        assert_eq!(
            decode::<u8>(&enc.bytes, LIMITS).unwrap().1.compute_us,
            u32::MAX
        );
    }

    #[test]
    fn too_large_values_are_refused_at_encode() {
        let value = "y".repeat(1000);
        let len = payload_of(&value).len();
        let exact = CodecLimits {
            compress_min_bytes: 256,
            compression: Compression::Zlib,
            zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
            max_value_bytes: len,
        };
        assert!(encode(&value, Duration::ZERO, exact).is_ok());
        let under = CodecLimits {
            max_value_bytes: len - 1,
            ..exact
        };
        match encode(&value, Duration::ZERO, under) {
            Err(CodecError::TooLarge(n)) => assert!(n > len - 1 && n <= len, "{n}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // The encoder stops as soon as it crosses the limit: 9 MiB of
        // 9-byte varints end in TooLarge just past 8 MiB.
        let big = vec![u64::MAX; 1 << 20];
        match encode(&big, Duration::ZERO, LIMITS) {
            Err(CodecError::TooLarge(n)) => assert!(n > 8 << 20 && n < (8 << 20) + 16, "{n}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let tiny = CodecLimits {
            compress_min_bytes: 0,
            compression: Compression::Zlib,
            zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
            max_value_bytes: 100,
        };
        assert!(
            matches!(encode(&big, Duration::ZERO, tiny), Err(CodecError::TooLarge(n)) if n <= 200)
        );
        // A payload over max_value_bytes on the read side (the config shrank).
        let enc = encode(&value, Duration::ZERO, LIMITS).unwrap();
        assert_malformed::<String>(&enc.bytes, under);
    }

    #[test]
    fn serialize_errors_are_encode_errors() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0..3).filter(|_| true))
            }
        }
        struct Failing;
        impl Serialize for Failing {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        assert!(matches!(
            encode(&Unsized, Duration::ZERO, LIMITS),
            Err(CodecError::Encode(_))
        ));
        assert!(matches!(
            encode(&Failing, Duration::ZERO, LIMITS),
            Err(CodecError::Encode(_))
        ));
    }

    #[test]
    fn bad_headers_are_malformed() {
        let good = encode(&sample(), Duration::ZERO, LIMITS).unwrap().bytes;
        assert!(decode::<Sample>(&good, LIMITS).is_ok());
        assert_malformed::<Sample>(&[], LIMITS);
        assert_malformed::<Sample>(&good[..HEADER_LEN - 1], LIMITS);
        for (at, value, what) in [
            (0, 1, "version"),
            (0, 0, "version"),
            (0, 3, "version"),
            (1, 0, "codec"),
            (1, 3, "codec"),
            (2, 4, "flags"),
            (2, 0x81, "flags"),
            (2, FLAG_ZLIB | FLAG_LZ4, "both set"),
            (3, 1, "reserved"),
        ] {
            let mut bad = good.clone();
            bad[at] = value;
            let msg = assert_malformed::<Sample>(&bad, LIMITS);
            assert!(msg.contains(what), "{msg}");
        }
        // raw_len = u32::MAX: refused before anything is allocated (over
        // max_value_bytes, or more than three bytes can inflate to).
        for flags in [0, FLAG_ZLIB, FLAG_LZ4] {
            let huge = entry(flags, u32::MAX, b"abc");
            let no_limit = CodecLimits {
                compress_min_bytes: 0,
                compression: Compression::Zlib,
                zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
                max_value_bytes: usize::MAX,
            };
            assert_malformed::<String>(&huge, LIMITS);
            // Even with no configured limit, the claim must be backed by bytes.
            assert_malformed::<String>(&huge, no_limit);
        }
    }

    #[test]
    fn truncated_entries_are_malformed() {
        for limits in [NEVER, ALWAYS, ALWAYS_LZ4] {
            let good = encode(&sample(), Duration::ZERO, limits).unwrap().bytes;
            for len in 0..good.len() {
                assert_malformed::<Sample>(&good[..len], limits);
            }
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let value = sample();
        // After an uncompressed payload.
        let mut bytes = encode(&value, Duration::ZERO, NEVER).unwrap().bytes;
        bytes.push(0);
        assert_malformed::<Sample>(&bytes, NEVER);
        // Inside the payload, counted in raw_len.
        let mut payload = payload_of(&value);
        payload.extend_from_slice(b"junk");
        let msg = assert_malformed::<Sample>(&entry(0, payload.len() as u32, &payload), NEVER);
        assert!(msg.contains("after the value"), "{msg}");
        let msg = assert_malformed::<Sample>(
            &entry(FLAG_ZLIB, payload.len() as u32, &zlib(&payload)),
            NEVER,
        );
        assert!(msg.contains("after the value"), "{msg}");
        let msg = assert_malformed::<Sample>(
            &entry(FLAG_LZ4, payload.len() as u32, &lz4(&payload)),
            NEVER,
        );
        assert!(msg.contains("after the value"), "{msg}");
        // After the zlib stream.
        let mut bytes = encode(&value, Duration::ZERO, ALWAYS).unwrap().bytes;
        bytes.extend_from_slice(b"junk");
        let msg = assert_malformed::<Sample>(&bytes, ALWAYS);
        assert!(msg.contains("after the zlib stream"), "{msg}");
        // After the LZ4 block: whatever the bytes, any length.
        let good = encode(&value, Duration::ZERO, ALWAYS_LZ4).unwrap().bytes;
        let mut r = Rng(3);
        for n in 1..64 {
            for _ in 0..20 {
                let mut bytes = good.clone();
                bytes.extend_from_slice(&r.bytes(n));
                assert_malformed::<Sample>(&bytes, ALWAYS_LZ4);
            }
        }
        let mut bytes = good.clone();
        bytes.push(0);
        assert_malformed::<Sample>(&bytes, ALWAYS_LZ4);
    }

    #[test]
    fn corrupt_lz4_blocks_are_malformed_or_wrong_values_never_panics() {
        let page = search_page();
        let good = encode(&page, Duration::ZERO, LIMITS_LZ4).unwrap().bytes;
        assert_eq!(good[2], FLAG_LZ4);
        // LZ4 has no checksum: a flipped literal byte may still decode (to
        // another value, or be caught by bincode); what must hold is no
        // panic and no read outside the block. Offsets and lengths out of
        // range are errors.
        let mut r = Rng(11);
        for _ in 0..2000 {
            let mut bad = good.clone();
            let at = HEADER_LEN + r.below((good.len() - HEADER_LEN) as u64) as usize;
            bad[at] ^= 1 << r.below(8);
            let _ = decode::<Vec<Hit>>(&bad, LIMITS_LZ4);
        }
        // A match pointing before the start of the output.
        let mut block = vec![0x10, b'a', 0x05, 0x00];
        block.extend_from_slice(&[0x50, b'a', b'b', b'c', b'd', b'e']);
        let msg = assert_malformed::<Vec<u8>>(&entry(FLAG_LZ4, 14, &block), NEVER);
        assert!(msg.contains("lz4"), "{msg}");
    }

    #[test]
    fn lz4_bomb_is_refused_at_the_claimed_size() {
        // 8 MB of zeros, ~32 KB as an LZ4 block, in a header claiming 1 KB.
        let bomb = lz4(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let msg = assert_malformed::<Vec<u8>>(&entry(FLAG_LZ4, 1024, &bomb), LIMITS);
        assert!(msg.contains("inflates past"), "{msg}");
        // Claiming more than the block holds fails too.
        let small = lz4(&[1u8; 1000]);
        let msg = assert_malformed::<Vec<u8>>(&entry(FLAG_LZ4, 2000, &small), LIMITS);
        assert!(msg.contains("inflates to 1000"), "{msg}");
        assert_malformed::<Vec<u8>>(&entry(FLAG_LZ4, 999, &small), LIMITS);
        // Over max_value_bytes: refused from the header alone.
        let tight = CodecLimits {
            max_value_bytes: 1000,
            ..LIMITS
        };
        let msg = assert_malformed::<Vec<u8>>(&entry(FLAG_LZ4, 8 << 20, &bomb), tight);
        assert!(msg.contains("over max_value_bytes"), "{msg}");
    }

    #[test]
    fn corrupt_zlib_streams_are_malformed() {
        let good = encode(&search_page(), Duration::ZERO, LIMITS)
            .unwrap()
            .bytes;
        assert!(good[2] & FLAG_ZLIB != 0);
        // The Adler-32 trailer, the zlib header, and the data itself.
        for at in [good.len() - 1, HEADER_LEN, HEADER_LEN + 1, good.len() / 2] {
            let mut bad = good.clone();
            bad[at] ^= 0x55;
            assert_malformed::<Vec<Hit>>(&bad, LIMITS);
        }
    }

    #[test]
    fn zlib_bomb_is_refused_without_inflating_it() {
        // 100 MB of zeros, ~100 KB compressed, in a header claiming 1 KB.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..100 {
            z.write_all(&chunk).unwrap();
        }
        let bomb = z.finish().unwrap();
        assert!(bomb.len() < 200_000);
        let msg = assert_malformed::<Vec<u8>>(&entry(FLAG_ZLIB, 1024, &bomb), LIMITS);
        assert!(msg.contains("inflates past"), "{msg}");
        // It stopped where the room ended, not after inflating it all.
        let mut out = vec![0u8; 1024 + INFLATE_SLACK];
        let mut z = Decompress::new(true);
        assert!(inflate_into(&mut z, &bomb, &mut out, 1024).is_err());
        assert!(z.total_out() as usize <= out.len(), "{}", z.total_out());
        // Claiming more than the stream holds fails too.
        let small = zlib(&[1u8; 1000]);
        let msg = assert_malformed::<Vec<u8>>(&entry(FLAG_ZLIB, 2000, &small), LIMITS);
        assert!(msg.contains("inflates to 1000"), "{msg}");
        assert_malformed::<Vec<u8>>(&entry(FLAG_ZLIB, 999, &small), LIMITS);
    }

    #[test]
    fn claims_past_the_densest_compression_are_refused_before_allocating() {
        let roomy = CodecLimits {
            max_value_bytes: usize::MAX,
            ..LIMITS
        };
        for (flags, compression) in [(FLAG_ZLIB, Compression::Zlib), (FLAG_LZ4, Compression::Lz4)] {
            let body = packed(flags, b"abc");
            let most = most_inflated(compression, body.len());
            let msg = assert_malformed::<Vec<u8>>(&entry(flags, most as u32 + 1, &body), roomy);
            assert!(msg.contains("can hold"), "{msg}");
            // At the bound itself the stream is tried (and fails for what
            // it really holds).
            let msg = assert_malformed::<Vec<u8>>(&entry(flags, most as u32, &body), roomy);
            assert!(!msg.contains("can hold"), "{msg}");
        }
        // The densest honest entries still decode: 8 MiB of zeros, at
        // zlib's best level and as an LZ4 block.
        let zeros = vec![0u8; 8 << 20];
        let payload =
            bincode::serde::encode_to_vec(ByteBuf(zeros.clone()), bincode_config()).unwrap();
        for (flags, body) in [
            (FLAG_ZLIB, {
                let mut z =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
                z.write_all(&payload).unwrap();
                z.finish().unwrap()
            }),
            (FLAG_LZ4, lz4(&payload)),
        ] {
            let limits = CodecLimits {
                max_value_bytes: 16 << 20,
                ..LIMITS
            };
            let e = entry(flags, payload.len() as u32, &body);
            let (value, _) = decode::<ByteBuf>(&e, limits).expect("the densest entry decodes");
            assert_eq!(value.0, zeros, "flags {flags}");
        }
    }

    #[test]
    fn zlib_stream_longer_than_claimed_is_refused_within_the_slack() {
        // The inflate buffer has room past the claimed length (for zlib's
        // fast loop): a stream a little longer than the header says must
        // still be refused, at every distance around that room.
        let small = zlib(&[1u8; 1000]);
        for over in [
            1,
            2,
            100,
            INFLATE_SLACK - 1,
            INFLATE_SLACK,
            INFLATE_SLACK + 1,
            999usize,
        ] {
            let over = over as u32;
            let msg = assert_malformed::<Vec<u8>>(&entry(FLAG_ZLIB, 1000 - over, &small), LIMITS);
            assert!(msg.contains("inflates past"), "{over}: {msg}");
        }
        // One byte of the payload short of the stream's end is caught too.
        let msg = assert_malformed::<Vec<u8>>(&entry(FLAG_ZLIB, 1001, &small), LIMITS);
        assert!(msg.contains("inflates to 1000"), "{msg}");
    }

    #[test]
    fn hostile_lengths_fail_fast_without_allocating() {
        // A valid header, then a length prefix claiming a 2^60-byte string.
        let mut payload = vec![253u8];
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        payload.extend_from_slice(b"abc");
        for flags in [0, FLAG_ZLIB, FLAG_LZ4] {
            let body = packed(flags, &payload);
            let bytes = entry(flags, payload.len() as u32, &body);
            assert_malformed::<String>(&bytes, LIMITS);
            assert_malformed::<ByteBuf>(&bytes, LIMITS);
            assert_malformed::<Vec<u8>>(&bytes, LIMITS);
            assert_malformed::<Vec<String>>(&bytes, LIMITS);
            assert_malformed::<Vec<u64>>(&bytes, LIMITS);
            assert_malformed::<HashMap<u64, String>>(&bytes, LIMITS);
            assert_malformed::<Vec<()>>(&bytes, LIMITS);
            assert_malformed::<Vec<Vec<()>>>(&bytes, LIMITS);
            // u64::MAX as well, and a length inside a struct.
            let mut p = vec![253u8];
            p.extend_from_slice(&u64::MAX.to_le_bytes());
            assert_malformed::<String>(&entry(0, p.len() as u32, &p), LIMITS);
            assert_malformed::<Vec<()>>(&entry(0, p.len() as u32, &p), LIMITS);
        }
        let mut p = payload_of(&sample());
        p.truncate(30);
        p.extend_from_slice(&[253, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert_malformed::<Sample>(&entry(0, p.len() as u32, &p), LIMITS);
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Node {
        next: Option<Box<Node>>,
    }

    fn chain(depth: usize) -> Node {
        let mut node = Node { next: None };
        for _ in 0..depth {
            node = Node {
                next: Some(Box::new(node)),
            };
        }
        node
    }

    #[test]
    fn nesting_is_bounded() {
        // Each link is a struct and an option: two levels.
        let ok = chain(MAX_DEPTH as usize / 2 - 1);
        let enc = encode(&ok, Duration::ZERO, LIMITS).unwrap();
        // Decoding at the limit fits in a small stack even in debug builds.
        let bytes = enc.bytes.clone();
        std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || {
                let (back, _) = decode::<Node>(&bytes, LIMITS).unwrap();
                assert_eq!(back, ok);
            })
            .unwrap()
            .join()
            .unwrap();
        let deep = encode(&chain(MAX_DEPTH as usize / 2 + 1), Duration::ZERO, LIMITS).unwrap();
        let msg = assert_malformed::<Node>(&deep.bytes, LIMITS);
        assert!(msg.contains("nested deeper"), "{msg}");
        // A hostile million-level chain fails without overflowing the stack.
        let mut p = vec![1u8; 1_000_000];
        p.push(0);
        assert_malformed::<Node>(&entry(0, p.len() as u32, &p), LIMITS);
        assert_malformed::<Vec<Vec<Vec<Vec<u8>>>>>(&entry(0, p.len() as u32, &p), LIMITS);
    }

    #[test]
    fn zero_byte_elements_are_budgeted() {
        // Honest ones go through.
        roundtrip(&vec![(); 4096], LIMITS);
        roundtrip(&vec![(); 3], LIMITS);
        // A claimed billion of them stops after the budget.
        let mut p = vec![252u8];
        p.extend_from_slice(&1_000_000_000u32.to_le_bytes());
        // The budget's own error: decoding stopped there, not after a
        // billion elements.
        let msg = assert_malformed::<Vec<()>>(&entry(0, p.len() as u32, &p), LIMITS);
        assert!(msg.contains("no bytes"), "{msg}");
        let msg = assert_malformed::<BTreeMap<(), ()>>(&entry(0, p.len() as u32, &p), LIMITS);
        assert!(msg.contains("no bytes"), "{msg}");
    }

    #[test]
    fn other_types_fail_or_decode_without_panic() {
        let enc = encode(&sample(), Duration::ZERO, LIMITS).unwrap();
        assert!(decode::<Hit>(&enc.bytes, LIMITS).is_err());
        assert!(decode::<String>(&enc.bytes, LIMITS).is_err());
        assert!(decode::<u64>(&enc.bytes, LIMITS).is_err());
        assert!(decode::<Vec<Kind>>(&enc.bytes, LIMITS).is_err());
        let _ = decode::<Vec<u8>>(&enc.bytes, LIMITS);
        let _ = decode::<(u64, i64, i8, u8, bool, String)>(&enc.bytes, LIMITS);
        // Same layout, other type: decodes (the format carries no names).
        #[derive(Deserialize, Debug)]
        struct Pair(u8, String);
        let enc = encode(&(7u8, "x".to_string()), Duration::ZERO, LIMITS).unwrap();
        let (pair, _) = decode::<Pair>(&enc.bytes, LIMITS).unwrap();
        assert_eq!((pair.0, pair.1.as_str()), (7, "x"));
        assert!(decode::<serde_json::Value>(&enc.bytes, LIMITS).is_err());
        let enc = encode(&"hello".to_string(), Duration::ZERO, LIMITS).unwrap();
        assert!(decode::<u32>(&enc.bytes, LIMITS).is_err());
        assert!(decode::<bool>(&enc.bytes, LIMITS).is_err());
        assert!(decode::<Option<String>>(&enc.bytes, LIMITS).is_err());
    }

    /// Decodes `bytes` into several types; only the absence of panics counts.
    fn decode_all(bytes: &[u8], limits: CodecLimits) {
        let _ = decode::<Sample>(bytes, limits);
        let _ = decode::<Vec<Hit>>(bytes, limits);
        let _ = decode::<String>(bytes, limits);
        let _ = decode::<Vec<Kind>>(bytes, limits);
        let _ = decode::<HashMap<String, Vec<u8>>>(bytes, limits);
        let _ = decode::<Node>(bytes, limits);
        let _ = decode::<Vec<()>>(bytes, limits);
        let _ = decode::<(char, f64, i128, Option<ByteBuf>)>(bytes, limits);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        // Random bytes, with and without a plausible header.
        for i in 0..6000 {
            let len = r.below(if i % 10 == 0 { 4000 } else { 80 }) as usize;
            let mut bytes = r.bytes(len);
            if i % 2 == 0 && bytes.len() >= HEADER_LEN {
                let flags = [0, FLAG_ZLIB, FLAG_LZ4][i / 2 % 3];
                let raw = if flags == 0 {
                    (len - HEADER_LEN) as u32
                } else {
                    r.below(5000) as u32
                };
                bytes[..HEADER_LEN].copy_from_slice(&entry(flags, raw, &[]));
            }
            decode_all(&bytes, LIMITS);
        }
        // Mutations and truncations of valid entries.
        let valid: Vec<Vec<u8>> = [NEVER, ALWAYS, ALWAYS_LZ4]
            .iter()
            .flat_map(|&limits| {
                [
                    encode(&sample(), Duration::ZERO, limits).unwrap().bytes,
                    encode(&random_sample(&mut Rng(5)), Duration::ZERO, limits)
                        .unwrap()
                        .bytes,
                    encode(&search_page()[..3], Duration::ZERO, limits)
                        .unwrap()
                        .bytes,
                    encode(&vec![Kind::Unit, Kind::New(1)], Duration::ZERO, limits)
                        .unwrap()
                        .bytes,
                ]
            })
            .collect();
        for i in 0..8000 {
            let mut bytes = valid[i % valid.len()].clone();
            for _ in 0..=r.below(4) {
                let at = r.below(bytes.len() as u64) as usize;
                match r.below(5) {
                    0 => bytes[at] = r.next() as u8,
                    1 => bytes[at] ^= 1 << r.below(8),
                    2 => bytes.truncate(at),
                    3 => bytes.insert(at, r.next() as u8),
                    _ => {
                        bytes.remove(at);
                    }
                }
                if bytes.is_empty() {
                    break;
                }
            }
            decode_all(&bytes, LIMITS);
        }
    }

    /// bincode's own decoder, made safe for hostile input by a 1 MiB limit
    /// (random test input is far too small to reach it honestly).
    fn bincode_decode<T: DeserializeOwned>(payload: &[u8]) -> Option<T> {
        let config = bincode_config().with_limit::<{ 1 << 20 }>();
        match bincode::serde::decode_from_slice::<T, _>(payload, config) {
            Ok((v, n)) if n == payload.len() => Some(v),
            _ => None,
        }
    }

    #[test]
    fn agrees_with_bincode() {
        let mut r = Rng(99);
        // Values written by bincode read back identically.
        for _ in 0..2000 {
            let value = random_sample(&mut r);
            let payload = payload_of(&value);
            assert_eq!(wire::from_slice::<Sample>(&payload).unwrap(), value);
            assert_eq!(bincode_decode::<Sample>(&payload).unwrap(), value);
        }
        // On random and mutated payloads both accept the same inputs and
        // read the same values (compared re-encoded: NaN != NaN).
        fn same<T: Serialize + DeserializeOwned>(payload: &[u8]) -> bool {
            let ours = wire::from_slice::<T>(payload).ok().map(|v| payload_of(&v));
            let theirs = bincode_decode::<T>(payload).map(|v| payload_of(&v));
            ours == theirs
        }
        let base = payload_of(&random_sample(&mut r));
        let mut accepted = 0;
        for i in 0..20_000 {
            let payload = if i % 2 == 0 {
                let n = r.below(24) as usize;
                r.bytes(n)
            } else {
                let mut p = base.clone();
                let at = r.below(p.len() as u64) as usize;
                p[at] = r.next() as u8;
                p
            };
            assert!(same::<Sample>(&payload), "Sample {payload:02x?}");
            assert!(
                same::<(u16, i32, u64, i128)>(&payload),
                "ints {payload:02x?}"
            );
            assert!(
                same::<(char, bool, Option<u8>, f32)>(&payload),
                "misc {payload:02x?}"
            );
            assert!(
                same::<(String, ByteBuf, Vec<u8>)>(&payload),
                "strings {payload:02x?}"
            );
            assert!(same::<Vec<Kind>>(&payload), "kinds {payload:02x?}");
            accepted += usize::from(wire::from_slice::<(u16, i32, u64, i128)>(&payload).is_ok());
        }
        assert!(accepted > 200, "only {accepted} random payloads decoded");
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Shape {
        Point,
        Circle(i32),
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Example {
        id: u32,
        name: String,
        tags: Vec<u16>,
        score: Option<f64>,
        shape: Shape,
    }

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The serde features bincode cannot read back, in one type.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Rich {
        value: serde_json::Value,
        #[serde(flatten)]
        rest: HashMap<String, serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        tagged: Tagged,
        either: Either,
        big: u128,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(tag = "type")]
    enum Tagged {
        A { x: i32 },
        B,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Either {
        Num(i64),
        Text(String),
    }

    fn rich() -> Rich {
        Rich {
            value: serde_json::json!({"q": {"match": {"title": "rust"}}, "size": [1, 2.5, null]}),
            rest: HashMap::from([("extra".to_string(), serde_json::json!(true))]),
            note: None,
            tagged: Tagged::A { x: -3 },
            either: Either::Text("t".into()),
            big: u128::MAX,
        }
    }

    fn json_roundtrip<T>(value: &T, limits: CodecLimits)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let enc = encode_verified(Codec::Json, value, Duration::from_micros(9), limits).unwrap();
        assert_eq!(enc.bytes[1], CODEC_JSON);
        assert_eq!(enc.raw_len, serde_json::to_vec(value).unwrap().len());
        let (back, header) = decode::<T>(&enc.bytes, limits).unwrap();
        assert_eq!(&back, value);
        assert_eq!(header.codec, Codec::Json);
        assert_eq!(header.compute_us, 9);
    }

    #[test]
    fn json_reads_back_what_bincode_cannot() {
        let value = rich();
        // bincode cannot even write it (flatten: a map of unknown length)...
        assert!(matches!(
            encode(&value, Duration::ZERO, LIMITS),
            Err(CodecError::Encode(_))
        ));
        // ...and writes a `Value` it cannot read back.
        let enc = encode(&value.value, Duration::ZERO, LIMITS).unwrap();
        assert!(decode::<serde_json::Value>(&enc.bytes, LIMITS).is_err());
        assert!(matches!(
            encode_verified(Codec::Bincode, &value.value, Duration::ZERO, LIMITS),
            Err(CodecError::NoReadback(_))
        ));
        for limits in [NEVER, ALWAYS, LIMITS, ALWAYS_LZ4] {
            json_roundtrip(&value, limits);
            json_roundtrip(&search_page(), limits);
            json_roundtrip(&Some(serde_json::json!([1, {"a": null}])), limits);
            json_roundtrip(&(i128::MIN, u128::MAX), limits);
            json_roundtrip(&"x".repeat(10_000), limits);
        }
        // Compressed when long enough, like bincode.
        let enc = encode_with(Codec::Json, &search_page(), Duration::ZERO, LIMITS).unwrap();
        assert_eq!(enc.bytes[2], FLAG_ZLIB);
        assert!(enc.bytes.len() * 3 < enc.raw_len);
    }

    #[test]
    fn json_limits_hold() {
        // Encoding stops at max_value_bytes.
        let value = "y".repeat(1000);
        let tight = CodecLimits {
            compress_min_bytes: 256,
            compression: Compression::Zlib,
            zlib_level: crate::config::DEFAULT_ZLIB_LEVEL,
            max_value_bytes: 1001,
        };
        match encode_with(Codec::Json, &value, Duration::ZERO, tight) {
            Err(CodecError::TooLarge(n)) => assert!(n > 1001, "{n}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let fits = CodecLimits {
            max_value_bytes: 1002,
            ..tight
        };
        assert!(encode_with(Codec::Json, &value, Duration::ZERO, fits).is_ok());
        // Decoding refuses a claimed payload over the limit from the header.
        let enc = encode_with(Codec::Json, &value, Duration::ZERO, fits).unwrap();
        assert!(decode::<String>(&enc.bytes, tight).is_err());
        // Hostile nesting stops at serde_json's recursion limit, no stack
        // overflow, in a small stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let mut bytes = entry(FLAG_ZLIB, deep.len() as u32, &zlib(deep.as_bytes()));
        bytes[1] = CODEC_JSON;
        std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || {
                let msg = assert_malformed::<serde_json::Value>(&bytes, LIMITS);
                assert!(msg.contains("recursion limit"), "{msg}");
            })
            .unwrap()
            .join()
            .unwrap();
        // Junk after the value, and a JSON bomb claiming a small size.
        for body in [&b"{\"a\":1}x"[..], b"{\"a\":1} {}", b"\xff"] {
            let mut bytes = entry(0, body.len() as u32, body);
            bytes[1] = CODEC_JSON;
            assert_malformed::<serde_json::Value>(&bytes, LIMITS);
        }
        let bomb = " ".repeat(1 << 20);
        for flags in [FLAG_ZLIB, FLAG_LZ4] {
            let mut bytes = entry(flags, 64, &packed(flags, bomb.as_bytes()));
            bytes[1] = CODEC_JSON;
            let msg = assert_malformed::<serde_json::Value>(&bytes, LIMITS);
            assert!(msg.contains("inflates past"), "{msg}");
        }
    }

    #[test]
    fn json_fuzz_never_panics() {
        let mut r = Rng(0xA5A5);
        let valid: Vec<Vec<u8>> = [NEVER, ALWAYS, ALWAYS_LZ4]
            .iter()
            .map(|&limits| {
                encode_with(Codec::Json, &rich(), Duration::ZERO, limits)
                    .unwrap()
                    .bytes
            })
            .collect();
        for i in 0..4000 {
            let mut bytes = valid[i % valid.len()].clone();
            for _ in 0..=r.below(4) {
                let at = r.below(bytes.len() as u64) as usize;
                match r.below(3) {
                    0 => bytes[at] = r.next() as u8,
                    1 => bytes.truncate(at.max(1)),
                    _ => bytes.insert(at, r.next() as u8),
                }
            }
            let _ = decode::<Rich>(&bytes, LIMITS);
            let _ = decode::<serde_json::Value>(&bytes, LIMITS);
            decode_all(&bytes, LIMITS);
        }
    }

    /// The JSON example of docs/FORMAT.md.
    #[test]
    fn format_doc_json_example() {
        let value = Example {
            id: 300,
            name: "ab".into(),
            tags: vec![1, 1000],
            score: Some(0.5),
            shape: Shape::Circle(-2),
        };
        let enc = encode_at(
            Codec::Json,
            &value,
            Duration::from_micros(1500),
            NEVER,
            1_700_000_000_000,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(
            hex(&enc.bytes[..HEADER_LEN]),
            "02 02 00 00 00 68 e5 cf 8b 01 00 00 dc 05 00 00 48 00 00 00"
        );
        assert_eq!(
            std::str::from_utf8(&enc.bytes[HEADER_LEN..]).unwrap(),
            r#"{"id":300,"name":"ab","tags":[1,1000],"score":0.5,"shape":{"Circle":-2}}"#
        );
        assert_eq!(decode::<Example>(&enc.bytes, NEVER).unwrap().0, value);
    }

    /// The worked example of docs/FORMAT.md.
    #[test]
    fn format_doc_example() {
        let value = Example {
            id: 300,
            name: "ab".into(),
            tags: vec![1, 1000],
            score: Some(0.5),
            shape: Shape::Circle(-2),
        };
        let enc = encode_at(
            Codec::Bincode,
            &value,
            Duration::from_micros(1500),
            NEVER,
            1_700_000_000_000,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(
            hex(&enc.bytes[..HEADER_LEN]),
            "02 01 00 00 00 68 e5 cf 8b 01 00 00 dc 05 00 00 16 00 00 00"
        );
        assert_eq!(
            hex(&enc.bytes[HEADER_LEN..]),
            "fb 2c 01 02 61 62 02 01 fb e8 03 01 00 00 00 00 00 00 e0 3f 01 03"
        );
        assert_eq!(decode::<Example>(&enc.bytes, NEVER).unwrap().0, value);
        // The same entry compressed.
        let enc = encode_at(
            Codec::Bincode,
            &value,
            Duration::from_micros(1500),
            ALWAYS,
            1_700_000_000_000,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(hex(&enc.bytes[..4]), "02 01 01 00");
        // The zlib header of the default level 1.
        assert_eq!(hex(&enc.bytes[HEADER_LEN..HEADER_LEN + 2]), "78 01");
        assert_eq!(decode::<Example>(&enc.bytes, ALWAYS).unwrap().0, value);
        // And with LZ4: flag bit 1, the 22 bytes as one literal run (too
        // short to hold a match).
        let enc = encode_at(
            Codec::Bincode,
            &value,
            Duration::from_micros(1500),
            ALWAYS_LZ4,
            1_700_000_000_000,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(hex(&enc.bytes[..4]), "02 01 02 00");
        assert_eq!(
            hex(&enc.bytes[HEADER_LEN..]),
            "f0 07 fb 2c 01 02 61 62 02 01 fb e8 03 01 00 00 00 00 00 00 e0 3f 01 03"
        );
        assert_eq!(decode::<Example>(&enc.bytes, NEVER).unwrap().0, value);
        assert_eq!(hex(&payload_of(&Shape::Point)), "00");
        assert_eq!(hex(&payload_of(&None::<u8>)), "00");
        assert_eq!(hex(&payload_of(&-1i64)), "01");
        assert_eq!(hex(&payload_of(&70_000u64)), "fc 70 11 01 00");
        assert_eq!(hex(&payload_of(&'é')), "c3 a9");
        assert_eq!(hex(&payload_of(&(7u8, -7i8))), "07 f9");
    }
}
