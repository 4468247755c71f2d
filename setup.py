"""Build of the two compiled modules, and nothing else.

- `marathon._core`: the offer-matching core.
- `marathon.agent._spawn`: the agent's process spawn (glibc posix_spawn with
  a working directory).

All metadata lives in pyproject.toml.  `MARATHON_PUREPYTHON=1` skips both:
the package then runs on `marathon._core_ref`, the pure-Python reference of
the same algorithm, and the agent spawns with `subprocess.Popen`.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("MARATHON_PUREPYTHON", "") not in ("1", "true", "yes"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension("marathon._core", ["src/marathon/_core.pyx"]),
            Extension("marathon.agent._spawn", ["src/marathon/agent/_spawn.pyx"],
                      define_macros=[("_GNU_SOURCE", "1")]),
        ],
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
