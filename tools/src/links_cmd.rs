//! `agentwire links`: the running daemon's node links (`[node]`), read from its status
//! report (the `links` fact the daemon fills on each query).

use crate::serve_cmd::{fetch_status, BoxError, QueryArgs};
use serde_json::{json, Value};

/// Prints each configured peer's link: state, round trip, the peer's agents known here,
/// frames and bytes each way, retries and the last error; with `agents`, each peer's
/// agents offered here (global id, id there, proxy id here); and, in a NATS cluster, the
/// server and the other nodes seen there.
pub fn links(q: &QueryArgs, agents: bool) -> Result<(), BoxError> {
    let (socket, report) = fetch_status(q)?;
    let fact = |key: &str| {
        report
            .info
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let node = fact("node");
    let nats = fact("nats");
    let nats_nodes: Vec<String> = fact("nats_nodes")
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let links: Vec<Value> = match fact("links") {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| format!("the daemon's links fact is not JSON: {e}"))?,
        None => Vec::new(),
    };
    if q.json {
        let nats = nats.map(|url| json!({ "url": url, "nodes": nats_nodes }));
        outln!("{}", json!({ "node": node, "links": links, "nats": nats }))?;
        return Ok(());
    }
    let Some(node) = node else {
        outln!(
            "the daemon at {} has no node links (no [node] section; see docs/config.md)",
            socket.display()
        )?;
        return Ok(());
    };
    outln!("node {node}")?;
    if let Some(url) = &nats {
        outln!(
            "NATS {url}: {} other node(s) seen: {}",
            nats_nodes.len(),
            nats_nodes.join(", ")
        )?;
    }
    if links.is_empty() {
        return Ok(());
    }
    outln!(
        "{:<16} {:<22} {:<10} {:>8} {:>6} {:>11} {:>11} {:>12} {:>12} {:>7}  last error",
        "peer",
        "address",
        "state",
        "rtt_us",
        "agents",
        "frames_out",
        "frames_in",
        "bytes_out",
        "bytes_in",
        "retries"
    )?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let number = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
    for l in &links {
        outln!(
            "{:<16} {:<22} {:<10} {:>8} {:>6} {:>11} {:>11} {:>12} {:>12} {:>7}  {}",
            text(&l["peer"]),
            text(&l["addr"]),
            text(&l["state"]),
            number(&l["rtt_us"]),
            number(&l["peer_agents"]),
            number(&l["frames_out"]),
            number(&l["frames_in"]),
            number(&l["bytes_out"]),
            number(&l["bytes_in"]),
            number(&l["retries"]),
            l["last_error"].as_str().unwrap_or("")
        )?;
    }
    if agents {
        outln!(
            "\n{:<16} {:<24} {:>10} {:>10}  proxy here",
            "peer",
            "global id",
            "id there",
            "id here"
        )?;
        for l in &links {
            for a in l["agents"].as_array().into_iter().flatten() {
                outln!(
                    "{:<16} {:<24} {:>10} {:>10}  {}",
                    text(&l["peer"]),
                    text(&a["global_id"]),
                    number(&a["id_there"]),
                    number(&a["id_here"]),
                    text(&a["proxy"])
                )?;
            }
        }
    }
    Ok(())
}
