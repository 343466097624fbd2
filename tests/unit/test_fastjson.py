"""`okta_flex_sync.core.fastjson.loads` gives what `json.loads` gives: the same value or the same error."""
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from okta_flex_sync.core import fastjson

CASES = [
    b'{"a": 1, "b": [true, false, null], "c": "\\u00e9"}',
    b'"\\ud800"',  # lone surrogate escape: orjson refuses, json keeps it
    b'"\\udc00x\\ud83d\\ude00"',
    b'{"a": 1, "a": 2}',  # duplicate keys: the last wins in both
    b'NaN', b'[Infinity, -Infinity]', b'[1e400]',
    b'\xef\xbb\xbf{"bom": true}',
    b'"\\u0000 nul"',
    b' \n {"spaced": 1} \t',
    b'9223372036854775807', b'-9223372036854775808', b'18446744073709551615',
    '{"text": "caf\u00e9 \U0001f600"}',
]
ERRORS = [b'', b'{', b'{"a": }', b"{'a': 1}", b'"\xff"', b'[1,]', b'{"a": 1} trailing', b'[' * 5000]


@pytest.mark.parametrize("data", CASES)
def test_same_value_as_the_standard_library(data):
    got, want = fastjson.loads(data), json.loads(data)
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want and type(got) is type(want)


@pytest.mark.parametrize("data", ERRORS)
def test_same_error_as_the_standard_library(data):
    with pytest.raises((ValueError, RecursionError)) as want:
        json.loads(data)
    with pytest.raises(want.type) as got:
        fastjson.loads(data)
    assert str(got.value) == str(want.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30)


@given(json_values)
def test_round_trips_like_the_standard_library(value):
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        assert fastjson.loads(text) == json.loads(text)


PRETTY = [
    {"run_id": "r1", "counts": {"workers": 15000, "timings": {"normalize": 0.25}}, "findings": [], "skipped": {}},
    {"text": "caf\u00e9 \u2028 \x00 \x1f \x7f <script>", "nested": [[[]], [{}], [1, 2.5, None, True, False]]},
    [], {}, "plain", 0, -1, 2**63 - 1,
]
FALLBACK = ["lone \ud800 surrogate", 2**70, {1: "int key"}, {"a": ("tuple",)}]


@pytest.mark.parametrize("value", PRETTY + FALLBACK)
def test_dumps_pretty_is_the_standard_layout(value):
    text = fastjson.dumps_pretty(value)
    assert text == json.dumps(value, ensure_ascii=False, indent=2)


def test_dumps_pretty_refuses_what_the_standard_library_refuses():
    with pytest.raises(TypeError):
        fastjson.dumps_pretty({"a": object()})


@given(json_values)
def test_dumps_pretty_round_trips(value):
    assert json.loads(fastjson.dumps_pretty(value)) == value
