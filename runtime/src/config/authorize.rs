//! `[[authorize]]`: the authorization policy per peer identity ([`agentwire_router::policy`]),
//! one table per rule, first match wins:
//!
//! ```toml
//! [[authorize]]
//! uids = [1001]                 # peers with this uid...
//! gids = []                     # ...or this gid
//! names = ["ocr-*"]             # agent names they may register
//! capabilities = ["ocr"]        # capabilities they may offer
//! subscribe = ["alerts.*"]      # topics they may subscribe to
//! publish = ["sensor.*"]        # topics they may publish to
//! send = ["ocr-*", "client-*"]  # agents they may send to (unicast, request, response,
//!                               # and whom anycast and feature routes may pick), by name
//! ```
//!
//! Every problem names file, line and key: an unknown key in a rule, a rule that names no
//! uid and no gid (it would match nobody), a pattern with a `*` before its end.

use super::document::Document;
use agentwire_router::policy::{Pattern, Policy, Rule};

/// One `[[authorize]]` table as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleToml {
    #[serde(default)]
    uids: Vec<u32>,
    #[serde(default)]
    gids: Vec<u32>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    send: Vec<String>,
}

/// The policy `doc` configures (open when it has no `[[authorize]]`), every problem reported
/// in `doc`; a rule with a problem is left out (the file is refused anyway).
pub(super) fn take_policy(doc: &mut Document<'_>) -> Policy {
    let tables: Vec<Option<RuleToml>> = doc.take_each("authorize");
    let mut rules = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        // A table of the wrong shape was reported by `take_each`.
        let Some(table) = table else { continue };
        let key = format!("authorize[{i}]");
        let mut ok = true;
        if table.uids.is_empty() && table.gids.is_empty() {
            doc.problem(
                &key,
                ": a rule with no uids and no gids matches nobody: name the peers it is for".into(),
            );
            ok = false;
        }
        let mut patterns = |field: &str, texts: Vec<String>| -> Vec<Pattern> {
            let mut out = Vec::with_capacity(texts.len());
            for text in texts {
                match Pattern::new(&text) {
                    Ok(p) => out.push(p),
                    Err(why) => {
                        doc.invalid(&format!("{key}.{field}"), format!("{text:?}"), &why);
                        ok = false;
                    }
                }
            }
            out
        };
        let rule = Rule {
            names: patterns("names", table.names),
            capabilities: patterns("capabilities", table.capabilities),
            subscribe: patterns("subscribe", table.subscribe),
            publish: patterns("publish", table.publish),
            send: patterns("send", table.send),
            uids: table.uids,
            gids: table.gids,
        };
        if ok {
            rules.push(rule);
        }
    }
    Policy { rules }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use agentwire_router::policy::{Action, Policy};
    use agentwire_shm::control::PeerCredentials;

    #[test]
    fn authorize_tables_become_the_policy_in_order() {
        let text = "agents_max = 10\n\
                    [[authorize]]\n\
                    uids = [1001]\n\
                    names = [\"ocr-*\"]\n\
                    capabilities = [\"ocr\"]\n\
                    subscribe = [\"alerts.*\"]\n\
                    publish = [\"sensor.*\"]\n\
                    send = [\"db\"]\n\
                    \n\
                    [[authorize]]\n\
                    gids = [2000]\n\
                    names = [\"*\"]\n";
        let config = Config::parse(text, "a.toml").unwrap();
        let policy = &config.policy;
        assert_eq!(policy.rules.len(), 2);
        let ocr = PeerCredentials {
            pid: 1,
            uid: 1001,
            gid: 2000,
        };
        assert!(policy.permits(&ocr, Action::Name("ocr-1")).is_ok());
        assert!(policy.permits(&ocr, Action::Name("other")).is_err());
        assert!(policy.permits(&ocr, Action::Publish("sensor.t")).is_ok());
        assert!(policy.permits(&ocr, Action::Subscribe("sensor.t")).is_err());
        assert!(policy.permits(&ocr, Action::Send("db")).is_ok());
        assert!(policy.permits(&ocr, Action::Send("db2")).is_err());
        let group = PeerCredentials { uid: 7, ..ocr };
        assert!(policy.permits(&group, Action::Name("other")).is_ok());
        assert_eq!(config.source.line("authorize[1].names"), Some(12));
        assert_eq!(Config::parse("", "e").unwrap().policy, Policy::open());
    }

    #[test]
    fn the_readme_locked_down_example_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\nallow_uids = [1001, 1002]")
            .expect("the README's locked-down example")
            + "```toml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let config = Config::parse(&readme[start..end], "README.md").unwrap();
        assert_eq!(config.policy.rules.len(), 2);
        let dashboard = PeerCredentials {
            pid: 1,
            uid: 1002,
            gid: 1002,
        };
        let policy = &config.policy;
        assert!(policy
            .permits(&dashboard, Action::Subscribe("alerts.fire"))
            .is_ok());
        assert!(policy
            .permits(&dashboard, Action::Publish("alerts.fire"))
            .is_err());
        assert!(policy.permits(&dashboard, Action::Send("ocr-3")).is_ok());
        assert!(policy.permits(&dashboard, Action::Send("billing")).is_err());
    }

    #[test]
    fn bad_authorize_tables_name_file_line_and_key() {
        let text = "[[authorize]]\n\
                    uids = [1001]\n\
                    names = [\"a*b\"]\n\
                    \n\
                    [[authorize]]\n\
                    names = [\"x\"]\n\
                    \n\
                    [[authorize]]\n\
                    uids = [1]\n\
                    publsh = [\"x\"]\n";
        let err = Config::parse(text, "a.toml").unwrap_err().to_string();
        assert!(
            err.contains("a.toml:3: authorize[0].names = \"a*b\": `*` may only end a pattern"),
            "{err}"
        );
        assert!(
            err.contains("a.toml:6: authorize[1]: a rule with no uids and no gids"),
            "{err}"
        );
        assert!(
            err.contains("a.toml:10:") && err.contains("publsh"),
            "{err}"
        );
        let err = Config::parse("[[authorize]]\nuids = [\"me\"]\n", "b.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.toml:2: authorize"), "{err}");
    }
}
