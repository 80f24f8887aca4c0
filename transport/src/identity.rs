//! Who a remote agent is, and what it may register: the identity its TLS client
//! certificate names, matched against the configured identity rules.
//!
//! A certificate's identities are its subject alternative names (DNS names, URIs, e-mail
//! addresses, IP addresses, as text) and its subject common name, written `cn:NAME`,
//! `dns:NAME`, `uri:URI`, `email:ADDR`, `ip:ADDR`. A rule names the identities it applies
//! to with patterns (`dns:ocr-*`, `cn:billing`, `*`: exact, or a prefix ending in `*`), and what they may do
//! with the router's own [`Rule`] patterns (names, capabilities, subscribe, publish).
//! The first rule one of the identities matches decides; once any rule exists, an identity
//! no rule matches may register nothing (deny by default). No rules at all: every
//! authenticated client may register anything (the CA is the only gate).
//!
//! ```
//! use agentwire_router::policy::{Pattern, Rule};
//! use agentwire_transport::identity::{IdentityRule, IdentityRules};
//! let rules = IdentityRules::new(vec![IdentityRule {
//!     identities: vec![Pattern::new("cn:ocr-*").unwrap()],
//!     allow: Rule { names: vec![Pattern::new("ocr-*").unwrap()], ..Rule::default() },
//! }]);
//! let ocr = vec!["cn:ocr-1".to_string()];
//! let reg = agentwire_shm::control::Registration { name: "ocr-1".into(), ..Default::default() };
//! assert!(rules.permits_registration(&ocr, &reg).is_ok());
//! let stranger = vec!["cn:billing".to_string()];
//! assert!(rules.permits_registration(&stranger, &reg).is_err());
//! ```

use agentwire_router::policy::{Action, Pattern, Rule};
use agentwire_shm::control::Registration;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One identity rule: the certificate identities it applies to, and what they may do.
///
/// ```
/// use agentwire_router::policy::{Pattern, Rule};
/// let rule = agentwire_transport::identity::IdentityRule {
///     identities: vec![Pattern::new("dns:ocr-*").unwrap()],
///     allow: Rule::default(),
/// };
/// assert!(rule.applies_to(&["dns:ocr-1.agents.example".to_string()]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityRule {
    /// Identities (`cn:..`, `dns:..`, `uri:..`, `email:..`, `ip:..`, or `*`) this rule
    /// applies to.
    pub identities: Vec<Pattern>,
    /// What they may register and use: `names`, `capabilities`, `subscribe`, `publish`,
    /// and on the data path `send` (agents they may send to) and `publish` (the router's
    /// rule; its `uids` and `gids` are not used here).
    pub allow: Rule,
}

impl IdentityRule {
    /// Whether one of `identities` matches one of this rule's patterns.
    ///
    /// ```
    /// # use agentwire_router::policy::Pattern;
    /// let rule = agentwire_transport::identity::IdentityRule {
    ///     identities: vec![Pattern::new("cn:x").unwrap()], ..Default::default() };
    /// assert!(!rule.applies_to(&["cn:y".to_string()]));
    /// ```
    pub fn applies_to(&self, identities: &[String]) -> bool {
        identities
            .iter()
            .any(|id| self.identities.iter().any(|p| p.matches(id)))
    }
}

/// The identity rules of a listener.
///
/// ```
/// let open = agentwire_transport::identity::IdentityRules::new(Vec::new());
/// assert!(open.is_open());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityRules {
    rules: Vec<IdentityRule>,
    /// Each rule's `allow`, shared by the router entries of every agent it admits.
    shared: Vec<Arc<Rule>>,
}

impl IdentityRules {
    /// Rules in the order they are tried.
    ///
    /// ```
    /// let r = agentwire_transport::identity::IdentityRules::new(vec![Default::default()]);
    /// assert!(!r.is_open());
    /// ```
    pub fn new(rules: Vec<IdentityRule>) -> Self {
        let shared = rules.iter().map(|r| Arc::new(r.allow.clone())).collect();
        Self { rules, shared }
    }

