//! Python bindings of CommandCenter Hub: the compiled half of the `commandcenter_hub` package.
//!
//! This crate only translates between Python and [`hub_core`]; every rule lives in the core.

use pyo3::prelude::*;

/// The slug the hub derives from a project name (`"My App"` → `"my-app"`).
#[pyfunction]
fn slugify(name: &str) -> String {
    hub_core::slugify(name)
}

/// The compiled module `commandcenter_hub._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(slugify, m)?)?;
    Ok(())
}
