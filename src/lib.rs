//! stogie's engine: a WSGI server whose HTTP/1.1 handling is Rust. This file is the PyO3
//! module only. The request path reads net/ -> server/ (accept, worker) -> conn/ -> http/ ->
//! wsgi/; server/mod.rs draws it. Dependencies point one way: engine -> server -> wsgi ->
//! context -> config, counters, outbox; conn -> http, net. Static files (`--static`):
//! server -> static_files::serve -> wsgi::Finished, context; config holds a
//! static_files::Mounts, whose modules (mounts, cache, open) use only conn and http.

mod access_log;
mod config;
mod conn;
mod context;
mod counters;
mod engine;
mod http;
mod http2;
mod memory;
mod net;
mod outbox;
mod server;
mod static_files;
mod tls;
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
    m.add("LATENCY_BOUNDS_US", counters::LATENCY_BOUNDS_US.to_vec())?;
    m.add("STAT_KEYS", counters::Counters::stat_keys())?;
    Ok(())
}
