//! Starting CPython and loading the application and hooks.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::config::{AppSpec, Config};

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

/// Starts the interpreter as the virtualenv's own `python` would start
/// (or the base installation's, without one), with Python's signal handlers
/// left uninstalled (Rust owns signals), then puts `--pythonpath` and the
/// app's directory first on `sys.path`.
pub fn initialize(config: &Config) -> Result<(), LoadError> {
    let virtualenv = config.virtualenv.as_deref();
    if let Some(venv) = virtualenv {
        check_virtualenv(venv, embedded_version())?;
    }
    start(virtualenv)?;
    Python::attach(|py| {
        let setup = || -> PyResult<()> {
            let path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
            // `--chdir` as written, not getcwd(): with `--chdir
            // /srv/app/current`, a symlink to the release, imports follow
            // the link, so a HUP after a deploy moved it loads the new
            // release (gunicorn does the same). getcwd() named the release
            // the master started in, for every worker it ever started.
            let app_dir = match &config.chdir {
                Some(dir) => dir.display().to_string(),
                None => std::env::current_dir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| ".".into()),
            };
            path.insert(0, app_dir)?;
            for (i, dir) in config.pythonpath.iter().enumerate() {
                path.insert(i, dir.display().to_string())?;
            }
            Ok(())
        };
        setup().map_err(|e| LoadError::Python(format!("cannot set up Python: {}", describe(py, &e).0)))
    })
}

