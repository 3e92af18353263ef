//! SIGINT and SIGTERM become a flag the loop and the running trial poll: a signal stops the
//! trial (its whole process group) and sets the experiment aside for `--resume`.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM.
pub(super) static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the stop flag: the running trial is stopped and set aside for `--resume`.
pub fn install_signal_handlers() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether a signal asked the loop to stop.
pub(super) fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
