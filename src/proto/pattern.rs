//! Topic patterns (`chat:room1` exact, `chat:*` prefix) and [`PatternMap`], the one index behind the
//! handler router, the subscription registry and the cross-shard interest table.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use thiserror::Error;

/// Longest topic or pattern accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Fast non-cryptographic hasher: keys are topics chosen by clients, but a pattern map only ever
/// holds what a shard itself admitted (bounded by subscription limits), so flooding is bounded too.
pub(crate) type FastHash = BuildHasherDefault<ahash::AHasher>;

/// Why a topic or pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PatternError {
    /// The topic is the empty string.
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than [`MAX_TOPIC_LEN`].
    #[error("topic is longer than 256 bytes")]
    TooLong,
    /// A `*` appears somewhere other than the last byte of a pattern, or at all in a topic.
    #[error("'*' is only allowed as the last character of a subscription pattern")]
    MisplacedWildcard,
}

/// A parsed subscription or handler pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern<'a> {
    /// Matches exactly this topic.
    Exact(&'a str),
    /// Matches every topic that starts with this prefix (the pattern without its trailing `*`).
    Prefix(&'a str),
}

impl<'a> Pattern<'a> {
    /// Parses `chat:room1` (exact) or `chat:*` (prefix). `*` alone matches every topic.
    pub fn parse(s: &'a str) -> Result<Self, PatternError> {
        check_len(s)?;
        match s.find('*') {
            None => Ok(Pattern::Exact(s)),
            Some(i) if i == s.len() - 1 => Ok(Pattern::Prefix(&s[..i])),
            Some(_) => Err(PatternError::MisplacedWildcard),
        }
    }

    /// Whether `topic` is matched by this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Exact(t) => *t == topic,
            Pattern::Prefix(p) => topic.starts_with(p),
        }
    }
}

/// Checks a concrete topic (a publication target): non-empty, at most 256 bytes, no `*`.
pub fn validate_topic(topic: &str) -> Result<(), PatternError> {
    check_len(topic)?;
    if topic.as_bytes().contains(&b'*') {
        return Err(PatternError::MisplacedWildcard);
    }
    Ok(())
}

fn check_len(s: &str) -> Result<(), PatternError> {
    if s.is_empty() {
        Err(PatternError::Empty)
    } else if s.len() > MAX_TOPIC_LEN {
        Err(PatternError::TooLong)
    } else {
        Ok(())
    }
}

/// A map from patterns to values with the two lookups routing needs: every value whose pattern
/// matches a topic, and the single best match (exact first, then the longest prefix).
///
/// Prefix lookups probe one hash per distinct prefix length present, longest first, so a match
/// costs O(distinct lengths) probes however many patterns are registered — and a length is only
/// probed when some prefix of that length ends in the topic's byte at that position (a 256-bit
/// filter), which skips most probes of a miss.
#[derive(Debug)]
pub struct PatternMap<V> {
    exact: HashMap<Box<[u8]>, V, FastHash>,
    prefix: HashMap<Box<[u8]>, V, FastHash>,
    /// Distinct prefix lengths, sorted descending.
    prefix_lens: Vec<PrefixLen>,
}

/// The prefixes of one length: how many end in each byte, and the derived filter.
#[derive(Debug)]
struct PrefixLen {
    len: usize,
    count: usize,
    last: Box<[u32; 256]>,
    filter: [u64; 4],
}

impl PrefixLen {
    /// Whether a prefix of this length may match `t` (false means it certainly does not).
    #[inline]
    fn may_match(&self, t: &[u8]) -> bool {
        match self.len {
            0 => true,
            l if l > t.len() => false,
            l => {
                let b = t[l - 1] as usize;
                self.filter[b >> 6] & (1 << (b & 63)) != 0
            }
        }
    }

    fn last_byte(p: &[u8]) -> Option<usize> {
        p.last().map(|b| *b as usize)
    }
}

impl<V> Default for PatternMap<V> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            prefix: HashMap::default(),
            prefix_lens: Vec::new(),
        }
    }
}

