"""Timestamps as Marathon writes them: UTC, three fractional digits, a literal Z."""

from __future__ import annotations

import pytest

from marathon.models.timestamp import canonical, format_ms, is_timestamp, parse_ms

# 2015-09-30T09:09:17.614Z, the example in SPEC.md's conventions.
T = 1443604157614


def test_format_ms_renders_utc_with_exactly_three_fractional_digits():
    assert format_ms(T) == "2015-09-30T09:09:17.614Z"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (T - 14, "2015-09-30T09:09:17.600Z"),  # trailing zeros are never dropped
        (T - 614, "2015-09-30T09:09:17.000Z"),
        (5, "1970-01-01T00:00:00.005Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (951782400000, "2000-02-29T00:00:00.000Z"),
    ],
)
def test_format_ms_pads_every_field(ms, text):
    assert format_ms(ms) == text


@pytest.mark.parametrize(
    "text",
    [
        "2015-09-30T09:09:17.614Z",
        "2015-09-30T11:09:17.614+02:00",
        "2015-09-30T11:09:17.614+0200",
        "2015-09-30T11:09:17.614+02",
        "2015-09-30T04:09:17.614-05:00",
        "2015-09-30T03:39:17.614-05:30",
        "2015-09-30T09:09:17.614z",
        "2015-09-30t09:09:17.614Z",
        "2015-09-30 09:09:17.614Z",
        "2015-09-30T09:09:17,614Z",
        "  2015-09-30T09:09:17.614Z  ",
    ],
)
def test_parse_ms_accepts_any_iso_offset_form(text):
    assert parse_ms(text) == T


def test_parse_ms_reads_missing_seconds_and_fractions_as_zero():
    assert parse_ms("2015-09-30T09:09Z") == T - 17614
    assert parse_ms("2015-09-30T09:09:17Z") == T - 614
    assert parse_ms("2015-09-30T09:09:17.6Z") == T - 14


def test_parse_ms_truncates_below_millisecond_precision():
    assert parse_ms("2015-09-30T09:09:17.6149999Z") == T
    assert parse_ms("2015-09-30T09:09:17.614000001+00:00") == T


def test_parse_ms_handles_offsets_that_cross_midnight_and_years():
    assert format_ms(parse_ms("2015-09-30T01:00:00+02:00")) == "2015-09-29T23:00:00.000Z"
    assert format_ms(parse_ms("2015-12-31T23:30:00.250-01:00")) == "2016-01-01T00:30:00.250Z"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2015-09-30",
        "2015-13-01T00:00:00Z",
        "2015-02-30T00:00:00Z",
        "2015-09-30T25:00Z",
        "1443604157614",
    ],
)
def test_parse_ms_refuses_text_that_is_not_a_timestamp(text):
    with pytest.raises(ValueError):
        parse_ms(text)
    assert not is_timestamp(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-09-30T11:09:17.614+02:00", "2015-09-30T09:09:17.614Z"),
        ("2015-09-30T09:09:17Z", "2015-09-30T09:09:17.000Z"),
        ("2015-09-30T09:09:17.61Z", "2015-09-30T09:09:17.610Z"),
        ("2015-09-30T09:09:17.614Z", "2015-09-30T09:09:17.614Z"),
    ],
)
def test_canonical_rewrites_any_accepted_form_into_marathons(text, expected):
    assert canonical(text) == expected


def test_timestamps_compare_at_millisecond_precision():
    # The same instant written two ways is one version.
    assert canonical("2015-09-30T11:09:17.614+02:00") == canonical("2015-09-30T09:09:17.6141Z")


@pytest.mark.parametrize("ms", [0, 1, 999, 1000, T, 253402300799999])
def test_format_then_parse_round_trips(ms):
    assert parse_ms(format_ms(ms)) == ms
    assert is_timestamp(format_ms(ms))
