//! The task backends' behaviour suite (`suite/`), run unchanged against every backend there is.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod postgres;
#[macro_use]
mod suite;

/// The in-process backend, its store a SQLite file.
mod in_process {
    behaviour_suite!(crate::suite::Fixture::in_process());
}

/// The in-process backend, its store a PostgreSQL database.
mod in_process_on_postgres {
    behaviour_suite!(crate::suite::Fixture::in_process_on_postgres());
}

/// The Redis backend, on a real `redis-server`.
#[cfg(feature = "redis")]
mod redis {
    behaviour_suite!(crate::suite::Fixture::redis());
}
