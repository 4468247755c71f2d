"""One placement constraint: `[field, OPERATOR]` or `[field, OPERATOR, value]`.

This module owns the syntax of a constraint (SPEC.md 7.1): how the JSON array
is parsed into a `Constraint` and which messages Marathon's 422 carries when it
is malformed.  What an operator *means* at placement time lives in
`marathon.constraints` (L2); how Java regular expressions map onto Python's
`re` lives here, because validity of a `LIKE`/`UNLIKE` pattern is part of the
syntax.

`validate_constraint` returns the messages for one constraint (empty when it is
valid); app validation calls it for each `constraints(i)` path.  Messages are
Marathon's, verbatim.
"""

from __future__ import annotations

import re
from functools import lru_cache

from msgspec import Struct

OPERATORS = ("UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS")

MSG_FIELD_COUNT = "Each constraint must have either 2 or 3 fields"
MSG_MISSING_FIELD = "missing field for constraint declaration"
MSG_OPERATOR = (
    "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS"
)
MSG_UNIQUE_VALUE = "UNIQUE does not accept a value"
MSG_GROUP_BY_VALUE = "GROUP BY must define an integer value or else no value at all"
MSG_MAX_PER_VALUE = "MAX_PER requires an integer value"
MSG_REGEX_REQUIRED = "LIKE and UNLIKE require a non-empty, regular expression value"
MSG_REGEX_INVALID = "is not a valid regular expression"
MSG_IS_VALUE = (
    "IS only supports Mesos text and float values "
    "(see http://mesos.apache.org/documentation/latest/attributes-resources/)"
)

# `IS` accepts a Mesos text or scalar literal.
_IS_LITERAL = re.compile(r"[a-zA-Z0-9_/.-]*")
# Java's Integer.parseInt: optional sign, ASCII digits, 32-bit range.
_JAVA_INT = re.compile(r"[+-]?[0-9]+")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


class Constraint(Struct, frozen=True):
    """A parsed constraint; `operator` is upper-cased, `value` is None when absent."""

    field: str
    operator: str
    value: str | None = None

    def to_list(self) -> list[str]:
        """The wire form (`[field, OPERATOR]` or `[field, OPERATOR, value]`)."""
        if self.value is None:
            return [self.field, self.operator]
        return [self.field, self.operator, self.value]


def java_int(text: str) -> int | None:
    """`text` as Java's `Integer.parseInt` reads it, or None if it would throw."""
    if not _JAVA_INT.fullmatch(text):
        return None
    n = int(text)
    if n < _INT_MIN or n > _INT_MAX:
        return None
    return n


def validate_constraint(c: list[str]) -> list[str]:
    """Marathon's messages for one app constraint; empty if it is valid (SPEC.md 7.1)."""
    if not isinstance(c, (list, tuple)) or len(c) < 2 or len(c) > 3:
        return [MSG_FIELD_COUNT]
    field, op = c[0], c[1]
    value = c[2] if len(c) == 3 else None
    if not field:
        return [MSG_MISSING_FIELD]
    op = op.upper()
    if op not in OPERATORS:
        return [MSG_OPERATOR]
    if op == "UNIQUE":
        return [] if value is None else [MSG_UNIQUE_VALUE]
    if op == "CLUSTER":
        return []
    if op == "GROUP_BY":
        return [] if value is None or java_int(value) is not None else [MSG_GROUP_BY_VALUE]
    if op == "MAX_PER":
        return [] if value is not None and java_int(value) is not None else [MSG_MAX_PER_VALUE]
    if op in ("LIKE", "UNLIKE"):
        if value is None:
            return [MSG_REGEX_REQUIRED]
        try:
            compile_java_regex(value)
        except re.error:
            return [MSG_REGEX_INVALID]
        return []
    # IS
    return [] if _IS_LITERAL.fullmatch(value or "") else [MSG_IS_VALUE]


def parse_constraint(c: list[str]) -> Constraint:
    """Parse a constraint; raises ValueError with Marathon's message if it is invalid."""
    errors = validate_constraint(c)
    if errors:
        raise ValueError(errors[0])
    return Constraint(c[0], c[1].upper(), c[2] if len(c) == 3 else None)


