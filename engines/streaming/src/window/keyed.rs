//! One key's open windows, by start: a sorted vector. A key has a handful of windows open
//! at a time (one or two tumbling, `size / slide` sliding, a few sessions), where a sorted
//! vector beats a B-tree on every operation the operator does per event (measured with
//! `agentwire stream bench`; see BENCHMARKS.md).

/// Windows by start, sorted.
#[derive(Debug, Clone)]
pub(crate) struct SortedWindows<W> {
    entries: Vec<(i64, W)>,
}

impl<W> Default for SortedWindows<W> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<W> SortedWindows<W> {
    fn find(&self, start_ns: i64) -> Result<usize, usize> {
        // The newest window is the usual target: look there first.
        match self.entries.last() {
            Some((last, _)) if *last == start_ns => Ok(self.entries.len() - 1),
            Some((last, _)) if *last < start_ns => Err(self.entries.len()),
            _ => self.entries.binary_search_by_key(&start_ns, |(s, _)| *s),
        }
    }

    pub(crate) fn contains_key(&self, start_ns: &i64) -> bool {
        self.find(*start_ns).is_ok()
    }

    pub(crate) fn get_mut(&mut self, start_ns: &i64) -> Option<&mut W> {
        let at = self.find(*start_ns).ok()?;
        Some(&mut self.entries[at].1)
    }

    /// Inserts or replaces the window at `start_ns`.
    pub(crate) fn insert(&mut self, start_ns: i64, window: W) {
        match self.find(start_ns) {
            Ok(at) => self.entries[at].1 = window,
            Err(at) => self.entries.insert(at, (start_ns, window)),
        }
    }

    pub(crate) fn remove(&mut self, start_ns: &i64) -> Option<W> {
        let at = self.find(*start_ns).ok()?;
        Some(self.entries.remove(at).1)
    }

    /// The window with the largest start below `end_ns`.
    pub(crate) fn last_before(&self, end_ns: i64) -> Option<(i64, &W)> {
        let at = self.entries.partition_point(|(s, _)| *s < end_ns);
        at.checked_sub(1)
            .map(|i| (self.entries[i].0, &self.entries[i].1))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&i64, &W)> {
        self.entries.iter().map(|(s, w)| (s, w))
    }
}

#[cfg(test)]
mod tests {
    use super::SortedWindows;

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut m = SortedWindows::default();
        let mut reference = std::collections::BTreeMap::new();
        let mut x = 7u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 64) as i64 - 32;
            match x % 4 {
                0 | 1 => {
                    m.insert(key, x);
                    reference.insert(key, x);
                }
                2 => assert_eq!(m.remove(&key), reference.remove(&key)),
                _ => {
                    let got = m.last_before(key).map(|(s, v)| (s, *v));
                    let want = reference.range(..key).next_back().map(|(s, v)| (*s, *v));
                    assert_eq!(got, want);
                }
            }
            assert_eq!(m.len(), reference.len());
            assert_eq!(m.contains_key(&key), reference.contains_key(&key));
        }
        let all: Vec<(i64, u64)> = m.iter().map(|(s, v)| (*s, *v)).collect();
        let want: Vec<(i64, u64)> = reference.into_iter().collect();
        assert_eq!(all, want);
    }
}
