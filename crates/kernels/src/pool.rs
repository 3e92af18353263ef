//! A tiny persistent thread pool for fork-join over chunks of work.
//!
//! A decode step runs hundreds of products of a few microseconds each, so workers spin for a
//! while after each job (a wake-up through the OS costs about as much as a small product) and
//! only then sleep on a condition variable. Chunks are claimed from a shared counter and the
//! caller claims them too, so a worker the OS has not scheduled (two cores shared with a build)
//! delays nothing: the caller finishes its chunks and waits only for chunks already started.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Spins a worker makes waiting for the next job before it sleeps (about 50-100 µs).
const SPINS: u32 = 1 << 15;

/// A job as the workers see it: the caller's closure with its lifetime erased (see `run`).
type Job = &'static (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per job; a worker looks for work when it sees a new value.
    epoch: AtomicU64,
    /// The next chunk to claim, the number of chunks, and the chunks finished.
    next: AtomicUsize,
    total: AtomicUsize,
    finished: AtomicUsize,
    /// Workers holding the current job reference.
    active: AtomicUsize,
    /// Workers asleep on `wake` (the caller skips the notify syscall when zero).
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    /// The job of epoch `.0`; None outside `run`.
    job: Mutex<Option<(u64, Job)>>,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    /// Claims and runs chunks of `job` until none are left.
    fn work(&self, job: Job) {
        loop {
            let c = self.next.fetch_add(1, Ordering::AcqRel);
            if c >= self.total.load(Ordering::Acquire) {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| job(c))).is_err() {
                self.panicked.store(true, Ordering::SeqCst);
            }
            self.finished.fetch_add(1, Ordering::Release);
        }
    }
}

/// A fixed set of worker threads; `threads` chunks run at once (the caller being one thread).
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads()).finish()
    }
}

impl Pool {
    /// A pool of `threads` threads (`threads - 1` workers plus the caller; at least one).
    pub(crate) fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: Mutex::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|part| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("autoqat-kernel-{part}"))
                    .spawn(move || worker(&s))
                    .unwrap_or_else(|e| panic!("cannot spawn kernel worker: {e}"))
            })
            .collect();
        Pool { shared, workers }
    }

    /// Threads a job runs on.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(chunk)` once for every chunk in `0..chunks`, in parallel, and returns when all
    /// have run.
    pub(crate) fn run(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || chunks <= 1 {
            (0..chunks).for_each(f);
            return;
        }
        let s = &*self.shared;
        // SAFETY: workers obtain the reference only under the `job` lock while it is Some, and
        // count themselves in `active` before releasing the lock; `Finish` (dropped on return
        // and on unwind) clears the slot under the lock and then waits for `active` to reach
        // zero, so no worker holds or calls `f` after `run` returns.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        {
            let mut slot = s.job.lock().unwrap_or_else(PoisonError::into_inner);
            s.next.store(0, Ordering::SeqCst);
            s.total.store(chunks, Ordering::SeqCst);
            s.finished.store(0, Ordering::SeqCst);
            let epoch = s.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            *slot = Some((epoch, job));
        }
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        let finish = Finish { shared: s };
        s.work(job);
        spin_until(|| s.finished.load(Ordering::Acquire) >= chunks);
        drop(finish);
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kernel chunk panicked");
        }
    }
}

/// Spins, then yields, until `done()`.
fn spin_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < SPINS {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Withdraws the current job and waits until no worker holds it.
struct Finish<'a> {
    shared: &'a Shared,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        *self.shared.job.lock().unwrap_or_else(PoisonError::into_inner) = None;
        spin_until(|| self.shared.active.load(Ordering::Acquire) == 0);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _g = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        while s.epoch.load(Ordering::SeqCst) == seen {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen {
                g = s.wake.wait(g).unwrap_or_else(PoisonError::into_inner);
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        seen = s.epoch.load(Ordering::SeqCst);
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let job = {
            let slot = s.job.lock().unwrap_or_else(PoisonError::into_inner);
            match *slot {
                Some((epoch, job)) if epoch == seen => {
                    s.active.fetch_add(1, Ordering::SeqCst);
                    Some(job)
                }
                _ => None,
            }
        };
        if let Some(job) = job {
            s.work(job);
            s.active.fetch_sub(1, Ordering::Release);
        }
    }
}
