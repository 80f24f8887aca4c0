//! Every key the parser accepts, by dotted path, and which of them a SIGHUP reload applies.
//! The nested keys are read from the sections' `Deserialize` impls (the field list serde
//! derives), so a field added to a section is a key here without a second list to update;
//! `docs/config.md` is tested against [`known_keys`] and [`applies_on_reload`].

use super::{authorize::RuleToml, Config, KEYS};
use crate::stream_engine::StreamingSection;
use agentwire_scheduler::plan::{PartitionSpec, PlanOptions};
use agentwire_scheduler::rebalance::RebalanceConfig;
use agentwire_streaming::pipeline::file::WindowSection;
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The placeholder for a partition's name in [`known_keys`] (`partitions.NAME.cpus`).
pub const PARTITION_NAME: &str = "NAME";

/// The keys a SIGHUP reload applies to the running daemon; every other key needs a restart.
/// `authorize` stands for each key of every `[[authorize]]` table.
const RELOADED: &[&str] = &["allow_uids", "allow_gids", "authorize", "defer_deadline_ms"];

/// Every key a file may set, by dotted path, in the order of the parser's lists: the
/// top-level keys, then each section's (`plan.allow_sharing`, `partitions.NAME.cpus`,
/// `rebalance.sample_ms`, `streaming.window.size_ms`, `authorize.uids`).
///
/// ```
/// let keys = agentwire_runtime::config::known_keys();
/// assert!(keys.contains(&"ring_capacity_bytes".to_string()));
/// assert!(keys.contains(&"partitions.NAME.cpus".to_string()));
/// assert!(keys.contains(&"streaming.window.size_ms".to_string()));
/// assert!(!keys.contains(&"streaming".to_string()), "a section is not a key");
/// ```
pub fn known_keys() -> Vec<String> {
    let sections: [(&str, &[&str]); 8] = [
        ("authorize", field_names::<RuleToml>()),
        ("plan", field_names::<PlanOptions>()),
        ("partitions", field_names::<PartitionSpec>()),
        ("rebalance", field_names::<RebalanceConfig>()),
        ("streaming", field_names::<StreamingSection>()),
        ("twin", field_names::<crate::twin_engine::TwinSection>()),
        ("remote", field_names::<crate::remote::RemoteSection>()),
        ("node", field_names::<crate::node_links::NodeSection>()),
    ];
    let mut keys: Vec<String> = KEYS
        .iter()
        .filter(|k| !sections.iter().any(|(s, _)| s == *k))
        .map(|k| k.to_string())
        .collect();
    for (section, fields) in sections {
        let prefix = match section {
            "partitions" => format!("partitions.{PARTITION_NAME}"),
            _ => section.to_string(),
        };
        for field in fields {
            if section == "streaming" && *field == "window" {
                let window = field_names::<WindowSection>();
                keys.extend(window.iter().map(|w| format!("streaming.window.{w}")));
            } else if section == "remote" && *field == "identity" {
                let rule = field_names::<crate::remote::IdentitySection>();
                keys.extend(rule.iter().map(|r| format!("remote.identity.{r}")));
            } else if section == "twin" && *field == "watch" {
                let watch = field_names::<crate::twin_engine::WatchSection>();
                keys.extend(watch.iter().map(|w| format!("twin.watch.{w}")));
            } else if section == "node" && *field == "peer" {
                let peer = field_names::<crate::node_links::PeerSection>();
                keys.extend(peer.iter().map(|p| format!("node.peer.{p}")));
            } else {
                keys.push(format!("{prefix}.{field}"));
            }
        }
    }
    keys
}

/// Whether a SIGHUP reload applies `key` (a dotted path, as in [`known_keys`], or a
/// section) to the running daemon; a changed key it does not apply waits for a restart and
/// the reload names it.
///
/// ```
/// use agentwire_runtime::config::applies_on_reload;
/// assert!(applies_on_reload("allow_uids") && applies_on_reload("authorize.names"));
/// assert!(!applies_on_reload("ring_capacity_bytes") && !applies_on_reload("streaming.enabled"));
/// ```
pub fn applies_on_reload(key: &str) -> bool {
    let top = key.split(['.', '[']).next().unwrap_or(key);
    RELOADED.contains(&top)
}

/// What a reload changes: the keys whose values differ, split into those it applies and
/// those that wait for a restart. From [`Config::reload_changes`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadChanges {
    /// Changed keys the reload applies (`allow_uids`, `authorize`, ...).
    pub applied: Vec<&'static str>,
    /// Changed keys that take effect only after a restart (`ring_capacity_bytes`,
    /// `streaming`, ...); a section stands for any of its keys.
    pub needs_restart: Vec<&'static str>,
}

