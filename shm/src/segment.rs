//! Shared segments: one agent's ring pair (tx: agent to daemon, rx: daemon to agent) plus a
//! control block, in a sealed memfd passed to the agent over the control socket.
//!
//! Layout (all offsets page-aligned, asserted and re-checked by every opener):
//!
//! ```text
//! 0       SegmentHeader  magic (written last), layout version, sizes, offsets
//! 4096    ControlBlock   heartbeats, agent pid, state, reject counters (own cache lines)
//! 8192    tx ring        RingControl (384 B) + tx capacity
//! ...     rx ring        RingControl (384 B) + rx capacity, at the next page
//! ```
//!
//! Opening is a handshake with states: the creator writes every field, then the magic word
//! with a release store; the opener acquires the magic, then checks every layout parameter
//! and returns a distinct error naming the expected and found values.
//!
//! Neither side trusts the shared header after that: each keeps the layout (offsets,
//! capacities, agent id) in its own memory from creation or open on, so a peer that
//! scribbles over the header, or punches a hole in the memfd (pages read back as zeros),
//! can corrupt only ring contents, which the ring checks as untrusted input.
//!
//! ```
//! use agentwire_shm::segment::{Segment, SegmentConfig};
//! let seg = Segment::create(&SegmentConfig::new(7)).unwrap();
//! let opened = Segment::open(seg.try_clone_fd().unwrap()).unwrap();
//! assert_eq!(opened.agent_id(), 7);
//! ```

use crate::placement;
use crate::ring::{check_capacity, ring_bytes, CachePadded, RingConfigError, RingMemory};
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};
use std::sync::Arc;

/// "AWSEG" + layout version 2, little-endian; written last by the creator.
pub const SEGMENT_MAGIC: u64 = 0x0000_0247_4553_5741;
/// Layout version of [`SegmentHeader`] and [`ControlBlock`]. Any change bumps it.
/// Version 2: one tx ring per priority class ([`TX_LANES`]).
pub const SEGMENT_LAYOUT_VERSION: u32 = 2;
/// Tx rings (lanes) per segment, one per priority class: lane `c` carries the frames the
/// agent sends with priority class `c` (0 most urgent), so the router can serve classes by
/// its weighted policy without reordering any one lane.
pub const TX_LANES: usize = crate::wire::PRIORITY_CLASSES as usize;
/// The lane of the default priority class (what [`Segment::tx_memory`] returns).
pub const TX_LANE_DEFAULT: usize = 2;
/// Page size the layout is aligned to.
pub const PAGE_BYTES: usize = 4096;
/// 2 MiB huge page size.
pub const HUGE_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Default ring capacity for each direction (1 MiB).
pub const RING_CAPACITY_DEFAULT_BYTES: usize = 1 << 20;

const CONTROL_OFFSET: usize = PAGE_BYTES;
const TX_OFFSET: usize = 2 * PAGE_BYTES;

/// Segment state word values.
pub mod state {
    /// The daemon serves this segment.
    pub const ACTIVE: u32 = 1;
    /// The daemon is done with this segment (it stopped, or dropped the agent): every frame
    /// it took from the tx ring (up to its head) was delivered, dead-lettered or nacked;
    /// the rest were not accepted. Reconnect.
    pub const CLOSED: u32 = 2;
    /// The daemon is stopping: it accepts no new frame (a send that sees this fails with
    /// `Disconnected`), routes or gives up on what was committed before, then marks the
    /// segment [`CLOSED`].
    pub const CLOSING: u32 = 3;
}

/// The segment header at offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`] once the segment is fully initialised. SYNC POINT: magic.
    pub magic: AtomicU64,
    /// [`SEGMENT_LAYOUT_VERSION`].
    pub layout_version: u32,
    /// `size_of::<SegmentHeader>()` as the creator knew it.
    pub header_bytes: u32,
    /// Total segment size in bytes.
    pub segment_bytes: u64,
    /// The agent this segment belongs to.
    pub agent_id: u32,
    /// Bit 0: backed by 2 MiB huge pages.
    pub flags: u32,
    /// Offset of the [`ControlBlock`].
    pub control_offset: u64,
    /// Offset of tx lane 0 (agent to daemon); lane `i` follows at `i` times the page-rounded
    /// [`ring_bytes`] of the capacity.
    pub tx_offset: u64,
    /// Data capacity of each tx lane in bytes.
    pub tx_capacity_bytes: u64,
    /// Offset of the rx ring (daemon to agent).
    pub rx_offset: u64,
    /// Data capacity of the rx ring in bytes.
    pub rx_capacity_bytes: u64,
    /// Number of tx lanes ([`TX_LANES`]).
    pub tx_lanes: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(size_of::<SegmentHeader>() == 80);
