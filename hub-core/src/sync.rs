//! Small helpers around std synchronisation.

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex, recovering from poisoning. Callers keep their critical sections to a few
/// plain assignments, so the data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
