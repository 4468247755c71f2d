"""Label selectors for `GET /v2/apps?label=...` (SPEC.md 1.4).

A comma-separated list of terms, all of which must match:
`key`, `key==value`, `key!=value`, `key in (v1, v2)`, `key notin (v1, v2)`.
A term is `[-A-Za-z0-9_.]+`, any other character escaped with a backslash.
Every form but existence requires the key to exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ..errors import IllegalArgument

_TERM = r"(?:[-A-Za-z0-9_.]|\\.)+"
_SELECTOR = re.compile(
    rf"\s*(?P<key>{_TERM})\s*(?:(?P<op>==|!=)\s*(?P<value>{_TERM})|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?\s*"
)

Matcher = Callable[[Mapping[str, str]], bool]


def _unescape(term: str) -> str:
    return re.sub(r"\\(.)", r"\1", term)


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses and not escaped."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def parse(selector: str) -> Matcher:
    matchers: list[Matcher] = []
    for raw in _split_top(selector):
        m = _SELECTOR.fullmatch(raw)
        if not m:
            raise IllegalArgument(f"Can not parse label selector {selector}")
        key = _unescape(m.group("key"))
        if m.group("op"):
            value = _unescape(m.group("value"))
            if m.group("op") == "==":
                matchers.append(lambda labels, k=key, v=value: labels.get(k) == v)
            else:
                matchers.append(lambda labels, k=key, v=value: k in labels and labels[k] != v)
        elif m.group("setop"):
            values = {_unescape(v.strip()) for v in _split_top(m.group("set")) if v.strip()}
            if not all(re.fullmatch(_TERM, v.strip()) for v in _split_top(m.group("set")) if v.strip()):
                raise IllegalArgument(f"Can not parse label selector {selector}")
            if m.group("setop") == "in":
                matchers.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
            else:
                matchers.append(lambda labels, k=key, vs=values: k in labels and labels[k] not in vs)
        else:
            matchers.append(lambda labels, k=key: k in labels)
    return lambda labels: all(m(labels) for m in matchers)
