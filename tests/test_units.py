import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flopwise.errors import InputError
from flopwise.units import parse_count, parse_duration_s


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2T", 2e12), ("300B", 3e11), ("7b", 7e9), ("1.5e12", 1.5e12), ("10k", 1e4), ("4M", 4e6), (42, 42.0)],
)
def test_parse_count(text, expected):
    assert parse_count(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("bad", ["-5", "0", "abc", "2X", "", "nan", float("nan"), float("inf"), -1, "1e40"])
def test_parse_count_rejects(bad):
    with pytest.raises(InputError) as info:
        parse_count(bad, "--tokens")
    assert "--tokens" in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("90", 90), ("2h", 7200), ("30d", 30 * 86400)])
def test_parse_duration(text, seconds):
    assert parse_duration_s(text) == pytest.approx(seconds)


@given(st.floats(min_value=1e-3, max_value=1e20, allow_nan=False))
def test_count_round_trips_through_text(value):
    assert math.isclose(parse_count(repr(value)), value, rel_tol=1e-12)
