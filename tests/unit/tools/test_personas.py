"""The persona generator: reproducible, valid where it means to be, broken where it means to be.

The replayed log is only a fair test of the stream if every line is what its label says: a
valid event the decoders accept, a record the stream must put back in order, one it must
dead-letter as late, a duplicate it must drop, or an invalid record with a known dead-letter
reason. These tests run a generated log through the real :class:`Processor` **in delivery
order** (the order a producer would send the file in) and check each line's fate.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import DeadLetter, SourceRef, decode_interaction, decode_purchase
from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.processor import TICK_HEADER, MemoryPartitionStore, Processor, tick_record
from streams.tools.personas import (
    INVALID_KINDS,
    CustomerTruth,
    GeneratedLog,
    PersonaConfig,
    generate,
    main,
    read_truth,
    write,
)
from streams.tools.replay import Planned, as_consumed, plan

# Larger noise shares than the defaults, so that a small log still has enough of each to
# measure; 400 customers give ~14,000 lines.
CONFIG = PersonaConfig.for_customers(
    400,
    seed=11,
    invalid_share=0.05,
    late_share=0.02,
    very_late_share=0.005,
    duplicate_share=0.02,
)
SETTINGS = Settings()
NOW = datetime.fromtimestamp(CONFIG.end_ms / 1000, UTC) + timedelta(days=1)


@pytest.fixture(scope="module")
def log() -> GeneratedLog:
    return generate(CONFIG)


def delivery_plan(lines: list[bytes], settings: Settings, end_ms: int) -> list[Planned]:
    """The lines as a producer sends the file: in file order, then the end-of-log ticks.

    ``plan()`` sorts records by event time, which would undo the lateness under test; a plan
    of one line at a time keeps the file's order (its own ticks are dropped).
    """
    out = [p for line in lines for p in plan([line], settings) if not p.headers]
    for partition in range(settings.partitions):
        tick = tick_record(settings.topics.purchases, partition, end_ms)
        out.append(
            Planned(tick.topic, partition, tick.key, tick.value, end_ms, ((TICK_HEADER, b"1"),))
        )
    return out


def test_same_config_same_bytes_other_seed_other_bytes() -> None:
    small = dataclasses.replace(CONFIG, true_friends=20, butterflies=20, barnacles=20, strangers=40)
    first, again = generate(small), generate(small)
    assert first.lines == again.lines
    assert first.labels == again.labels
    assert [t.to_json() for t in first.truth] == [t.to_json() for t in again.truth]
    other = generate(dataclasses.replace(small, seed=small.seed + 1))
    assert other.lines != first.lines


def test_one_customer_does_not_depend_on_the_others() -> None:
    """Each customer has its own generator: adding strangers leaves true friends' orders."""
    base = PersonaConfig(true_friends=5, butterflies=0, barnacles=0, strangers=1, seed=3)
    more = dataclasses.replace(base, strangers=30)

    def friends(cfg: PersonaConfig) -> list[tuple[str, int, int]]:
        return sorted(
            (t.persona, t.orders, t.net_spend_cents)
            for t in generate(cfg).truth
            if t.persona == "true_friend"
        )

    assert friends(base) == friends(more)


def test_every_valid_line_decodes(log: GeneratedLog) -> None:
    source = SourceRef("test", 0, 0)
    kinds: Counter[str] = Counter()
    for line, label in zip(log.lines, log.labels, strict=True):
        if label.startswith("invalid:"):
            continue
        data = orjson.loads(line)
        decode = decode_purchase if "order_id" in data else decode_interaction
        event = decode(line, source, now=NOW)
        assert not isinstance(event, DeadLetter), (label, line, event)
        assert getattr(event, "currency", CONFIG.currency) == CONFIG.currency
        kinds[str(event.type)] += 1
    assert {"purchase", "refund", "visit", "product_view", "email_open"} <= set(kinds)
    assert {"cart_add", "checkout_start", "email_click", "support_ticket"} <= set(kinds)


def test_every_line_meets_its_intended_fate(log: GeneratedLog) -> None:
    """Invalid lines and hours-late interactions are dead-lettered with the expected reason,
    duplicates are dropped, and nothing else is dead-lettered (reordered lines are put back in
    order, hours-late purchases and refunds are folded in as corrections)."""
    rules, model = load_rules(), default_model()
    assert rules.allowed_lateness_seconds == CONFIG.allowed_lateness_seconds
    stores: dict[int, MemoryPartitionStore] = {}
    processor = Processor(
        SETTINGS,
        rules,
        model,
        lambda p: stores.setdefault(p, MemoryPartitionStore()),
        wall_clock=lambda: NOW,
    )
    records = as_consumed(delivery_plan(log.lines, SETTINGS, CONFIG.end_ms))
    reasons: dict[str, str] = {}
    for record in records:
        for out in processor.process(record):
            if out.topic == SETTINGS.topics.dead_letters:
                letter = orjson.loads(out.value)
                reasons[letter["id"]] = letter["reason_code"]
    expected: dict[str, str] = {}
    corrected = 0
    for record, label in zip(records, log.labels, strict=False):
        if label == "late" and record.topic == SETTINGS.topics.purchases:
            corrected += 1
        elif label == "late":
            expected[f"dl:{record.topic}:{record.partition}:{record.offset}"] = "late_event"
        elif label.startswith("invalid:"):
            reason = INVALID_KINDS[label.removeprefix("invalid:")]
            expected[f"dl:{record.topic}:{record.partition}:{record.offset}"] = reason
    assert reasons == expected
    assert processor.counters.duplicates == log.labels.count("duplicate")
    assert corrected > 0
    assert processor.counters.corrections == corrected
    assert set(INVALID_KINDS.values()) | {"late_event"} == set(reasons.values())


