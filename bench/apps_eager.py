"""The Flask application of bench/apps.py as a plain module attribute, for uWSGI.

uWSGI looks the callable up in the module's ``__dict__``, so it does not see the Flask
application that bench/apps.py builds lazily (a PEP 562 module ``__getattr__``): the uWSGI
servers load ``bench.apps_eager:flask_app`` instead of ``bench.apps:flask_app``.
"""

from bench.apps import flask_app

__all__ = ["flask_app"]
