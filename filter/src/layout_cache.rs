//! What the gateway last saw of an object's stored layout — sealed in chunks
//! of C bytes, or stored as it is — kept per VM, so that ranged reads deep
//! into an object (a download in parallel ranged parts) ask the backend for
//! the right bytes without a HEAD before each one (range::covers_unsealed).
//!
//! Only the backend `Range` depends on it: every response is still planned
//! from its own headers, so a stale entry costs one failed read (and is then
//! forgotten), never wrong bytes.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// An envelope with this chunk size.
    Sealed(u32),
    /// No envelope: the object is served as stored.
    Unsealed,
}

/// A bounded map from (bucket, key, version) to the layout last seen; the
/// oldest entry makes room for a new one. Objects are named by a 128-bit hash
/// (keys run up to 1 KiB): a collision could only pick a wrong range, which
/// fails one read.
pub struct LayoutCache {
    capacity: usize,
    entries: HashMap<ObjectId, Layout>,
    order: VecDeque<ObjectId>,
}

type ObjectId = [u8; 16];

/// Enough for the objects a worker downloads at once; an entry is ~50 bytes.
const DEFAULT_ENTRIES: usize = 4096;

impl Default for LayoutCache {
    fn default() -> Self {
        LayoutCache::new(DEFAULT_ENTRIES)
    }
}

impl LayoutCache {
    pub fn new(capacity: usize) -> Self {
        LayoutCache { capacity: capacity.max(1), entries: HashMap::new(), order: VecDeque::new() }
    }

    pub fn get(&self, bucket: &str, key: &str, version: Option<&str>) -> Option<Layout> {
        self.entries.get(&id(bucket, key, version)).copied()
    }

    pub fn remember(&mut self, bucket: &str, key: &str, version: Option<&str>, layout: Layout) {
        let id = id(bucket, key, version);
        if let Some(known) = self.entries.get_mut(&id) {
            *known = layout;
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        self.order.push_back(id);
        self.entries.insert(id, layout);
    }

    pub fn forget(&mut self, bucket: &str, key: &str, version: Option<&str>) {
        let id = id(bucket, key, version);
        if self.entries.remove(&id).is_some() {
            self.order.retain(|known| *known != id);
        }
    }
}

/// Bucket names and version ids hold no newline, so the parts cannot run
/// into each other.
fn id(bucket: &str, key: &str, version: Option<&str>) -> ObjectId {
    let digest = Sha256::new().chain_update(bucket).chain_update("\n").chain_update(version.unwrap_or("")).chain_update("\n").chain_update(key).finalize();
    let mut id = ObjectId::default();
    id.iter_mut().zip(digest.iter()).for_each(|(to, from)| *to = *from);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_updates_and_forgets() {
        let mut cache = LayoutCache::new(4);
        assert_eq!(cache.get("b", "k", None), None);
        cache.remember("b", "k", None, Layout::Sealed(65_536));
        assert_eq!(cache.get("b", "k", None), Some(Layout::Sealed(65_536)));
        assert_eq!(cache.get("b", "k", Some("v1")), None, "another version is another object");
        assert_eq!(cache.get("b", "k2", None), None);
        cache.remember("b", "k", None, Layout::Unsealed);
        assert_eq!(cache.get("b", "k", None), Some(Layout::Unsealed));
        cache.forget("b", "k", None);
        assert_eq!(cache.get("b", "k", None), None);
    }

    #[test]
    fn stays_bounded_dropping_the_oldest() {
        let mut cache = LayoutCache::new(3);
        for i in 0..10 {
            cache.remember("b", &i.to_string(), None, Layout::Sealed(16_384));
            assert!(cache.entries.len() <= 3 && cache.order.len() <= 3);
        }
        assert_eq!(cache.get("b", "6", None), None);
        for i in 7..10 {
            assert_eq!(cache.get("b", &i.to_string(), None), Some(Layout::Sealed(16_384)));
        }
        // Forgotten entries leave no trace in the eviction order.
        for _ in 0..100 {
            cache.remember("b", "again", None, Layout::Unsealed);
            cache.forget("b", "again", None);
        }
        assert!(cache.order.len() <= 3);
    }
}
