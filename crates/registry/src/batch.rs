//! Bulk upload work (hashing, copying and writing layer data) at
//! `SCHED_BATCH`.
//!
//! A client pushing from the same machine streams its layer from one
//! thread that never blocks on the socket. Each piece the registry
//! receives used to wake a registry thread that preempted that client on
//! its own core to hash and write the piece: on two cores the push took
//! ~10 % longer than against a server that only discards the data. A
//! `SCHED_BATCH` thread gets the same share of CPU but never preempts on
//! wake-up, so the bulk work fills idle time instead of stalling the
//! sender. Request handling (tokio's workers) keeps the normal policy, so
//! latency of other requests is unchanged, and blob downloads are left
//! alone.

/// Runs `f` with the calling thread at `SCHED_BATCH`, then restores its
/// policy. A thread that is not `SCHED_OTHER` (real-time, or already
/// batch or idle) is left as it is.
pub(crate) fn run<T>(f: impl FnOnce() -> T) -> T {
    let switched = set_policy(libc::SCHED_OTHER, libc::SCHED_BATCH);
    let result = f();
    if switched {
        set_policy(libc::SCHED_BATCH, libc::SCHED_OTHER);
    }
    result
}

/// Switches the calling thread from policy `from` to `to`; false if it
/// was not at `from` or the kernel refused.
fn set_policy(from: libc::c_int, to: libc::c_int) -> bool {
    // SAFETY: sched_getscheduler(0) only queries the calling thread.
    if unsafe { libc::sched_getscheduler(0) } != from {
        return false;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a live local the
    // kernel only reads. Priority 0 is the only one valid for both
    // policies.
    unsafe { libc::sched_setscheduler(0, to, &param) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_at_batch_and_restores_the_policy() {
        std::thread::spawn(|| {
            // SAFETY: queries only the calling thread.
            let policy = || unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy(), libc::SCHED_OTHER);
            assert_eq!(run(policy), libc::SCHED_BATCH);
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
