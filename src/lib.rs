//! stogie's engine: a WSGI server whose HTTP/1.1 handling is Rust. This file is the PyO3
//! module only; the request path reads net/ -> workers.rs -> conn.rs -> http/ -> wsgi/.

mod access_log;
mod config;
mod conn;
mod engine;
mod http;
mod net;
mod outbox;
mod tls;
mod workers;
mod wsgi;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::Engine>()?;
    m.add_function(wrap_pyfunction!(engine::check_tls, m)?)?;
    m.add_class::<wsgi::exchange::Exchange>()?;
    m.add_class::<wsgi::input::Input>()?;
    m.add_class::<wsgi::file_wrapper::FileWrapper>()?;
    m.add(
        "MaxSizeExceeded",
        m.py().get_type::<wsgi::input::MaxSizeExceeded>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("RUSTLS_VERSION", env!("STOGIE_RUSTLS_VERSION"))?; // from Cargo.lock (build.rs)
    m.add("ABI3", cfg!(feature = "abi3"))?;
    m.add("LATENCY_BOUNDS_US", workers::LATENCY_BOUNDS_US.to_vec())?;
    Ok(())
}