    /// What a client with `identities` may reach on the data path, for the router
    /// ([`agentwire_router::endpoint::Endpoint::add_remote_restricted`]): the first
    /// matching rule (its `send` and `publish` patterns), a rule allowing nothing when none
    /// matches, or `None` when there are no rules (not restricted).
    ///
    /// ```
    /// use agentwire_router::policy::{Action, Pattern, Rule};
    /// use agentwire_transport::identity::{IdentityRule, IdentityRules};
    /// let rules = IdentityRules::new(vec![IdentityRule {
    ///     identities: vec![Pattern::new("cn:ocr-*").unwrap()],
    ///     allow: Rule { send: vec![Pattern::new("store").unwrap()], ..Rule::default() },
    /// }]);
    /// let rule = rules.send_rule(&["cn:ocr-1".to_string()]).unwrap();
    /// assert!(rule.allows(Action::Send("store")) && !rule.allows(Action::Send("billing")));
    /// assert!(!rules.send_rule(&["cn:other".to_string()]).unwrap().allows(Action::Send("store")));
    /// assert!(IdentityRules::default().send_rule(&[]).is_none());
    /// ```
    pub fn send_rule(&self, identities: &[String]) -> Option<Arc<Rule>> {
        if self.is_open() {
            return None;
        }
        Some(
            self.rules
                .iter()
                .position(|r| r.applies_to(identities))
                .map_or_else(|| Arc::new(Rule::default()), |i| self.shared[i].clone()),
        )
    }

    /// No rules: every authenticated client may do anything.
    ///
    /// ```
    /// assert!(agentwire_transport::identity::IdentityRules::default().is_open());
    /// ```
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a client with `identities` may do `action`; the refusal says why.
    ///
    /// ```
    /// use agentwire_router::policy::Action;
    /// let open = agentwire_transport::identity::IdentityRules::default();
    /// assert!(open.permits(&[], Action::Subscribe("news")).is_ok());
    /// ```
    pub fn permits(&self, identities: &[String], action: Action<'_>) -> Result<(), String> {
        if self.is_open() {
            return Ok(());
        }
        match self.rules.iter().position(|r| r.applies_to(identities)) {
            None => Err(format!(
                "{action} refused: the client's identities {identities:?} match no \
                 [[transport.identity]] rule"
            )),
            Some(i) if self.rules[i].allow.allows(action) => Ok(()),
            Some(i) => Err(format!(
                "{action} refused: [[transport.identity]] rule {i} (the first matching \
                 {identities:?}) does not allow it"
            )),
        }
    }

    /// Whether a client with `identities` may register `registration`: its name, each
    /// capability and each topic; the first thing refused is the answer.
    ///
    /// ```
    /// let open = agentwire_transport::identity::IdentityRules::default();
    /// let reg = agentwire_shm::control::Registration { name: "a".into(), ..Default::default() };
    /// assert!(open.permits_registration(&[], &reg).is_ok());
    /// ```
    pub fn permits_registration(
        &self,
        identities: &[String],
        registration: &Registration,
    ) -> Result<(), String> {
        self.permits(identities, Action::Name(&registration.name))?;
        for capability in &registration.capabilities {
            self.permits(identities, Action::Capability(&capability.name))?;
        }
        for topic in &registration.topics {
            self.permits(identities, Action::Subscribe(topic))?;
        }
        Ok(())
    }
}

/// The identities a DER certificate names (see the module documentation), or an error
/// saying why it could not be read.
///
/// ```
/// assert!(agentwire_transport::identity::certificate_identities(b"not a certificate").is_err());
/// ```
pub fn certificate_identities(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    let mut identities = Vec::new();
    for cn in cert.subject().iter_common_name() {
        if let Ok(text) = cn.as_str() {
            identities.push(format!("cn:{text}"));
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => identities.push(format!("dns:{n}")),
                GeneralName::URI(u) => identities.push(format!("uri:{u}")),
                GeneralName::RFC822Name(e) => identities.push(format!("email:{e}")),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_text(bytes) {
                        identities.push(format!("ip:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(identities)
}

fn ip_text(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}
