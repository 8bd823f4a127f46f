"""`stogie.ssl.builtin.BuiltinSSLAdapter` (cheroot's module path)."""

from stogie.ssl import BuiltinSSLAdapter

__all__ = ["BuiltinSSLAdapter"]