impl Config {
    /// The keys whose values differ between `self` (the running configuration) and
    /// `fresh` (the file re-read), by top-level key or section, in file-documentation order.
    ///
    /// ```
    /// use agentwire_runtime::config::Config;
    /// let old = Config::parse("agents_max = 10\nslow_subscriber = \"drop\"", "t").unwrap();
    /// let new = Config::parse("agents_max = 20\nslow_subscriber = \"backpressure\"", "t").unwrap();
    /// assert_eq!(old.changed_keys(&new), ["agents_max", "slow_subscriber"]);
    /// ```
    pub fn changed_keys(&self, fresh: &Config) -> Vec<&'static str> {
        // Destructured whole: a field added to Config does not compile until it is named
        // here, so a reload can never ignore a key silently.
        let Config {
            socket,
            router_cpu,
            router_cpus,
            ring_capacity_bytes,
            idle,
            router_batch_frames,
            allow,
            policy,
            io_memory_bytes,
            agents_max,
            handshakes_per_uid_max,
            agents_per_uid_max,
            defer_capacity_bytes,
            defer_deadline,
            slow_subscriber,
            slow_subscriber_evict_copies,
            liveness_timeout,
            dlq,
            dlq_path_given: _, // derived from dlq_path
            metrics,
            metrics_port,
            plan,
            partitions_configured: _, // derived from partitions
            rebalance,
            streaming,
            twin,
            remote,
            node,
            source: _, // where the keys are, not what they say
        } = self;
        let f = fresh;
        let checks = [
            ("socket", *socket != f.socket),
            ("router_cpu", *router_cpu != f.router_cpu),
            ("router_cpus", *router_cpus != f.router_cpus),
            (
                "ring_capacity_bytes",
                *ring_capacity_bytes != f.ring_capacity_bytes,
            ),
            ("idle", *idle != f.idle),
            (
                "router_batch_frames",
                *router_batch_frames != f.router_batch_frames,
            ),
            ("allow_uids", allow.uids != f.allow.uids),
            ("allow_gids", allow.gids != f.allow.gids),
            ("authorize", *policy != f.policy),
            ("io_memory_bytes", *io_memory_bytes != f.io_memory_bytes),
            ("agents_max", *agents_max != f.agents_max),
            (
                "handshakes_per_uid_max",
                *handshakes_per_uid_max != f.handshakes_per_uid_max,
            ),
            (
                "agents_per_uid_max",
                *agents_per_uid_max != f.agents_per_uid_max,
            ),
            (
                "defer_capacity_bytes",
                *defer_capacity_bytes != f.defer_capacity_bytes,
            ),
            ("defer_deadline_ms", *defer_deadline != f.defer_deadline),
            ("slow_subscriber", *slow_subscriber != f.slow_subscriber),
            (
                "slow_subscriber_evict_copies",
                *slow_subscriber_evict_copies != f.slow_subscriber_evict_copies,
            ),
            (
                "liveness_timeout_ms",
                *liveness_timeout != f.liveness_timeout,
            ),
            ("dlq_path", dlq.path != f.dlq.path),
            ("dlq_records_max", dlq.records_max != f.dlq.records_max),
            ("dlq_bytes_max", dlq.bytes_max != f.dlq.bytes_max),
            (
                "dlq_records_per_sender_max",
                dlq.records_per_sender_max != f.dlq.records_per_sender_max,
            ),
            (
                "dlq_bytes_per_sender_max",
                dlq.bytes_per_sender_max != f.dlq.bytes_per_sender_max,
            ),
            (
                "dlq_records_per_uid_max",
                dlq.records_per_uid_max != f.dlq.records_per_uid_max,
            ),
            (
                "dlq_bytes_per_uid_max",
                dlq.bytes_per_uid_max != f.dlq.bytes_per_uid_max,
            ),
            ("metrics", *metrics != f.metrics),
            ("metrics_port", *metrics_port != f.metrics_port),
            ("plan", plan.plan != f.plan.plan),
            ("partitions", plan.partitions != f.plan.partitions),
            ("rebalance", *rebalance != f.rebalance),
            ("streaming", *streaming != f.streaming),
            ("twin", *twin != f.twin),
            ("remote", *remote != f.remote),
            ("node", *node != f.node),
        ];
        checks
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect()
    }

    /// [`Config::changed_keys`] split by [`applies_on_reload`]: what a reload to `fresh`
    /// applies and what waits for a restart.
    ///
    /// ```
    /// use agentwire_runtime::config::Config;
    /// let old = Config::parse("defer_deadline_ms = 1000", "t").unwrap();
    /// let new = Config::parse("defer_deadline_ms = 500\nring_capacity_bytes = 8192", "t").unwrap();
    /// let changes = old.reload_changes(&new);
    /// assert_eq!(changes.applied, ["defer_deadline_ms"]);
    /// assert_eq!(changes.needs_restart, ["ring_capacity_bytes"]);
    /// ```
    pub fn reload_changes(&self, fresh: &Config) -> ReloadChanges {
        let (applied, needs_restart) = self
            .changed_keys(fresh)
            .into_iter()
            .partition(|key| applies_on_reload(key));
        ReloadChanges {
            applied,
            needs_restart,
        }
    }
}