const _: () = assert!(offset_of!(SegmentHeader, magic) == 0);
const _: () = assert!(offset_of!(SegmentHeader, segment_bytes) == 16);
const _: () = assert!(offset_of!(SegmentHeader, rx_capacity_bytes) == 64);

/// Per-agent control block: liveness and counters that both sides can read.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ControlBlock {
    /// Bumped by the agent while it runs (liveness).
    pub agent_heartbeat: CachePadded<AtomicU64>,
    /// Bumped by the daemon while it serves the segment.
    pub daemon_heartbeat: CachePadded<AtomicU64>,
    /// [`state`] of the segment, written by the daemon.
    pub state: CachePadded<AtomicU32>,
    /// The agent's pid, written by the agent at attach.
    pub agent_pid: AtomicU32,
    /// Frames the daemon rejected from this agent's tx ring.
    pub frames_rejected: AtomicU64,
    /// Reason code of the last rejection (a `NackReason`).
    pub last_reject_reason: AtomicU32,
}

const _: () = assert!(size_of::<ControlBlock>() <= PAGE_BYTES);
const _: () = assert!(offset_of!(ControlBlock, daemon_heartbeat) == 128);
const _: () = assert!(offset_of!(ControlBlock, state) == 256);

/// Whether to back a segment with 2 MiB huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// Use them when free huge pages exist; fall back with one log line.
    Auto,
    /// Never use them.
    Never,
}

/// How to build a segment.
#[derive(Debug, Clone)]
pub struct SegmentConfig {
    /// The agent the segment belongs to.
    pub agent_id: u32,
    /// Tx ring capacity (agent to daemon), a power of two.
    pub tx_capacity_bytes: usize,
    /// Rx ring capacity (daemon to agent), a power of two.
    pub rx_capacity_bytes: usize,
    /// Bind memory to the NUMA node of this CPU (the core that will serve the agent).
    pub numa_cpu: Option<usize>,
    /// Huge page policy.
    pub huge_pages: HugePages,
}

impl SegmentConfig {
    /// Defaults: 1 MiB rings each way, no NUMA binding, huge pages when available.
    ///
    /// ```
    /// let c = agentwire_shm::segment::SegmentConfig::new(1);
    /// assert_eq!(c.tx_capacity_bytes, 1 << 20);
    /// ```
    pub fn new(agent_id: u32) -> Self {
        Self {
            agent_id,
            tx_capacity_bytes: RING_CAPACITY_DEFAULT_BYTES,
            rx_capacity_bytes: RING_CAPACITY_DEFAULT_BYTES,
            numa_cpu: None,
            huge_pages: HugePages::Auto,
        }
    }

    /// Sets both ring capacities.
    ///
    /// ```
    /// let c = agentwire_shm::segment::SegmentConfig::new(1).with_capacity(4096, 8192);
    /// assert_eq!(c.rx_capacity_bytes, 8192);
    /// ```
    pub fn with_capacity(mut self, tx_capacity_bytes: usize, rx_capacity_bytes: usize) -> Self {
        self.tx_capacity_bytes = tx_capacity_bytes;
        self.rx_capacity_bytes = rx_capacity_bytes;
        self
    }

    /// Places the segment on the NUMA node of `cpu`.
    ///
    /// ```
    /// let c = agentwire_shm::segment::SegmentConfig::new(1).near_cpu(0);
    /// assert_eq!(c.numa_cpu, Some(0));
    /// ```
    pub fn near_cpu(mut self, cpu: usize) -> Self {
        self.numa_cpu = Some(cpu);
        self
    }

