//! TLS with rustls (ring provider): building the server configuration from PEM files, and the
//! `SSL_*` environ keys of a connection. Record I/O lives in conn.rs.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Whether clients present certificates (ssl.CERT_NONE / CERT_OPTIONAL / CERT_REQUIRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

pub struct TlsOptions {
    pub certificate: String,
    pub private_key: String,
    pub chain: Option<String>,
    pub password: Option<Vec<u8>>,
    pub client_ca: Option<String>,
    pub client_auth: ClientAuth,
    /// "1.2" (default) or "1.3".
    pub min_version: Option<String>,
}

/// A server configuration plus the `SSL_SERVER_*` environ entries of its certificate.
pub struct Tls {
    /// Negotiates ALPN (`http/1.1`, `http/1.0`).
    pub config: Arc<ServerConfig>,
    /// Negotiates ALPN with `h2` first (HTTP/2 on).
    pub config_h2: Arc<ServerConfig>,
    /// The same without ALPN, for clients that offer no protocol stogie knows: rustls would
    /// otherwise end their handshake with `no_application_protocol`; they get HTTP/1.1 rules.
    pub config_without_alpn: Arc<ServerConfig>,
    pub server_env: Vec<(String, String)>,
}

/// The HTTP/1 protocols stogie speaks, as ALPN names, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"http/1.1", b"http/1.0"];
/// HTTP/2's ALPN name, offered before the others when HTTP/2 is on.
pub const ALPN_H2: &[u8] = b"h2";

fn read(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {path:?}: {e}"))
}

fn load_certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the {what} {path:?} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("the {what} {path:?} holds no PEM certificate"));
    }
    Ok(certs)
}

fn load_key(path: &str, password: Option<&[u8]>) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, "private key")?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let password = password.ok_or_else(|| {
            format!("the private key {path:?} is encrypted: give private_key_password")
        })?;
        let (_, doc) = pkcs8::SecretDocument::from_pem(&text)
            .map_err(|e| format!("the private key {path:?} is not valid PEM: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("the private key {path:?} is not valid PKCS#8: {e}"))?;
        let plain = info
            .decrypt(password)
            .map_err(|_| format!("wrong password for the private key {path:?}"))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "the private key {path:?} uses legacy PEM encryption: convert it to PKCS#8 \
             (openssl pkcs8 -topk8 -in old.pem -out new.pem)"
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("no usable private key in {path:?}: {e}"))
}

impl Tls {
    pub fn new(opts: &TlsOptions) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut certs = load_certs(&opts.certificate, "certificate")?;
        let chain = match &opts.chain {
            Some(path) => load_certs(path, "certificate chain")?,
            None => Vec::new(),
        };
        certs.extend(chain.iter().cloned());
        let key = load_key(&opts.private_key, opts.password.as_deref())?;
        let versions: &[&rustls::SupportedProtocolVersion] = match opts.min_version.as_deref() {
            None | Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Some("1.3") => &[&rustls::version::TLS13],
            Some(other) => return Err(format!("unsupported minimum TLS version {other:?}")),
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let builder = if opts.client_auth == ClientAuth::None {
            builder.with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            let cas = match &opts.client_ca {
                Some(path) => load_certs(path, "client CA bundle")?,
                None if !chain.is_empty() => chain,
                None => return Err("client certificates need a CA bundle (client_ca)".into()),
            };
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("unusable client CA certificate: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if opts.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client certificate verifier: {e}"))?,
            )
        };
        let server_env = cert_env("SSL_SERVER", &certs[0]);
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("the private key does not match the certificate: {e}"))?;
        let config_without_alpn = Arc::new(config.clone());
        // HTTP/1.0 clients (`curl -0`) offer only "http/1.0": it is advertised too.
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let mut config_h2 = config.clone();
        config_h2.alpn_protocols.insert(0, ALPN_H2.to_vec());
        Ok(Tls {
            config: Arc::new(config),
            config_h2: Arc::new(config_h2),
            config_without_alpn,
            server_env,
        })
    }

    /// The configuration for a client that offered these ALPN protocols (None: no ALPN);
    /// `http2`: HTTP/2 is on, so `h2` is chosen when offered.
    pub fn config_for<'a>(
        &self,
        offered: Option<impl Iterator<Item = &'a [u8]>>,
        http2: bool,
    ) -> Arc<ServerConfig> {
        let with_alpn = if http2 { &self.config_h2 } else { &self.config };
        let Some(offered) = offered else {
            return Arc::clone(with_alpn);
        };
        let known = |protocol: &[u8]| ALPN.contains(&protocol) || (http2 && protocol == ALPN_H2);
        if offered.into_iter().any(known) {
            Arc::clone(with_alpn)
        } else {
            Arc::clone(&self.config_without_alpn)
        }
    }
}

