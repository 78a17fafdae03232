"""Pure helpers of the HTTP side: limits, ids, auth, payload shaping, history, the page."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from pydantic import SecretStr

from streams.adapters.redis_views import ProfileUpdate, profile_fields
from streams.web.api import ApiError, check_customer_id, check_dimension, parse_limit, profile_json
from streams.web.auth import authorized, bearer, token_text
from streams.web.feed import Dashboard, SegmentHistory, event_ms, flows, slim_change, totals
from tests.unit.adapters.support import T, profile


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 20), ("", 20), ("1", 1), (" 7 ", 7), ("50", 50)]
)
def test_limit_defaults_only_when_absent(raw: str | None, expected: int) -> None:
    assert parse_limit(raw, default=20, maximum=50) == expected


@pytest.mark.parametrize("raw", ["0", "51", "-1", "ten", "1.5", "1e3", "²", "٣", "9" * 60])
def test_limit_out_of_range_is_a_400_that_says_the_range(raw: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_limit(raw, default=20, maximum=50)
    assert caught.value.status == 400
    assert caught.value.body()["error"] == "bad_request"
    assert "1 to 50" in caught.value.detail
    assert len(caught.value.detail) < 120  # a huge value is not echoed whole


@pytest.mark.parametrize("good", ["c-1042", "a/b", "Ünïcode id", "x" * 128])
def test_customer_ids_follow_the_wire_contract(good: str) -> None:
    assert check_customer_id(good) == good


@pytest.mark.parametrize("bad", ["", " c1", "c1 ", "c1\n", "c\x001", "x" * 129])
def test_impossible_customer_ids_are_refused(bad: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_customer_id(bad)
    assert caught.value.status == 400


def test_unknown_dimension_is_a_404_naming_the_known_ones() -> None:
    assert check_dimension("quadrant") == "quadrant"
    with pytest.raises(ApiError) as caught:
        check_dimension("colour")
    assert caught.value.status == 404
    assert "rfm_segment" in caught.value.detail


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


def test_authorized_without_a_token_lets_everyone_in() -> None:
    assert authorized(None, None)
    assert authorized(None, "Bearer anything")


def test_authorized_with_a_token_needs_exactly_it() -> None:
    assert authorized("s3cret", "Bearer s3cret")
    for header in (None, "", "s3cret", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret"):
        assert not authorized("s3cret", header), header


def test_token_text_accepts_secrets_and_refuses_empty_ones() -> None:
    assert token_text(None) is None
    assert token_text("abc") == "abc"
    assert token_text(SecretStr("abc")) == "abc"
    for empty in ("", "  ", SecretStr("")):
        with pytest.raises(ValueError, match="empty"):
            token_text(empty)


def test_profile_json_types_the_view_contract() -> None:
    fields = profile_fields(ProfileUpdate(profile=profile("c1", T), segment_since_ms=T))
    shaped = profile_json(fields)
    assert set(shaped) == set(fields)
    assert shaped["customer_id"] == "c1"
    assert shaped["at_ms"] == T
    for name in ("recency_score", "frequency_score", "monetary_score", "purchase_count"):
        assert type(shaped[name]) is int, name
    assert isinstance(shaped["p_alive"], float)
    assert shaped["loyal"] in (True, False)
    assert shaped["segment_since"].endswith("Z")
    assert shaped["engagement"] is None or isinstance(shaped["engagement"], int)


def test_profile_json_keeps_what_it_does_not_understand() -> None:
    shaped = profile_json(
        {
            "at_ms": "12.0",
            "p_alive": "n/a",
            "loyal": "yes",
            "new_field": "7",
            "quadrant": "",
            "tenure_days": "3",
        }
    )
    assert shaped == {
        "at_ms": 12,
        "p_alive": "n/a",
        "loyal": "yes",
        "new_field": "7",
        "quadrant": None,
        "tenure_days": 3.0,
    }


def test_event_ms_reads_output_times() -> None:
    assert event_ms({"event_time": "1970-01-01T00:00:01Z"}) == 1000
    assert event_ms({"event_time": "1970-01-01T01:00:01+01:00"}) == 1000
    assert event_ms({"event_time": "garbage"}) == 0
    assert event_ms({}) == 0


def test_slim_change_is_deterministic_and_small() -> None:
    change = {
        "id": "sc:c1:3",
        "customer_id": "c1",
        "event_time": "2026-01-01T00:00:00Z",
        "dimension": "quadrant",
        "from_value": "true_friend",
        "to_value": "barnacle",
        "cause": "time",
        "profile": {"big": "snapshot"},
    }
    slim = slim_change(change)
    assert slim == slim_change(dict(reversed(list(change.items()))))
    assert slim["from"] == "true_friend"
    assert slim["to"] == "barnacle"
    assert "profile" not in slim


def test_flows_count_transitions_largest_first() -> None:
    changes: list[dict[str, str | None]] = [
        {"from": "true_friend", "to": "barnacle"},
        {"from": None, "to": "stranger"},
        {"from": "true_friend", "to": "barnacle"},
        {"from": "butterfly", "to": "true_friend"},
        {"from": "x"},  # no destination: skipped
    ]
    assert flows(changes) == [
        {"from": "true_friend", "to": "barnacle", "count": 2},
        {"from": None, "to": "stranger", "count": 1},
        {"from": "butterfly", "to": "true_friend", "count": 1},
    ]
    assert flows([]) == []


def test_totals_per_dimension() -> None:
    counts = {"quadrant": {"true_friend": 2, "stranger": 3}, "rfm_segment": {}}
    assert totals(counts) == {"quadrant": 5, "rfm_segment": 0}


def test_segment_history_keeps_the_newest_points_in_order() -> None:
    history = SegmentHistory(capacity=3)
    assert history.latest() is None
    for i in range(5):
        history.add(1_000 * i, {"quadrant": {"stranger": i}, "rfm_segment": {}})
    points = history.points()
    assert [p["at_ms"] for p in points] == [2_000, 3_000, 4_000]
    assert points[-1] == history.latest()
    assert points[-1]["quadrant"] == {"stranger": 4}
    assert points[0]["at"] == "1970-01-01T00:00:02.000Z"
    with pytest.raises(ValueError, match="capacity"):
        SegmentHistory(0)


def _sha(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


def test_dashboard_policy_allows_exactly_its_inline_code() -> None:
    page = Dashboard.load()
    scripts = re.findall(r"<script>(.*?)</script>", page.html, re.DOTALL)
    styles = re.findall(r"<style>(.*?)</style>", page.html, re.DOTALL)
    assert len(scripts) == 1
    assert len(styles) == 1
    assert f"script-src {_sha(scripts[0])}" in page.csp
    assert f"style-src {_sha(styles[0])}" in page.csp
    assert "connect-src 'self'" in page.csp
    assert "unsafe" not in page.csp
    assert Dashboard("<p>no code</p>").csp.startswith("default-src 'none'; script-src 'none'")


def test_dashboard_is_self_contained() -> None:
    html = Dashboard.load().html
    # nothing from another origin: no CDN, no web font, no remote image (the SVG namespace
    # is a name, not a request)
    urls = set(re.findall(r"https?://[^\s\"')]+", html)) - {"http://www.w3.org/2000/svg"}
    assert urls == set()
    assert "<script src" not in html
    assert "innerHTML" not in html  # data reaches the page as text only
    for hook in ('id="quadrants"', 'id="segments"', 'id="alerts"', 'id="flows"', 'id="chart"'):
        assert hook in html
