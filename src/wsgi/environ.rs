//! The WSGI environ, built natively: a copy of the server's constant entries plus the request's
//! own, with interned keys for the CGI names and the most common headers.

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

use crate::conn::Conn;
use crate::http::forwarded::{self, Trusted};
use crate::http::request::RequestHead;
use crate::net::listener::{Peer, PeerCreds};

/// Header names whose environ keys are created once: (lower-case name, key).
const COMMON_HEADERS: &[(&str, &str)] = &[
    ("host", "HTTP_HOST"),
    ("user-agent", "HTTP_USER_AGENT"),
    ("accept", "HTTP_ACCEPT"),
    ("accept-encoding", "HTTP_ACCEPT_ENCODING"),
    ("accept-language", "HTTP_ACCEPT_LANGUAGE"),
    ("connection", "HTTP_CONNECTION"),
    ("cookie", "HTTP_COOKIE"),
    ("referer", "HTTP_REFERER"),
    ("origin", "HTTP_ORIGIN"),
    ("authorization", "HTTP_AUTHORIZATION"),
    ("cache-control", "HTTP_CACHE_CONTROL"),
    ("pragma", "HTTP_PRAGMA"),
    ("if-none-match", "HTTP_IF_NONE_MATCH"),
    ("if-modified-since", "HTTP_IF_MODIFIED_SINCE"),
    (
        "upgrade-insecure-requests",
        "HTTP_UPGRADE_INSECURE_REQUESTS",
    ),
    ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
    ("x-forwarded-proto", "HTTP_X_FORWARDED_PROTO"),
    ("x-forwarded-host", "HTTP_X_FORWARDED_HOST"),
    ("x-real-ip", "HTTP_X_REAL_IP"),
    ("x-requested-with", "HTTP_X_REQUESTED_WITH"),
    ("transfer-encoding", "HTTP_TRANSFER_ENCODING"),
    ("expect", "HTTP_EXPECT"),
    ("keep-alive", "HTTP_KEEP_ALIVE"),
    ("sec-fetch-mode", "HTTP_SEC_FETCH_MODE"),
    ("sec-fetch-site", "HTTP_SEC_FETCH_SITE"),
    ("sec-fetch-dest", "HTTP_SEC_FETCH_DEST"),
];

static COMMON_KEYS: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

fn common_key<'py>(py: Python<'py>, name: &[u8]) -> Option<Bound<'py, PyString>> {
    let index = COMMON_HEADERS
        .iter()
        .position(|(n, _)| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))?;
    let keys = COMMON_KEYS.get_or_init(py, || {
        COMMON_HEADERS
            .iter()
            .map(|(_, key)| PyString::intern(py, key).unbind())
            .collect()
    });
    Some(keys[index].bind(py).clone())
}

/// `HTTP_` + the name upper-cased with `-` as `_`.
fn header_key<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    if let Some(key) = common_key(py, name) {
        return key;
    }
    let mut key = Vec::with_capacity(name.len() + 5);
    key.extend_from_slice(b"HTTP_");
    key.extend(name.iter().map(|&b| {
        if b == b'-' {
            b'_'
        } else {
            b.to_ascii_uppercase()
        }
    }));
    // Header names are tokens, hence ASCII.
    PyString::new(py, std::str::from_utf8(&key).unwrap_or("HTTP_"))
}

/// Bytes as a str, one code point per byte (PEP 3333 "bytes as str").
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8.
        return Ok(PyString::new(
            py,
            std::str::from_utf8(bytes).unwrap_or_default(),
        ));
    }
    // SAFETY: the pointer and length describe `bytes`; the result is an owned reference or NULL
    // with an exception set.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr() as *const std::os::raw::c_char,
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Percent-decodes a path, except that an encoded slash stays `%2F` (so it cannot be confused
/// with a path separator), as cheroot does.
pub fn decode_path(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() && is_hex(raw[i + 1]) && is_hex(raw[i + 2]) {
            let byte = hex_val(raw[i + 1]) * 16 + hex_val(raw[i + 2]);
            if byte == b'/' {
                out.extend_from_slice(b"%2F");
            } else {
                out.push(byte);
            }
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
}

/// PATH_INFO as the gateway presents it.
fn path_info<'py>(
    py: Python<'py>,
    head: &RequestHead,
    buf: &[u8],
    unicode: bool,
) -> PyResult<(Bound<'py, PyString>, bool)> {
    let raw = head.path.get(buf);
    let mut decoded = Vec::with_capacity(raw.len() + 1);
    if !raw.starts_with(b"/") {
        decoded.push(b'/');
    }
    if head.method_is(buf, b"OPTIONS") || memchr::memchr(b'%', raw).is_none() {
        decoded.extend_from_slice(raw);
    } else {
        decode_path(raw, &mut decoded);
    }
    if unicode {
        if let Ok(text) = std::str::from_utf8(&decoded) {
            return Ok((PyString::new(py, text), true));
        }
        return Ok((latin1(py, &decoded)?, false));
    }
    Ok((latin1(py, &decoded)?, true))
}

fn method_str<'py>(py: Python<'py>, method: &[u8]) -> PyResult<Bound<'py, PyString>> {
    Ok(match method {
        b"GET" => intern!(py, "GET").clone(),
        b"POST" => intern!(py, "POST").clone(),
        b"HEAD" => intern!(py, "HEAD").clone(),
        b"PUT" => intern!(py, "PUT").clone(),
        b"DELETE" => intern!(py, "DELETE").clone(),
        b"OPTIONS" => intern!(py, "OPTIONS").clone(),
        b"PATCH" => intern!(py, "PATCH").clone(),
        other => latin1(py, other)?,
    })
}

