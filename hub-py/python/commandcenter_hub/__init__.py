"""CommandCenter Hub for Python: the hub's engine, imported directly, no server needed."""

from ._native import __version__, slugify

__all__ = ["__version__", "slugify"]
