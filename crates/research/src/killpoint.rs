//! Fault injection for the crash-safety test: `AUTOQAT_TEST_KILL_AT=<point>[:n]` makes the
//! process SIGKILL itself the n-th time (default 1st) it reaches `<point>`. Unset, it costs a
//! single environment lookup per process.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

fn target() -> &'static Option<(String, u32)> {
    static T: OnceLock<Option<(String, u32)>> = OnceLock::new();
    T.get_or_init(|| {
        let v = std::env::var("AUTOQAT_TEST_KILL_AT").ok()?;
        let (p, n) = match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((p, n))
    })
}

/// Marks that the driver reached `point`; kills the process if the test asked for it here.
pub fn hit(point: &str) {
    let Some((want, n)) = target() else { return };
    if want != point {
        return;
    }
    static COUNTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
    let count = {
        let mut guard = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let c = guard.get_or_insert_with(HashMap::new).entry(point.to_string()).or_insert(0);
        *c += 1;
        *c
    };
    if count == *n {
        eprintln!("autoqat: test kill at {point}:{n}");
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
