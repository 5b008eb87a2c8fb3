//! Starting CPython and loading the application and hooks.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::config::AppSpec;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot import module {module:?}: {error}\n{traceback}")]
    Import {
        module: String,
        error: String,
        traceback: String,
    },
    #[error("{what}: {detail}")]
    Lookup { what: String, detail: String },
    #[error("{0}")]
    Python(String),
}

/// Formats a Python exception as `Type: message`, plus its traceback.
pub fn describe(py: Python<'_>, err: &PyErr) -> (String, String) {
    let ty = err.get_type(py).name().map(|n| n.to_string()).unwrap_or_default();
    let msg = err.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    let short = if msg.is_empty() { ty } else { format!("{ty}: {msg}") };
    (short, traceback(py, err))
}

pub fn traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py)))?;
        let joined = PyString::new(py, "").call_method1("join", (lines,))?;
        joined.extract::<String>()
    })();
    formatted.unwrap_or_else(|_| err.to_string()).trim_end().to_string()
}

/// Starts the interpreter with Python's signal handlers left uninstalled
/// (Rust owns signals), puts `pythonpath` then the current directory first
/// on `sys.path`, and the virtualenv's site-packages on it.
pub fn initialize(virtualenv: Option<&Path>, pythonpath: &[std::path::PathBuf]) -> Result<(), LoadError> {
    Python::initialize();
    Python::attach(|py| {
        let setup = || -> PyResult<()> {
            let sys = py.import("sys")?;
            let path = sys.getattr("path")?.cast_into::<PyList>()?;
            let cwd = std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| ".".into());
            path.insert(0, cwd)?;
            for (i, dir) in pythonpath.iter().enumerate() {
                path.insert(i, dir.display().to_string())?;
            }
            if let Some(venv) = virtualenv {
                let site = py.import("site")?;
                let version = sys.getattr("version_info")?;
                let (major, minor): (u32, u32) = (version.get_item(0)?.extract()?, version.get_item(1)?.extract()?);
                let sp = venv.join(format!("lib/python{major}.{minor}/site-packages"));
                // addsitedir also processes .pth files (editable installs).
                site.call_method1("addsitedir", (sp.display().to_string(),))?;
                // Put the venv ahead of the system's packages, as activating it would.
                let sp_str = sp.display().to_string();
                let list: Vec<String> = path.extract()?;
                if let Some(i) = list.iter().position(|p| *p == sp_str) {
                    path.del_item(i)?;
                    path.insert(1, sp_str)?;
                }
                sys.setattr("prefix", venv.display().to_string())?;
            }
            Ok(())
        };
        setup().map_err(|e| LoadError::Python(format!("cannot set up Python: {}", describe(py, &e).0)))
    })
}

/// Imports `spec` and returns the object it names, applying `--call` or a
/// factory call with literal arguments.
pub fn load(py: Python<'_>, spec: &AppSpec, call: bool, what: &str) -> Result<Py<PyAny>, LoadError> {
    let module = py.import(spec.module.as_str()).map_err(|e| {
        let (error, traceback) = describe(py, &e);
        LoadError::Import {
            module: spec.module.clone(),
            error,
            traceback,
        }
    })?;
    let lookup_err = |detail: String| LoadError::Lookup {
        what: format!("{what} {:?}", spec_string(spec)),
        detail,
    };
    let mut obj = module.into_any();
    if spec.attrs.is_empty() {
        obj = ["application", "app"]
            .iter()
            .find_map(|name| obj.getattr(*name).ok())
            .ok_or_else(|| lookup_err(format!("module {:?} has neither `application` nor `app`", spec.module)))?;
    } else {
        for attr in &spec.attrs {
            obj = obj
                .getattr(attr.as_str())
                .map_err(|e| lookup_err(format!("no attribute {attr:?} ({})", describe(py, &e).0)))?;
        }
    }
    if let Some(args) = &spec.call_args {
        obj = call_with_literals(py, &obj, args).map_err(|e| {
            let (short, tb) = describe(py, &e);
            lookup_err(format!("the factory call failed: {short}\n{tb}"))
        })?;
    } else if call {
        obj = obj.call0().map_err(|e| {
            let (short, tb) = describe(py, &e);
            lookup_err(format!("calling it (--call) failed: {short}\n{tb}"))
        })?;
    }
    if !obj.is_callable() {
        return Err(lookup_err(format!(
            "is not callable (it is a {})",
            obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        )));
    }
    Ok(obj.unbind())
}

fn spec_string(spec: &AppSpec) -> String {
    let mut s = spec.module.clone();
    if !spec.attrs.is_empty() {
        s.push(':');
        s.push_str(&spec.attrs.join("."));
    }
    if let Some(a) = &spec.call_args {
        s.push('(');
        s.push_str(a);
        s.push(')');
    }
    s
}

/// Calls `f` with arguments parsed by `ast.literal_eval` rules: literals
/// only, never arbitrary code from the command line.
fn call_with_literals<'py>(py: Python<'py>, f: &Bound<'py, PyAny>, args: &str) -> PyResult<Bound<'py, PyAny>> {
    let ast = py.import("ast")?;
    let tree = ast.call_method1("parse", (format!("f({args})"), "<app>", "eval"))?;
    let call = tree.getattr("body")?;
    let literal_eval = ast.getattr("literal_eval")?;
    let mut pos = Vec::new();
    for node in call.getattr("args")?.try_iter()? {
        pos.push(literal_eval.call1((node?,))?);
    }
    let kwargs = PyDict::new(py);
    for kw in call.getattr("keywords")?.try_iter()? {
        let kw = kw?;
        let name = kw.getattr("arg")?;
        if name.is_none() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "**kwargs is not allowed in a factory call",
            ));
        }
        kwargs.set_item(name, literal_eval.call1((kw.getattr("value")?,))?)?;
    }
    f.call(PyTuple::new(py, pos)?, Some(&kwargs))
}

/// Runs a zero-argument hook, logging (not propagating) its failure.
pub fn run_hook(hook: &Option<Py<PyAny>>, name: &str) {
    let Some(hook) = hook else { return };
    Python::attach(|py| {
        if let Err(e) = hook.call0(py) {
            log::error!("{name} hook failed:\n{}", traceback(py, &e));
        }
    });
}

/// The app and Zibai's three hooks, as the configuration names them.
pub struct Loaded {
    pub app: Py<PyAny>,
    pub before_serve: Option<Py<PyAny>>,
    pub before_graceful_exit: Option<Py<PyAny>>,
    pub before_died: Option<Py<PyAny>>,
}

/// Imports the app and the hooks (what a worker does at boot, and what
/// `--check-config` checks).
pub fn load_all(py: Python<'_>, config: &crate::config::Config) -> Result<Loaded, LoadError> {
    let hook = |spec: &Option<AppSpec>, name: &str| spec.as_ref().map(|s| load(py, s, false, name)).transpose();
    Ok(Loaded {
        app: load(py, &config.app, config.call, "app")?,
        before_serve: hook(&config.before_serve, "--before-serve hook")?,
        before_graceful_exit: hook(&config.before_graceful_exit, "--before-graceful-exit hook")?,
        before_died: hook(&config.before_died, "--before-died hook")?,
    })
}
