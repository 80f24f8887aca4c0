//! CAD OSE's context memory: the semi-contextual operator that stores contexts, activates the
//! ones the stream matches, proposes new ones, and predicts the next row's sensor facts.
//!
//! The algorithm is that of NAB's `context_ose/context_operator.py` (Mikhail Smirnov's
//! Contextual Anomaly Detector, open source edition), re-derived here:
//!
//! - A *fact* is an integer: a sensor fact `65536 + 2 * bit_position + bit` (three per row,
//!   from the quantised value), or a neuron fact `2^31 + context_id` (an active context).
//! - A *context* is a pair (left semi-context, right semi-context): the facts of one row's
//!   left group (sensor facts and active neurons) and the sensor facts of the next row.
//!   Contexts are stored once per distinct pair; semi-contexts are shared between contexts
//!   and identified, as in the original, by Python 2's hash of their sorted fact tuple.
//! - Each row: the pair (previous left group, current sensor facts) is looked up as a
//!   zero-level context and created if new. Every context whose left semi-context fully
//!   matched the previous left group is *selected* and its prediction statistics updated;
//!   it is *active* if its right semi-context fully matches the current sensor facts. Partial
//!   matches of zero-level contexts propose new, smaller contexts (left part at most
//!   [`MAX_LEFT_SEMI_CONTEXT_FACTS`] facts) when this row created a new zero-level context.
//!   The [`MAX_ACTIVE_NEURONS`] most activated active contexts become the neuron facts of the
//!   new left group; left semi-contexts that fully match it predict the next sensor facts.
//!
//! Two details of the original are kept on purpose because they change results: a context
//! whose prediction weight is 0 still predicts when no context has a positive weight, and
//! context 0 is skipped in the update of every row that creates no zero-level context
//! (Python's `False != 0` is false). One detail is not reproduced: Python 2 iterates a left
//! semi-context's contexts in its dict's slot order; this port uses insertion order. That can
//! change which ids new contexts receive and so break ties among equally activated contexts.
//!
//! Bounded state: the original grows without limit. Here every table is allocated at
//! construction for `contexts_max` contexts. When a row would need more, the new contexts
//! are counted as new (they are not in memory) but not stored, [`ContextMemory::is_saturated`]
//! turns true, and the owner clears the memory before the next row (see `CadOse`).

use rustc_hash::FxHashMap;

/// Longest left semi-context a partial match may propose (CAD OSE's
/// `maxLeftSemiContextsLenght` = 7).
pub const MAX_LEFT_SEMI_CONTEXT_FACTS: usize = 7;
/// Active contexts that become neuron facts each row (CAD OSE's `maxActiveNeuronsNum` = 15).
pub const MAX_ACTIVE_NEURONS: usize = 15;
/// Python value of sensor fact 0.
const SENSOR_FACT_BASE: i64 = 65_536;
/// Python value of the neuron fact of context 0.
const NEURON_FACT_BASE: i64 = 1 << 31;
/// Sensor facts: 3 bit positions × 2 bit values.
const SENSOR_FACTS: u32 = 6;
/// End of an intrusive list of contexts.
const NONE: u32 = u32::MAX;

/// A set of facts: sensor facts as a bit mask (bit `k` is fact `65536 + k`) and neuron facts
/// as ascending context ids. Its Python tuple is the sensor facts then the neurons, ascending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FactSet {
    sensor_mask: u8,
    neuron_count: u8,
    neurons: [u32; MAX_ACTIVE_NEURONS],
}

impl FactSet {
    fn len(&self) -> u8 {
        self.sensor_mask.count_ones() as u8 + self.neuron_count
    }

    fn neurons(&self) -> &[u32] {
        &self.neurons[..usize::from(self.neuron_count)]
    }

