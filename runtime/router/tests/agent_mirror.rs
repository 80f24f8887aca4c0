//! Per-agent mirror slots against real agents: a shard lends each agent a slot of its block,
//! the slot shows what the agent sent and was sent (frames, bytes, nacks by reason) under
//! its id and name, an agent beyond the block is served unmirrored and counted, and a
//! departed agent's slot is cleared and lent to the agent that waited for one.

use agentwire_router::agent_mirror::{unpack_name, AGENT_COUNTERS, NAME_WORDS};
use agentwire_router::mirror::{shard_counter_names, SHARD_MIRROR_COUNTERS};
use agentwire_router::{RouterConfig, RouterControl};
use agentwire_shm::client::Agent;
use agentwire_shm::idle::{IdleStrategy, Idler};
use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
use agentwire_shm::wire::HEADER_BYTES;
use std::time::{Duration, Instant};

const AGENT_SLOTS: usize = 2;
const WAIT: Duration = Duration::from_secs(20);

/// An agent slot as read: its words by name.
struct AgentSlot(Vec<u64>);

impl AgentSlot {
    fn get(&self, name: &str) -> u64 {
        let i = AGENT_COUNTERS.iter().position(|n| *n == name).unwrap();
        self.0[i]
    }
    fn name(&self) -> String {
        let first = AGENT_COUNTERS.iter().position(|n| *n == "name_0").unwrap();
        unpack_name(&self.0[first..first + NAME_WORDS])
    }
}

struct Mirror {
    reader: StatsReader,
}

impl Mirror {
    fn shard(&self, counter: &str) -> u64 {
        let mut words = vec![0; SHARD_MIRROR_COUNTERS];
        self.reader.snapshot(0, &mut words).unwrap();
        let i = shard_counter_names()
            .iter()
            .position(|n| *n == counter)
            .unwrap();
        words[i]
    }
    fn agent_slot(&self, slot: usize) -> AgentSlot {
        let mut words = vec![0; SHARD_MIRROR_COUNTERS];
        self.reader.snapshot(1 + slot, &mut words).unwrap();
        AgentSlot(words)
    }
    /// The slot lent to agent `id`, if any.
    fn agent(&self, id: u32) -> Option<(usize, AgentSlot)> {
        (0..AGENT_SLOTS)
            .map(|s| (s, self.agent_slot(s)))
            .find(|(_, a)| a.get("agent_id") == u64::from(id))
    }
    /// Polls the segment (the shard publishes on its own schedule) until `done` holds.
    fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(Instant::now() < deadline, "watchdog: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn agents_get_slots_of_their_own_and_give_them_back() {
    let socket = std::env::temp_dir()
        .join(format!("aw-agent-mirror-{}", std::process::id()))
        .join("agentwire.sock");
    let (control, mut core) = RouterControl::start(RouterConfig {
        idle: IdleStrategy::Park {
            park_timeout_ns: 1_000_000,
        },
        ..RouterConfig::new(socket.clone())
    })
    .unwrap();
    let layout = StatsLayout::new(1 + AGENT_SLOTS as u32, SHARD_MIRROR_COUNTERS as u32);
    let segment = StatsSegment::create_memfd("agent-mirror", layout).unwrap();
    core.set_stats_slot(segment.writer(0).unwrap()).unwrap();
    let writers = (1..=AGENT_SLOTS).map(|s| segment.writer(s).unwrap());
    core.set_agent_stats_slots(writers.collect()).unwrap();
    let shard = std::thread::spawn(move || {
        let mut idler = Idler::new(IdleStrategy::Park {
            park_timeout_ns: 1_000_000,
        });
        while !core.should_stop() {
            core.step(&mut idler);
        }
        core.finish();
    });
    let mirror = Mirror {
        reader: StatsReader::open_fd(segment.try_clone_fd().unwrap()).unwrap(),
    };
    let connect = |name: &str| Agent::builder(name).socket(&socket).connect().unwrap();
    let (mut sender, mut receiver) = (connect("sender-1"), connect("receiver-2"));
    let late = connect("late-3");
    mirror.until("three agents, one unmirrored", |m| {
        m.shard("agents_served") == 3 && m.shard("agents_unmirrored") == 1
    });
    assert!(mirror.agent(late.id()).is_none(), "no slot was free");

    const FRAMES: u64 = 100;
    for i in 0..FRAMES {
        sender.send(receiver.id(), &i.to_le_bytes()).unwrap();
    }
    sender.send(999_999, b"nobody").unwrap();
    let mut received = 0;
    while received < FRAMES {
        let got = receiver
            .recv(Some(WAIT))
            .unwrap()
            .expect("watchdog: stalled");
        drop(got);
        received += 1;
    }
    mirror.until("the frames and the nack in the agents' slots", |m| {
        m.agent(receiver.id())
            .is_some_and(|(_, a)| a.get("frames_out") == FRAMES)
            && m.agent(sender.id())
                .is_some_and(|(_, a)| a.get("nacks_no_such_agent") == 1)
    });
    let (_, s) = mirror.agent(sender.id()).unwrap();
    assert_eq!(s.name(), "sender-1");
    assert_eq!(s.get("frames_in"), FRAMES + 1);
    let frame_bytes = (HEADER_BYTES + 8) as u64;
    assert_eq!(
        s.get("bytes_in"),
        FRAMES * frame_bytes + (HEADER_BYTES + 6) as u64
    );
    assert_eq!(s.get("frames_out"), 1, "the nack");
    assert_eq!(s.get("nacks_not_permitted"), 0);
    let (receiver_slot, r) = mirror.agent(receiver.id()).unwrap();
    assert_eq!(r.name(), "receiver-2");
    assert_eq!(
        (r.get("frames_in"), r.get("bytes_out")),
        (0, FRAMES * frame_bytes)
    );
    assert_eq!((r.get("shard"), r.get("slot_lends")), (0, 1));
    assert!(r.get("publishes") >= 1);

    // The receiver leaves: its slot is cleared and lent to the agent that waited.
    let receiver_id = receiver.id();
    drop(receiver);
    mirror.until("the departed agent's slot lent to the late one", |m| {
        m.shard("agents_unmirrored") == 0 && m.agent(late.id()).is_some()
    });
    assert!(mirror.agent(receiver_id).is_none());
    let (slot, l) = mirror.agent(late.id()).unwrap();
    assert_eq!(slot, receiver_slot, "the freed slot");
    assert_eq!((l.name(), l.get("slot_lends")), ("late-3".to_string(), 2));
    assert_eq!(l.get("frames_out"), 0, "a fresh agent's counters");

    drop((sender, late));
    mirror.until("every slot free", |m| {
        (0..AGENT_SLOTS).all(|s| m.agent_slot(s).get("agent_id") == 0)
    });
    control.shutdown();
    shard.join().unwrap();
}
