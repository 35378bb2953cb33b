//! Framing: a 4-byte big-endian length, then exactly one MessagePack value of that many
//! bytes.
//!
//! Everything that touches untrusted bytes lives here. A frame's length is checked
//! against the configured maximum *before* its buffer is allocated, and its MessagePack
//! structure is walked once by [`validate`] (nesting depth, declared lengths against the
//! bytes actually present, no trailing bytes) before serde sees it, so a forged
//! `array32` header cannot make a decoder reserve gigabytes and a deeply nested value
//! cannot exhaust the stack.

use rmp::Marker;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes in the length prefix.
pub const HEADER_BYTES: usize = 4;
/// Default cap on a frame's payload. Prompts with long context fit; a runaway peer doesn't.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;
/// Cap on MessagePack nesting. The protocol itself needs 4 (envelope, params, messages,
/// message); `additional_params` may carry provider JSON, which rarely nests deeper than 10.
pub const MAX_DEPTH: usize = 32;
/// Cap on a frame a client accepts from the daemon. Larger than the daemon's request cap
/// because a non-streamed answer or a long model list arrives in one frame; still bounded,
/// so a broken daemon cannot make a client allocate gigabytes.
pub const MAX_REPLY_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// Why a frame could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame larger than this side accepts. The payload was not read,
    /// so framing is lost and the connection must close.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A zero-length frame, which can hold no MessagePack value.
    #[error("empty frame (length 0)")]
    Empty,
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        want: usize,
    },
    /// The payload is not one well-formed MessagePack value within the limits. Framing is
    /// intact: the next frame can still be read.
    #[error("malformed MessagePack: {0}")]
    Malformed(String),
    /// The value is well-formed MessagePack but not a protocol envelope, or a field has the
    /// wrong type. Framing is intact.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Whether the byte stream is still aligned on a frame boundary after this error,
    /// i.e. whether the connection may go on.
    pub fn framing_intact(&self) -> bool {
        matches!(
            self,
            FrameError::Malformed(_) | FrameError::Invalid(_) | FrameError::Empty
        )
    }
}

/// Reads one frame's payload. Returns `Ok(None)` on a clean end of stream between frames.
///
/// `buf` is reused across calls so a connection's steady state allocates nothing; it only
/// grows to the largest frame actually received, never to an announced length that turned
/// out to be a lie, because the length is checked against `max_frame_bytes` first.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_frame_bytes: u32,
) -> Result<Option<()>, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    let mut got = 0;
    while got < HEADER_BYTES {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated {
                    got,
                    want: HEADER_BYTES,
                })
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header);
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let len = len as usize;
    buf.clear();
    buf.resize(len, 0);
    let mut got = 0;
    while got < len {
        let n = reader.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated { got, want: len });
        }
        got += n;
    }
    Ok(Some(()))
}

/// Writes one already-encoded frame (length prefix included, as built by
/// [`FrameBuilder`]).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> std::io::Result<()> {
    writer.write_all(frame).await
}

/// Checks that `bytes` hold exactly one MessagePack value nested at most `max_depth` deep,
/// whose every declared length fits in the bytes present.
pub fn validate(bytes: &[u8], max_depth: usize) -> Result<(), FrameError> {
    let mut pos = 0usize;
    // Values still to read at each open nesting level. Bounded by `max_depth`.
    let mut pending: Vec<u64> = Vec::with_capacity(8);
    pending.push(1);
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let children = skip_value_header(bytes, &mut pos)?;
        if children > 0 {
            if pending.len() >= max_depth {
                return Err(FrameError::Malformed(format!(
                    "nesting deeper than {max_depth} levels"
                )));
            }
            // Each child takes at least one byte, so a count larger than what is left is
            // a lie; refusing it here keeps decoders from pre-allocating for it.
            if children > (bytes.len() - pos) as u64 {
                return Err(FrameError::Malformed(format!(
                    "container announces {children} items but only {} bytes follow",
                    bytes.len() - pos
                )));
            }
            pending.push(children);
        }
    }
    if pos != bytes.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the value",
            bytes.len() - pos
        )));
    }
    Ok(())
}

