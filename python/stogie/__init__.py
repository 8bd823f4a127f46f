"""stogie: a cheroot-compatible WSGI server whose HTTP engine is written in Rust."""

from stogie._core import __version__

__all__ = ["__version__"]