fn protocol_str<'py>(py: Python<'py>, protocol: &[u8]) -> PyResult<Bound<'py, PyString>> {
    Ok(match protocol {
        b"HTTP/1.1" => intern!(py, "HTTP/1.1").clone(),
        b"HTTP/1.0" => intern!(py, "HTTP/1.0").clone(),
        other => latin1(py, other)?,
    })
}

/// Where a request came from: the bytes its head was parsed from, and its client.
pub struct Origin<'a> {
    pub buf: &'a [u8],
    pub peer: &'a Peer,
    pub tls_env: Option<&'a [(String, String)]>,
}

impl<'a> Origin<'a> {
    pub fn of(conn: &'a Conn) -> Origin<'a> {
        Origin {
            buf: conn.head_bytes(),
            peer: &conn.peer,
            tls_env: conn.tls_env(),
        }
    }
}

/// Room for the entries every request adds to the constant ones (the CGI names, `wsgi.input`
/// and a browser's dozen or so headers), so that filling a copy never grows its table.
const REQUEST_ENTRIES: usize = 32;

/// The constant entries as the template `build` copies for each request: a copy keeps the
/// template's table size, so a table made for the request's entries too is never resized
/// (a resize is a new table, a rehash of every key and a free of the old one).
pub fn template<'py>(base: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let env = presized(base.py(), base.len() + REQUEST_ENTRIES)?;
    for (key, value) in base.iter() {
        env.set_item(key, value)?;
    }
    Ok(env)
}

#[cfg(not(feature = "abi3"))]
fn presized(py: Python<'_>, entries: usize) -> PyResult<Bound<'_, PyDict>> {
    extern "C" {
        // In CPython's public headers (cpython/dictobject.h) 3.9-3.14 under a private name;
        // pyo3-ffi leaves it out.
        fn _PyDict_NewPresized(minused: ffi::Py_ssize_t) -> *mut ffi::PyObject;
    }
    let entries = ffi::Py_ssize_t::try_from(entries).unwrap_or(ffi::Py_ssize_t::MAX);
    // SAFETY: called with the GIL held; returns a new reference or NULL with an exception.
    unsafe {
        Ok(Bound::from_owned_ptr_or_err(py, _PyDict_NewPresized(entries))?.cast_into_unchecked())
    }
}

/// The stable ABI has no way to size a dict: the template is a plain copy.
#[cfg(feature = "abi3")]
fn presized(py: Python<'_>, _entries: usize) -> PyResult<Bound<'_, PyDict>> {
    Ok(PyDict::new(py))
}

/// Builds the environ for one request from `base`, a `template`.
pub fn build<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyDict>,
    unicode_paths: bool,
    origin: &Origin<'_>,
    head: &RequestHead,
    input: Bound<'py, PyAny>,
    trusted: Option<&Trusted>,
) -> PyResult<Bound<'py, PyDict>> {
    let buf = origin.buf;
    let env = base.copy()?;
    env.set_item(
        intern!(py, "REQUEST_METHOD"),
        method_str(py, head.method.get(buf))?,
    )?;
    let (path, path_ok) = path_info(py, head, buf, unicode_paths)?;
    env.set_item(intern!(py, "PATH_INFO"), path)?;
    if unicode_paths && !path_ok {
        env.set_item(intern!(py, "wsgi.url_encoding"), intern!(py, "ISO-8859-1"))?;
    }
    let query = if head.query.is_empty() {
        intern!(py, "").clone()
    } else {
        latin1(py, head.query.get(buf))?
    };
    env.set_item(intern!(py, "QUERY_STRING"), query)?;
    env.set_item(
        intern!(py, "REQUEST_URI"),
        latin1(py, head.target.get(buf))?,
    )?;
    env.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        protocol_str(py, head.protocol.get(buf))?,
    )?;
    env.set_item(
        intern!(py, "REMOTE_ADDR"),
        PyString::new(py, &origin.peer.addr),
    )?;
    env.set_item(
        intern!(py, "REMOTE_PORT"),
        PyString::new(py, &origin.peer.port),
    )?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    if let Some(entries) = origin.tls_env {
        for (key, value) in entries {
            env.set_item(key, value)?;
        }
    }
    if let Some(creds) = &origin.peer.creds {
        add_peer_creds(py, &env, creds)?;
    }
    add_headers(py, &env, head, buf)?;
    // After the headers: a trusted proxy's X-Forwarded-Host replaces HTTP_HOST.
    if let Some(trusted) = trusted {
        apply_forwarded(py, &env, trusted, origin, head)?;
    }
    Ok(env)
}

