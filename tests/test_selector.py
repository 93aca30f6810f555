"""Selectors, label sets and times: the parse rules users know from Prometheus and Pyroscope."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest
from service.query.selector import Matcher, parse_labels, parse_query
from service.types import ProfileType, TimeRange, parse_time


def test_query_with_all_operators() -> None:
    q = parse_query('process_cpu:cpu:nanoseconds:cpu:nanoseconds{a="x", b!="y", c=~"p.*", d!~"q|r"}')
    assert q.profile_type == ProfileType("process_cpu", "cpu", "nanoseconds", "cpu", "nanoseconds")
    assert q.matchers == (
        Matcher("a", "=", "x"),
        Matcher("b", "!=", "y"),
        Matcher("c", "=~", "p.*"),
        Matcher("d", "!~", "q|r"),
    )
    assert q.matches({"a": "x", "c": "pod"})
    assert not q.matches({"a": "x", "c": "apod"})  # anchored
    assert not q.matches({"a": "x", "c": "p", "d": "q"})


def test_escapes_and_quotes() -> None:
    assert parse_labels(r'{a="x\"y", b=' + "'z', c=`w\\n`}") == {"a": 'x"y', "b": "z", "c": "w\\n"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('process_cpu:cpu:nanoseconds:cpu:nanoseconds{a="x"', "position 49: expected ',' or '}', got end of input"),
        ('process_cpu:cpu:nanoseconds:cpu:nanoseconds{1a="x"}', "position 44: expected a label name, got '1'"),
        ('process_cpu:cpu:nanoseconds:cpu:nanoseconds{a~"x"}', "position 45: expected one of =, !=, =~, !~, got '~'"),
        ('process_cpu:cpu:nanoseconds:cpu:nanoseconds{a="x}', 'expected closing ", got end of input'),
        (
            'cpux{a="x"}',
            'unknown profile type "cpux"; did you mean "cpu" (process_cpu:cpu:nanoseconds:cpu:nanoseconds)?',
        ),
    ],
)
def test_errors_name_position_and_expectation(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=None) as exc:
        parse_query(text)
    assert message in str(exc.value)


def test_labels_reject_duplicates_and_regex() -> None:
    with pytest.raises(InvalidRequest, match="given twice"):
        parse_labels('{a="1",a="2"}')
    with pytest.raises(InvalidRequest, match="take only ="):
        parse_labels('{a!="1"}')
    assert parse_labels("") == {}


def test_times() -> None:
    now = 1_800_000_000 * 10**9
    assert parse_time("1700000000", "t", now) == 1_700_000_000 * 10**9
    assert parse_time("1700000000123", "t", now) == 1_700_000_000_123 * 10**6
    assert parse_time("2023-11-14T22:13:20Z", "t", now) == 1_700_000_000 * 10**9
    assert parse_time("2023-11-14T23:13:20+01:00", "t", now) == 1_700_000_000 * 10**9
    assert parse_time("now", "t", now) == now
    assert parse_time("now-1h", "t", now) == now - 3600 * 10**9
    assert parse_time("now-30m", "t", now) == now - 1800 * 10**9
    with pytest.raises(InvalidRequest, match="the range is reversed"):
        TimeRange.parse("now", "now-1h")
