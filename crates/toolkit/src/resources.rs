//! What a run costs in memory: a meter of its peak (CUDA device memory above its start, or the
//! process's peak RSS) and the process's resident memory from `/proc/self/status`.

/// A trial's peak memory: on CUDA the device memory it added, elsewhere the process's peak RSS.
#[derive(Debug, Clone, Copy)]
pub struct MemMeter {
    /// CUDA device index and the bytes in use on it when the trial began.
    cuda: Option<(usize, u64)>,
}

impl MemMeter {
    /// Starts measuring on `device` (on CUDA this creates the context, so the baseline holds it).
    pub fn start(device: tch::Device) -> Self {
        let cuda = match device {
            tch::Device::Cuda(i) => autoqat_model::device::cuda_used_bytes(i).map(|b| (i, b)),
            _ => None,
        };
        MemMeter { cuda }
    }

    /// Peak memory in MB so far. On CUDA: bytes in use now less the baseline. PyTorch's
    /// caching allocator keeps what it reserved (autoqat never empties it), so the figure at
    /// the end of a trial is its high-water mark, comparable with `max_memory_reserved`.
    pub fn peak_mb(&self) -> f64 {
        match self.cuda.and_then(|(i, base)| autoqat_model::device::cuda_used_bytes(i).map(|now| (now, base))) {
            Some((now, base)) => now.saturating_sub(base) as f64 / (1024.0 * 1024.0),
            None => peak_rss_mb(),
        }
    }

    /// Where the figure comes from, for the log.
    pub fn source(&self) -> &'static str {
        if self.cuda.is_some() {
            "CUDA device memory in use (cudaMemGetInfo) above the trial's start"
        } else {
            "peak RSS of the process"
        }
    }
}

/// Peak resident memory of this process in MB (`VmHWM`), 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// Resident memory of this process now in MB (`VmRSS`), 0 where unknown.
pub fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

/// A kB field of `/proc/self/status`, in MB.
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_figures_are_finite_and_the_peak_is_at_least_the_current() {
        let (now, peak) = (rss_mb(), peak_rss_mb());
        assert!(now.is_finite() && peak.is_finite() && now >= 0.0);
        if cfg!(target_os = "linux") {
            assert!(now > 0.0 && peak >= now, "rss {now} peak {peak}");
        }
        let meter = MemMeter::start(tch::Device::Cpu);
        assert_eq!(meter.source(), "peak RSS of the process");
        assert!(meter.peak_mb() >= 0.0);
    }
}
