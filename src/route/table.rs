//! The rule table of one (host, environment) group and its prefix trees.

use regex::Regex;

use super::rule::{CompiledRule, RuleKind, Seg};
use super::{Candidate, RouteMatch};
use rustc_hash::FxHashMap;

#[derive(Default)]
pub(crate) struct Table {
    exact: FxHashMap<Box<str>, Vec<Entry>>,
    pref: PrefixTree<Entry>,
    /// Regex and template rules in declaration order.
    patterns: Vec<Pattern>,
    /// Pattern indices keyed by the literal text every match of the pattern starts
    /// with: only patterns whose literal is a prefix of the path are tried.
    pattern_index: PrefixTree<u32>,
    prefix: PrefixTree<Entry>,
    /// Action groups (`Entry::group` indexes here).
    groups: Vec<Box<[Candidate]>>,
}

const NO_GROUP: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry {
    api: usize,
    methods: u16,
    group: u32,
}

struct Pattern {
    entry: Entry,
    matcher: Matcher,
}

enum Matcher {
    Regex { re: Regex, named: bool },
    Template { segs: Box<[Seg]>, params: usize },
}

impl Table {
    pub(crate) fn add(&mut self, r: &CompiledRule) {
        self.add_entry(
            r,
            Entry {
                api: r.api,
                methods: r.methods,
                group: NO_GROUP,
            },
        );
    }

    /// One entry for APIs sharing `r`'s rule, chosen by action among `candidates`
    /// (their methods united: the entry matches when any of them allows the method).
    pub(crate) fn add_group(&mut self, r: &CompiledRule, candidates: Vec<Candidate>) {
        let group = u32::try_from(self.groups.len()).expect("fewer than 2^32 groups");
        let methods = candidates.iter().fold(0, |m, c| m | c.methods);
        self.groups.push(candidates.into());
        self.add_entry(
            r,
            Entry {
                api: r.api,
                methods,
                group,
            },
        );
    }

    #[inline]
    fn candidates(&self, e: Entry) -> &[Candidate] {
        match e.group {
            NO_GROUP => &[],
            g => self.groups.get(g as usize).map_or(&[], |c| &c[..]),
        }
    }

    fn add_entry(&mut self, r: &CompiledRule, e: Entry) {
        match &r.kind {
            RuleKind::Exact(p) => self.exact.entry(p.as_str().into()).or_default().push(e),
            RuleKind::Pref(p) => self.pref.insert(p.as_bytes(), e),
            RuleKind::Prefix(p) => self.prefix.insert(p.as_bytes(), e),
            RuleKind::Regex { re, .. } => {
                let named = re.capture_names().flatten().next().is_some();
                let re = re.clone();
                self.add_pattern(r, e, Matcher::Regex { re, named });
            }
            RuleKind::Template(segs) => {
                let params = segs.iter().filter(|s| matches!(s, Seg::Param(_))).count();
                let segs = segs.clone().into();
                self.add_pattern(r, e, Matcher::Template { segs, params });
            }
        }
    }

    fn add_pattern(&mut self, r: &CompiledRule, entry: Entry, matcher: Matcher) {
        let idx = u32::try_from(self.patterns.len()).expect("fewer than 2^32 rules");
        self.patterns.push(Pattern { entry, matcher });
        self.pattern_index.insert(r.literal.as_bytes(), idx);
    }

    #[inline]
    pub(crate) fn lookup<'a>(&'a self, path: &'a str, bit: u16) -> Option<RouteMatch<'a>> {
        let hit = |e: Entry, matched_len| {
            Some(RouteMatch {
                api: e.api,
                params: Vec::new(),
                path,
                matched_len,
                candidates: self.candidates(e),
            })
        };
        if !self.exact.is_empty() {
            if let Some(es) = self.exact.get(path) {
                if let Some(e) = es.iter().find(|e| e.methods & bit != 0) {
                    return hit(*e, path.len());
                }
            }
        }
        if let Some((e, len)) = self.pref.longest(path, bit) {
            return hit(e, len);
        }
        if !self.patterns.is_empty() {
            if let Some(m) = self.match_patterns(path, bit) {
                return Some(m);
            }
        }
        let (e, len) = self.prefix.longest(path, bit)?;
        hit(e, len)
    }

    /// Tries, in declaration order, the patterns whose literal is a prefix of `path`.
    fn match_patterns<'a>(&'a self, path: &'a str, bit: u16) -> Option<RouteMatch<'a>> {
        const K: usize = 16;
        let mut lists: [&[u32]; K] = [&[]; K];
        let mut n = 0;
        let mut overflow = false;
        self.pattern_index.visit(path.as_bytes(), |l| {
            if n < K {
                lists[n] = l;
                n += 1;
            } else {
                overflow = true;
            }
        });
        if overflow {
            // More than K nested literals along one path: rare, so allocate.
            let mut all = Vec::new();
            self.pattern_index
                .visit(path.as_bytes(), |l| all.extend_from_slice(l));
            all.sort_unstable();
            return all.iter().find_map(|&i| self.try_pattern(i, path, bit));
        }
        let mut pos = [0usize; K];
        loop {
            // k-way merge of the (sorted) lists by declaration index.
            let mut best: Option<(usize, u32)> = None;
            for (k, list) in lists[..n].iter().enumerate() {
                if let Some(&v) = list.get(pos[k]) {
                    if best.is_none_or(|(_, b)| v < b) {
                        best = Some((k, v));
                    }
                }
            }
            let (k, idx) = best?;
            pos[k] += 1;
            if let Some(m) = self.try_pattern(idx, path, bit) {
                return Some(m);
            }
        }
    }