/// `Py_InitializeFromConfig` with Python's own configuration (environment
/// variables such as PYTHONPATH and PYTHONUTF8 apply, as they do for
/// `python`), except that no signal handler is installed and the C locale is
/// not coerced (that would `setenv` in a process that has threads). With a
/// virtualenv, the program is its `bin/python`: CPython then reads its
/// `pyvenv.cfg` exactly as for that interpreter, so `sys.prefix` is the
/// virtualenv, `sys.executable` its python, and the base installation's
/// site-packages (and their `.pth` files) stay out unless the virtualenv
/// includes them (`include-system-site-packages`).
fn start(virtualenv: Option<&Path>) -> Result<(), LoadError> {
    use pyo3::ffi;
    use std::mem::MaybeUninit;
    use std::os::unix::ffi::OsStrExt;

    let program = virtualenv
        .map(|venv| {
            std::ffi::CString::new(venv.join("bin").join("python").as_os_str().as_bytes())
                .map_err(|_| LoadError::Python(format!("--virtualenv {}: a NUL byte in the path", venv.display())))
        })
        .transpose()?;
    // SAFETY: this runs once per process, before any other Python API call
    // (pyo3's Python::attach only ever sees an initialised interpreter). The
    // two config structs are initialised by CPython's own Init functions
    // before a field is read or written, and PyConfig_Clear frees what
    // PyConfig_SetBytesString allocated. On success the calling thread holds
    // the GIL, which PyEval_SaveThread releases for Python::attach to take.
    unsafe {
        let mut pre = MaybeUninit::<ffi::PyPreConfig>::uninit();
        ffi::PyPreConfig_InitPythonConfig(pre.as_mut_ptr());
        let pre = pre.as_mut_ptr();
        (*pre).parse_argv = 0;
        (*pre).coerce_c_locale = 0;
        (*pre).coerce_c_locale_warn = 0;
        status(ffi::Py_PreInitialize(pre))?;

        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config = config.as_mut_ptr();
        (*config).parse_argv = 0;
        (*config).install_signal_handlers = 0;
        (*config).configure_c_stdio = 0;
        let mut result = Ok(());
        if let Some(program) = &program {
            result = status(ffi::PyConfig_SetBytesString(
                config,
                &raw mut (*config).program_name,
                program.as_ptr(),
            ));
        }
        if result.is_ok() {
            result = status(ffi::Py_InitializeFromConfig(config));
        }
        ffi::PyConfig_Clear(config);
        result?;
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// A PyStatus from CPython's initialisation as a Result.
///
/// # Safety
/// `s` is a status returned by CPython, whose strings are static or null.
unsafe fn status(s: pyo3::ffi::PyStatus) -> Result<(), LoadError> {
    // SAFETY: the caller passes a status CPython returned.
    if unsafe { pyo3::ffi::PyStatus_Exception(s) } == 0 {
        return Ok(());
    }
    let text = |p: *const std::ffi::c_char| {
        // SAFETY: CPython's status strings are null or static C strings.
        (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let message = match (text(s.func), text(s.err_msg)) {
        (Some(func), Some(msg)) => format!("{func}: {msg}"),
        (None, Some(msg)) => msg,
        _ => format!("exit status {}", s.exitcode),
    };
    Err(LoadError::Python(format!("cannot start Python: {message}")))
}

/// The embedded interpreter's version as (major, minor), from the string
/// libpython was built with (readable before initialisation).
fn embedded_version() -> (u32, u32) {
    // SAFETY: Py_GetVersion returns a static NUL-terminated string and may
    // be called before Py_Initialize.
    let full = unsafe { std::ffi::CStr::from_ptr(pyo3::ffi::Py_GetVersion()) };
    parse_version(&full.to_string_lossy()).unwrap_or((0, 0))
}

/// "3.11.7 (main, …)" or "3.11.7.final.0" -> (3, 11).
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A virtualenv made by another Python version cannot be used: its
/// site-packages hold another version's compiled modules, and its
/// `pyvenv.cfg` points at another standard library.
fn check_virtualenv(venv: &Path, embedded: (u32, u32)) -> Result<(), LoadError> {
    let cfg = venv.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg).map_err(|e| {
        LoadError::Python(format!(
            "--virtualenv {}: cannot read {} ({e}); is it a virtual environment?",
            venv.display(),
            cfg.display()
        ))
    })?;
    let made_by = text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        matches!(key.trim(), "version" | "version_info")
            .then(|| parse_version(value))
            .flatten()
    });
    match made_by {
        Some(v) if v != embedded => Err(LoadError::Python(format!(
            "--virtualenv {}: made by Python {}.{}, but zibai-worker runs Python {}.{}; \
             make the virtualenv with python{}.{} (or build zibai against Python {}.{})",
            venv.display(),
            v.0,
            v.1,
            embedded.0,
            embedded.1,
            embedded.0,
            embedded.1,
            v.0,
            v.1
        ))),
        _ => Ok(()),
    }
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
    if let Err(e) = try_hook(hook, name) {
        log::error!("{e}");
    }
}

/// Calls a hook; its exception, with the traceback, is the `Err`.
pub fn try_hook(hook: &Option<Py<PyAny>>, name: &str) -> Result<(), String> {
    let Some(hook) = hook else { return Ok(()) };
    Python::attach(|py| {
        hook.call0(py)
            .map(drop)
            .map_err(|e| format!("{name} hook failed:\n{}", traceback(py, &e)))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_python_and_from_pyvenv_cfg() {
        assert_eq!(parse_version("3.11.7 (main, Nov 21 2026) [GCC 12.2.0]"), Some((3, 11)));
        assert_eq!(parse_version(" 3.12.1"), Some((3, 12)));
        // virtualenv writes version_info.
        assert_eq!(parse_version("3.9.18.final.0"), Some((3, 9)));
        assert_eq!(parse_version("three"), None);
    }

    #[test]
    fn a_virtualenv_of_the_same_minor_version_is_accepted() {
        let dir = std::env::temp_dir().join(format!("zibai-pyvenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |text: &str| {
            std::fs::write(dir.join("pyvenv.cfg"), text).unwrap();
            check_virtualenv(&dir, (3, 11)).map_err(|e| e.to_string())
        };
        assert!(check("home = /usr/bin\nversion = 3.11.2\n").is_ok());
        assert!(check("home = /usr/bin\nversion_info = 3.11.7.final.0\n").is_ok());
        // No version at all: CPython's own reading of the file decides.
        assert!(check("home = /usr/bin\n").is_ok());
        let err = check("home = /usr/bin\nversion = 3.12.0\n").unwrap_err();
        assert!(
            err.contains("made by Python 3.12, but zibai-worker runs Python 3.11"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
