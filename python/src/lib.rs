//! The native half of the `rung` Python package (`rung._rung`).
//!
//! The Python side builds a spec (JSON, the same schema as spec files), and this module runs it
//! with the Rust engine: the controller, store and searchers/schedulers are the crates', and
//! trials are handed to Python one by one ([`sweep::Sweep::next_trial`]) to run in threads or
//! worker processes. Everything that waits (for a trial, a decision, the end of the sweep)
//! releases the GIL.

mod client;
mod convert;
mod results;
mod standalone;
mod sweep;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// Locks `mutex`, carrying on after a panic elsewhere (the data stays usable: every critical
/// section here leaves it consistent).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `error` is the user's bad space, setting or spec (`ValueError`) rather than a
/// problem of the store or the machine (`RuntimeError`).
pub(crate) fn is_value_error(error: &tune_sweep::Error) -> bool {
    match error {
        tune_sweep::Error::Spec { .. } | tune_sweep::Error::Usage(_) => true,
        other => other.as_core().is_some_and(core_is_value_error),
    }
}

fn core_is_value_error(error: &tune_core::Error) -> bool {
    matches!(
        error,
        tune_core::Error::InvalidParameter { .. } | tune_core::Error::InvalidSetting { .. }
    )
}

/// A Rust error as the Python exception a user expects: `ValueError` for a bad space, setting
/// or spec, `RuntimeError` for everything else (the store, the machine).
pub(crate) fn to_py_err(error: tune_sweep::Error) -> PyErr {
    if is_value_error(&error) {
        PyValueError::new_err(error.to_string())
    } else {
        PyRuntimeError::new_err(error.to_string())
    }
}

/// [`to_py_err`] for an engine error (a space, a setting, the store).
pub(crate) fn core_to_py_err(error: impl Into<tune_runtime::Error>) -> PyErr {
    match error.into() {
        tune_runtime::Error::Core(core) if core_is_value_error(&core) => PyValueError::new_err(core.to_string()),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

#[pymodule]
fn _rung(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<client::NativeClient>()?;
    module.add_class::<sweep::Sweep>()?;
    module.add_class::<sweep::Trial>()?;
    module.add_class::<standalone::NativeScheduler>()?;
    module.add_class::<standalone::NativeSearcher>()?;
    module.add_function(wrap_pyfunction!(sweep::check_spec, module)?)?;
    module.add_function(wrap_pyfunction!(results::load_results, module)?)?;
    module.add_function(wrap_pyfunction!(results::load_reports, module)?)?;
    module.add_function(wrap_pyfunction!(results::experiments, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