# -- Java regular expressions ---------------------------------------------------
#
# Marathon evaluates LIKE/UNLIKE with Java's `String.matches` (a full match).  We
# use `re.fullmatch` with `re.ASCII`, which makes `\d \w \s \b` and case folding
# ASCII-only as they are in Java by default, and translate the Java-only syntax
# that has a faithful Python spelling:
#   \Q...\E quoting          -> escaped literal
#   (?<name>...) / \k<name>  -> (?P<name>...) / (?P=name)
#   \z / \Z                  -> \Z / (?=\n?\Z)
#   \h, \v (Java 8), \R       -> explicit character classes / alternation
#   \p{Lower} etc. (POSIX)    -> ASCII classes;  \p{L}, \p{IsAlphabetic} etc. are
#                               not supported (Python's `re` has no Unicode
#                               properties) and are reported as invalid.
# Java features with no `re` equivalent (class intersection `[a-z&&[^b]]`,
# embedded flags in the middle of a pattern) are reported as invalid too;
# Python 3.11 supports possessive quantifiers and atomic groups natively.

_H_CLASS = r" \t\xa0\u1680\u180e\u2000-\u200a\u202f\u205f\u3000"
_V_CLASS = r"\n\x0b\f\r\x85\u2028\u2029"
_POSIX = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": r"\x00-\x7f",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Punct": r"!-/:-@\[-`{-~",
    "Graph": r"!-~",
    "Print": r" -~",
    "Blank": r" \t",
    "Cntrl": r"\x00-\x1f\x7f",
    "XDigit": "0-9a-fA-F",
    "Space": r" \t\n\x0b\f\r",
    "javaLowerCase": "a-z",
    "javaUpperCase": "A-Z",
    "javaWhitespace": r" \t\n\x0b\f\r\x1c-\x1f",
}


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = 0  # nesting depth of [...]
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise re.error("trailing backslash")
            nxt = pattern[i + 1]
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if nxt in "pP":
                m = re.match(r"\{(\w+)\}", pattern[i + 2 :])
                if not m or m.group(1).removeprefix("Is") not in _POSIX:
                    raise re.error("unsupported character property")
                body = _POSIX[m.group(1).removeprefix("Is")]
                if in_class:
                    if nxt == "P":
                        raise re.error("negated property inside a class")
                    out.append(body)
                else:
                    out.append(("[^" if nxt == "P" else "[") + body + "]")
                i += 2 + m.end()
                continue
            if nxt == "k" and not in_class:
                m = re.match(r"<([A-Za-z][A-Za-z0-9]*)>", pattern[i + 2 :])
                if not m:
                    raise re.error("bad named back reference")
                out.append(f"(?P={m.group(1)})")
                i += 2 + m.end()
                continue
            if nxt in "hH":
                neg = nxt == "H"
                if in_class:
                    if neg:
                        raise re.error("negated class inside a class")
                    out.append(_H_CLASS)
                else:
                    out.append(("[^" if neg else "[") + _H_CLASS + "]")
                i += 2
                continue
            if nxt in "vV":
                neg = nxt == "V"
                if in_class:
                    if neg:
                        raise re.error("negated class inside a class")
                    out.append(_V_CLASS)
                else:
                    out.append(("[^" if neg else "[") + _V_CLASS + "]")
                i += 2
                continue
            if nxt == "R" and not in_class:
                out.append(r"(?:\r\n|[" + _V_CLASS + "])")
                i += 2
                continue
            if nxt == "z" and not in_class:
                out.append(r"\Z")
                i += 2
                continue
            if nxt == "Z" and not in_class:
                out.append(r"(?=\n?\Z)")
                i += 2
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "[":
                # Java allows nested classes (union) and && (intersection).
                raise re.error("nested character classes are not supported")
            if ch == "&" and pattern.startswith("&&", i):
                raise re.error("character class intersection is not supported")
            if ch == "]":
                in_class -= 1
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class += 1
            out.append(ch)
            i += 1
            # A leading '^' and a leading ']' are part of the class syntax.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            continue
        if ch == "(" and pattern.startswith("(?<", i) and i + 3 < n and pattern[i + 3] not in "=!":
            out.append("(?P<")
            i += 3
            continue
        out.append(ch)
        i += 1
    if in_class:
        raise re.error("unterminated character class")
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_java_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Java regular expression for full matching; raises `re.error` if invalid."""
    return re.compile(_translate(pattern), re.ASCII)
