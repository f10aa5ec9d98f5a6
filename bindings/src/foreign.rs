//! Holding objects implemented in the app's language (secret store, listeners) so that a
//! client dropped without `shutdown` never calls into the host again.
//!
//! A client freed by the host's garbage collector or at process exit (Python's interpreter
//! finalizing, Node tearing its environment down) is dropped while the host may already be
//! unable to run code: a call into it then, or the free of one of its objects, aborts the
//! process. So dropping a client without `shutdown` marks it abandoned: from then on its
//! foreign objects are neither called nor freed (a few bytes leak, once, at exit), while
//! the core closes in the background.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set when a client is dropped without `shutdown`; shared by its foreign handles.
#[derive(Clone, Debug, Default)]
pub(crate) struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    /// Marks the client abandoned.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once the client was abandoned.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A foreign object that is released only while its client is not abandoned.
pub(crate) struct ForeignHandle<T: ?Sized> {
    inner: Option<Arc<T>>,
    abandoned: Abandoned,
}

impl<T: ?Sized> ForeignHandle<T> {
    /// Holds `inner` for the client whose flag is `abandoned`.
    pub fn new(inner: Arc<T>, abandoned: Abandoned) -> Self {
        Self {
            inner: Some(inner),
            abandoned,
        }
    }

    /// The object, unless its client was abandoned (then it must not be called).
    pub fn get(&self) -> Option<&T> {
        if self.abandoned.is_set() {
            return None;
        }
        self.inner.as_deref()
    }
}

impl<T: ?Sized> Drop for ForeignHandle<T> {
    fn drop(&mut self) {
        if self.abandoned.is_set() {
            // Never released: releasing calls into a host that may be gone.
            std::mem::forget(self.inner.take());
        }
    }
}
