"""Path ids (SPEC.md 2.3): parsing, resolution, the id grammar and the safe form."""

from __future__ import annotations

import pytest

from marathon.models import pathid

REGEX_MSG = f"must fully match regular expression '{pathid.ID_SEGMENT_REGEX}'"
RESERVED_MSG = (
    "must not end with any of the following reserved keywords: restart, tasks, versions, ., .."
)


@pytest.mark.parametrize(
    ("raw", "base", "expected"),
    [
        ("/a/b", "/", "/a/b"),
        ("/a/b", "/ignored", "/a/b"),  # absolute ids ignore the base
        ("a/b", "/", "/a/b"),
        ("b", "/group", "/group/b"),
        ("sub/b", "/group/x", "/group/x/sub/b"),
        ("./b", "/group", "/group/b"),
        ("../b", "/group/x", "/group/b"),
        ("a/./b/../c", "/", "/a/c"),
        ("../../../b", "/group", "/b"),  # `..` above the root is dropped
        ("..", "/", "/"),
        ("/", "/group", "/"),
        ("//a///b//", "/", "/a/b"),  # empty segments and trailing slashes vanish
    ],
)
def test_resolve_canonicalizes_relative_and_dotted_ids(raw, base, expected):
    assert pathid.resolve(raw, base) == expected


def test_resolve_defaults_to_the_root_as_base():
    assert pathid.resolve("a/b") == "/a/b"


@pytest.mark.parametrize(
    "raw",
    ["/a", "/a/b/c", "a", "/a.b/c-d", "/0/9a/a9", "/my-app.v2", "/a/../b", "/a/./b", "/x/y/"],
)
def test_valid_ids_have_no_segment_errors(raw):
    assert pathid.segment_errors(raw) == []


@pytest.mark.parametrize(
    "raw",
    ["/My", "/a_b", "/-a", "/a-", "/a..b", "/a.-b", "/a b", "/ä", "/.a"],
)
def test_segments_must_fully_match_the_id_regex(raw):
    assert pathid.segment_errors(raw) == [REGEX_MSG]


def test_the_regex_message_is_reported_once_for_several_bad_segments():
    assert pathid.segment_errors("/A/b_c/D") == [REGEX_MSG]


@pytest.mark.parametrize("last", ["restart", "tasks", "versions", ".", ".."])
def test_the_last_segment_may_not_be_a_reserved_keyword(last):
    assert pathid.segment_errors(f"/app/{last}") == [RESERVED_MSG]


def test_reserved_keywords_are_fine_before_the_last_segment():
    assert pathid.segment_errors("/tasks/versions/restart/app") == []


def test_a_bad_and_reserved_id_reports_both():
    assert pathid.segment_errors("/Bad/tasks") == [REGEX_MSG, RESERVED_MSG]


def test_the_reserved_keyword_check_is_case_sensitive():
    # `Tasks` is no keyword, only an upper-case (invalid) segment.
    assert pathid.segment_errors("/a/Tasks") == [REGEX_MSG]


def test_parent_name_and_root():
    assert pathid.parent("/a/b/c") == "/a/b"
    assert pathid.parent("/a") == "/"
    assert pathid.name("/a/b/c") == "c"
    assert pathid.name("/") == ""
    assert pathid.is_root("/")
    assert not pathid.is_root("/a")


def test_ancestors_are_listed_from_the_root_down():
    assert pathid.ancestors("/a/b/c") == ["/", "/a", "/a/b"]
    assert pathid.ancestors("/a") == ["/"]
    assert pathid.ancestors("/") == []


@pytest.mark.parametrize(
    ("ancestor", "path", "expected"),
    [
        ("/", "/a", True),
        ("/", "/", False),
        ("/a", "/a/b", True),
        ("/a", "/a", False),
        ("/a", "/ab", False),  # a prefix of the name is not an ancestor
        ("/a/b", "/a", False),
    ],
)
def test_is_ancestor_means_strictly_below(ancestor, path, expected):
    assert pathid.is_ancestor(ancestor, path) is expected


@pytest.mark.parametrize(
    ("path", "group"),
    [("/dev/team/app", "/dev"), ("/dev/app", "/dev"), ("/app", None), ("/", None)],
)
def test_top_level_is_the_group_that_names_the_role(path, group):
    assert pathid.top_level(path) == group


def test_safe_form_replaces_slashes_with_underscores_and_back():
    assert pathid.safe("/prod/db/mysql") == "prod_db_mysql"
    assert pathid.from_safe("prod_db_mysql") == "/prod/db/mysql"
    assert pathid.from_safe(pathid.safe("/a.b/c-d")) == "/a.b/c-d"


def test_mesos_task_names_use_the_reversed_dotted_form():
    assert pathid.reversed_dotted("/prod/db/mysql") == "mysql.db.prod"
    assert pathid.reversed_dotted("/app") == "app"
