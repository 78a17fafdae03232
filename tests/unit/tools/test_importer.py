"""The import's pure parts: reading CSV by a column mapping, the fold, the changelog layout."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas import DeadLetterReason, SegmentChange, parse_output
from streams.config import Settings
from streams.convert import trigger_of
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.processor import CLOCK_KEY
from streams.tools import importer
from streams.tools.reference import run_reference
from streams.tools.replay import as_consumed, partition_for, plan

RULES = load_rules()
SETTINGS = Settings()
CSV = """Invoice,Customer,Date,Total
A1,alice,2025-01-02T10:00:00,120.50
A2,alice,2025-02-03,80
A3,alice,2025-02-10 09:30:00+01:00,-20
B1,bob,2025-01-05T12:00:00Z,35.00
B2,bob,not a date,35.00
"""
MAPPING = "customer_id=Customer,occurred_at=Date,amount=Total,order_id=Invoice"


def folded_sample() -> importer.Folded:
    """The bundled sample log, folded."""
    sample = Path(__file__).resolve().parents[3] / "streams" / "data" / "sample.jsonl"
    lines, fmt = importer.read_log(sample, "auto", SETTINGS, None)
    return importer.fold(lines, fmt, SETTINGS, RULES, default_model())


def test_a_csv_mapping_names_the_required_fields() -> None:
    assert importer.parse_csv_map(MAPPING) == {
        "customer_id": "Customer",
        "occurred_at": "Date",
        "amount": "Total",
        "order_id": "Invoice",
    }
    with pytest.raises(importer.ImportRefusedError, match="must name the column of amount"):
        importer.parse_csv_map("customer_id=C,occurred_at=D")
    with pytest.raises(importer.ImportRefusedError, match="unknown field"):
        importer.parse_csv_map(MAPPING + ",colour=Colour")
    with pytest.raises(importer.ImportRefusedError, match="field=column"):
        importer.parse_csv_map("customer_id")


def test_csv_rows_become_purchase_events() -> None:
    events = [
        orjson.loads(line)
        for line in importer.csv_lines(CSV, importer.parse_csv_map(MAPPING), "USD")
    ]
    assert [e["order_id"] for e in events] == ["A1", "A2", "A3", "B1", "B2"]
    assert events[0] == {
        "event_id": "csv-2",
        "customer_id": "alice",
        "occurred_at": "2025-01-02T10:00:00+00:00",  # naive: UTC
        "type": "purchase",
        "order_id": "A1",
        "amount": "120.50",
        "currency": "USD",
    }
    assert events[1]["occurred_at"] == "2025-02-03T00:00:00+00:00"
    assert (events[2]["type"], events[2]["amount"]) == ("refund", "20")
    assert events[4]["occurred_at"] == "not a date"  # left for the decoder to refuse


def test_a_csv_without_a_mapped_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(CSV)
    with pytest.raises(importer.ImportRefusedError, match="no column Amount"):
        importer.read_log(
            path,
            "auto",
            SETTINGS,
            importer.parse_csv_map("customer_id=Customer,occurred_at=Date,amount=Amount"),
        )
    with pytest.raises(importer.ImportRefusedError, match="needs --csv-map"):
        importer.read_log(path, "auto", SETTINGS, None)


def test_the_fold_is_the_replay_reference_and_bad_rows_are_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(CSV)
    lines, fmt = importer.read_log(path, "auto", SETTINGS, importer.parse_csv_map(MAPPING))
    folded = importer.fold(lines, fmt, SETTINGS, RULES, default_model())
    assert folded.events == 5
    assert dict(folded.dead_reasons) == {DeadLetterReason.INVALID_EVENT.value: 1}
    assert folded.customers == 2
    planned = plan(lines, SETTINGS, lateness_ms=RULES.allowed_lateness_ms)
    reference = run_reference(SETTINGS, RULES, default_model(), as_consumed(planned))
    replayed = {
        s.customer_id: s.to_bytes() for st in reference.stores.values() for s in st.states()
    }
    assert {s.customer_id: s.to_bytes() for s in folded.states()} == replayed
    assert sum(folded.outputs.values()) > 0  # outputs were made, and counted, not published


def test_changelog_rows_have_the_worker_layout() -> None:
    lines = [
        line.encode()
        for line in (
            '{"event_id":"e1","customer_id":"carol","occurred_at":"2025-03-01T10:00:00Z",'
            '"order_id":"o1","amount":"10.00","currency":"USD"}',
            '{"event_id":"e2","customer_id":"carol","occurred_at":"2025-03-09T10:00:00Z",'
            '"order_id":"o2","amount":"12.00","currency":"USD"}',
        )
    ]
    folded = importer.fold(lines, "jsonl", SETTINGS, RULES, default_model())
    rows = list(importer.changelog_records(folded))
    partition = partition_for(b"carol", SETTINGS.partitions)
    keys = {key: value for p, key, value in rows if p == partition}
    assert set(keys) == {b'"carol"', orjson.dumps(CLOCK_KEY.format(partition=partition))}
    assert keys[b'"\\u0000clock/' + str(partition).encode() + b'"'] == orjson.dumps(
        list(folded.stores[partition].clock())
    )
    state = next(iter(folded.states()))
    # the offsets keep their keys (the partition) and apply nothing of the live topics
    assert state.offsets and set(state.offsets.values()) == {-1}
    assert all(key.endswith(f"/{partition}") for key in state.offsets)


def test_recalibration_publishes_a_model_of_the_history() -> None:
    folded = folded_sample()
    model = importer.recalibrate(folded, RULES, default_model())
    assert model.version != default_model().version
    assert model.population == sum(1 for s in folded.states() if s.first_ms is not None)
    profiles = importer.final_profiles(folded)
    assert len(profiles) == folded.customers
    assert {p.profile.model_version for p in profiles} == {model.version}


def test_final_profiles_in_batches_are_the_final_profiles() -> None:
    """Batch by batch (the import writes one while it builds the next) as all at once."""
    whole = folded_sample()
    importer.recalibrate(whole, RULES, default_model())
    want = {u.profile.customer_id: u for u in importer.final_profiles(whole)}
    batched = folded_sample()
    importer.recalibrate(batched, RULES, default_model())
    batches = list(importer.final_profile_batches(batched, size=7))
    assert len(batches) > 2 and all(0 < len(b) <= 7 for b in batches)
    got = [u for batch in batches for u in batch]
    assert len({u.profile.customer_id for u in got}) == len(got)  # each customer once
    assert {u.profile.customer_id: u for u in got} == want


def test_current_memberships_state_where_customers_are_and_trigger_no_offer() -> None:
    folded = folded_sample()
    updates = importer.final_profiles(folded)
    records = importer.current_memberships(SETTINGS, RULES, updates)
    changes = [c for r in records if isinstance(c := parse_output(r.value), SegmentChange)]
    assert len(changes) == len(records)
    classified = [u for u in updates if u.profile.quadrant is not None]
    assert len(changes) == 2 * len(classified) > 0
    for change in changes:
        assert (change.cause, change.from_value) == ("import", None)
        assert trigger_of(change) is None  # no retention offer for a statement of membership
    by_customer = {(c.customer_id, c.dimension): c.to_value for c in changes}
    for update in classified:
        p = update.profile
        assert by_customer[(p.customer_id, "quadrant")] == p.quadrant
        assert by_customer[(p.customer_id, "rfm_segment")] == p.rfm_segment
    # the same import gives the same ids
    again = importer.current_memberships(SETTINGS, RULES, updates)
    assert [r.value for r in again] == [r.value for r in records]
