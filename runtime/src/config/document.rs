//! A configuration file as parsed TOML with positions: every key's line, typed values taken
//! one key at a time, and every problem found collected (not just the first), each naming
//! file, line and key.

use super::{ConfigError, ConfigProblem, ConfigSource};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// Top-level entries of a parsed file, with the problems found so far.
pub(super) struct Document<'i> {
    text: &'i str,
    source: ConfigSource,
    entries: Vec<(String, Spanned<DeValue<'i>>)>,
    problems: Vec<ConfigProblem>,
}

impl<'i> Document<'i> {
    /// Parses `text` and records the line of every key, nested ones by dotted path. A file
    /// with syntax errors is refused with every one of them (the parser recovers and goes
    /// on); nothing else is checked then, as values read past a syntax error cannot be
    /// trusted.
    pub(super) fn parse(text: &'i str, origin: &str) -> Result<Self, ConfigError> {
        let (table, errors) = DeTable::parse_recoverable(text);
        let mut doc = Self {
            text,
            source: ConfigSource {
                origin: origin.to_string(),
                lines: BTreeMap::new(),
            },
            entries: Vec::new(),
            problems: Vec::new(),
        };
        doc.record_lines("", table.get_ref());
        if !errors.is_empty() {
            for e in errors {
                doc.syntax_problem(&e);
            }
            return Err(doc.finish().expect_err("syntax problems were recorded"));
        }
        doc.entries = table
            .into_inner()
            .into_iter()
            .map(|(k, v)| (k.into_inner().into_owned(), v))
            .collect();
        Ok(doc)
    }

    /// A syntax error as a problem at its line, naming the key written on that line when
    /// the parser recovered one (`agents_max` in `agents_max = 12x`).
    fn syntax_problem(&mut self, e: &toml::de::Error) {
        let line = e.span().map(|s| self.line_at(s.start));
        let key = self
            .source
            .lines
            .iter()
            .filter(|(_, &l)| Some(l) == line)
            .map(|(path, _)| path.clone())
            .max_by_key(|path| path.len())
            .unwrap_or_default();
        let message: Vec<&str> = e.message().lines().map(str::trim).collect();
        self.problems.push(ConfigProblem {
            origin: self.source.origin.clone(),
            line,
            key,
            detail: format!(": TOML syntax: {}", message.join("; ")),
        });
    }

