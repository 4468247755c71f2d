"""The compiled placement core must be in use unless the reference was asked for.

A missing or broken build falls back to the pure-Python reference with a
warning (so the program still runs); this test turns that silent fallback into
a failure everywhere except under MARATHON_PUREPYTHON=1.
"""

from __future__ import annotations

import os

from marathon import matching

PURE = os.environ.get("MARATHON_PUREPYTHON", "") in ("1", "true", "yes")


def test_the_compiled_core_is_loaded_unless_the_reference_is_forced():
    if PURE:
        assert matching.BACKEND == "reference"
        assert matching._core.__name__ == "marathon._core_ref"
    else:
        assert matching.BACKEND == "compiled", (
            "marathon._core did not load; build it with "
            "`python setup.py build_ext --inplace` (see RECIPES.md)")
        assert matching._core.__name__ == "marathon._core"
        assert matching._core.__file__.endswith((".so", ".pyd"))