/// With a trusted proxy in front: the client's address, scheme and host from its headers.
fn apply_forwarded(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    trusted: &Trusted,
    origin: &Origin<'_>,
    head: &RequestHead,
) -> PyResult<()> {
    if !trusted.trusts_peer(&origin.peer.addr) {
        return Ok(());
    }
    let buf = origin.buf;
    let fields = head
        .fields
        .iter()
        .map(|f| (f.name.get(buf), f.value.get(buf)));
    let forwarded = forwarded::resolve(trusted, fields);
    if let Some(client) = forwarded.client {
        env.set_item(intern!(py, "REMOTE_ADDR"), client.to_string())?;
        env.set_item(intern!(py, "REMOTE_PORT"), intern!(py, ""))?;
    }
    if let Some(proto) = forwarded.proto {
        env.set_item(intern!(py, "wsgi.url_scheme"), proto)?;
    }
    if let Some(host) = forwarded.host {
        env.set_item(intern!(py, "HTTP_HOST"), host)?;
    }
    Ok(())
}

/// cheroot's X_REMOTE_* keys (and REMOTE_USER when names are resolved).
fn add_peer_creds(py: Python<'_>, env: &Bound<'_, PyDict>, creds: &PeerCreds) -> PyResult<()> {
    env.set_item(intern!(py, "X_REMOTE_PID"), creds.pid.to_string())?;
    env.set_item(intern!(py, "X_REMOTE_UID"), creds.uid.to_string())?;
    env.set_item(intern!(py, "X_REMOTE_GID"), creds.gid.to_string())?;
    if let Some(user) = &creds.user {
        env.set_item(intern!(py, "X_REMOTE_USER"), user)?;
        env.set_item(intern!(py, "REMOTE_USER"), user)?;
    }
    if let Some(group) = &creds.group {
        env.set_item(intern!(py, "X_REMOTE_GROUP"), group)?;
    }
    Ok(())
}

fn add_headers(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    head: &RequestHead,
    buf: &[u8],
) -> PyResult<()> {
    for (i, field) in head.fields.iter().enumerate() {
        let name = field.name.get(buf);
        // `X_Forwarded_For` would collide with `X-Forwarded-For`: names with `_` are dropped.
        if memchr::memchr(b'_', name).is_some() {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // Validated and reconciled by the parser: the canonical decimal form.
            if let Some(n) = head.content_length {
                let mut digits = itoa::Buffer::new();
                env.set_item(intern!(py, "CONTENT_LENGTH"), digits.format(n))?;
            }
            continue;
        }
        let key = if name.eq_ignore_ascii_case(b"content-type") {
            intern!(py, "CONTENT_TYPE").clone()
        } else {
            header_key(py, name)
        };
        let value = latin1(py, field.value.get(buf))?;
        let repeated = head.fields[..i]
            .iter()
            .any(|f| f.name.get(buf).eq_ignore_ascii_case(name));
        if repeated {
            if let Some(prev) = env.get_item(&key)? {
                let sep = if name.eq_ignore_ascii_case(b"cookie") {
                    "; "
                } else {
                    ", "
                };
                let joined = format!("{}{}{}", prev.str()?.to_cow()?, sep, value.to_cow()?);
                env.set_item(key, joined)?;
                continue;
            }
        }
        env.set_item(key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::decode_path;

    fn dec(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        decode_path(s.as_bytes(), &mut out);
        out
    }

    #[test]
    fn keeps_encoded_slash() {
        assert_eq!(dec("/a%2fb%2Fc"), b"/a%2Fb%2Fc");
        assert_eq!(dec("/a%20b"), b"/a b");
        assert_eq!(dec("/%E4%BD%A0"), "/你".as_bytes());
        assert_eq!(dec("/%zz%4"), b"/%zz%4");
        assert_eq!(dec("/%00"), b"/\0");
        assert_eq!(dec("/100%"), b"/100%");
    }
}