def test_lateness_is_arranged_per_partition(log: GeneratedLog) -> None:
    """A line is behind a later-timed record of its topic and partition exactly when it is
    labelled reordered (by less than the allowed lateness) or late (by more)."""
    lateness_ms = round(CONFIG.allowed_lateness_seconds * 1000)
    planned = [p for line in log.lines for p in plan([line], SETTINGS) if not p.headers]
    newest: dict[tuple[str, int], int] = {}
    seen: set[bytes] = set()
    behind: dict[str, list[int]] = {"ok": [], "reordered": [], "late": []}
    for p, label, line in zip(planned, log.labels, log.lines, strict=True):
        if label.startswith("invalid:") or line in seen or p.at_ms is None:
            continue
        seen.add(line)
        lane = (p.topic, p.partition)
        top = newest.get(lane, p.at_ms)
        behind[label].append(top - p.at_ms)
        newest[lane] = max(top, p.at_ms)
    assert all(d <= 0 for d in behind["ok"])
    assert behind["reordered"]
    assert all(0 < d < lateness_ms for d in behind["reordered"])
    assert behind["late"]
    assert all(d > 60_000 for d in behind["late"])


def test_noise_shares_are_near_their_configuration(log: GeneratedLog) -> None:
    counts = Counter(log.labels)
    invalid = sum(v for k, v in counts.items() if k.startswith("invalid:"))
    events = len(log) - invalid - counts["duplicate"]  # every distinct valid event
    assert invalid / len(log) == pytest.approx(CONFIG.invalid_share, rel=0.05)
    assert counts["reordered"] / events == pytest.approx(CONFIG.late_share, rel=0.05)
    assert counts["late"] / events == pytest.approx(CONFIG.very_late_share, rel=0.05)
    # hours-late records are not re-sent: a copy of a late interaction would be a second
    # late dead letter rather than a duplicate
    assert counts["duplicate"] / events == pytest.approx(CONFIG.duplicate_share, rel=0.1)
    kinds = {k.removeprefix("invalid:") for k in counts if k.startswith("invalid:")}
    assert kinds == set(INVALID_KINDS)


def test_truth_matches_the_log(log: GeneratedLog) -> None:
    """Per customer, the truth counts the orders the stream will apply (late ones included:
    they are folded in as corrections)."""
    orders: Counter[str] = Counter()
    for line, label in zip(log.lines, log.labels, strict=True):
        if label in ("ok", "reordered", "late"):
            data = orjson.loads(line)
            if data.get("type") == "purchase" and "order_id" in data:
                orders[data["customer_id"]] += 1
    assert {t.customer_id: t.orders for t in log.truth if t.orders} == dict(orders)
    personas = Counter(t.persona for t in log.truth)
    assert personas == {
        "true_friend": CONFIG.true_friends,
        "butterfly": CONFIG.butterflies,
        "barnacle": CONFIG.barnacles,
        "stranger": CONFIG.strangers,
    }
    churned = [t for t in log.truth if t.persona == "true_friend" and t.churned_at]
    assert len(churned) == round(CONFIG.churn_share * CONFIG.true_friends)
    for t in churned:
        assert t.last_purchase_at is not None and t.churned_at is not None
        assert t.last_purchase_at < t.churned_at


def test_personas_keep_clear_of_the_default_splits(log: GeneratedLog) -> None:
    """The margins that make the truth hold under the default model (splits: $100 and 4 orders
    per 364 days): butterflies never have 4 orders, barnacles never spend $90, strangers
    never buy on 3 days, true friends buy often and a lot. (Totals over the whole log: a
    one-year log here, so they are also the 364-day window's.)"""
    for t in log.truth:
        if t.persona == "butterfly":
            assert 1 <= t.orders <= 3 and t.net_spend_cents >= 13_000
        elif t.persona == "barnacle":
            assert t.orders >= 5 and t.net_spend_cents < 9_000
        elif t.persona == "stranger":
            assert t.orders <= 2 and t.net_spend_cents < 7_000
        elif t.churned_at is None:
            assert t.orders >= 10 and t.net_spend_cents > 50_000


def test_write_and_read_back(tmp_path: Path) -> None:
    small = generate(PersonaConfig(true_friends=3, butterflies=3, barnacles=3, strangers=3))
    events, truth = tmp_path / "e.jsonl", tmp_path / "t.jsonl"
    write(small, events, truth)
    assert events.read_bytes() == b"".join(line + b"\n" for line in small.lines)
    assert read_truth(truth) == small.truth
    assert CustomerTruth.from_json(small.truth[0].to_json()) == small.truth[0]


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "--sample" in capsys.readouterr().out
    events, truth = tmp_path / "e.jsonl", tmp_path / "t.jsonl"
    args = ["--customers", "20", "--days", "120", "--seed", "5"]
    assert main([*args, "--out", str(events), "--truth", str(truth)]) == 0
    assert len(read_truth(truth)) == 20
    assert events.stat().st_size > 0


@pytest.mark.parametrize(
    "change",
    [
        {"true_friends": -1},
        {"true_friends": 0, "butterflies": 0, "barnacles": 0, "strangers": 0},
        {"days": 10},
        {"invalid_share": 1.0},
        {"late_share": 1.5},
        {"churn_before_end_days": (100.0, 50.0)},
        {"allowed_lateness_seconds": 1.0},
        {"currency": "usd"},
    ],
)
def test_bad_configs_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message names its own field
        dataclasses.replace(PersonaConfig(), **change)
