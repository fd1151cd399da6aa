//! Asks the kernel to back the slot array with transparent huge pages.
//!
//! A ring of the default size spans tens of megabytes, and every claim moves to the next
//! slot: with 4 KiB pages, a producer walks onto a page whose translation is not in the TLB
//! every 16 slots, and on a virtual machine each such miss is a two-level page walk. With
//! 2 MiB pages the whole slot array fits in a few dozen TLB entries. Measured on a 2-vCPU KVM
//! guest (`publish_latency --only typed`): with the whole process on huge pages, when typed
//! records still went to the slots' heap buffers, one producer's p99 went from 256–297 ns to
//! 171–192 ns. With the records in the slots (evstream's `INLINE_TAPE`) the slot array is all
//! a typed publish touches, and its p99 measured the same with and without huge pages
//! (BENCHMARKS.md): the advice is kept because it costs nothing, not for a measured gain.
//!
//! Best effort: `madvise(MADV_HUGEPAGE)` on the part of the allocation that covers whole
//! 2 MiB pages, before anything is written to it, so the first touch faults in huge pages
//! where the kernel has them (`transparent_hugepage` set to `madvise` or `always`). Where it
//! has none, or the memory was already touched, the advice changes nothing and costs nothing.

use std::mem::MaybeUninit;

/// 2 MiB: the huge page size of x86-64 and of arm64 with 4 KiB base pages.
#[cfg(all(target_os = "linux", not(miri), not(loom)))]
const HUGE_PAGE: usize = 2 << 20;

/// Advises huge pages for the whole 2 MiB pages inside `memory` (not yet written).
pub(crate) fn prefer_huge_pages<T>(memory: &mut [MaybeUninit<T>]) {
    #[cfg(all(target_os = "linux", not(miri), not(loom)))]
    {
        let start = memory.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(memory);
        let first = start.next_multiple_of(HUGE_PAGE);
        let last = end / HUGE_PAGE * HUGE_PAGE;
        if last > first {
            // SAFETY: the range lies inside `memory`, which this caller owns exclusively;
            // MADV_HUGEPAGE changes how the range is backed, never what it holds. A failure
            // (a kernel without THP) leaves the memory as it was, so its result is ignored.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri), not(loom))))]
    let _ = memory;
}
