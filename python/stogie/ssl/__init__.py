"""TLS adapters in cheroot's shape: `server.ssl_adapter = BuiltinSSLAdapter(cert, key)`.

The handshake and all record I/O run in the Rust engine (rustls), on each connection's own
state machine, so a slow or silent TLS client never holds up other connections.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any, Callable, Union

from stogie import _core
from stogie._settings import TlsSettings

Password = Union[str, bytes, Callable[[], Union[str, bytes]], None]

_CLIENT_AUTH = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional",
                ssl.CERT_REQUIRED: "required"}
_VERSIONS = {"1.2": "1.2", "1.3": "1.3", ssl.TLSVersion.TLSv1_2: "1.2",
             ssl.TLSVersion.TLSv1_3: "1.3", ssl.TLSVersion.MINIMUM_SUPPORTED: "1.2"}


class Adapter:
    """Base class of TLS adapters (cheroot.ssl.Adapter's constructor)."""

    def __init__(
        self,
        certificate: str,
        private_key: str,
        certificate_chain: str | None = None,
        ciphers: str | None = None,
        *,
        private_key_password: Password = None,
    ) -> None:
        self.certificate = certificate
        self.private_key = private_key
        self.certificate_chain = certificate_chain
        self.ciphers = ciphers
        self.private_key_password = private_key_password
        self.context: Any = None

    def bind(self, sock: Any) -> Any:
        """Deprecated in cheroot; kept as a no-op."""
        return sock


class BuiltinSSLAdapter(Adapter):
    """TLS 1.2 and 1.3 with rustls. PEM certificate, chain and key (PKCS#8 may be encrypted).

    `verify_mode` (ssl.CERT_NONE/CERT_OPTIONAL/CERT_REQUIRED) with `client_ca` (a PEM bundle)
    asks clients for certificates; `minimum_version` is "1.2" (default) or "1.3".
    """

    def __init__(
        self,
        certificate: str,
        private_key: str,
        certificate_chain: str | None = None,
        ciphers: str | None = None,
        *,
        private_key_password: Password = None,
        verify_mode: ssl.VerifyMode = ssl.CERT_NONE,
        client_ca: str | None = None,
        minimum_version: Any = "1.2",
    ) -> None:
        super().__init__(certificate, private_key, certificate_chain, ciphers,
                         private_key_password=private_key_password)
        if verify_mode not in _CLIENT_AUTH:
            raise ValueError(f"verify_mode must be ssl.CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED,"
                             f" not {verify_mode!r}")
        if minimum_version not in _VERSIONS:
            raise ValueError(f"minimum_version must be '1.2' or '1.3', not {minimum_version!r}")
        if ciphers:
            logging.getLogger("stogie").warning(
                "ciphers=%r ignored: rustls negotiates from its own safe cipher suites", ciphers)
        self.verify_mode = verify_mode
        self.client_ca = client_ca
        self.minimum_version = minimum_version
        _core.check_tls(self.engine_settings())

    def engine_settings(self) -> TlsSettings:
        """The settings the engine's TLS configuration is built from."""
        for what, path in (("certificate", self.certificate), ("private key", self.private_key),
                           ("certificate chain", self.certificate_chain),
                           ("client CA bundle", self.client_ca)):
            if path is not None and not os.path.exists(path):
                raise FileNotFoundError(f"TLS {what} file not found: {path!r}")
        return TlsSettings(
            certificate=os.fspath(self.certificate),
            private_key=os.fspath(self.private_key),
            certificate_chain=None if self.certificate_chain is None
            else os.fspath(self.certificate_chain),
            private_key_password=_password_bytes(self.private_key_password),
            client_ca=None if self.client_ca is None else os.fspath(self.client_ca),
            client_auth=_CLIENT_AUTH[self.verify_mode],
            minimum_version=_VERSIONS[self.minimum_version],
        )


def _password_bytes(password: Password) -> bytes | None:
    if callable(password):
        password = password()
    if password is None or isinstance(password, bytes):
        return password
    if isinstance(password, str):
        return password.encode("utf-8")
    raise TypeError(f"private_key_password must be str, bytes or a callable returning one, "
                    f"not {type(password).__name__}")


__all__ = ["Adapter", "BuiltinSSLAdapter"]
