"""Exceptions and socket error groups, under cheroot's names."""

from __future__ import annotations

import errno

from stogie._core import MaxSizeExceeded


class NoSSLError(Exception):
    """A plain HTTP request arrived on a TLS port."""


class FatalSSLAlert(Exception):
    """The TLS handshake failed fatally."""


class NoEffectWarning(RuntimeWarning):
    """A cheroot hook that stogie accepts but cannot use was set (e.g. `ConnectionClass`)."""


def plat_specific_errors(*errnames: str) -> list[int]:
    """The errno values among `errnames` that exist on this platform, without duplicates."""
    codes = {getattr(errno, name) for name in errnames if hasattr(errno, name)}
    return list(codes)


socket_error_eintr = plat_specific_errors("EINTR", "WSAEINTR")
socket_errors_to_ignore: list[int | str] = [
    *plat_specific_errors(
        "EPIPE", "EBADF", "WSAEBADF", "ENOTSOCK", "WSAENOTSOCK", "ETIMEDOUT", "WSAETIMEDOUT",
        "ECONNREFUSED", "WSAECONNREFUSED", "ECONNRESET", "WSAECONNRESET", "ECONNABORTED",
        "WSAECONNABORTED", "ENETRESET", "WSAENETRESET", "EHOSTDOWN", "EHOSTUNREACH",
    ),
    "timed out",
    "The read operation timed out",
]
socket_errors_nonblocking = plat_specific_errors("EAGAIN", "EWOULDBLOCK", "WSAEWOULDBLOCK")
acceptable_sock_shutdown_error_codes = {errno.ENOTCONN, errno.EPIPE, errno.ESHUTDOWN,
                                        errno.ECONNRESET}
acceptable_sock_shutdown_exceptions = (BrokenPipeError, ConnectionResetError)

__all__ = [
    "FatalSSLAlert", "MaxSizeExceeded", "NoSSLError", "acceptable_sock_shutdown_error_codes",
    "acceptable_sock_shutdown_exceptions", "plat_specific_errors", "socket_error_eintr",
    "socket_errors_nonblocking", "socket_errors_to_ignore", "NoEffectWarning",
]
