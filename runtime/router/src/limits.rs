//! What one agent may ask of the control plane: name lengths, how many topics,
//! capabilities, features and capability routes it may hold, and how many the whole router
//! keeps. Every control request that would create state is checked here first, so no agent
//! can grow the daemon's memory or its admin replies without bound.
//!
//! ```
//! use agentwire_router::limits::{check_topic_name, TOPIC_NAME_BYTES_MAX};
//! assert!(check_topic_name("orders").is_ok());
//! assert!(check_topic_name(&"x".repeat(TOPIC_NAME_BYTES_MAX + 1)).is_err());
//! ```

use agentwire_shm::control::Registration;

/// Longest topic name in bytes.
pub const TOPIC_NAME_BYTES_MAX: usize = 256;
/// Longest capability name in bytes.
pub const CAPABILITY_NAME_BYTES_MAX: usize = 128;
/// Longest capability version or version requirement in bytes.
pub const VERSION_BYTES_MAX: usize = 64;
/// Capabilities one agent may register.
pub const CAPABILITIES_PER_AGENT_MAX: usize = 32;
/// Features one agent may serve.
pub const FEATURES_PER_AGENT_MAX: usize = 256;
/// Distinct topics one agent may hold at once, subscribed or resolved (to publish).
pub const TOPICS_PER_AGENT_MAX: usize = 1024;
/// Distinct capability routes one agent may resolve.
pub const CAPABILITY_ROUTES_PER_AGENT_MAX: usize = 64;
/// Topics the router keeps at once (a topic no live agent holds is freed).
pub const TOPICS_MAX: usize = 65_536;
/// Capability routes the router keeps (route ids are indices frames carry; they are never
/// reused, so routes are not freed: this bounds them).
pub const CAPABILITY_ROUTES_MAX: usize = 16_384;

/// A topic name within bounds.
///
/// ```
/// assert!(agentwire_router::limits::check_topic_name("").is_err());
/// ```
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name must be 1 to {TOPIC_NAME_BYTES_MAX} bytes, got {}",
            topic.len()
        ));
    }
    Ok(())
}

/// A capability name and a version (or requirement) within bounds.
///
/// ```
/// assert!(agentwire_router::limits::check_capability("ocr", ">=1").is_ok());
/// assert!(agentwire_router::limits::check_capability("", "1.0.0").is_err());
/// ```
pub fn check_capability(name: &str, version: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > CAPABILITY_NAME_BYTES_MAX {
        return Err(format!(
            "capability name must be 1 to {CAPABILITY_NAME_BYTES_MAX} bytes, got {}",
            name.len()
        ));
    }
    if version.len() > VERSION_BYTES_MAX {
        return Err(format!(
            "capability {name}: version or requirement over {VERSION_BYTES_MAX} bytes"
        ));
    }
    Ok(())
}

/// A registration's lists within bounds (names checked too).
///
/// ```
/// use agentwire_shm::control::Registration;
/// let mut r = Registration { name: "a".into(), ..Default::default() };
/// assert!(agentwire_router::limits::check_registration(&r).is_ok());
/// r.features = (0..10_000).collect();
/// assert!(agentwire_router::limits::check_registration(&r).is_err());
/// ```
pub fn check_registration(r: &Registration) -> Result<(), String> {
    if r.capabilities.len() > CAPABILITIES_PER_AGENT_MAX {
        return Err(format!(
            "{} capabilities: at most {CAPABILITIES_PER_AGENT_MAX} per agent",
            r.capabilities.len()
        ));
    }
    if r.features.len() > FEATURES_PER_AGENT_MAX {
        return Err(format!(
            "{} features: at most {FEATURES_PER_AGENT_MAX} per agent",
            r.features.len()
        ));
    }
    if r.topics.len() > TOPICS_PER_AGENT_MAX {
        return Err(format!(
            "{} topics: at most {TOPICS_PER_AGENT_MAX} per agent",
            r.topics.len()
        ));
    }
    for c in &r.capabilities {
        check_capability(&c.name, &c.version)?;
    }
    for t in &r.topics {
        check_topic_name(t)?;
    }
    Ok(())
}
