"""The ``msgstore`` command line: the live demo, and a look inside database files.

Built on the library's public API only (``msgstore``); the library never imports it.
"""

from ._main import main

__all__ = ["main"]
