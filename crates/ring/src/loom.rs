//! Swaps `std` for `loom` under `cfg(loom)`, so the same code runs in the loom models.

#[cfg(loom)]
pub(crate) use ::loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use ::loom::{cell::UnsafeCell, hint::spin_loop, thread::yield_now};

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

/// `std::cell::UnsafeCell` with loom's closure-based access API, so both builds share code.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