    /// The facts as Python integers, in tuple order.
    fn python_facts(&self) -> impl Iterator<Item = i64> + '_ {
        sensor_facts(self.sensor_mask).chain(
            self.neurons()
                .iter()
                .map(|&id| NEURON_FACT_BASE + i64::from(id)),
        )
    }

    /// Python 2's `hash(tuple(facts))`: the key of a semi-context in the original.
    fn python_hash(&self) -> i64 {
        python2_tuple_hash(usize::from(self.len()), self.python_facts())
    }

    /// How many of these facts are in `group` (`group_neurons` is its neuron bitset).
    fn count_in(&self, group: &FactSet, group_neurons: &[u64]) -> u8 {
        let sensors = (self.sensor_mask & group.sensor_mask).count_ones() as u8;
        let neurons = self
            .neurons()
            .iter()
            .filter(|&&id| bit_is_set(group_neurons, id))
            .count() as u8;
        sensors + neurons
    }

    /// These facts that are in `group`, in tuple order.
    fn intersect(&self, group: &FactSet, group_neurons: &[u64]) -> FactSet {
        let mut out = FactSet {
            sensor_mask: self.sensor_mask & group.sensor_mask,
            ..FactSet::default()
        };
        for &id in self.neurons() {
            if bit_is_set(group_neurons, id) {
                out.neurons[usize::from(out.neuron_count)] = id;
                out.neuron_count += 1;
            }
        }
        out
    }
}

fn sensor_facts(mask: u8) -> impl Iterator<Item = i64> {
    (0..SENSOR_FACTS)
        .filter(move |k| mask & (1 << k) != 0)
        .map(|k| SENSOR_FACT_BASE + i64::from(k))
}

fn bit_is_set(bits: &[u64], id: u32) -> bool {
    let id = id as usize;
    bits[id / 64] & (1 << (id % 64)) != 0
}