    #[inline]
    fn try_pattern<'a>(&'a self, idx: u32, path: &'a str, bit: u16) -> Option<RouteMatch<'a>> {
        let p = &self.patterns[idx as usize];
        if p.entry.methods & bit == 0 {
            return None;
        }
        let mut m = p.try_match(path)?;
        m.candidates = self.candidates(p.entry);
        Some(m)
    }
}

impl Pattern {
    fn try_match<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a>> {
        let (params, matched_len) = match &self.matcher {
            Matcher::Regex { re, named: false } => (Vec::new(), re.find(path)?.end()),
            Matcher::Regex { re, named: true } => {
                let caps = re.captures(path)?;
                let params = re
                    .capture_names()
                    .zip(caps.iter())
                    .filter_map(|(n, m)| Some((n?, m?.as_str())))
                    .collect();
                (params, caps.get(0)?.end())
            }
            Matcher::Template { segs, params } => {
                if !template_matches(segs, path) {
                    return None;
                }
                let mut out = Vec::with_capacity(*params);
                for (s, v) in segs.iter().zip(Segments(Some(path))) {
                    if let Seg::Param(n) = s {
                        out.push((&**n, v));
                    }
                }
                (out, path.len())
            }
        };
        Some(RouteMatch {
            api: self.entry.api,
            params,
            path,
            matched_len,
            candidates: &[],
        })
    }
}

#[inline]
fn template_matches(segs: &[Seg], path: &str) -> bool {
    let mut parts = Segments(Some(path));
    for s in segs {
        match (s, parts.next()) {
            (Seg::Lit(l), Some(p)) if **l == *p => {}
            (Seg::Param(_), Some(p)) if !p.is_empty() => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// `str::split('/')` with a plain byte loop (path segments are short).
struct Segments<'a>(Option<&'a str>);

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        match rest.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.0 = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Longest-prefix matching: a byte radix tree

struct PrefixTree<E> {
    root: Node<E>,
}

struct Node<E> {
    label: Box<[u8]>,
    entries: Vec<E>,
    /// Sorted by the first byte of their label (labels are never empty).
    children: Vec<Node<E>>,
}

impl<E> Default for PrefixTree<E> {
    fn default() -> Self {
        PrefixTree {
            root: Node {
                label: Box::default(),
                entries: Vec::new(),
                children: Vec::new(),
            },
        }
    }
}

impl<E> PrefixTree<E> {
    fn insert(&mut self, key: &[u8], entry: E) {
        let mut node = &mut self.root;
        let mut key = key;
        loop {
            if key.is_empty() {
                node.entries.push(entry);
                return;
            }
            match node.children.binary_search_by_key(&key[0], |c| c.label[0]) {
                Err(pos) => {
                    let leaf = Node {
                        label: key.into(),
                        entries: vec![entry],
                        children: Vec::new(),
                    };
                    node.children.insert(pos, leaf);
                    return;
                }
                Ok(pos) => {
                    let child = &mut node.children[pos];
                    let common = child
                        .label
                        .iter()
                        .zip(key)
                        .take_while(|(a, b)| a == b)
                        .count();
                    if common < child.label.len() {
                        let head = Node {
                            label: child.label[..common].into(),
                            entries: Vec::new(),
                            children: Vec::new(),
                        };
                        let mut tail = std::mem::replace(child, head);
                        tail.label = tail.label[common..].into();
                        child.children.push(tail);
                    }
                    key = &key[common..];
                    node = child;
                }
            }
        }
    }

    /// Calls `f` with the entries of every key that is a prefix of `path`, shortest
    /// first.
    #[inline]
    fn visit<'t>(&'t self, path: &[u8], mut f: impl FnMut(&'t [E])) {
        let mut node = &self.root;
        let mut rest = path;
        loop {
            if !node.entries.is_empty() {
                f(&node.entries);
            }
            let Some(&b) = rest.first() else {
                return;
            };
            let Ok(i) = node.children.binary_search_by_key(&b, |c| c.label[0]) else {
                return;
            };
            node = &node.children[i];
            match rest.strip_prefix(&*node.label) {
                Some(r) => rest = r,
                None => return,
            }
        }
    }
}

impl PrefixTree<Entry> {
    /// The deepest prefix of `path` with an entry allowing `bit`: (entry, prefix length).
    #[inline]
    fn longest(&self, path: &str, bit: u16) -> Option<(Entry, usize)> {
        if self.root.children.is_empty() {
            return None;
        }
        Self::walk(&self.root, path.as_bytes(), 0, bit)
    }

    fn walk(node: &Node<Entry>, path: &[u8], depth: usize, bit: u16) -> Option<(Entry, usize)> {
        let rest = &path[depth..];
        if let Some(&b) = rest.first() {
            if let Ok(i) = node.children.binary_search_by_key(&b, |c| c.label[0]) {
                let child = &node.children[i];
                if rest.starts_with(&child.label) {
                    if let Some(hit) = Self::walk(child, path, depth + child.label.len(), bit) {
                        return Some(hit);
                    }
                }
            }
        }
        node.entries
            .iter()
            .find(|e| e.methods & bit != 0)
            .map(|e| (*e, depth))
    }
}