    /// Sets the huge page policy.
    ///
    /// ```
    /// use agentwire_shm::segment::{HugePages, SegmentConfig};
    /// let c = SegmentConfig::new(1).huge_pages(HugePages::Never);
    /// assert_eq!(c.huge_pages, HugePages::Never);
    /// ```
    pub fn huge_pages(mut self, policy: HugePages) -> Self {
        self.huge_pages = policy;
        self
    }
}

/// Why a segment could not be created or opened. Each names what was expected and found.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A ring capacity is not valid.
    #[error(transparent)]
    Ring(#[from] RingConfigError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is smaller than the header or than the header says.
    #[error("segment is {found_bytes} bytes, expected {expected_bytes}")]
    SizeMismatch {
        /// Size the header (or the minimum) requires.
        expected_bytes: u64,
        /// Size of the file.
        found_bytes: u64,
    },
    /// The magic word is wrong: not a segment, or not initialised yet.
    #[error("bad segment magic {found:#018x}, expected {SEGMENT_MAGIC:#018x}")]
    BadMagic {
        /// Magic found.
        found: u64,
    },
    /// The layout version differs.
    #[error("segment layout version {found}, this build speaks {SEGMENT_LAYOUT_VERSION}")]
    VersionMismatch {
        /// Version found.
        found: u32,
    },
    /// A layout field is inconsistent.
    #[error("segment field {field} is {found}, expected {expected}")]
    LayoutMismatch {
        /// Field name.
        field: &'static str,
        /// Expected value.
        expected: u64,
        /// Found value.
        found: u64,
    },
}

fn io_error(what: &'static str) -> impl FnOnce(rustix::io::Errno) -> SegmentError {
    move |e| SegmentError::Io {
        what,
        source: e.into(),
    }
}

/// The mapping that keeps a segment alive; rings hold clones of it.
struct Mapping {
    map: memmap2::MmapMut,
}

/// The layout facts of a segment, kept in the holder's own memory: written by the creator
/// (or checked by the opener) once, never re-read from the shared header, which the other
/// side can write at any time.
#[derive(Debug, Clone, Copy)]
struct Layout {
    agent_id: u32,
    tx_capacity_bytes: usize,
    rx_offset: usize,
    rx_capacity_bytes: usize,
}

/// A mapped segment.
#[derive(Clone)]
pub struct Segment {
    mapping: Arc<Mapping>,
    fd: Arc<OwnedFd>,
    layout: Layout,
    huge_pages: bool,
    numa_node: Option<u32>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("agent_id", &self.agent_id())
            .field("bytes", &self.mapping.map.len())
            .field("huge_pages", &self.huge_pages)
            .field("numa_node", &self.numa_node)
            .finish()
    }
}