/// CPython 2.7's tuple hash on a 64-bit `long`, for a tuple of small non-negative ints (whose
/// hash is their value). Semi-contexts are keyed by it and active contexts are ranked by it
/// on ties, as in the original.
fn python2_tuple_hash(len: usize, items: impl Iterator<Item = i64>) -> i64 {
    let mut x: i64 = 0x0034_5678;
    let mut mult: i64 = 1_000_003;
    let mut remaining = len as i64;
    for y in items {
        remaining -= 1;
        x = (x ^ y).wrapping_mul(mult);
        mult = mult.wrapping_add(82_520 + remaining + remaining);
    }
    debug_assert_eq!(remaining, 0, "len must be the number of items");
    x = x.wrapping_add(97_531);
    if x == -1 {
        -2
    } else {
        x
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct LeftSemiContext {
    facts: FactSet,
    hash: i64,
    /// Facts in common with the left group at the last crossing.
    crossed_count: u8,
    /// Contexts with this left part, in insertion order (linked through `Context::next`).
    first_context: u32,
    last_context: u32,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Context {
    /// The next context with the same left part.
    next: u32,
    right_mask: u8,
    /// Created or seen as a whole (previous group, sensor facts) pair, not only proposed.
    zero_level: bool,
    /// Sum of right-part sizes over the rows this context was selected (`contextValues[0]`).
    selected_facts: u64,
    /// Sum of right-part facts matched over those rows (`contextValues[1]`).
    matched_facts: u64,
    /// Rows this context was active (`contextValues[2]`).
    activations: u64,
}

/// A context proposed by a partial match, to be stored after the new left group is formed.
#[derive(Debug, Clone, Copy)]
struct Proposal {
    left: FactSet,
    left_hash: i64,
    right_mask: u8,
}

enum Lookup {
    New(u32),
    Existing(u32),
    /// Not in memory and no room to store it.
    Full,
}

/// What one row did to the memory: the two shares CAD OSE's score is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepShares {
    /// Active contexts / selected contexts (`percentSelectedContextActive`).
    pub selected_active: f64,
    /// New contexts / distinct proposed contexts, on rows that create a zero-level context
    /// (`percentAddedContextToUniqPotNew`), else 0.
    pub proposed_new: f64,
}

/// A [`ContextMemory`]'s learnt state as a checkpoint holds it: its tables, without the
/// per-row scratch (made by [`ContextMemory::save`], read back by [`ContextMemory::restore`]).
///
/// ```
/// let saved = agentwire_streaming::detect::cad_ose::memory::ContextMemory::new(16).save();
/// let bytes = postcard::to_allocvec(&saved).unwrap();
/// assert!(!bytes.is_empty());
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedMemory {
    contexts_max: u64,
    lefts: Vec<LeftSemiContext>,
    left_by_hash: Vec<(i64, u32)>,
    contexts: Vec<Context>,
    context_by_parts: Vec<((u32, u8), u32)>,
    crossed_lefts: Vec<u32>,
    left_group: FactSet,
    left_group_neurons: Vec<u64>,
    has_left_group: bool,
    predicted_mask: u8,
    new_context_id: Option<u32>,
    saturated: bool,
}

/// As a checkpoint holds it: the [`SavedMemory`] of [`ContextMemory::save`].
impl serde::Serialize for ContextMemory {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.save().serialize(serializer)
    }
}

/// Read back through [`ContextMemory::restore`], which refuses tables that do not fit
/// together.
impl<'de> serde::Deserialize<'de> for ContextMemory {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::restore(SavedMemory::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// The context memory, with every table sized at construction.
///
/// ```
/// use agentwire_streaming::detect::cad_ose::memory::ContextMemory;
/// let mut m = ContextMemory::new(1024);
/// for i in 0..100 { m.step(if i % 2 == 0 { 0b01_0101 } else { 0b10_1010 }); }
/// assert_eq!(m.predicted_mask(), 0b01_0101); // the alternation is learnt
/// ```
#[derive(Debug, Clone)]
pub struct ContextMemory {
    contexts_max: usize,
    lefts: Vec<LeftSemiContext>,
    left_by_hash: FxHashMap<i64, u32>,
    contexts: Vec<Context>,
    context_by_parts: FxHashMap<(u32, u8), u32>,
    /// Left semi-contexts sharing a fact with the left group at the last crossing, by index.
    crossed_lefts: Vec<u32>,
    left_group: FactSet,
    /// Bitset over context ids of the left group's neurons.
    left_group_neurons: Box<[u64]>,
    has_left_group: bool,
    predicted_mask: u8,
    /// The zero-level context created this row, excluded from this row's update.
    new_context_id: Option<u32>,
    saturated: bool,
    /// Python 2 hashes of every right semi-context (a sensor mask).
    right_hashes: [i64; 64],
    // Per-row scratch, sized at construction.
    active: Vec<(u64, i64, i64, u32)>,
    proposals: Vec<Proposal>,
    distinct_keys: Vec<(i64, u8)>,
}

impl ContextMemory {
    /// An empty memory with room for `contexts_max` contexts (and as many left
    /// semi-contexts).
    ///
    /// # Panics
    /// If `contexts_max` is 0 or does not fit a `u32` id.
    ///
    /// ```
    /// let m = agentwire_streaming::detect::cad_ose::memory::ContextMemory::new(16);
    /// assert_eq!(m.contexts(), 0);
    /// ```
    pub fn new(contexts_max: usize) -> Self {
        assert!(contexts_max > 0 && contexts_max < NONE as usize);
        let mut right_hashes = [0; 64];
        for (mask, h) in right_hashes.iter_mut().enumerate() {
            let m = mask as u8;
            *h = python2_tuple_hash(m.count_ones() as usize, sensor_facts(m));
        }
        Self {
            contexts_max,
            lefts: Vec::with_capacity(contexts_max),
            left_by_hash: FxHashMap::with_capacity_and_hasher(contexts_max, Default::default()),
            contexts: Vec::with_capacity(contexts_max),
            context_by_parts: FxHashMap::with_capacity_and_hasher(contexts_max, Default::default()),
            crossed_lefts: Vec::with_capacity(contexts_max),
            left_group: FactSet::default(),
            left_group_neurons: vec![0; contexts_max.div_ceil(64)].into_boxed_slice(),
            has_left_group: false,
            predicted_mask: 0,
            new_context_id: None,
            saturated: false,
            right_hashes,
            active: Vec::with_capacity(contexts_max),
            // A row proposes at most one context per stored context it visits.
            proposals: Vec::with_capacity(contexts_max),
            distinct_keys: Vec::with_capacity(contexts_max + 1),
        }
    }

    /// The learnt state, for a checkpoint ([`ContextMemory::restore`] reads it back).
    ///
    /// ```
    /// use agentwire_streaming::detect::cad_ose::memory::ContextMemory;
    /// let mut m = ContextMemory::new(64);
    /// for i in 0..50 { m.step(if i % 2 == 0 { 0b01_0101 } else { 0b10_1010 }); }
    /// let back = ContextMemory::restore(m.save()).unwrap();
    /// assert_eq!((back.contexts(), back.predicted_mask()), (m.contexts(), m.predicted_mask()));
    /// ```
    pub fn save(&self) -> SavedMemory {
        SavedMemory {
            contexts_max: self.contexts_max as u64,
            lefts: self.lefts.clone(),
            left_by_hash: self.left_by_hash.iter().map(|(&k, &v)| (k, v)).collect(),
            contexts: self.contexts.clone(),
            context_by_parts: self
                .context_by_parts
                .iter()
                .map(|(&k, &v)| (k, v))
                .collect(),
            crossed_lefts: self.crossed_lefts.clone(),
            left_group: self.left_group,
            left_group_neurons: self.left_group_neurons.to_vec(),
            has_left_group: self.has_left_group,
            predicted_mask: self.predicted_mask,
            new_context_id: self.new_context_id,
            saturated: self.saturated,
        }
    }

    /// A memory holding `saved`, with every table sized for its `contexts_max` again (so a
    /// row allocates nothing). Refuses state whose sizes or ids do not fit together (every
    /// id is checked, so scoring cannot index out of bounds).
    ///
    /// ```
    /// use agentwire_streaming::detect::cad_ose::memory::ContextMemory;
    /// let saved = ContextMemory::new(16).save();
    /// assert_eq!(ContextMemory::restore(saved).unwrap().contexts(), 0);
    /// ```
    pub fn restore(saved: SavedMemory) -> Result<Self, &'static str> {
        let max = usize::try_from(saved.contexts_max).map_err(|_| "contexts_max too large")?;
        if max == 0 || max >= NONE as usize {
            return Err("contexts_max out of range");
        }
        let lefts_len = saved.lefts.len() as u32;
        let contexts_len = saved.contexts.len() as u32;
        let id_ok = |id: u32, len: u32| id < len || id == NONE;
        let facts_ok = |f: &FactSet| {
            usize::from(f.neuron_count) <= MAX_ACTIVE_NEURONS
                && f.neurons().iter().all(|&n| (n as usize) < max)
        };
        let ok = saved.lefts.len() <= max
            && saved.contexts.len() <= max
            && saved.crossed_lefts.len() <= max
            && saved.left_group_neurons.len() == max.div_ceil(64)
            && saved.lefts.iter().all(|l| {
                facts_ok(&l.facts)
                    && id_ok(l.first_context, contexts_len)
                    && id_ok(l.last_context, contexts_len)
            })
            && saved.contexts.iter().all(|c| id_ok(c.next, contexts_len))
            && saved.left_by_hash.iter().all(|&(_, i)| i < lefts_len)
            && saved
                .context_by_parts
                .iter()
                .all(|&((l, _), c)| l < lefts_len && c < contexts_len)
            && saved.crossed_lefts.iter().all(|&i| i < lefts_len)
            && facts_ok(&saved.left_group)
            && saved.new_context_id.is_none_or(|id| id < contexts_len);
        if !ok {
            return Err("context memory state does not fit together");
        }
        let mut m = Self::new(max);
        m.lefts.extend_from_slice(&saved.lefts);
        m.left_by_hash.extend(saved.left_by_hash);
        m.contexts.extend_from_slice(&saved.contexts);
        m.context_by_parts.extend(saved.context_by_parts);
        m.crossed_lefts.extend_from_slice(&saved.crossed_lefts);
        m.left_group = saved.left_group;
        m.left_group_neurons
            .copy_from_slice(&saved.left_group_neurons);
        m.has_left_group = saved.has_left_group;
        m.predicted_mask = saved.predicted_mask & 0b11_1111;
        m.new_context_id = saved.new_context_id;
        m.saturated = saved.saturated;
        Ok(m)
    }

    /// Contexts stored.
    ///
    /// ```
    /// let m = agentwire_streaming::detect::cad_ose::memory::ContextMemory::new(16);
    /// assert_eq!(m.contexts(), 0);
    /// ```
    pub fn contexts(&self) -> usize {
        self.contexts.len()
    }

    /// The sensor facts (a mask, bit `k` for fact `65536 + k`) the memory expects next.
    ///
    /// ```
    /// let m = agentwire_streaming::detect::cad_ose::memory::ContextMemory::new(16);
    /// assert_eq!(m.predicted_mask(), 0); // nothing learnt
    /// ```
    pub fn predicted_mask(&self) -> u8 {
        self.predicted_mask
    }

    /// Whether a context could not be stored for lack of room since the last [`Self::clear`].
    ///
    /// ```
    /// let m = agentwire_streaming::detect::cad_ose::memory::ContextMemory::new(16);
    /// assert!(!m.is_saturated());
    /// ```
    pub fn is_saturated(&self) -> bool {
        self.saturated
    }

    /// Forgets everything; keeps the allocations.
    ///
    /// ```
    /// let mut m = agentwire_streaming::detect::cad_ose::memory::ContextMemory::new(16);
    /// m.step(0b01_0101);
    /// m.step(0b01_0110);
    /// m.clear();
    /// assert_eq!(m.contexts(), 0);
    /// ```
    pub fn clear(&mut self) {
        self.lefts.clear();
        self.left_by_hash.clear();
        self.contexts.clear();
        self.context_by_parts.clear();
        self.crossed_lefts.clear();
        self.left_group_neurons.fill(0);
        self.left_group = FactSet::default();
        self.has_left_group = false;
        self.predicted_mask = 0;
        self.new_context_id = None;
        self.saturated = false;
    }

    /// Feeds one row's sensor facts (a mask with one fact per bit position) and returns the
    /// shares the anomaly score is made of. Allocates nothing.
    ///
    /// ```
    /// use agentwire_streaming::detect::cad_ose::memory::ContextMemory;
    /// let mut m = ContextMemory::new(1024);
    /// assert_eq!(m.step(0b01_0101).selected_active, 0.0);
    /// ```
    pub fn step(&mut self, sensor_mask: u8) -> StepShares {
        debug_assert_eq!(sensor_mask >> SENSOR_FACTS, 0);
        let mut zero_level_is_new = false;
        let mut zero_level_key = None;
        if self.has_left_group {
            let group = self.left_group;
            let hash = group.python_hash();
            zero_level_key = Some((hash, sensor_mask));
            match self.find_or_insert(&group, hash, sensor_mask, true) {
                Lookup::New(id) => {
                    zero_level_is_new = true;
                    self.new_context_id = Some(id);
                }
                Lookup::Existing(id) => self.contexts[id as usize].zero_level = true,
                Lookup::Full => zero_level_is_new = true,
            }
        }
        let selected = self.update_selected(sensor_mask, zero_level_is_new);
        let selected_active = if selected > 0 {
            self.active.len() as f64 / selected as f64
        } else {
            0.0
        };
        // Distinct proposals, the zero-level pair included (the original's set of tuples).
        self.distinct_keys.clear();
        self.distinct_keys.extend(zero_level_key);
        self.distinct_keys
            .extend(self.proposals.iter().map(|p| (p.left_hash, p.right_mask)));
        self.distinct_keys.sort_unstable();
        self.distinct_keys.dedup();
        let distinct = self.distinct_keys.len();

        self.set_left_group(sensor_mask);
        let mut added = 0usize;
        for i in 0..self.proposals.len() {
            let p = self.proposals[i];
            match self.find_or_insert(&p.left, p.left_hash, p.right_mask, false) {
                Lookup::New(_) | Lookup::Full => added += 1,
                Lookup::Existing(_) => {}
            }
        }
        self.cross_lefts_and_predict();

        let proposed_new = if zero_level_is_new && distinct > 0 {
            (added + 1) as f64 / distinct as f64
        } else {
            0.0
        };
        StepShares {
            selected_active,
            proposed_new,
        }
    }

    /// Updates every context whose left part crossed the previous left group; collects the
    /// active ones into `active` and the proposals into `proposals`; returns how many were
    /// selected (left part fully matched).
    fn update_selected(&mut self, sensor_mask: u8, zero_level_is_new: bool) -> usize {
        self.active.clear();
        self.proposals.clear();
        // Python compares `newContextID != contextID` with `newContextID = False` on rows
        // that create nothing, and `False == 0`: context 0 is skipped then.
        let skipped = self.new_context_id.take().unwrap_or(0);
        let mut selected = 0;
        for &left_index in &self.crossed_lefts {
            let left = self.lefts[left_index as usize];
            let fully_matched = left.crossed_count == left.facts.len();
            let may_propose =
                zero_level_is_new && usize::from(left.crossed_count) <= MAX_LEFT_SEMI_CONTEXT_FACTS;
            let mut id = left.first_context;
            while id != NONE {
                let context = &mut self.contexts[id as usize];
                let next = context.next;
                if id != skipped {
                    let right_len = context.right_mask.count_ones();
                    let right_mask_matched = context.right_mask & sensor_mask;
                    let right_matched = right_mask_matched.count_ones();
                    let mut propose = false;
                    if fully_matched {
                        selected += 1;
                        context.selected_facts += u64::from(right_len);
                        if right_matched > 0 {
                            context.matched_facts += u64::from(right_matched);
                            if right_matched == right_len {
                                context.activations += 1;
                                self.active.push((
                                    context.activations,
                                    left.hash,
                                    self.right_hashes[usize::from(context.right_mask)],
                                    id,
                                ));
                            } else {
                                propose = context.zero_level && may_propose;
                            }
                        }
                    } else {
                        propose = context.zero_level && may_propose && right_matched > 0;
                    }
                    if propose {
                        let facts = left
                            .facts
                            .intersect(&self.left_group, &self.left_group_neurons);
                        self.proposals.push(Proposal {
                            left: facts,
                            left_hash: facts.python_hash(),
                            right_mask: right_mask_matched,
                        });
                    }
                }
                id = next;
            }
        }
        selected
    }

    /// The new left group: this row's sensor facts and the most activated active contexts
    /// (ranked by activations, then left hash, then right hash, as the original sorts).
    fn set_left_group(&mut self, sensor_mask: u8) {
        for &id in self.left_group.neurons() {
            let id = id as usize;
            self.left_group_neurons[id / 64] &= !(1 << (id % 64));
        }
        let kept = self.active.len().min(MAX_ACTIVE_NEURONS);
        let first_kept = self.active.len() - kept;
        if first_kept > 0 {
            self.active.select_nth_unstable(first_kept);
        }
        let mut group = FactSet {
            sensor_mask,
            neuron_count: kept as u8,
            ..FactSet::default()
        };
        for (slot, entry) in group.neurons.iter_mut().zip(&self.active[first_kept..]) {
            *slot = entry.3;
        }
        group.neurons[..kept].sort_unstable();
        for &id in group.neurons() {
            let id = id as usize;
            self.left_group_neurons[id / 64] |= 1 << (id % 64);
        }
        self.left_group = group;
        self.has_left_group = true;
    }

    /// Crosses every left semi-context with the new left group; those fully matched predict
    /// the right parts of their best-weighted contexts (all of them on a tie, 0 included).
    fn cross_lefts_and_predict(&mut self) {
        self.crossed_lefts.clear();
        let mut best_weight = 0.0f64;
        let mut predicted = 0u8;
        for (index, left) in self.lefts.iter_mut().enumerate() {
            let crossed = left
                .facts
                .count_in(&self.left_group, &self.left_group_neurons);
            left.crossed_count = crossed;
            if crossed == 0 {
                continue;
            }
            self.crossed_lefts.push(index as u32);
            if crossed != left.facts.len() {
                continue;
            }
            let mut id = left.first_context;
            while id != NONE {
                let context = &self.contexts[id as usize];
                let weight = if context.selected_facts > 0 {
                    context.matched_facts as f64 / context.selected_facts as f64
                } else {
                    0.0
                };
                if weight > best_weight {
                    best_weight = weight;
                    predicted = context.right_mask;
                } else if weight == best_weight {
                    predicted |= context.right_mask;
                }
                id = context.next;
            }
        }
        self.predicted_mask = predicted;
    }

    /// The context (left facts, right facts), stored if new and there is room.
    fn find_or_insert(
        &mut self,
        left: &FactSet,
        left_hash: i64,
        right_mask: u8,
        zero_level: bool,
    ) -> Lookup {
        let left_index = match self.left_by_hash.get(&left_hash) {
            Some(&index) => index,
            None => {
                if self.lefts.len() == self.contexts_max {
                    self.saturated = true;
                    return Lookup::Full;
                }
                let index = self.lefts.len() as u32;
                self.lefts.push(LeftSemiContext {
                    facts: *left,
                    hash: left_hash,
                    crossed_count: 0,
                    first_context: NONE,
                    last_context: NONE,
                });
                self.left_by_hash.insert(left_hash, index);
                index
            }
        };
        if let Some(&id) = self.context_by_parts.get(&(left_index, right_mask)) {
            return Lookup::Existing(id);
        }
        if self.contexts.len() == self.contexts_max {
            self.saturated = true;
            return Lookup::Full;
        }
        let id = self.contexts.len() as u32;
        self.contexts.push(Context {
            next: NONE,
            right_mask,
            zero_level,
            selected_facts: 0,
            matched_facts: 0,
            activations: 0,
        });
        self.context_by_parts.insert((left_index, right_mask), id);
        let left = &mut self.lefts[left_index as usize];
        if left.last_context == NONE {
            left.first_context = id;
        } else {
            self.contexts[left.last_context as usize].next = id;
        }
        left.last_context = id;
        Lookup::New(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python2_tuple_hash_matches_cpython_2_7() {
        // Values printed by CPython 2.7.18 on x86-64.
        assert_eq!(python2_tuple_hash(0, std::iter::empty()), 3_527_539);
        assert_eq!(python2_tuple_hash(1, [1].into_iter()), 3_430_019_387_558);
        assert_eq!(
            python2_tuple_hash(3, [65_536, 65_538, 65_540].into_iter()),
            -4_455_757_042_315_825_859
        );
        assert_eq!(
            python2_tuple_hash(2, [65_536, 1 << 31].into_iter()),
            3_781_700_415_905_352_131
        );
    }

    #[test]
    fn a_saturated_memory_stores_nothing_more() {
        let mut m = ContextMemory::new(4);
        for i in 0..50u32 {
            m.step([0b01_0101, 0b01_0110, 0b01_1001, 0b10_0101][(i % 4) as usize]);
        }
        assert!(m.is_saturated());
        assert_eq!(m.contexts(), 4);
        assert!(m.lefts.len() <= 4);
    }
}
