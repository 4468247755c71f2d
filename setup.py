"""Build of the compiled offer-matching core, and nothing else.

All metadata lives in pyproject.toml.  `MARATHON_PUREPYTHON=1` skips the
extension: the package then runs on `marathon._core_ref`, the pure-Python
reference of the same algorithm.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("MARATHON_PUREPYTHON", "") not in ("1", "true", "yes"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("marathon._core", ["src/marathon/_core.pyx"])],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        quiet=True,
    )

setup(ext_modules=ext_modules)
