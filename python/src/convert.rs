//! Values between JSON (configs) and Python objects.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use serde_json::Value;

/// A JSON value as the Python object `json.loads` would give (NaN-free by construction).
pub fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any(),
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                int.into_pyobject(py)?.into_any()
            } else if let Some(int) = number.as_u64() {
                int.into_pyobject(py)?.into_any()
            } else {
                number.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(text) => text.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let items = items
                .iter()
                .map(|item| value_to_py(py, item))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Object(map) => map_to_py(py, map)?.into_any(),
    })
}

/// A JSON object as a dict. Its keys are interned: parameter and metric names repeat in every
/// trial, and each dict would otherwise hold copies of its own.
pub fn map_to_py<'py>(py: Python<'py>, map: &serde_json::Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map {
        dict.set_item(PyString::intern(py, key), value_to_py(py, value)?)?;
    }
    Ok(dict)
}

/// Metrics as a dict of floats (NaN and infinities kept).
pub fn metrics_to_py<'py>(py: Python<'py>, metrics: &BTreeMap<String, f64>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in metrics {
        dict.set_item(PyString::intern(py, name), *value)?;
    }
    Ok(dict)
}

/// Parses JSON handed over by the Python side, naming what it was for when it is not JSON.
pub fn parse_json(what: &str, text: &str) -> PyResult<Value> {
    serde_json::from_str(text).map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("{what}: {e}")))
}