/// The field names serde derives for `T` (a struct), in declaration order: a deserializer
/// that records the list `deserialize_struct` is given and stops there.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe {
        fields: &mut fields,
    });
    fields.expect("a struct deriving Deserialize asks deserialize_struct with its fields")
}

struct FieldProbe<'a> {
    fields: &'a mut Option<&'static [&'static str]>,
}

/// The probe's only outcome: it never produces a value.
#[derive(Debug)]
struct Probed;

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names probed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Probed
    }
}

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        *self.fields = Some(fields);
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key rows of `docs/config.md`: (key, SIGHUP column), from lines `| `key` | ...`.
    fn documented_keys() -> Vec<(String, String)> {
        let doc = include_str!("../../../docs/config.md");
        doc.lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                // ["", key, default, unit, SIGHUP, what, ""]
                let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((key.to_string(), cells.get(4)?.to_string()))
            })
            .collect()
    }

    #[test]
    fn the_config_doc_lists_every_key_the_parser_accepts() {
        let documented = documented_keys();
        let known = known_keys();
        let names: Vec<&str> = documented.iter().map(|(k, _)| k.as_str()).collect();
        let missing: Vec<&String> = known
            .iter()
            .filter(|k| !names.contains(&k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/config.md has no row for {missing:?}"
        );
        let unknown: Vec<&&str> = names
            .iter()
            .filter(|k| !known.contains(&k.to_string()))
            .collect();
        assert!(
            unknown.is_empty(),
            "docs/config.md documents keys the parser refuses: {unknown:?}"
        );
        for (key, sighup) in &documented {
            let expected = if applies_on_reload(key) {
                "applies"
            } else {
                "restart"
            };
            assert_eq!(sighup, expected, "docs/config.md: SIGHUP column of `{key}`");
        }
        assert_eq!(names.len(), known.len(), "a key documented twice");
    }

    #[test]
    fn field_names_are_read_from_the_derive() {
        assert_eq!(
            field_names::<RebalanceConfig>(),
            [
                "enabled",
                "high_water",
                "low_water",
                "min_hold_ms",
                "sample_ms"
            ]
        );
    }

    #[test]
    fn every_config_field_is_compared_on_reload() {
        let old = Config::embedded_default();
        let fresh = Config::parse(
            "socket = \"/tmp/x.sock\"\nrouter_cpu = 0\nrouter_cpus = [0]\nidle = \"spin\"\n\
             ring_capacity_bytes = 4096\nrouter_batch_frames = 8\nallow_uids = [7]\n\
             allow_gids = [8]\nio_memory_bytes = 65536\nagents_max = 3\n\
             handshakes_per_uid_max = 3\nagents_per_uid_max = 3\ndefer_capacity_bytes = 0\n\
             defer_deadline_ms = 3\nslow_subscriber = \"backpressure\"\n\
             slow_subscriber_evict_copies = 3\nliveness_timeout_ms = 3\n\
             dlq_path = \"/tmp/d.log\"\ndlq_records_max = 3\ndlq_bytes_max = 8192\n\
             dlq_records_per_sender_max = 2\ndlq_bytes_per_sender_max = 4096\n\
             dlq_records_per_uid_max = 2\ndlq_bytes_per_uid_max = 4096\nmetrics = false\n\
             metrics_port = 3\n[plan]\nhousekeeping_cores = 0\n[partitions.nas]\nany = 1\n[rebalance]\nenabled = false\n\
             [streaming]\nenabled = true\n[twin]\nenabled = true\n[remote]\nlisten = \"127.0.0.1:1\"\n\
             allow_plaintext = true\n[node]\nname = \"a\"\nallow_plaintext = true\n\
             [[authorize]]\nuids = [7]\n",
            "t",
        )
        .unwrap();
        let changed = old.changed_keys(&fresh);
        let top_level: Vec<String> = known_keys()
            .into_iter()
            .map(|k| k.split('.').next().unwrap().to_string())
            .collect();
        for key in &top_level {
            assert!(changed.contains(&key.as_str()), "{key} not compared");
        }
        assert!(old.changed_keys(&old.clone()).is_empty());
        let changes = old.reload_changes(&fresh);
        assert_eq!(
            changes.applied,
            ["allow_uids", "allow_gids", "authorize", "defer_deadline_ms"]
        );
    }
}