/// The `SSL_*` entries for an established connection (cheroot's builtin adapter's keys).
pub fn connection_env(
    conn: &ServerConnection,
    server_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = vec![("HTTPS".to_string(), "on".to_string())];
    let mut put = |k: &str, v: String| env.push((k.to_string(), v));
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    put("SSL_PROTOCOL", protocol.into());
    if let Some(suite) = conn.negotiated_cipher_suite() {
        let name = format!("{:?}", suite.suite());
        let bits = if name.contains("128") { 128 } else { 256 };
        put("SSL_CIPHER", name);
        put("SSL_CIPHER_EXPORT", String::new());
        put("SSL_CIPHER_USEKEYSIZE", bits.to_string());
        put("SSL_CIPHER_ALGKEYSIZE", bits.to_string());
    }
    put(
        "SSL_VERSION_INTERFACE",
        format!("stogie/{}", env!("CARGO_PKG_VERSION")),
    );
    put("SSL_VERSION_LIBRARY", "rustls/0.23".into());
    if let Some(sni) = conn.server_name() {
        put("SSL_TLS_SNI", sni.to_string());
    }
    match conn.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => {
            put("SSL_CLIENT_VERIFY", "SUCCESS".into());
            env.extend(cert_env("SSL_CLIENT", cert));
        }
        None => put("SSL_CLIENT_VERIFY", "NONE".into()),
    }
    env.extend(server_env.iter().cloned());
    env
}

/// `<prefix>_M_VERSION`, `_M_SERIAL`, `_V_START/_END/_REMAIN`, `_S_DN`/`_I_DN` and their
/// parts, `_SAN_DNS_<i>`/`_SAN_Email_<i>`, and `<prefix>_CERT` (PEM).
fn cert_env(prefix: &str, der: &CertificateDer<'_>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return env;
    };
    let mut put = |k: String, v: String| env.push((k, v));
    put(
        format!("{prefix}_M_VERSION"),
        (cert.version().0 + 1).to_string(),
    );
    put(
        format!("{prefix}_M_SERIAL"),
        cert.raw_serial_as_string().replace(':', "").to_uppercase(),
    );
    let validity = cert.validity();
    put(
        format!("{prefix}_V_START"),
        format_time(validity.not_before.timestamp()),
    );
    put(
        format!("{prefix}_V_END"),
        format_time(validity.not_after.timestamp()),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    put(
        format!("{prefix}_V_REMAIN"),
        ((validity.not_after.timestamp() - now).max(0) / 86_400).to_string(),
    );
    for (part, name) in [("S", cert.subject()), ("I", cert.issuer())] {
        let mut dn = String::new();
        let mut seen: Vec<String> = Vec::new();
        for attr in name.iter_attributes() {
            let code = ldap_code(attr.attr_type().to_id_string().as_str());
            let value = attr.as_str().unwrap_or_default().to_string();
            dn.push_str(&format!("/{code}={value}"));
            let count = seen.iter().filter(|c| **c == code).count();
            let key = if count == 0 {
                format!("{prefix}_{part}_DN_{code}")
            } else {
                format!("{prefix}_{part}_DN_{code}_{count}")
            };
            seen.push(code);
            put(key, value);
        }
        put(format!("{prefix}_{part}_DN"), dn);
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let (mut dns, mut email) = (0, 0);
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    put(format!("{prefix}_SAN_DNS_{dns}"), d.to_string());
                    dns += 1;
                }
                x509_parser::extensions::GeneralName::RFC822Name(e) => {
                    put(format!("{prefix}_SAN_Email_{email}"), e.to_string());
                    email += 1;
                }
                _ => {}
            }
        }
    }
    put(format!("{prefix}_CERT"), pem_encode(der.as_ref()));
    env
}

fn ldap_code(oid: &str) -> String {
    match oid {
        "2.5.4.6" => "C",
        "2.5.4.8" => "ST",
        "2.5.4.7" => "L",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.3" => "CN",
        "2.5.4.12" => "T",
        "2.5.4.43" => "I",
        "2.5.4.42" => "G",
        "2.5.4.4" => "S",
        "2.5.4.46" => "D",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "Email",
        other => other,
    }
    .to_string()
}

/// OpenSSL's `notBefore` style: `Jun  1 12:00:00 2026 GMT`.
fn format_time(ts: i64) -> String {
    let date = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(ts.max(0) as u64),
    );
    // "Mon, 01 Jun 2026 12:00:00 GMT" -> "Jun  1 12:00:00 2026 GMT"
    let parts: Vec<&str> = date.split(' ').collect();
    match parts.as_slice() {
        [_, day, month, year, time, _] => {
            format!(
                "{month} {:>2} {time} {year} GMT",
                day.trim_start_matches('0')
            )
        }
        _ => date,
    }
}

fn pem_encode(der: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_pem() {
        assert_eq!(format_time(0), "Jan  1 00:00:00 1970 GMT");
        assert_eq!(format_time(1_780_315_200), "Jun  1 12:00:00 2026 GMT");
        let pem = pem_encode(b"hello");
        assert!(pem.contains("\naGVsbG8=\n"));
    }

    #[test]
    fn missing_files_are_clear_errors() {
        let opts = TlsOptions {
            certificate: "/nonexistent/cert.pem".into(),
            private_key: "/nonexistent/key.pem".into(),
            chain: None,
            password: None,
            client_ca: None,
            client_auth: ClientAuth::None,
            min_version: None,
        };
        let err = Tls::new(&opts).err().unwrap_or_default();
        assert!(
            err.starts_with("cannot read the certificate \"/nonexistent/cert.pem\""),
            "{err}"
        );
    }
}
