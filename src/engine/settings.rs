//! The settings Python hands the engine, read by attribute name from the frozen dataclasses
//! of `stogie/_settings.py` (`EngineSettings`, `TlsSettings`, `AccessLogSettings`): one
//! named field on each side, no positional tuples or string keys.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::http::forwarded::Trusted;
use crate::tls::{ClientAuth, Tls, TlsOptions};

/// `_settings.EngineSettings`: the scalar settings, applied as a whole.
#[derive(FromPyObject)]
pub struct EngineSettings {
    timeout: f64,
    max_request_header_size: i64,
    max_request_body_size: i64,
    protocol: String,
    server_name: String,
    peercreds: bool,
    peercreds_resolve: bool,
    keep_alive_conn_limit: Option<usize>,
    accepted_queue_size: i64,
    accepted_queue_timeout: f64,
    proxy_protocol: bool,
    thread_idle_timeout: f64,
    forwarded_allow_ips: Vec<String>,
    buffer_request_body: bool,
    request_body_memory_limit: u64,
    request_body_spool_limit: u64,
    request_body_min_rate: u64,
    http2: bool,
}

impl EngineSettings {
    pub fn apply(self, config: &Config) -> PyResult<()> {
        let trusted = Trusted::parse(&self.forwarded_allow_ips)
            .map_err(|e| PyValueError::new_err(format!("forwarded_allow_ips: {e}")))?;
        config.set_trusted(trusted);
        config.set_timeout(self.timeout);
        config.set_max_head(self.max_request_header_size.max(0) as usize);
        config.set_max_body(self.max_request_body_size.max(0) as u64);
        config.set_protocol(&self.protocol);
        config.set_server_name(&self.server_name);
        config.set_peercreds(self.peercreds, self.peercreds_resolve);
        config.set_keep_alive_limit(self.keep_alive_conn_limit);
        config.set_accepted_queue(self.accepted_queue_size, self.accepted_queue_timeout);
        config.set_proxy_protocol(self.proxy_protocol);
        config.set_thread_idle_timeout(self.thread_idle_timeout);
        config.set_intake(
            self.buffer_request_body,
            usize::try_from(self.request_body_memory_limit).unwrap_or(usize::MAX),
            self.request_body_spool_limit,
            self.request_body_min_rate,
        );
        config.set_http2(self.http2);
        Ok(())
    }
}

/// `_settings.TlsSettings`: what the TLS configuration is built from.
#[derive(FromPyObject)]
pub struct TlsSettings {
    certificate: String,
    private_key: String,
    certificate_chain: Option<String>,
    private_key_password: Option<Vec<u8>>,
    client_ca: Option<String>,
    /// "none", "optional" or "required".
    client_auth: String,
    /// "1.2", "1.3" or None (rustls' default).
    minimum_version: Option<String>,
}

impl TlsSettings {
    pub fn build(self) -> PyResult<Tls> {
        let client_auth = match self.client_auth.as_str() {
            "none" => ClientAuth::None,
            "optional" => ClientAuth::Optional,
            "required" => ClientAuth::Required,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown client_auth {other:?}: use 'none', 'optional' or 'required'"
                )))
            }
        };
        let options = TlsOptions {
            certificate: self.certificate,
            private_key: self.private_key,
            chain: self.certificate_chain,
            password: self.private_key_password,
            client_ca: self.client_ca,
            client_auth,
            min_version: self.minimum_version,
        };
        Tls::new(&options).map_err(PyValueError::new_err)
    }
}

/// `_settings.AccessLogSettings`.
#[derive(FromPyObject)]
pub struct AccessLogSettings {
    path: Option<String>,
    format: Option<String>,
}

impl AccessLogSettings {
    pub fn open(self) -> PyResult<Option<AccessLog>> {
        self.path
            .map(|path| AccessLog::open(Some(&path), self.format.as_deref()))
            .transpose()
            .map_err(PyValueError::new_err)
    }
}
