"""Constraint syntax: parsing, Marathon's 422 messages, Java regular expressions."""

from __future__ import annotations

import re

import pytest

from marathon.models.constraint import (
    MSG_FIELD_COUNT,
    MSG_GROUP_BY_VALUE,
    MSG_IS_VALUE,
    MSG_MAX_PER_VALUE,
    MSG_MISSING_FIELD,
    MSG_OPERATOR,
    MSG_REGEX_INVALID,
    MSG_REGEX_REQUIRED,
    MSG_UNIQUE_VALUE,
    Constraint,
    compile_java_regex,
    java_int,
    parse_constraint,
    validate_constraint,
)

VALID = [
    ["hostname", "UNIQUE"],
    ["hostname", "unique"],
    ["@hostname", "Unique"],
    ["rack", "CLUSTER"],
    ["rack", "CLUSTER", "rack-1"],
    ["rack", "CLUSTER", ""],
    ["rack", "GROUP_BY"],
    ["rack", "GROUP_BY", "3"],
    ["rack", "GROUP_BY", "-1"],
    ["rack", "GROUP_BY", "+2"],
    ["rack", "MAX_PER", "2"],
    ["rack", "MAX_PER", "0"],
    ["hostname", "LIKE", "host-[0-9]+"],
    ["hostname", "UNLIKE", ".*"],
    ["hostname", "LIKE", ""],
    ["@zone", "IS", "us-east-1a"],
    ["gen", "IS", "0.80"],
    ["gen", "IS", "a/b_c.d-e"],
    ["gen", "IS"],
]


@pytest.mark.parametrize("c", VALID)
def test_valid_constraints_have_no_messages(c):
    assert validate_constraint(c) == []


@pytest.mark.parametrize(
    ("c", "message"),
    [
        (["hostname"], MSG_FIELD_COUNT),
        ([], MSG_FIELD_COUNT),
        (["hostname", "UNIQUE", "a", "b"], MSG_FIELD_COUNT),
        (["", "UNIQUE"], MSG_MISSING_FIELD),
        (["hostname", "UNIQUELY"], MSG_OPERATOR),
        (["hostname", "IN", "a,b"], MSG_OPERATOR),
        (["hostname", "UNIQUE", "x"], MSG_UNIQUE_VALUE),
        (["hostname", "UNIQUE", ""], MSG_UNIQUE_VALUE),
        (["rack", "GROUP_BY", "x"], MSG_GROUP_BY_VALUE),
        (["rack", "GROUP_BY", "2.5"], MSG_GROUP_BY_VALUE),
        (["rack", "GROUP_BY", " 2"], MSG_GROUP_BY_VALUE),
        (["rack", "GROUP_BY", "1_000"], MSG_GROUP_BY_VALUE),
        (["rack", "GROUP_BY", "2147483648"], MSG_GROUP_BY_VALUE),
        (["rack", "GROUP_BY", ""], MSG_GROUP_BY_VALUE),
        (["rack", "MAX_PER"], MSG_MAX_PER_VALUE),
        (["rack", "MAX_PER", "two"], MSG_MAX_PER_VALUE),
        (["hostname", "LIKE"], MSG_REGEX_REQUIRED),
        (["hostname", "UNLIKE"], MSG_REGEX_REQUIRED),
        (["hostname", "LIKE", "("], MSG_REGEX_INVALID),
        (["hostname", "UNLIKE", "[a-"], MSG_REGEX_INVALID),
        (["gen", "IS", "a b"], MSG_IS_VALUE),
        (["gen", "IS", "{a,b}"], MSG_IS_VALUE),
        (["gen", "IS", "[1-2]"], MSG_IS_VALUE),
    ],
)
def test_invalid_constraints_get_marathons_message(c, message):
    assert validate_constraint(c) == [message]


def test_messages_are_marathons_text():
    assert MSG_OPERATOR == (
        "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, "
        "UNLIKE or IS")
    assert MSG_GROUP_BY_VALUE == "GROUP BY must define an integer value or else no value at all"
    assert MSG_IS_VALUE.startswith("IS only supports Mesos text and float values")


def test_parse_upper_cases_the_operator_and_keeps_the_value():
    assert parse_constraint(["rack", "group_by", "3"]) == Constraint("rack", "GROUP_BY", "3")
    assert parse_constraint(["hostname", "unique"]) == Constraint("hostname", "UNIQUE", None)
    assert parse_constraint(["rack", "CLUSTER", ""]).value == ""
    assert Constraint("rack", "GROUP_BY", "3").to_list() == ["rack", "GROUP_BY", "3"]
    assert Constraint("hostname", "UNIQUE").to_list() == ["hostname", "UNIQUE"]


def test_parse_rejects_invalid_constraints_with_the_message():
    with pytest.raises(ValueError, match="MAX_PER requires an integer value"):
        parse_constraint(["rack", "MAX_PER"])


def test_java_int_matches_integer_parse_int():
    assert java_int("12") == 12
    assert java_int("-3") == -3
    assert java_int("+3") == 3
    assert java_int("2147483647") == 2**31 - 1
    assert java_int("-2147483648") == -(2**31)
    for bad in ["", " 1", "1 ", "1.0", "0x10", "1_0", "2147483648"]:
        assert java_int(bad) is None, bad


# -- Java regular expressions ---------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("host-[0-9]+", "host-12", True),
        ("host-[0-9]+", "my-host-12", False),  # full match, like String.matches
        ("host", "host-1", False),
        ("a|b", "b", True),
        (r"\d+", "١٢", False),  # Java's \d is ASCII-only
        (r"\w+", "é", False),
        (r"\Qa.b\E", "a.b", True),
        (r"\Qa.b\E", "axb", False),
        (r"\Qa.b", "a.b", True),
        (r"(?<rack>r\d)-\k<rack>", "r1-r1", True),
        (r"(?<rack>r\d)-\k<rack>", "r1-r2", False),
        (r"(?<=a)b|ab", "ab", True),  # lookbehind untouched
        (r"abc\z", "abc", True),
        (r"abc\Z", "abc", True),
        (r"\p{Lower}+", "abc", True),
        (r"\p{Upper}+", "abc", False),
        (r"\p{Alnum}+\P{Digit}", "a1x", True),
        (r"[\p{Digit}x]+", "1x2", True),
        (r"\p{IsAlnum}+", "a1", True),
        (r"a\h+b", "a \tb", True),
        (r"a\Rb", "a\r\nb", True),
        (r"a++b", "aab", True),  # possessive (Python 3.11)
        (r"(?>a+)b", "aab", True),  # atomic group (Python 3.11)
        (r"(?i)HOST", "host", True),
        ("[]a]+", "]a", True),
        (".*", "", True),
    ],
)
def test_java_regexes_full_match_like_java(pattern, text, matches):
    assert (compile_java_regex(pattern).fullmatch(text) is not None) is matches


@pytest.mark.parametrize(
    "pattern",
    [
        "(", "[a-", r"\p{L}+", r"\p{IsAlphabetic}", r"[a-z&&[^b]]", "[a[b]]", "\\",
        r"\k<nope", r"x(?i)y",
    ],
)
def test_java_features_python_cannot_express_are_invalid(pattern):
    with pytest.raises(re.error):
        compile_java_regex(pattern)
    assert validate_constraint(["hostname", "LIKE", pattern]) == [MSG_REGEX_INVALID]