impl<V> PatternMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of patterns held.
    pub fn len(&self) -> usize {
        self.exact.len() + self.prefix.len()
    }

    /// Whether no pattern is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value for `pattern`, if present.
    pub fn get(&self, pattern: Pattern<'_>) -> Option<&V> {
        match pattern {
            Pattern::Exact(t) => self.exact.get(t.as_bytes()),
            Pattern::Prefix(p) => self.prefix.get(p.as_bytes()),
        }
    }

    /// The value for `pattern`, if present, mutably.
    pub fn get_mut(&mut self, pattern: Pattern<'_>) -> Option<&mut V> {
        match pattern {
            Pattern::Exact(t) => self.exact.get_mut(t.as_bytes()),
            Pattern::Prefix(p) => self.prefix.get_mut(p.as_bytes()),
        }
    }

    /// The value for `pattern`, inserting `make()` first if absent.
    pub fn entry_or_insert_with(
        &mut self,
        pattern: Pattern<'_>,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        match pattern {
            Pattern::Exact(t) => self.exact.entry(t.as_bytes().into()).or_insert_with(make),
            Pattern::Prefix(p) => {
                if !self.prefix.contains_key(p.as_bytes()) {
                    self.add_len(p.as_bytes());
                }
                self.prefix.entry(p.as_bytes().into()).or_insert_with(make)
            }
        }
    }

    /// Inserts or replaces the value for `pattern`, returning the old one.
    pub fn insert(&mut self, pattern: Pattern<'_>, value: V) -> Option<V> {
        match pattern {
            Pattern::Exact(t) => self.exact.insert(t.as_bytes().into(), value),
            Pattern::Prefix(p) => {
                let old = self.prefix.insert(p.as_bytes().into(), value);
                if old.is_none() {
                    self.add_len(p.as_bytes());
                }
                old
            }
        }
    }

    /// Removes `pattern`, returning its value.
    pub fn remove(&mut self, pattern: Pattern<'_>) -> Option<V> {
        match pattern {
            Pattern::Exact(t) => self.exact.remove(t.as_bytes()),
            Pattern::Prefix(p) => {
                let old = self.prefix.remove(p.as_bytes());
                if old.is_some() {
                    self.remove_len(p.as_bytes());
                }
                old
            }
        }
    }

    /// Calls `f` with the value of every pattern matching `topic` (the exact one first, then
    /// prefixes from longest to shortest).
    #[inline]
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&V)) {
        let t = topic.as_bytes();
        if !self.exact.is_empty() {
            if let Some(v) = self.exact.get(t) {
                f(v);
            }
        }
        for pl in &self.prefix_lens {
            if pl.may_match(t) {
                if let Some(v) = self.prefix.get(&t[..pl.len]) {
                    f(v);
                }
            }
        }
    }

    /// Every pattern with its value, in no particular order: `(pattern text, value)`, a
    /// prefix pattern written with its trailing `*`.
    pub fn iter(&self) -> impl Iterator<Item = (String, &V)> + '_ {
        let text = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        let exact = self.exact.iter().map(move |(k, v)| (text(k), v));
        let prefix = self.prefix.iter().map(move |(k, v)| (text(k) + "*", v));
        exact.chain(prefix)
    }

    /// The best match for `topic`: the exact pattern, else the longest matching prefix.
    #[inline]
    pub fn best_match(&self, topic: &str) -> Option<&V> {
        let t = topic.as_bytes();
        if let Some(v) = self.exact.get(t) {
            return Some(v);
        }
        self.prefix_lens
            .iter()
            .filter(|pl| pl.may_match(t))
            .find_map(|pl| self.prefix.get(&t[..pl.len]))
    }

    fn add_len(&mut self, p: &[u8]) {
        let i = match self.prefix_lens.iter().position(|pl| pl.len == p.len()) {
            Some(i) => i,
            None => {
                self.prefix_lens.push(PrefixLen {
                    len: p.len(),
                    count: 0,
                    last: Box::new([0; 256]),
                    filter: [0; 4],
                });
                self.prefix_lens
                    .sort_unstable_by_key(|pl| std::cmp::Reverse(pl.len));
                self.prefix_lens
                    .iter()
                    .position(|pl| pl.len == p.len())
                    .unwrap_or(0)
            }
        };
        let pl = &mut self.prefix_lens[i];
        pl.count += 1;
        if let Some(b) = PrefixLen::last_byte(p) {
            pl.last[b] += 1;
            pl.filter[b >> 6] |= 1 << (b & 63);
        }
    }

    fn remove_len(&mut self, p: &[u8]) {
        let Some(i) = self.prefix_lens.iter().position(|pl| pl.len == p.len()) else {
            return;
        };
        let pl = &mut self.prefix_lens[i];
        pl.count -= 1;
        if let Some(b) = PrefixLen::last_byte(p) {
            pl.last[b] -= 1;
            if pl.last[b] == 0 {
                pl.filter[b >> 6] &= !(1 << (b & 63));
            }
        }
        if pl.count == 0 {
            self.prefix_lens.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_patterns() {
        assert_eq!(Pattern::parse("chat:a"), Ok(Pattern::Exact("chat:a")));
        assert_eq!(Pattern::parse("chat:*"), Ok(Pattern::Prefix("chat:")));
        assert_eq!(Pattern::parse("*"), Ok(Pattern::Prefix("")));
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("a*b"), Err(PatternError::MisplacedWildcard));
        assert_eq!(Pattern::parse("**"), Err(PatternError::MisplacedWildcard));
        assert_eq!(Pattern::parse(&"x".repeat(257)), Err(PatternError::TooLong));
        assert!(Pattern::parse(&"x".repeat(256)).is_ok());
        assert_eq!(validate_topic("a*"), Err(PatternError::MisplacedWildcard));
        assert!(validate_topic("ü:ñ").is_ok());
    }

    #[test]
    fn best_match_prefers_exact_then_longest_prefix() {
        let mut m = PatternMap::new();
        for p in ["*", "chat:*", "chat:room*", "chat:room1"] {
            m.insert(Pattern::parse(p).unwrap(), p);
        }
        assert_eq!(m.best_match("chat:room1"), Some(&"chat:room1"));
        assert_eq!(m.best_match("chat:room2"), Some(&"chat:room*"));
        assert_eq!(m.best_match("chat:x"), Some(&"chat:*"));
        assert_eq!(m.best_match("news"), Some(&"*"));
        m.remove(Pattern::parse("*").unwrap());
        assert_eq!(m.best_match("news"), None);
        assert_eq!(m.best_match("chat:"), Some(&"chat:*"));
    }

    #[test]
    fn for_each_match_visits_all_and_handles_multibyte_prefixes() {
        let mut m = PatternMap::new();
        for p in ["é*", "ab*", "abc", "abcd*"] {
            m.insert(Pattern::parse(p).unwrap(), p);
        }
        let mut seen = vec![];
        m.for_each_match("abc", |v| seen.push(*v));
        assert_eq!(seen, vec!["abc", "ab*"]);
        seen.clear();
        // "é" is two bytes; a one-byte prefix probe must not slice inside it.
        m.insert(Pattern::parse("x*").unwrap(), "x*");
        m.for_each_match("éa", |v| seen.push(*v));
        assert_eq!(seen, vec!["é*"]);
    }

    #[test]
    fn prefix_lengths_are_reference_counted() {
        let mut m = PatternMap::new();
        m.insert(Pattern::parse("ab*").unwrap(), 1);
        m.insert(Pattern::parse("cd*").unwrap(), 2);
        m.remove(Pattern::parse("ab*").unwrap());
        assert_eq!(m.best_match("cdx"), Some(&2));
        assert_eq!(
            m.best_match("abx"),
            None,
            "the filter must forget the removed 'ab'"
        );
        m.insert(Pattern::parse("xb*").unwrap(), 3);
        m.remove(Pattern::parse("xb*").unwrap());
        assert_eq!(
            m.best_match("cdx"),
            Some(&2),
            "removing 'xb' must keep 'cd' (other last byte)"
        );
        m.insert(Pattern::parse("zd*").unwrap(), 4);
        m.remove(Pattern::parse("zd*").unwrap());
        assert_eq!(
            m.best_match("cdx"),
            Some(&2),
            "same last byte: counted, not cleared"
        );
        m.remove(Pattern::parse("cd*").unwrap());
        assert!(m.is_empty());
        assert!(m.prefix_lens.is_empty());
    }
}