/// Advances past one value's marker and scalar payload; returns how many child values
/// follow (array items, or map keys plus values).
fn skip_value_header(bytes: &[u8], pos: &mut usize) -> Result<u64, FrameError> {
    let marker_byte = *bytes
        .get(*pos)
        .ok_or_else(|| FrameError::Malformed("value cut short".into()))?;
    *pos += 1;
    let be = |pos: &mut usize, n: usize| -> Result<u64, FrameError> {
        let slice = bytes
            .get(*pos..*pos + n)
            .ok_or_else(|| FrameError::Malformed("length field cut short".into()))?;
        *pos += n;
        Ok(slice.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    let skip = |pos: &mut usize, n: u64| -> Result<(), FrameError> {
        let end = (*pos as u64)
            .checked_add(n)
            .filter(|end| *end <= bytes.len() as u64)
            .ok_or_else(|| FrameError::Malformed("payload cut short".into()))?;
        *pos = end as usize;
        Ok(())
    };
    Ok(match Marker::from_u8(marker_byte) {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => 0,
        Marker::Reserved => {
            return Err(FrameError::Malformed(format!(
                "reserved marker 0x{marker_byte:02x}"
            )))
        }
        Marker::U8 | Marker::I8 => skip(pos, 1).map(|_| 0)?,
        Marker::U16 | Marker::I16 => skip(pos, 2).map(|_| 0)?,
        Marker::U32 | Marker::I32 | Marker::F32 => skip(pos, 4).map(|_| 0)?,
        Marker::U64 | Marker::I64 | Marker::F64 => skip(pos, 8).map(|_| 0)?,
        Marker::FixStr(n) => skip(pos, u64::from(n)).map(|_| 0)?,
        Marker::Str8 | Marker::Bin8 => {
            let n = be(pos, 1)?;
            skip(pos, n).map(|_| 0)?
        }
        Marker::Str16 | Marker::Bin16 => {
            let n = be(pos, 2)?;
            skip(pos, n).map(|_| 0)?
        }
        Marker::Str32 | Marker::Bin32 => {
            let n = be(pos, 4)?;
            skip(pos, n).map(|_| 0)?
        }
        Marker::FixExt1 => skip(pos, 2).map(|_| 0)?,
        Marker::FixExt2 => skip(pos, 3).map(|_| 0)?,
        Marker::FixExt4 => skip(pos, 5).map(|_| 0)?,
        Marker::FixExt8 => skip(pos, 9).map(|_| 0)?,
        Marker::FixExt16 => skip(pos, 17).map(|_| 0)?,
        Marker::Ext8 => {
            let n = be(pos, 1)?;
            skip(pos, n + 1).map(|_| 0)?
        }
        Marker::Ext16 => {
            let n = be(pos, 2)?;
            skip(pos, n + 1).map(|_| 0)?
        }
        Marker::Ext32 => {
            let n = be(pos, 4)?;
            skip(pos, n + 1).map(|_| 0)?
        }
        Marker::FixArray(n) => u64::from(n),
        Marker::Array16 => be(pos, 2)?,
        Marker::Array32 => be(pos, 4)?,
        Marker::FixMap(n) => 2 * u64::from(n),
        Marker::Map16 => 2 * be(pos, 2)?,
        Marker::Map32 => 2 * be(pos, 4)?,
    })
}

/// Builds one outgoing frame in a single buffer: the length prefix is reserved first and
/// patched at the end, so encoding never copies the payload.
#[derive(Debug)]
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    /// Starts a frame whose envelope is a MessagePack array of `items` elements.
    pub fn envelope(items: u32) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&[0; HEADER_BYTES]);
        rmp::encode::write_array_len(&mut buf, items).expect("Vec<u8> writes cannot fail");
        FrameBuilder { buf }
    }

    /// Appends an unsigned integer.
    pub fn uint(mut self, v: u64) -> Self {
        rmp::encode::write_uint(&mut self.buf, v).expect("Vec<u8> writes cannot fail");
        self
    }

    /// Appends a string.
    pub fn str(mut self, s: &str) -> Self {
        rmp::encode::write_str(&mut self.buf, s).expect("Vec<u8> writes cannot fail");
        self
    }

    /// Appends nil.
    pub fn nil(mut self) -> Self {
        rmp::encode::write_nil(&mut self.buf).expect("Vec<u8> writes cannot fail");
        self
    }

    /// Appends a value as a map with named fields, so non-Rust peers read it by name.
    pub fn value<T: serde::Serialize + ?Sized>(mut self, v: &T) -> Result<Self, FrameError> {
        rmp_serde::encode::write_named(&mut self.buf, v)
            .map_err(|e| FrameError::Invalid(format!("cannot encode value: {e}")))?;
        Ok(self)
    }

    /// Patches the length prefix and returns the frame's bytes, ready to write.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - HEADER_BYTES) as u32;
        self.buf[..HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut v = vec![0x91; depth];
        v.push(0xc0);
        v
    }

    #[test]
    fn depth_at_the_cap_is_accepted_and_one_more_is_refused() {
        // `depth` arrays hold a nil at nesting level depth+1.
        assert!(validate(&nested_arrays(MAX_DEPTH - 1), MAX_DEPTH).is_ok());
        let err = validate(&nested_arrays(MAX_DEPTH), MAX_DEPTH).unwrap_err();
        assert!(err.to_string().contains("nesting deeper"), "{err}");
    }

    #[test]
    fn forged_container_length_is_refused() {
        // array32 announcing 4 billion items, followed by one byte.
        let bytes = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0];
        let err = validate(&bytes, MAX_DEPTH).unwrap_err();
        assert!(err.to_string().contains("announces"), "{err}");
    }

    #[test]
    fn trailing_bytes_and_cut_values_are_refused() {
        assert!(validate(&[0xc0, 0xc0], MAX_DEPTH).is_err());
        assert!(validate(&[0xa5, b'a'], MAX_DEPTH).is_err());
        assert!(validate(&[0xc1], MAX_DEPTH).is_err());
        assert!(validate(&[], MAX_DEPTH).is_err());
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_reading_its_payload() {
        let mut input: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut buf = Vec::new();
        let err = read_frame(&mut input, &mut buf, 1024).await.unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 0x7fff_ffff,
                max: 1024
            }
        ));
        assert_eq!(buf.capacity(), 0, "no buffer was allocated for the payload");
        assert_eq!(input, &[1, 2, 3], "the payload was not consumed");
    }

    #[tokio::test]
    async fn truncated_frame_and_clean_eof_are_told_apart() {
        let mut buf = Vec::new();
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, &mut buf, 1024)
            .await
            .unwrap()
            .is_none());
        let mut cut: &[u8] = &[0, 0, 0, 5, 0x93];
        let err = read_frame(&mut cut, &mut buf, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated { got: 1, want: 5 }));
        let mut cut_header: &[u8] = &[0, 0];
        let err = read_frame(&mut cut_header, &mut buf, 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated { got: 2, want: 4 }));
    }

    #[test]
    fn builder_patches_the_length_prefix() {
        let frame = FrameBuilder::envelope(2).uint(1).str("hi").finish();
        assert_eq!(frame, [0, 0, 0, 5, 0x92, 0x01, 0xa2, b'h', b'i']);
    }

    proptest! {
        #[test]
        fn validate_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = validate(&bytes, MAX_DEPTH);
        }

        #[test]
        fn validate_accepts_everything_rmp_serde_encodes(
            v in proptest::collection::vec((any::<String>(), any::<i64>(), any::<Option<bool>>()), 0..16)
        ) {
            let bytes = rmp_serde::to_vec_named(&v).unwrap();
            prop_assert!(validate(&bytes, MAX_DEPTH).is_ok());
        }
    }
}
