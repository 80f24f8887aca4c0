//! The binary form of an event in the durable log (the log's record payload).
//!
//! Little-endian, no padding:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | key kind: 0 = numeric, 1 = name |
//! | 1..9 | numeric key `u64`, or for a name: byte 1 is its length (0..=23), then the UTF-8 bytes |
//! | then 8 | event time, ns since the Unix epoch, `i64` |
//! | then 8 | value, `f64` bits |
//! | then 2 | attribute count `u16` (at most [`ATTRIBUTES_MAX`]) |
//! | then, per attribute | name length `u16`, name, value length `u16`, value (UTF-8) |
//!
//! A record that does not parse exactly (short, trailing bytes, a bad kind, bad UTF-8, a
//! name too long) is a [`DecodeError`], never a panic: the log checksums records, but a
//! record written by another version or another tool is still untrusted.

use crate::event::{Attribute, Event, Key, KEY_NAME_BYTES_MAX};

/// The most attributes one event may carry in the log.
pub const ATTRIBUTES_MAX: usize = 64;

/// Why bytes are not an event.
///
/// ```
/// use agentwire_streaming::codec::{decode, DecodeError};
/// assert_eq!(decode(&[7]), Err(DecodeError::BadKeyKind { kind: 7 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end before the event does.
    #[error("the event is cut short at byte {at}")]
    Short {
        /// Where the next field should have started.
        at: usize,
    },
    /// An unknown key kind.
    #[error("key kind {kind} is neither 0 (numeric) nor 1 (name)")]
    BadKeyKind {
        /// The kind byte.
        kind: u8,
    },
    /// A key name over 23 bytes.
    #[error("a key name of {len} bytes (at most 23)")]
    NameTooLong {
        /// Its length.
        len: usize,
    },
    /// Text that is not UTF-8.
    #[error("a key or attribute that is not UTF-8")]
    NotUtf8,
    /// More attributes than [`ATTRIBUTES_MAX`].
    #[error("{count} attributes (at most 64)")]
    TooManyAttributes {
        /// The count found.
        count: usize,
    },
    /// Bytes left after the event.
    #[error("{extra} bytes after the event")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

/// Appends `event`'s binary form to `out` (a reused buffer: no allocation once it is large
/// enough). Attributes past [`ATTRIBUTES_MAX`] and text past 65,535 bytes are cut.
///
/// ```
/// use agentwire_streaming::codec::{decode, encode};
/// use agentwire_streaming::event::{Event, Key};
/// let e = Event::new(Key::name("db").unwrap(), -5, 2.5);
/// let mut bytes = Vec::new();
/// encode(&e, &mut bytes);
/// assert_eq!(decode(&bytes).unwrap(), e);
/// ```
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    match event.key {
        Key::Id(id) => {
            out.push(0);
            out.extend_from_slice(&id.to_le_bytes());
        }
        Key::Name(name) => {
            out.push(1);
            out.push(name.as_str().len() as u8);
            out.extend_from_slice(name.as_str().as_bytes());
        }
    }
    out.extend_from_slice(&event.event_time_ns.to_le_bytes());
    out.extend_from_slice(&event.value.to_bits().to_le_bytes());
    let count = event.attributes.len().min(ATTRIBUTES_MAX);
    out.extend_from_slice(&(count as u16).to_le_bytes());
    for a in &event.attributes[..count] {
        for text in [&a.name, &a.value] {
            let bytes = cut_utf8(text, usize::from(u16::MAX));
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut_utf8(text: &str, max: usize) -> &[u8] {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}

/// A cursor over the bytes being decoded.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(DecodeError::Short { at: self.at })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let len = u16::from_le_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| DecodeError::NotUtf8)
    }
}

/// The event in `bytes`, which must hold exactly one.
///
/// ```
/// use agentwire_streaming::codec::{decode, DecodeError};
/// assert_eq!(decode(&[0, 1, 2]), Err(DecodeError::Short { at: 1 }));
/// ```
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let key = match r.array::<1>()?[0] {
        0 => Key::Id(u64::from_le_bytes(r.array()?)),
        1 => {
            let len = usize::from(r.array::<1>()?[0]);
            if len > KEY_NAME_BYTES_MAX {
                return Err(DecodeError::NameTooLong { len });
            }
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| DecodeError::NotUtf8)?;
            Key::name(name).map_err(|_| DecodeError::NameTooLong { len })?
        }
        kind => return Err(DecodeError::BadKeyKind { kind }),
    };
    let event_time_ns = i64::from_le_bytes(r.array()?);
    let value = f64::from_bits(u64::from_le_bytes(r.array()?));
    let count = usize::from(u16::from_le_bytes(r.array()?));
    if count > ATTRIBUTES_MAX {
        return Err(DecodeError::TooManyAttributes { count });
    }
    let mut event = Event::new(key, event_time_ns, value);
    for _ in 0..count {
        let name = r.text()?;
        let value = r.text()?;
        event.attributes.push(Attribute { name, value });
    }
    if r.at != bytes.len() {
        return Err(DecodeError::Trailing {
            extra: bytes.len() - r.at,
        });
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_event_round_trips(
            id in any::<u64>(),
            name in "[a-z0-9-]{0,23}",
            use_name in any::<bool>(),
            t in any::<i64>(),
            v in any::<f64>(),
            attrs in prop::collection::vec(("[a-z]{1,8}", "\\PC{0,12}"), 0..4),
        ) {
            let key = if use_name { Key::name(&name).unwrap() } else { Key::Id(id) };
            let mut e = Event::new(key, t, v);
            e.attributes = attrs.into_iter().map(|(name, value)| Attribute { name, value }).collect();
            let mut bytes = vec![];
            encode(&e, &mut bytes);
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(back.key, e.key);
            prop_assert_eq!(back.event_time_ns, e.event_time_ns);
            prop_assert_eq!(back.value.to_bits(), e.value.to_bits());
            prop_assert_eq!(back.attributes, e.attributes);
        }

        #[test]
        fn no_byte_string_panics_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn every_cut_of_an_event_is_short_and_extra_bytes_are_refused() {
        let mut e = Event::new(Key::name("k").unwrap(), 1, 2.0);
        e.attributes.push(Attribute {
            name: "a".into(),
            value: "b".into(),
        });
        let mut bytes = vec![];
        encode(&e, &mut bytes);
        for len in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..len]), Err(DecodeError::Short { .. })),
                "{len}"
            );
        }
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(DecodeError::Trailing { extra: 1 }));
    }
}