    fn record_lines(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            let line = self.line_at(key.span().start);
            self.source.lines.entry(path.clone()).or_insert(line);
            match value.get_ref() {
                DeValue::Table(inner) => self.record_lines(&path, inner),
                // An array of tables (`[[authorize]]`): each element by index, from 0
                // (`authorize[1].names`), at the line of its first key.
                DeValue::Array(elements) => {
                    for (i, element) in elements.iter().enumerate() {
                        if let DeValue::Table(inner) = element.get_ref() {
                            let element_path = format!("{path}[{i}]");
                            let first = inner.iter().map(|(k, _)| k.span().start).min();
                            let line = self.line_at(first.unwrap_or(element.span().start));
                            self.source
                                .lines
                                .entry(element_path.clone())
                                .or_insert(line);
                            self.record_lines(&element_path, inner);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The line (from 1) of byte `offset`.
    fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// Reports every top-level key not in `known`.
    pub(super) fn refuse_unknown_keys(&mut self, known: &[&str]) {
        let unknown: Vec<String> = self
            .entries
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        for key in unknown {
            let detail = format!(": unknown key; the keys are {}", known.join(", "));
            self.problem(&key, detail);
        }
    }

    /// The value of top-level `key` as a `T`; `None` when absent or of the wrong shape (a
    /// problem at the line the parser points to, inside a table when it is there).
    pub(super) fn take<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.entries.iter().find(|(k, _)| k == key)?.1.clone();
        self.deserialize(key, value)
    }

    /// The value of top-level `key` as a count that must be at least `min`: a smaller one
    /// is reported (`at least MIN`) and `min` is used, so the rest of the file is checked.
    pub(super) fn take_at_least(&mut self, key: &str, min: u64) -> Option<u64> {
        let value = self.take::<u64>(key)?;
        if value < min {
            self.invalid(key, value, &format!("at least {min}"));
        }
        Some(value.max(min))
    }

    /// Each element of the array at top-level `key` (an array of tables, `[[authorize]]`)
    /// as a `T`, taken one at a time so that every element's problems are reported: `None`
    /// for one of the wrong shape. Empty when absent; a problem when not an array.
    pub(super) fn take_each<T: DeserializeOwned>(&mut self, key: &str) -> Vec<Option<T>> {
        let Some(value) = self
            .entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|e| e.1.clone())
        else {
            return Vec::new();
        };
        let DeValue::Array(elements) = value.get_ref() else {
            self.problem(key, ": expected an array of tables ([[key]])".into());
            return Vec::new();
        };
        let elements: Vec<_> = elements.iter().cloned().collect();
        elements
            .into_iter()
            .map(|element| self.deserialize(key, element))
            .collect()
    }

    /// `value` (of top-level `key`) as a `T`, every problem in it reported: serde stops at
    /// the first, so the entry it points at is taken out and the rest tried again, until
    /// the rest deserializes (bounded by the entries there are). When only unknown keys
    /// were taken out, the rest is returned so that the checks after this one still run on
    /// it (an unknown key meant nothing, so nothing they find is caused by it); a value of
    /// the wrong type gives `None`, as checks on what is left would report its absence.
    fn deserialize<T: DeserializeOwned>(
        &mut self,
        key: &str,
        mut value: Spanned<DeValue<'i>>,
    ) -> Option<T> {
        let mut only_unknown_keys = true;
        let mut removed: Vec<String> = Vec::new();
        loop {
            let e = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(v) => return only_unknown_keys.then_some(v),
                Err(e) => e,
            };
            // A field this loop took out is missing now, not wrong: it was reported.
            let missing_removed = removed
                .iter()
                .any(|r| e.message().contains(&format!("missing field `{r}`")));
            if missing_removed {
                return None;
            }
            only_unknown_keys &= e.message().starts_with("unknown field");
            let line = e
                .span()
                .map(|s| self.line_at(s.start))
                .or_else(|| self.source.line(key));
            // Inside a table, name the deepest key on that line (`partitions.nas.cpuz`).
            let nested = self
                .source
                .lines
                .iter()
                .filter(|(path, &l)| {
                    Some(l) == line
                        && (path.starts_with(&format!("{key}."))
                            || path.starts_with(&format!("{key}[")))
                })
                .map(|(path, _)| path.clone())
                .max_by_key(|path| path.len());
            self.problems.push(ConfigProblem {
                origin: self.source.origin.clone(),
                line,
                key: nested.unwrap_or_else(|| key.to_string()),
                detail: format!(": {}", e.message()),
            });
            match e
                .span()
                .and_then(|span| take_entry_at(&mut value, span.start))
            {
                Some(name) => removed.push(name),
                // Nothing left to take out (the value itself is of the wrong type).
                None => return None,
            }
        }
    }

    /// Reports `key` (a dotted path for a nested one) with `value` and what is allowed.
    pub(super) fn invalid(&mut self, key: &str, value: impl std::fmt::Display, why: &str) {
        self.problem(key, format!(" = {value}: {why}"));
    }

    /// Reports `key` with `detail` (starting with ": " or " = ").
    pub(super) fn problem(&mut self, key: &str, detail: String) {
        self.problems.push(self.source.problem(key, detail));
    }

    /// Where each key is, once every key was checked; every problem found when any was.
    pub(super) fn finish(mut self) -> Result<ConfigSource, ConfigError> {
        if self.problems.is_empty() {
            Ok(self.source)
        } else {
            // In file order; problems without a line last.
            self.problems
                .sort_by_key(|p| (p.line.is_none(), p.line.unwrap_or(0)));
            Err(ConfigError::Invalid {
                origin: self.source.origin,
                problems: self.problems,
            })
        }
    }
}

/// Takes out of `value` (a table, an array of tables, nested) the deepest entry whose key
/// or value holds byte `offset`; its key when there was one.
fn take_entry_at(value: &mut Spanned<DeValue<'_>>, offset: usize) -> Option<String> {
    match value.get_mut() {
        DeValue::Table(table) => {
            let keys: Vec<_> = table.iter().map(|(k, _)| k.clone()).collect();
            for k in keys {
                let inner = table.get_mut(&k).expect("a key just listed");
                if k.span().contains(&offset) {
                    table.remove(&k);
                    return Some(k.into_inner().into_owned());
                }
                if let Some(name) = take_entry_at(inner, offset) {
                    return Some(name);
                }
                if inner.span().contains(&offset) {
                    table.remove(&k);
                    return Some(k.into_inner().into_owned());
                }
            }
            None
        }
        DeValue::Array(items) => items.iter_mut().find_map(|item| match item.get_ref() {
            DeValue::Table(_) => take_entry_at(item, offset),
            _ => None,
        }),
        _ => None,
    }
}

impl ConfigSource {
    /// The line of `key` (a dotted path), or of the nearest table above it that the file
    /// names.
    ///
    /// ```
    /// let c = agentwire_runtime::config::Config::parse("idle = \"spin\"\n\n[rebalance]\nsample_ms = 100", "t").unwrap();
    /// assert_eq!(c.source.line("idle"), Some(1));
    /// assert_eq!(c.source.line("rebalance.sample_ms"), Some(4));
    /// assert_eq!(c.source.line("rebalance.low_water"), Some(3));
    /// assert_eq!(c.source.line("agents_max"), None);
    /// ```
    pub fn line(&self, key: &str) -> Option<usize> {
        let mut path = key;
        loop {
            if let Some(&line) = self.lines.get(path) {
                return Some(line);
            }
            path = &path[..path.rfind('.')?];
        }
    }

    /// A problem with `key` in this configuration, at its line.
    pub(super) fn problem(&self, key: &str, detail: String) -> ConfigProblem {
        ConfigProblem {
            origin: self.origin.clone(),
            line: self.line(key),
            key: key.to_string(),
            detail,
        }
    }
}
