//! The event the streaming engine ingests: a key, an event time, a value and optional
//! attributes.
//!
//! A key is a `u64` or a short name held inline (at most [`KEY_NAME_BYTES_MAX`] bytes), so
//! an event without attributes never allocates. Attributes are for tools and rare fields;
//! an empty attribute list allocates nothing either.

use std::fmt;

/// The largest event time taken, either side of the Unix epoch: 2^62 ns, about 146 years.
/// Times beyond it are refused (window arithmetic near `i64`'s ends would overflow).
pub const EVENT_TIME_NS_MAX: i64 = 1 << 62;

/// Whether `event_time_ns` is within ±[`EVENT_TIME_NS_MAX`], the times the engine takes.
///
/// ```
/// use agentwire_streaming::event::time_in_range;
/// assert!(time_in_range(0));
/// assert!(!time_in_range(i64::MIN));
/// ```
pub fn time_in_range(event_time_ns: i64) -> bool {
    (-EVENT_TIME_NS_MAX..=EVENT_TIME_NS_MAX).contains(&event_time_ns)
}

/// The longest key name held inline, in bytes (UTF-8).
pub const KEY_NAME_BYTES_MAX: usize = 23;

/// What an event is grouped by: a number or a short name.
///
/// ```
/// use agentwire_streaming::event::Key;
/// let host = Key::name("db-1").unwrap();
/// assert_eq!(host.to_string(), "db-1");
/// assert_eq!(Key::Id(7).to_string(), "7");
/// assert!(Key::name("a-name-longer-than-twenty-three-bytes").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A numeric key.
    Id(u64),
    /// A short name, held inline.
    Name(KeyName),
}

impl Key {
    /// A name key; an error if `name` is longer than [`KEY_NAME_BYTES_MAX`] bytes.
    ///
    /// ```
    /// use agentwire_streaming::event::Key;
    /// assert_eq!(Key::name("cpu").unwrap().to_string(), "cpu");
    /// ```
    pub fn name(name: &str) -> Result<Self, KeyTooLong> {
        KeyName::new(name).map(Key::Name)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Id(id) => write!(f, "{id}"),
            Key::Name(name) => f.write_str(name.as_str()),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Id(id) => write!(f, "Key::Id({id})"),
            Key::Name(name) => write!(f, "Key::Name({:?})", name.as_str()),
        }
    }
}

/// A key is stored as a number or a string (checkpoints, JSON output).
impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, s.is_human_readable()) {
            (Key::Id(id), true) => s.serialize_u64(*id),
            (Key::Name(name), true) => s.serialize_str(name.as_str()),
            (Key::Id(id), false) => s.serialize_newtype_variant("Stored", 0, "Id", id),
            (Key::Name(name), false) => {
                s.serialize_newtype_variant("Stored", 1, "Name", name.as_str())
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        enum Stored {
            Id(u64),
            Name(String),
        }
        // Self-describing formats (JSON) give a number or a string; postcard needs the
        // variant, so Key is written as an enum there too.
        if d.is_human_readable() {
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            enum Text {
                Id(u64),
                Name(String),
            }
            return match Text::deserialize(d)? {
                Text::Id(id) => Ok(Key::Id(id)),
                Text::Name(name) => Key::name(&name).map_err(serde::de::Error::custom),
            };
        }
        match Stored::deserialize(d)? {
            Stored::Id(id) => Ok(Key::Id(id)),
            Stored::Name(name) => Key::name(&name).map_err(serde::de::Error::custom),
        }
    }
}

/// A key name of at most [`KEY_NAME_BYTES_MAX`] bytes of UTF-8, held inline.
///
/// ```
/// use agentwire_streaming::event::KeyName;
/// assert_eq!(KeyName::new("eu-west").unwrap().as_str(), "eu-west");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName {
    len: u8,
    bytes: [u8; KEY_NAME_BYTES_MAX],
}

