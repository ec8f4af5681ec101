//! Response headers gathered while a request is handled (the rate-limit
//! headers, a `Retry-After`) before the response exists. A short list, not a
//! `HeaderMap`: a map hashes every name twice (into it, then into the answer)
//! and allocates its table for half a dozen entries.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Where headers can be set, one value per name.
pub trait HeaderSink {
    /// Sets `name` to `value`, replacing what it had.
    fn put(&mut self, name: HeaderName, value: HeaderValue);
}

impl HeaderSink for HeaderMap {
    fn put(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
}

#[derive(Debug, Default)]
pub struct HeaderList(Vec<(HeaderName, HeaderValue)>);

impl HeaderList {
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// Moves every header into `h`, replacing the values it had for them.
    pub fn move_into(self, h: &mut HeaderMap) {
        for (n, v) in self.0 {
            h.insert(n, v);
        }
    }
}

impl HeaderSink for HeaderList {
    fn put(&mut self, name: HeaderName, value: HeaderValue) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => {
                if self.0.capacity() == 0 {
                    // The rate-limit set is up to eight headers: one allocation.
                    self.0.reserve_exact(8);
                }
                self.0.push((name, value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_name_and_moved_over_the_map_s() {
        let mut l = HeaderList::default();
        l.put(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        l.put(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("a"),
        );
        l.put(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert!(l.contains(&HeaderName::from_static("x-a")));
        assert!(!l.contains(&HeaderName::from_static("x-b")));
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("old1"));
        h.append("x-a", HeaderValue::from_static("old2"));
        h.insert("x-keep", HeaderValue::from_static("k"));
        l.move_into(&mut h);
        assert_eq!(h["retry-after"], "2");
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(h["x-keep"], "k");
    }
}
