//! Which held offsets still wait for their outcome: one bit per held-log offset.
//!
//! A bit per offset, markers' offsets included, from the oldest pending one: a million
//! pending messages cost about 250 KiB, whatever their size. Words before the first pending
//! offset are dropped as outcomes arrive, so the set follows the held log's low-water mark.

use std::collections::VecDeque;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Pending {
    /// Offset of bit 0 of `words[0]`; a multiple of 64.
    base: u64,
    words: VecDeque<u64>,
    count: u64,
}

impl Pending {
    /// Marks `offset` pending; false if it already was.
    pub fn insert(&mut self, offset: u64) -> bool {
        if self.words.is_empty() {
            self.base = offset & !63;
        }
        if offset < self.base {
            // Only recovery inserts below the base, never past the front by much.
            let words_before = (self.base - (offset & !63)) / 64;
            for _ in 0..words_before {
                self.words.push_front(0);
            }
            self.base = offset & !63;
        }
        let index = ((offset - self.base) / 64) as usize;
        if index >= self.words.len() {
            self.words.resize(index + 1, 0);
        }
        let bit = 1u64 << (offset % 64);
        let fresh = self.words[index] & bit == 0;
        self.words[index] |= bit;
        self.count += u64::from(fresh);
        fresh
    }

    /// True if `offset` is pending.
    pub fn contains(&self, offset: u64) -> bool {
        let Some(index) = offset.checked_sub(self.base).map(|d| (d / 64) as usize) else {
            return false;
        };
        self.words
            .get(index)
            .is_some_and(|w| w & (1u64 << (offset % 64)) != 0)
    }

    /// Clears `offset`; false if it was not pending.
    pub fn remove(&mut self, offset: u64) -> bool {
        if !self.contains(offset) {
            return false;
        }
        let index = ((offset - self.base) / 64) as usize;
        self.words[index] &= !(1u64 << (offset % 64));
        self.count -= 1;
        while self.words.front() == Some(&0) {
            self.words.pop_front();
            self.base += 64;
        }
        true
    }

    /// How many offsets are pending.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// The lowest pending offset.
    #[cfg(test)]
    pub fn first(&self) -> Option<u64> {
        let word = *self.words.front()?;
        Some(self.base + u64::from(word.trailing_zeros()))
    }

    /// Bytes of memory the set holds.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.words.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_come_and_go_and_the_front_is_dropped() {
        let mut pending = Pending::default();
        assert!(pending.insert(130));
        assert!(!pending.insert(130));
        assert!(pending.insert(5));
        assert!(pending.insert(1_000));
        assert_eq!(pending.len(), 3);
        assert_eq!(pending.first(), Some(5));
        assert!(pending.contains(130) && !pending.contains(131) && !pending.contains(2));
        assert!(pending.remove(5));
        assert!(!pending.remove(5));
        assert_eq!(pending.first(), Some(130));
        assert!(pending.remove(130));
        assert_eq!(pending.first(), Some(1_000));
        assert!(
            pending.words.len() == 1,
            "the words before 1000 are dropped"
        );
        assert!(pending.remove(1_000));
        assert_eq!((pending.len(), pending.first()), (0, None));
    }
}