impl KeyName {
    /// Copies `name` inline; an error if it is too long.
    ///
    /// ```
    /// use agentwire_streaming::event::KeyName;
    /// assert!(KeyName::new("x").is_ok());
    /// ```
    pub fn new(name: &str) -> Result<Self, KeyTooLong> {
        let len = name.len();
        if len > KEY_NAME_BYTES_MAX {
            return Err(KeyTooLong { len_bytes: len });
        }
        let mut bytes = [0; KEY_NAME_BYTES_MAX];
        bytes[..len].copy_from_slice(name.as_bytes());
        Ok(Self {
            len: len as u8,
            bytes,
        })
    }

    /// The name.
    ///
    /// ```
    /// use agentwire_streaming::event::KeyName;
    /// assert_eq!(KeyName::new("").unwrap().as_str(), "");
    /// ```
    pub fn as_str(&self) -> &str {
        // The bytes were copied from a `&str` in `new` and never change.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// A key name over [`KEY_NAME_BYTES_MAX`] bytes.
///
/// ```
/// use agentwire_streaming::event::Key;
/// let e = Key::name(&"k".repeat(30)).unwrap_err();
/// assert_eq!(e.len_bytes, 30);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key name of {len_bytes} bytes; at most {KEY_NAME_BYTES_MAX} bytes are allowed")]
pub struct KeyTooLong {
    /// The length of the refused name, in bytes.
    pub len_bytes: usize,
}

/// One named attribute of an event.
///
/// ```
/// use agentwire_streaming::event::Attribute;
/// let a = Attribute { name: "unit".into(), value: "ms".into() };
/// assert_eq!(a.name, "unit");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// One event: what it is about (key), when it happened (event time), a value, and optional
/// attributes.
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// let e = Event::new(Key::Id(1), 1_000, 2.5);
/// assert_eq!(e.event_time_ns, 1_000);
/// assert!(e.attributes.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What the event is about; windows and state are per key.
    pub key: Key,
    /// When it happened, in nanoseconds since the Unix epoch (the time windows use).
    pub event_time_ns: i64,
    /// The measured value.
    pub value: f64,
    /// Optional attributes (empty for most events; an empty list allocates nothing).
    pub attributes: Vec<Attribute>,
}

impl Event {
    /// An event without attributes.
    ///
    /// ```
    /// use agentwire_streaming::event::{Event, Key};
    /// let e = Event::new(Key::name("db").unwrap(), 5, 1.0);
    /// assert_eq!(e.value, 1.0);
    /// ```
    pub fn new(key: Key, event_time_ns: i64, value: f64) -> Self {
        Self {
            key,
            event_time_ns,
            value,
            attributes: Vec::new(),
        }
    }

    /// The value of the attribute `name`, if the event has it.
    ///
    /// ```
    /// use agentwire_streaming::event::{Attribute, Event, Key};
    /// let mut e = Event::new(Key::Id(1), 0, 0.0);
    /// e.attributes.push(Attribute { name: "host".into(), value: "a".into() });
    /// assert_eq!(e.attribute("host"), Some("a"));
    /// assert_eq!(e.attribute("zone"), None);
    /// ```
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_of_exactly_the_limit_fits_and_one_more_does_not() {
        let at_limit = "n".repeat(KEY_NAME_BYTES_MAX);
        assert_eq!(Key::name(&at_limit).unwrap().to_string(), at_limit);
        let over = "n".repeat(KEY_NAME_BYTES_MAX + 1);
        assert_eq!(
            Key::name(&over),
            Err(KeyTooLong {
                len_bytes: KEY_NAME_BYTES_MAX + 1
            })
        );
    }

    #[test]
    fn names_order_and_compare_by_their_text() {
        let a = Key::name("a").unwrap();
        let b = Key::name("b").unwrap();
        assert!(a < b);
        assert_eq!(a, Key::name("a").unwrap());
        assert_ne!(Key::name("a").unwrap(), Key::name("a\0").unwrap());
    }
}