/// A capacity read from a header, checked before it is used as a `usize`.
fn check_capacity_u64(capacity_bytes: u64) -> Result<usize, SegmentError> {
    let capacity = usize::try_from(capacity_bytes).unwrap_or(usize::MAX);
    check_capacity(capacity)?;
    Ok(capacity)
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Bytes between consecutive tx lanes.
fn tx_lane_stride(tx_capacity_bytes: usize) -> usize {
    round_up(ring_bytes(tx_capacity_bytes), PAGE_BYTES)
}

/// Byte layout of a segment for the given capacities: (rx_offset, total_bytes).
fn layout(tx_capacity_bytes: usize, rx_capacity_bytes: usize) -> (usize, usize) {
    let rx_offset = TX_OFFSET + TX_LANES * tx_lane_stride(tx_capacity_bytes);
    let total = round_up(rx_offset + ring_bytes(rx_capacity_bytes), PAGE_BYTES);
    (rx_offset, total)
}

impl Segment {
    /// Creates, sizes, seals, places and initialises a segment.
    ///
    /// The memfd is sealed against shrinking and growing, so an agent holding it cannot
    /// truncate it under the daemon (which would fault the daemon with SIGBUS).
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(
    ///     &agentwire_shm::segment::SegmentConfig::new(3).with_capacity(4096, 4096)).unwrap();
    /// assert_eq!(seg.agent_id(), 3);
    /// ```
    pub fn create(config: &SegmentConfig) -> Result<Self, SegmentError> {
        check_capacity(config.tx_capacity_bytes)?;
        check_capacity(config.rx_capacity_bytes)?;
        let (rx_offset, total) = layout(config.tx_capacity_bytes, config.rx_capacity_bytes);
        let name = format!("agentwire-agent-{}", config.agent_id);

        let mut created = None;
        if config.huge_pages == HugePages::Auto {
            if placement::free_huge_pages_2mib() == 0 {
                placement::log_huge_pages_fallback("no free 2 MiB pages");
            } else {
                match Self::create_backing(&name, round_up(total, HUGE_PAGE_BYTES), true) {
                    Ok(made) => created = Some((made, true)),
                    Err(e) => placement::log_huge_pages_fallback(&e.to_string()),
                }
            }
        }
        let ((fd, map), huge_pages) = match created {
            Some(made) => made,
            None => (Self::create_backing(&name, total, false)?, false),
        };
        let numa_node = config
            .numa_cpu
            .and_then(|cpu| placement::bind_to_cpu_node(&map[..], cpu));

        let segment = Self {
            mapping: Arc::new(Mapping { map }),
            fd: Arc::new(fd),
            layout: Layout {
                agent_id: config.agent_id,
                tx_capacity_bytes: config.tx_capacity_bytes,
                rx_offset,
                rx_capacity_bytes: config.rx_capacity_bytes,
            },
            huge_pages,
            numa_node,
        };
        let header = segment.header_ptr();
        // SAFETY: the mapping is at least one page, page-aligned, and nobody else has the fd
        // yet, so these plain writes race with nothing; the magic is published last below.
        unsafe {
            (*header).layout_version = SEGMENT_LAYOUT_VERSION;
            (*header).header_bytes = size_of::<SegmentHeader>() as u32;
            (*header).segment_bytes = segment.mapping.map.len() as u64;
            (*header).agent_id = config.agent_id;
            (*header).flags = u32::from(huge_pages);
            (*header).control_offset = CONTROL_OFFSET as u64;
            (*header).tx_offset = TX_OFFSET as u64;
            (*header).tx_capacity_bytes = config.tx_capacity_bytes as u64;
            (*header).rx_offset = rx_offset as u64;
            (*header).rx_capacity_bytes = config.rx_capacity_bytes as u64;
            (*header).tx_lanes = TX_LANES as u32;
        }
        for lane in 0..TX_LANES {
            segment.tx_lane_memory(lane).reset();
        }
        segment.rx_memory().reset();
        segment
            .control()
            .state
            .0
            .store(state::ACTIVE, Ordering::Relaxed);
        // SYNC POINT: magic (publishes every field above to any opener).
        segment
            .header()
            .magic
            .store(SEGMENT_MAGIC, Ordering::Release);
        Ok(segment)
    }

    fn create_backing(
        name: &str,
        bytes: usize,
        huge: bool,
    ) -> Result<(OwnedFd, memmap2::MmapMut), SegmentError> {
        let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        if huge {
            flags |= MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB;
        }
        let fd = rustix::fs::memfd_create(name, flags).map_err(io_error(
            "memfd_create (a segment needs a sealable memfd: Linux 3.17 or later)",
        ))?;
        rustix::fs::ftruncate(&fd, bytes as u64).map_err(io_error("sizing the segment"))?;
        // Fail closed: an unsealed segment could be shrunk by the agent under the daemon's
        // mapping (SIGBUS on the daemon's next access), so no seal, no segment.
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(io_error("sealing the segment against resizing"))?;
        let file = std::fs::File::from(fd.try_clone().map_err(|e| SegmentError::Io {
            what: "dup",
            source: e,
        })?);
        // SAFETY: the file is ours, sealed against resizing, and mapped shared; all access
        // to its contents goes through the ring and control-block protocols.
        let map =
            unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(&file) }.map_err(|e| {
                SegmentError::Io {
                    what: "mapping the segment",
                    source: e,
                }
            })?;
        if huge {
            // Touch one byte per huge page now: with no page left the fault happens here, at
            // creation, and surfaces as a failed mapping on kernels that reserve lazily.
            let _ = map.first();
        }
        Ok((fd, map))
    }

    /// Maps a segment received from the daemon and checks its layout.
    ///
    /// ```
    /// use agentwire_shm::segment::{Segment, SegmentConfig};
    /// let seg = Segment::create(&SegmentConfig::new(1)).unwrap();
    /// assert!(Segment::open(seg.try_clone_fd().unwrap()).is_ok());
    /// ```
    pub fn open(fd: OwnedFd) -> Result<Self, SegmentError> {
        let stat = rustix::fs::fstat(&fd).map_err(io_error("fstat on segment"))?;
        let file_bytes = stat.st_size as u64;
        if file_bytes < (TX_OFFSET as u64) {
            return Err(SegmentError::SizeMismatch {
                expected_bytes: TX_OFFSET as u64,
                found_bytes: file_bytes,
            });
        }
        let file = std::fs::File::from(fd.try_clone().map_err(|e| SegmentError::Io {
            what: "dup",
            source: e,
        })?);
        // SAFETY: shared mapping of a sealed memfd from the daemon; its size is what fstat
        // says and the daemon sealed it against shrinking.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(file_bytes as usize)
                .map_mut(&file)
        }
        .map_err(|e| SegmentError::Io {
            what: "mapping the segment",
            source: e,
        })?;
        // SAFETY: the mapping holds at least TX_OFFSET bytes (checked above) and is
        // page-aligned; the header's plain fields are only written by the creator before it
        // publishes the magic, which is acquired below before any of them is read.
        let header = unsafe { &*(map.as_ptr() as *const SegmentHeader) };
        let (layout, huge_pages) = Self::checked_layout(header, file_bytes)?;
        Ok(Self {
            mapping: Arc::new(Mapping { map }),
            fd: Arc::new(fd),
            layout,
            huge_pages,
            numa_node: None,
        })
    }

    /// Checks a received header against the file's size and this build's layout; returns the
    /// layout this side keeps (and whether the segment is on huge pages). Each field is read
    /// once into this side's memory; every check and the layout use these copies, never the
    /// shared header again.
    fn checked_layout(h: &SegmentHeader, file_bytes: u64) -> Result<(Layout, bool), SegmentError> {
        // SYNC POINT: magic
        let magic = h.magic.load(Ordering::Acquire);
        if magic != SEGMENT_MAGIC {
            return Err(SegmentError::BadMagic { found: magic });
        }
        let (version, header_bytes, segment_bytes) =
            (h.layout_version, h.header_bytes, h.segment_bytes);
        let (control_offset, tx_offset, tx_lanes) = (h.control_offset, h.tx_offset, h.tx_lanes);
        let (tx_capacity_bytes, rx_offset_found, rx_capacity_bytes) =
            (h.tx_capacity_bytes, h.rx_offset, h.rx_capacity_bytes);
        let (agent_id, flags) = (h.agent_id, h.flags);
        if version != SEGMENT_LAYOUT_VERSION {
            return Err(SegmentError::VersionMismatch { found: version });
        }
        let check = |field, expected: u64, found: u64| {
            if expected == found {
                Ok(())
            } else {
                Err(SegmentError::LayoutMismatch {
                    field,
                    expected,
                    found,
                })
            }
        };
        check(
            "header_bytes",
            size_of::<SegmentHeader>() as u64,
            u64::from(header_bytes),
        )?;
        check("segment_bytes", file_bytes, segment_bytes)?;
        check("control_offset", CONTROL_OFFSET as u64, control_offset)?;
        check("tx_offset", TX_OFFSET as u64, tx_offset)?;
        check("tx_lanes", TX_LANES as u64, u64::from(tx_lanes))?;
        let tx_capacity_bytes = check_capacity_u64(tx_capacity_bytes)?;
        let rx_capacity_bytes = check_capacity_u64(rx_capacity_bytes)?;
        let (rx_offset, total) = layout(tx_capacity_bytes, rx_capacity_bytes);
        check("rx_offset", rx_offset as u64, rx_offset_found)?;
        if total as u64 > file_bytes {
            return Err(SegmentError::SizeMismatch {
                expected_bytes: total as u64,
                found_bytes: file_bytes,
            });
        }
        let layout = Layout {
            agent_id,
            tx_capacity_bytes,
            rx_offset,
            rx_capacity_bytes,
        };
        Ok((layout, flags & 1 != 0))
    }

    fn header_ptr(&self) -> *mut SegmentHeader {
        self.mapping.map.as_ptr() as *mut SegmentHeader
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: the mapping holds at least a page (checked at create/open), is page-aligned,
        // and the header's non-atomic fields are only written before the magic is published.
        unsafe { &*self.header_ptr() }
    }

    /// The control block shared with the other side.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(1)).unwrap();
    /// assert_eq!(seg.control().state.0.load(std::sync::atomic::Ordering::Relaxed), 1);
    /// ```
    pub fn control(&self) -> &ControlBlock {
        // SAFETY: CONTROL_OFFSET + size_of::<ControlBlock>() lies inside the mapping (checked
        // at open), is 128-aligned, and is only accessed through atomics.
        unsafe { &*(self.mapping.map.as_ptr().add(CONTROL_OFFSET) as *const ControlBlock) }
    }

    fn ring_memory(&self, offset: usize, capacity_bytes: usize) -> RingMemory {
        let keepalive: Arc<dyn std::any::Any + Send + Sync> = self.mapping.clone();
        // SAFETY: `offset` and `capacity_bytes` come from this holder's own `Layout`, which
        // create computed or open checked against the mapping's size: [offset, offset +
        // ring_bytes(capacity)) lies in the mapping, page-aligned; the Arc keeps it alive.
        unsafe {
            RingMemory::from_raw(
                self.mapping.map.as_ptr().add(offset) as *mut u8,
                capacity_bytes,
                keepalive,
            )
        }
        .expect("the private layout was validated at create/open")
    }

    /// The tx lane of the default priority class ([`TX_LANE_DEFAULT`]). The agent produces,
    /// the daemon consumes.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(1)).unwrap();
    /// assert_eq!(seg.tx_memory().capacity_bytes(), 1 << 20);
    /// ```
    pub fn tx_memory(&self) -> RingMemory {
        self.tx_lane_memory(TX_LANE_DEFAULT)
    }

    /// The tx lane of priority class `lane` (0 most urgent).
    ///
    /// # Panics
    /// If `lane >= TX_LANES`.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(1)).unwrap();
    /// assert_eq!(seg.tx_lane_memory(0).capacity_bytes(), 1 << 20);
    /// ```
    pub fn tx_lane_memory(&self, lane: usize) -> RingMemory {
        assert!(lane < TX_LANES, "tx lane {lane} of {TX_LANES}");
        let capacity_bytes = self.layout.tx_capacity_bytes;
        let offset = TX_OFFSET + lane * tx_lane_stride(capacity_bytes);
        self.ring_memory(offset, capacity_bytes)
    }

    /// The rx ring (daemon to agent). The daemon produces, the agent consumes.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(1)).unwrap();
    /// assert_eq!(seg.rx_memory().capacity_bytes(), 1 << 20);
    /// ```
    pub fn rx_memory(&self) -> RingMemory {
        self.ring_memory(self.layout.rx_offset, self.layout.rx_capacity_bytes)
    }

    /// The agent this segment belongs to.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(9)).unwrap();
    /// assert_eq!(seg.agent_id(), 9);
    /// ```
    pub fn agent_id(&self) -> u32 {
        self.layout.agent_id
    }

    /// Total mapped bytes.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(9)).unwrap();
    /// assert!(seg.len_bytes() >= 2 << 20);
    /// ```
    pub fn len_bytes(&self) -> usize {
        self.mapping.map.len()
    }

    /// The addresses this mapping spans in this process: to check that a frame handed out
    /// in place lies in the segment (zero-copy proofs in tests and bindings).
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(9)).unwrap();
    /// assert_eq!(seg.address_range().len(), seg.len_bytes());
    /// ```
    pub fn address_range(&self) -> std::ops::Range<usize> {
        let start = self.mapping.map.as_ptr() as usize;
        start..start + self.mapping.map.len()
    }

    /// Whether the segment is on 2 MiB huge pages.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(9)).unwrap();
    /// let _ = seg.huge_pages();
    /// ```
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// The NUMA node the creator bound the memory to, if it bound it.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(9)).unwrap();
    /// assert_eq!(seg.numa_node(), None);
    /// ```
    pub fn numa_node(&self) -> Option<u32> {
        self.numa_node
    }

    /// A duplicate of the segment's descriptor, to pass to the agent.
    ///
    /// ```
    /// let seg = agentwire_shm::segment::Segment::create(&agentwire_shm::segment::SegmentConfig::new(9)).unwrap();
    /// let _fd = seg.try_clone_fd().unwrap();
    /// ```
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        self.fd.as_fd().try_clone_to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Segment {
        Segment::create(
            &SegmentConfig::new(5)
                .with_capacity(4096, 8192)
                .huge_pages(HugePages::Never),
        )
        .unwrap()
    }

    #[test]
    fn rejects_bad_ring_capacity_instead_of_rounding() {
        let err = Segment::create(&SegmentConfig::new(1).with_capacity(5000, 4096)).unwrap_err();
        assert!(matches!(
            err,
            SegmentError::Ring(RingConfigError::BadCapacity {
                capacity_bytes: 5000
            })
        ));
    }

    #[test]
    fn open_rejects_uninitialised_file() {
        let fd = rustix::fs::memfd_create("blank", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 64 * 1024).unwrap();
        assert!(matches!(
            Segment::open(fd),
            Err(SegmentError::BadMagic { found: 0 })
        ));
    }

    #[test]
    fn open_rejects_tiny_file() {
        let fd = rustix::fs::memfd_create("tiny", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 100).unwrap();
        assert!(matches!(
            Segment::open(fd),
            Err(SegmentError::SizeMismatch {
                found_bytes: 100,
                ..
            })
        ));
    }

    #[test]
    fn open_names_version_and_layout_mismatches() {
        let seg = small();
        // SAFETY: test-only corruption of a segment nobody else maps.
        unsafe { (*seg.header_ptr()).layout_version = 9 };
        let err = Segment::open(seg.try_clone_fd().unwrap()).unwrap_err();
        assert!(
            matches!(err, SegmentError::VersionMismatch { found: 9 }),
            "{err}"
        );

        let seg = small();
        // SAFETY: as above.
        unsafe { (*seg.header_ptr()).rx_offset += 4096 };
        let err = Segment::open(seg.try_clone_fd().unwrap()).unwrap_err();
        assert!(err.to_string().contains("rx_offset"), "{err}");
    }

    #[test]
    fn the_layout_is_never_read_back_from_the_shared_header() {
        let seg = small();
        let opened = Segment::open(seg.try_clone_fd().unwrap()).unwrap();
        // SAFETY: test-only corruption, as a hostile agent would write it.
        unsafe {
            let h = seg.header_ptr();
            (*h).rx_capacity_bytes = 3;
            (*h).tx_capacity_bytes = 3;
            (*h).rx_offset = 1 << 40;
            (*h).agent_id = 99;
        }
        for side in [&seg, &opened] {
            assert_eq!(side.rx_memory().capacity_bytes(), 8192);
            assert_eq!(side.tx_lane_memory(TX_LANES - 1).capacity_bytes(), 4096);
            assert_eq!(side.agent_id(), 5);
        }
        let mut tx = crate::ring::Producer::new(seg.rx_memory(), None);
        let mut rx = crate::ring::Consumer::new(opened.rx_memory(), None);
        tx.try_push(b"still here").unwrap();
        assert_eq!(
            rx.read(4, |_| core::ops::ControlFlow::Continue(()))
                .unwrap(),
            1
        );
    }

    #[test]
    fn a_consumer_head_out_of_range_marks_the_producer_corrupt() {
        let seg = small();
        let mut tx = crate::ring::Producer::new(seg.rx_memory(), None);
        tx.try_push(&[1; 64]).unwrap();
        let head_at = seg.layout.rx_offset + 128;
        // SAFETY: the head word of the rx ring, inside the mapping, 8-aligned; written as a
        // hostile consumer would.
        let head = unsafe { &*(seg.mapping.map.as_ptr().add(head_at) as *const AtomicU64) };
        head.store(1 << 40, Ordering::Release);
        let mut pushed = 0;
        while tx.try_push(&[2; 1000]).is_ok() {
            pushed += 1;
        }
        assert!(tx.is_corrupt());
        // Only what fit before the head was reloaded: nothing overwrote unread data.
        assert!(pushed * 1008 + 72 <= 8192, "{pushed} frames written");
        assert!(!tx.can_claim(1000));
    }

    #[test]
    fn a_punched_hole_reads_as_zeros_and_the_consumer_finds_the_ring_corrupt() {
        use rustix::fs::FallocateFlags;
        let seg = small();
        let mut tx = crate::ring::Producer::new(seg.tx_lane_memory(0), None);
        let mut rx = crate::ring::Consumer::new(seg.tx_lane_memory(0), None);
        for _ in 0..3 {
            tx.try_push(&[3; 100]).unwrap();
        }
        assert_eq!(
            rx.read(8, |_| core::ops::ControlFlow::Continue(()))
                .unwrap(),
            3
        );
        let fd = seg.try_clone_fd().unwrap();
        let bytes = seg.len_bytes() as u64;
        rustix::fs::fallocate(
            &fd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            0,
            bytes,
        )
        .unwrap();
        assert_eq!(seg.rx_memory().capacity_bytes(), 8192, "layout kept");
        let err = rx
            .read(8, |_| core::ops::ControlFlow::Continue(()))
            .unwrap_err();
        assert!(err.to_string().contains("tail out of range"), "{err}");
    }

    #[test]
    fn sealed_segment_cannot_be_shrunk_by_the_agent() {
        let seg = small();
        let fd = seg.try_clone_fd().unwrap();
        assert!(rustix::fs::ftruncate(&fd, 4096).is_err());
    }

    #[test]
    fn rings_of_an_opened_segment_share_memory() {
        let seg = small();
        let other = Segment::open(seg.try_clone_fd().unwrap()).unwrap();
        let mut tx = crate::ring::Producer::new(seg.tx_memory(), None);
        let mut rx = crate::ring::Consumer::new(other.tx_memory(), None);
        tx.try_push(b"across").unwrap();
        let mut got = Vec::new();
        rx.read(4, |f| {
            got.extend_from_slice(f);
            core::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(got, b"across");
        assert_eq!(other.agent_id(), 5);
    }

    #[test]
    fn huge_pages_are_used_when_free_and_skipped_otherwise() {
        let free = placement::free_huge_pages_2mib();
        let seg = Segment::create(&SegmentConfig::new(2).with_capacity(4096, 4096)).unwrap();
        if free == 0 {
            assert!(!seg.huge_pages(), "no free huge pages: must fall back");
        } else {
            // Free pages can be taken by others between the check and the mapping, so only
            // a huge segment's shape is asserted.
            if seg.huge_pages() {
                assert_eq!(seg.len_bytes() % HUGE_PAGE_BYTES, 0);
            }
        }
        let opened = Segment::open(seg.try_clone_fd().unwrap()).unwrap();
        assert_eq!(opened.huge_pages(), seg.huge_pages());
        let mut tx = crate::ring::Producer::new(seg.tx_memory(), None);
        let mut rx = crate::ring::Consumer::new(opened.tx_memory(), None);
        tx.try_push(b"on whatever pages").unwrap();
        assert_eq!(
            rx.read(1, |_| core::ops::ControlFlow::Continue(()))
                .unwrap(),
            1
        );
    }

    #[test]
    fn numa_placement_near_a_cpu_works_on_one_node() {
        let seg =
            Segment::create(&SegmentConfig::new(3).with_capacity(4096, 4096).near_cpu(0)).unwrap();
        // One NUMA node here: nothing to bind, logged once, still a working segment.
        if placement::numa_node_of_cpu(0) == Some(0) && seg.numa_node().is_none() {
            let mut tx = crate::ring::Producer::new(seg.tx_memory(), None);
            tx.try_push(b"x").unwrap();
        }
        #[cfg(feature = "numa")]
        assert_eq!(
            placement::numa_node_of_cpu(0),
            Some(0),
            "cpu 0 is on node 0 on any machine hwloc knows"
        );
    }
}
