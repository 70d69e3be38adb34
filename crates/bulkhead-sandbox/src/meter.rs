//! The allocator of every interpreter's runtime: Rust's global allocator (rquickjs's
//! `RustAllocator`) with the invocation's memory limit enforced here instead of by QuickJS.
//!
//! Why not QuickJS's own limit (`JS_SetMemoryLimit`): when it refuses an allocation, QuickJS
//! reports it by throwing an "out of memory" error, which it may itself fail to allocate; the
//! function then ends with a thrown `null` that cannot be told apart from an app's own
//! `throw null`. The allocator is the one place that knows an allocation was refused, so the
//! engine asks the [`Meter`] and reports `limit_memory` exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rquickjs::allocator::{Allocator, RustAllocator};

/// What one runtime has allocated, its limit, and whether it refused an allocation since
/// [`Meter::arm`]. Shared by the runtime's allocator and its interpreter (one thread; atomics
/// only because the allocator must be `'static`).
#[derive(Debug)]
pub(crate) struct Meter {
    used: AtomicUsize,
    limit: AtomicUsize,
    refused: AtomicBool,
}

impl Meter {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(usize::MAX),
            refused: AtomicBool::new(false),
        })
    }

    /// A new limit (bytes; `usize::MAX` for none), and no refusal yet.
    pub(crate) fn arm(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.refused.store(false, Ordering::Relaxed);
    }

    /// Whether an allocation was refused since the last [`Meter::arm`].
    pub(crate) fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// Bytes allocated now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether `more` bytes fit once `freed` are given back; records a refusal.
    fn admit(&self, more: usize, freed: usize) -> bool {
        let after = self
            .used
            .load(Ordering::Relaxed)
            .saturating_sub(freed)
            .saturating_add(more);
        let ok = after <= self.limit.load(Ordering::Relaxed);
        if !ok {
            self.refused.store(true, Ordering::Relaxed);
        }
        ok
    }

    fn add(&self, n: usize) {
        self.used
            .store(self.used().saturating_add(n), Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.used
            .store(self.used().saturating_sub(n), Ordering::Relaxed);
    }
}

/// [`RustAllocator`] behind a [`Meter`].
pub(crate) struct Metered {
    inner: RustAllocator,
    meter: Arc<Meter>,
}

impl Metered {
    pub(crate) fn new(meter: Arc<Meter>) -> Self {
        Self {
            inner: RustAllocator,
            meter,
        }
    }
}

// SAFETY: every pointer handed out comes from `RustAllocator` and every pointer taken back is
// passed to it unchanged, so its guarantees (size, alignment, `usable_size`) are this
// allocator's. The only additions are declining a request before `RustAllocator` sees it
// (returning null, which the trait allows) and counting the sizes it reports.
#[allow(unsafe_code)]
unsafe impl Allocator for Metered {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.meter.admit(size, 0) {
            return std::ptr::null_mut();
        }
        let ptr = self.inner.alloc(size);
        if !ptr.is_null() {
            // SAFETY: `ptr` was just allocated by `RustAllocator`.
            self.meter.add(unsafe { RustAllocator::usable_size(ptr) });
        }
        ptr
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        // `RustAllocator::calloc` panics on an overflowing product; refuse it here instead.
        let Some(total) = count.checked_mul(size) else {
            self.meter.refused.store(true, Ordering::Relaxed);
            return std::ptr::null_mut();
        };
        if !self.meter.admit(total, 0) {
            return std::ptr::null_mut();
        }
        let ptr = self.inner.calloc(count, size);
        if !ptr.is_null() {
            // SAFETY: `ptr` was just allocated by `RustAllocator`.
            self.meter.add(unsafe { RustAllocator::usable_size(ptr) });
        }
        ptr
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        // SAFETY: the caller passes a pointer this allocator (so `RustAllocator`) handed out.
        unsafe {
            self.meter.sub(RustAllocator::usable_size(ptr));
            self.inner.dealloc(ptr);
        }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; on failure `RustAllocator` leaves `ptr` valid and counted.
        unsafe {
            let old = RustAllocator::usable_size(ptr);
            if !self.meter.admit(new_size, old) {
                return std::ptr::null_mut();
            }
            let moved = self.inner.realloc(ptr, new_size);
            if !moved.is_null() {
                self.meter.sub(old);
                self.meter.add(RustAllocator::usable_size(moved));
            }
            moved
        }
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        // SAFETY: as for `dealloc`.
        unsafe { RustAllocator::usable_size(ptr) }
    }
}
