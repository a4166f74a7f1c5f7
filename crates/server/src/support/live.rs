//! A value the running server reads and a reload replaces (SIGHUP, SPEC 12): readers take
//! the current one as an `Arc`, so whatever started with the old value (a TLS handshake,
//! a delivery) finishes with it, and what starts next sees the new one.

use std::sync::{Arc, RwLock};

pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(Arc::clone(&self.0))
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(Arc::new(RwLock::new(Arc::new(value))))
    }

    pub fn get(&self) -> Arc<T> {
        // A writer that panicked left a whole value behind (`set` swaps one Arc).
        Arc::clone(&self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_what_they_took_and_clones_see_the_new_value() {
        let live = Live::new(1);
        let other = live.clone();
        let taken = live.get();
        other.set(2);
        assert_eq!((*taken, *live.get()), (1, 2));
    }
}
