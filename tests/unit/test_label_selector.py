"""Label selectors of GET /v2/apps?label=... (SPEC.md 1.4)."""

from __future__ import annotations

import pytest

from marathon.api._selector import parse
from marathon.errors import IllegalArgument

LABELS = {"env": "prod", "tier": "web", "a.b": "x y"}


@pytest.mark.parametrize(
    "selector,expected",
    [
        ("env", True),
        ("missing", False),
        ("env==prod", True),
        ("env==dev", False),
        ("env!=dev", True),
        ("missing!=dev", False),
        ("tier in (web, db)", True),
        ("tier notin (web, db)", False),
        ("missing notin (x)", False),
        ("env==prod,tier==web", True),
        ("env==prod, tier==db", False),
        (r"a.b==x\ y", True),
    ],
)
def test_selector_semantics(selector, expected):
    assert parse(selector)(LABELS) is expected


def test_unparsable_selector_is_rejected():
    with pytest.raises(IllegalArgument):
        parse("env===prod")
