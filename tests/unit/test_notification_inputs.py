"""Whatever a client sends to the inbox routes: a bounded answer, or a problem, never a crash."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.rest.notifications import MAX_SEQ, InboxLimits, a_seq, page_query, read_request
from gateway.rest.problems import Problem

LIMITS = InboxLimits(page_max=100, read_max_ids=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=120),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["limit", "before", "unread", "user", ""]),
        st.text(max_size=25) | st.integers(-5, 10**20).map(str),
    )
)
@example({"limit": "٣"})  # a digit to str.isdigit, not to int()'s liking in every form
@example({"before": "9" * 17})
@example({"limit": "100", "before": str(MAX_SEQ), "unread": "TRUE"})
def test_any_query_is_a_bounded_page_or_a_400(query: dict[str, str]) -> None:
    try:
        page = page_query(query, LIMITS)
    except Problem as problem:
        assert problem.status == 400
        return
    assert 1 <= page.limit <= LIMITS.page_max
    assert page.before is None or 0 <= page.before <= MAX_SEQ
    assert "user" not in query and "" not in query


@settings(max_examples=300, deadline=None)
@given(json_values | st.fixed_dictionaries({"ids": json_values}) | st.just({"all": True}))
@example({"ids": ["a"] * 6})
@example({"ids": ["x" * 101]})
@example({"all": 1})
def test_any_read_body_names_few_short_ids_or_is_a_422(body: Any) -> None:
    try:
        ids = read_request(body, LIMITS)
    except Problem as problem:
        assert problem.status == 422
        return
    if ids is None:
        assert body == {"all": True}
        return
    assert len(ids) <= LIMITS.read_max_ids
    assert all(isinstance(i, str) and 0 < len(i) <= 100 for i in ids)


@given(st.text(max_size=30))
def test_a_last_event_id_is_a_seq_or_a_400(raw: str) -> None:
    try:
        assert 0 <= a_seq(raw, "Last-Event-ID") <= MAX_SEQ
    except Problem as problem:
        assert problem.status == 400
