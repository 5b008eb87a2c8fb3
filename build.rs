//! Embeds an rpath to the libpython the binary was built against, so the
//! binary starts on a fresh machine without LD_LIBRARY_PATH.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    let config = pyo3_build_config::get();
    if let Some(dir) = config.lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=ZIBAI_BUILD_PYTHON={exe}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
