"""Task id parsing: the fast path for our own ids agrees with the general parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marathon.models.instance import new_instance_ids, parse_task_id, parse_task_id_any, task_id_for

segment = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(st.lists(segment, min_size=1, max_size=4), st.integers(min_value=0, max_value=10**6))
def test_fast_path_equals_the_general_parser(segments, incarnation):
    app_id = "/" + "/".join(segments)
    (instance_id,) = new_instance_ids(app_id, 1)
    task_id = task_id_for(instance_id, incarnation)
    parsed = parse_task_id(task_id)
    assert parsed == parse_task_id_any(task_id)
    assert (parsed.instance_id, parsed.run_spec_id, parsed.incarnation) == (instance_id, app_id, incarnation)


@pytest.mark.parametrize("task_id", [
    "web.instance-a1b2._app.3",
    "web.instance-a1b2._app",
    "web.instance-a1b2",
    "a_b.marathon-1234.2",
    "web.5a2e6d9c-1234-4abc-9def-0123456789ab",
    "web_5a2e6d9c-1234-4abc-9def-0123456789ab.7",
    "x._app.1.instance-y._app.2",
    "web.instance-._app.1",
])
def test_other_forms_parse_as_before(task_id):
    try:
        expected = parse_task_id_any(task_id)
    except ValueError:
        with pytest.raises(ValueError):
            parse_task_id(task_id)
        return
    assert parse_task_id(task_id) == expected


def test_garbage_is_rejected():
    for bad in ("", "nonsense", "._app.1"):
        with pytest.raises(ValueError):
            parse_task_id(bad)
