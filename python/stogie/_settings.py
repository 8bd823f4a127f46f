"""The settings that cross from Python to the engine, by name.

The engine (src/engine/settings.rs) reads each field of these frozen dataclasses by attribute,
so a setting has one name on both sides of the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    """Every scalar setting the engine reads while serving; applied as a whole."""

    timeout: float
    max_request_header_size: int
    max_request_body_size: int
    protocol: str
    server_name: str
    peercreds: bool
    peercreds_resolve: bool
    keep_alive_conn_limit: int | None
    accepted_queue_size: int
    accepted_queue_timeout: float
    proxy_protocol: bool
    thread_idle_timeout: float
    forwarded_allow_ips: tuple[str, ...]
    buffer_request_body: bool
    request_body_memory_limit: int
    request_body_spool_limit: int
    request_body_min_rate: int
    http2: bool


@dataclass(frozen=True)
class TlsSettings:
    """What the engine's TLS configuration (rustls) is built from."""

    certificate: str
    private_key: str
    certificate_chain: str | None
    private_key_password: bytes | None
    client_ca: str | None
    #: "none", "optional" or "required".
    client_auth: str
    #: "1.2" or "1.3".
    minimum_version: str | None


@dataclass(frozen=True)
class AccessLogSettings:
    #: A file path, "-" for standard output, or None (off).
    path: str | None
    #: Apache-style format string; None is the combined format.
    format: str | None
