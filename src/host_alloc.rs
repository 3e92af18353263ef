//! Host allocator policy for libtorch's CPU tensors.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MiB when adjusted
//! dynamically) with a fresh `mmap` and returns it to the kernel on free. A forward pass
//! allocates buffers far larger than that (the logits of one 512-token window of a
//! 49k-vocabulary model are 100 MB), so every pass page-faults all of them in again: a
//! SmolLM-135M eval spent about 6% of its time zeroing fresh pages. Raising the threshold
//! (and the trim threshold with it, so the heap is not shrunk after each pass) keeps those
//! buffers in the heap for reuse; this is the effect PyTorch's CPU tuning guide gets by
//! preloading jemalloc or tcmalloc. The cost is some peak memory, as freed buffers are reused
//! rather than returned: measured +2.5% peak RSS on that eval and +7% on a SmolLM-shape QAT
//! trial (docs/benchmarks.md).

/// Threshold above which allocations still go to `mmap` (tensors this large are rare enough
/// that paying for their page faults is fine).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 << 20;

/// Free heap memory kept before glibc trims it back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Applies the policy; returns whether glibc accepted it (other platforms: false, a no-op).
pub fn keep_large_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
