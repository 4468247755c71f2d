"""Marathon on trio: the container orchestrator's API and semantics in Python.

The public face is small: this package (version), `marathon.models` (the data
model), `marathon.hookspecs` (the plugin contract) and `marathon.testing` (a
harness for tests and plugin authors).  Everything else is implementation.
"""

from ._version import __version__ as __version__
