"""The due index a worker reads after a recovery equals a rebuild from every decoded state."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from faust.assignor.client_assignment import ClientAssignment
from faust.types import TP

from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.domain.state import CustomerState
from streams.worker.bulk_store import STORE_URLS
from streams.worker.table_store import TableStores, changelog_key, local_rows
from tests.unit.domain.logs import format_3_row

PARTITIONS = 4


def _table(store: str, datadir: Path) -> Any:
    app = faust.App("unit", store=STORE_URLS[store], datadir=str(datadir), key_serializer="raw")
    table: Any = app.Table(
        "customers",
        default=None,
        key_type=str,
        value_type=bytes,
        partitions=PARTITIONS,
        schema=faust.Schema(
            key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"
        ),
    )
    # every partition active (the RocksDB store reads the active partitions only)
    actives = {table.changelog_topic_name: list(range(PARTITIONS))}
    assignor: Any = app.assignor
    assignor._assignment = ClientAssignment(actives=actives, standbys={})
    return table


class Record:
    """What the bulk restore reads: an aiokafka record's key, value and offset."""

    def __init__(self, key: bytes, value: bytes | None, offset: int) -> None:
        self.key, self.value, self.offset = key, value, offset


def _state(rnd: random.Random, customer_id: str, partition: int) -> CustomerState:
    state = CustomerState(customer_id)
    state.seq = rnd.randrange(50)
    state.orders = rnd.randrange(5)
    if rnd.random() < 0.9:  # a state with no offset applied has no partition (not indexed)
        state.offsets = {f"purchases/{partition}": rnd.randrange(10**6)}
        if rnd.random() < 0.5:
            state.offsets[f"interactions/{partition}"] = rnd.randrange(10**6)
    if rnd.random() < 0.8:
        state.next_due_ms = rnd.randrange(10**12, 2 * 10**12)
    state.segment = rnd.choice([None, "champions", 'odd "segment", with a comma'])
    return state


def _row(rnd: random.Random, state: CustomerState) -> bytes:
    """Format 4 mostly; format 3 rows (written before the index head) too."""
    if rnd.random() < 0.3:
        return orjson.dumps(format_3_row(state))
    return state.to_bytes()


def _rebuilt(table: Any) -> dict[int, list[tuple[int, str]]]:
    """The reference: every row decoded whole, its partition from its offsets."""
    due: dict[int, list[tuple[int, str]]] = {}
    for key, raw in local_rows(table):
        if key.startswith("\x00"):
            continue
        state = CustomerState.from_bytes(raw)
        assert state.customer_id == key
        if state.offsets and state.next_due_ms is not None:
            partition = int(min(state.offsets).rsplit("/", 1)[1])
            due.setdefault(partition, []).append((state.next_due_ms, state.customer_id))
    return {p: sorted(entries) for p, entries in due.items()}


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_due_index_after_restore_and_writes_equals_a_full_rebuild(
    store: str, seed: int, tmp_path: Path
) -> None:
    rnd = random.Random(seed)
    table = _table(store, tmp_path)
    ids = [f"cust-{i}" for i in range(600)] + ['qu"ote,comma', "ünï/cödé", "\\back"]
    home = {cid: rnd.randrange(PARTITIONS) for cid in ids}
    head_rows = 0
    # a new machine: the changelog restored in bulk, updates and tombstones included
    for partition in range(PARTITIONS):
        tp = TP(table.changelog_topic_name, partition)
        table.data._restore_begin(tp)
        records: list[Record] = []
        mine = [cid for cid in ids if home[cid] == partition]
        for _ in range(3 * len(mine)):
            cid = rnd.choice(mine)
            if rnd.random() < 0.1:
                value = None  # an erased customer's tombstone
            else:
                value = _row(rnd, _state(rnd, cid, partition))
                head_rows += CustomerState.index_head(value) is not None
            records.append(Record(changelog_key(cid), value, len(records)))
        records.append(Record(changelog_key(f"\x00clock/{partition}"), b"[5,6]", len(records)))
        erased = orjson.dumps({"partition": partition})
        records.append(Record(changelog_key(f"\x00erased/h{partition}"), erased, len(records)))
        half = len(records) // 2
        table.data._restore_apply(tp, records[:half], half - 1)
        table.data._restore_apply(tp, records[half:], len(records) - 1)
    # the worker's own acknowledged writes after that (restart: the store is as they left it)
    for partition in range(PARTITIONS):
        mine = [cid for cid in ids if home[cid] == partition]
        rows: list[tuple[str, bytes | None]] = [
            (cid, _state(rnd, cid, partition).to_bytes()) for cid in rnd.sample(mine, 20)
        ]
        rows.append((rnd.choice(mine), None))
        table.data.write_acknowledged(partition, rows, 10**6)
    assert head_rows > 1000, "the index heads were exercised"

    stores = TableStores(table)
    expected = _rebuilt(table)
    assert sum(map(len, expected.values())) > 300
    for partition in range(PARTITIONS):
        store_p = stores.for_partition(partition)
        assert store_p.clock() == (5, 6)
        assert store_p.erased == {f"h{partition}"}
        loaded = list(store_p.due_entries())
        assert sorted(loaded) == expected.get(partition, [])
        # the engine's due index from it is the one a rebuild from decoded states gives
        engine = PartitionEngine(load_rules(), default_model(), DictStore())
        engine.rebuild(loaded)
        assert sorted(engine._due) == expected.get(partition, [])
        # the compaction's lookup reads the same due time from each row's head, for any format
        for due_ms, customer_id in loaded:
            assert store_p.due_of(customer_id) == due_ms
        assert store_p.due_of("never-seen") is None


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_due_of_prefers_the_batch_and_forgets_the_erased(store: str, tmp_path: Path) -> None:
    """Within a batch the cached (changed) state is current; an erased customer has none."""
    rnd = random.Random(4)
    table = _table(store, tmp_path)
    state = _state(rnd, "cust-1", 0)
    state.next_due_ms = 1_000
    other = _state(rnd, "cust-2", 0)
    other.next_due_ms = 2_000
    table.data.write_acknowledged(
        0, [("cust-1", state.to_bytes()), ("cust-2", other.to_bytes())], 5
    )
    store_p = TableStores(table).for_partition(0)
    assert store_p.due_of("cust-1") == 1_000
    changed = store_p.get("cust-1")
    assert changed is not None
    changed.next_due_ms = 3_000
    store_p.put(changed)
    assert store_p.due_of("cust-1") == 3_000
    store_p.erase("cust-2")
    assert store_p.due_of("cust-2") is None


def test_index_head_reads_what_a_full_parse_reads() -> None:
    rnd = random.Random(9)
    for i in range(500):
        state = _state(rnd, f"c{i}", rnd.randrange(12))
        raw = state.to_bytes()
        _customer_id, partition, due = CustomerState.index_entry(raw)
        assert CustomerState.index_head(raw) == (partition, due)
        assert CustomerState.from_bytes(raw) == state
        old = orjson.dumps(format_3_row(state))  # format 3 still reads, the same state
        assert CustomerState.index_head(old) is None
        assert CustomerState.index_entry(old) == (state.customer_id, partition, due)
        assert CustomerState.from_bytes(old) == state
