//! A set of service ids, as a 256-bit bitmap.

use plexus_network::ServiceId;

/// A set of [`ServiceId`]s: 32 bytes, copyable, O(1) membership.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug)]
pub struct ServiceSet([u64; 4]);

impl ServiceSet {
    /// The empty set.
    pub const EMPTY: ServiceSet = ServiceSet([0; 4]);

    /// Adds a service.
    pub fn insert(&mut self, s: ServiceId) {
        self.0[(s.0 >> 6) as usize] |= 1 << (s.0 & 63);
    }

    /// Removes a service.
    pub fn remove(&mut self, s: ServiceId) {
        self.0[(s.0 >> 6) as usize] &= !(1 << (s.0 & 63));
    }

    /// Whether the set holds `s`.
    pub fn contains(&self, s: ServiceId) -> bool {
        self.0[(s.0 >> 6) as usize] & (1 << (s.0 & 63)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The services, ascending.
    pub fn iter(&self) -> impl Iterator<Item = ServiceId> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some(ServiceId((w as u32 * 64 + b) as u8))
            })
        })
    }

    /// The raw bitmap (for compact wire encodings).
    pub fn to_words(self) -> [u64; 4] {
        self.0
    }

    /// From a raw bitmap.
    pub fn from_words(words: [u64; 4]) -> Self {
        ServiceSet(words)
    }
}

impl FromIterator<ServiceId> for ServiceSet {
    fn from_iter<I: IntoIterator<Item = ServiceId>>(iter: I) -> Self {
        let mut s = ServiceSet::EMPTY;
        for x in iter {
            s.insert(x);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership() {
        let mut s: ServiceSet = [ServiceId(0), ServiceId(63), ServiceId(64), ServiceId(255)]
            .into_iter()
            .collect();
        assert!(s.contains(ServiceId(255)) && s.contains(ServiceId(64)));
        assert!(!s.contains(ServiceId(1)));
        s.remove(ServiceId(64));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![ServiceId(0), ServiceId(63), ServiceId(255)]
        );
        assert!(!s.is_empty());
        assert!(ServiceSet::EMPTY.is_empty());
    }
}
