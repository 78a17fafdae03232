"""The next due time skips the drift root search only when it cannot matter.

:meth:`Classifier._next_due` evaluates the drift level at the earliest other due time instead
of searching for the drift crossing when the level has not risen by then. Property: for any
history and evaluation time, the due time is the one the full search gives, i.e. the earliest
of the other due times and the drift due time found without any shortcut.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.classify import Classifier
from streams.domain.facts import MS_PER_DAY, day_of
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.domain.state import PURCHASE, CustomerState, fold_purchase

RULES = load_rules()
T0 = 1_700_000_000_000


def _state(gaps: list[int], level: int) -> CustomerState:
    state = CustomerState("c")
    at = T0
    for i, gap in enumerate([0, *gaps]):
        at += gap * MS_PER_DAY + 3_600_000 * (i % 5)
        fold_purchase(state, (at, f"e{i}", PURCHASE, 1_000, f"o{i}"), RULES.windows.bucket_days)
    state.drift_level = level
    return state


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 60), min_size=1, max_size=12),
    silence_days=st.floats(0.0, 400.0),
    level=st.integers(0, 2),
)
def test_next_due_equals_the_full_search(gaps: list[int], silence_days: float, level: int) -> None:
    state = _state(gaps, level)
    assert state.last_ms is not None and state.first_ms is not None
    now = state.last_ms + int(silence_days * MS_PER_DAY)
    classifier = Classifier(RULES, default_model())
    verdict = classifier._verdict(state, now)
    got = classifier._next_due(state, verdict, now)

    # the other due times: the same call with drift out of the picture
    others = _state(gaps, 3)
    others.scores = state.scores
    expected = Classifier(RULES, default_model())._next_due(others, verdict, now)
    # the drift due time by the full search, no shortcut
    first_day = day_of(state.first_ms)
    t_x = day_of(state.last_ms) - first_day
    drift = Classifier(RULES, default_model())._drift_due(
        state, state.repeat_days, t_x, first_day, None
    )
    if drift is not None and drift > now and (expected is None or drift < expected):
        expected = drift
    assert got == expected
