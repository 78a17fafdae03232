"""The worker's table stores: local writes wait for the changelog; bulk restore bookkeeping."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP

from streams.domain.state import CustomerState
from streams.worker.app import CurrentRecord
from streams.worker.bulk_store import STORE_URLS, BulkMemoryStore, BulkRocksStore
from streams.worker.table_store import (
    TableStore,
    as_current_event,
    changelog_key,
    changelog_written,
)


def _table(store: str, datadir: Path) -> Any:
    app = faust.App("unit", store=STORE_URLS[store], datadir=str(datadir), key_serializer="raw")
    return app.Table(
        "customers",
        default=None,
        key_type=str,
        value_type=bytes,
        partitions=4,
        schema=faust.Schema(
            key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"
        ),
    )


@pytest.fixture(params=["memory", "rocksdb"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return _table(request.param, tmp_path)


@dataclass
class Record:
    """What the bulk restore reads: an aiokafka record's key, value and offset."""

    key: bytes
    value: bytes | None
    offset: int


@dataclass
class Msg:
    """The part of a consumed message a RocksDB table's read looks at."""

    partition: int


@dataclass
class Acked:
    offset: int


class HeldBatch:
    """What the producer's ``create_batch`` gives: records appended, never full here."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: None) -> object:
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        """send_batched closes a batch before handing it over (no linger)."""


class HeldProducer:
    """Takes whole batches (as aiokafka's ``send_batch``) and acknowledges them when told to."""

    def __init__(self) -> None:
        self.batches: list[tuple[asyncio.Future[Any], HeldBatch]] = []

    def create_batch(self) -> HeldBatch:
        return HeldBatch()

    async def send_batch(self, batch: HeldBatch, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.batches.append((future, batch))
        return future

    @property
    def records(self) -> int:
        return sum(len(batch.records) for _, batch in self.batches)

    def ack_all(self, first_offset: int) -> None:
        for future, batch in self.batches:
            future.set_result(Acked(first_offset))
            first_offset += len(batch.records)


def _local(table: Any) -> dict[str, bytes]:
    store = table.data
    if isinstance(store, BulkRocksStore):  # its reads go to the active partitions only
        return {
            changelog_key_text(k): v
            for db in store._dbs.values()
            for k, v in db.items()
            if k != store.offset_key
        }
    return dict(store.data)


def changelog_key_text(raw: bytes) -> str:
    import orjson

    key: str = orjson.loads(raw)
    return key


def test_local_store_is_written_only_once_the_changelog_acknowledged(table: Any) -> None:
    """The invariant that closes the RocksDB gap: never ahead of the changelog."""
    tp = TP(table.changelog_topic_name, 2)
    state = CustomerState("cust-1")

    async def run() -> None:
        producer = HeldProducer()
        before = table.data.persisted_offset(tp)
        store = TableStore(table, 2)
        store.put(state)
        store.put_clock(5, 6)
        writes = store.flush(CurrentRecord(None))
        assert _local(table) == {}, "written locally by the flush"
        sending = asyncio.create_task(changelog_written(writes, producer))
        await asyncio.sleep(0.05)
        assert producer.records == 2, "both records handed to the producer"
        assert _local(table) == {}, "written locally before the broker acknowledged"
        assert table.data.persisted_offset(tp) == before
        assert store.get("cust-1") is state, "the batch's states stay readable meanwhile"
        producer.ack_all(first_offset=40)
        await sending
        assert _local(table) == {"cust-1": state.to_bytes(), "\x00clock/2": b"[5,6]"}

    if isinstance(table.data, BulkMemoryStore):
        table.data._restore_apply(tp, (), 39)  # held completely up to 39 (else no offset)
    asyncio.run(run())
    assert table.data.persisted_offset(tp) == 41


def test_restore_applies_rows_deletes_and_the_offset(table: Any) -> None:
    tp = TP(table.changelog_topic_name, 1)
    store = table.data
    assert store._restore_from(tp) == 0
    store._restore_begin(tp)
    store._restore_apply(
        tp,
        [
            Record(changelog_key("a"), b"[1]", 0),
            Record(changelog_key("b"), b"[2]", 1),
            Record(changelog_key("a"), None, 2),
            Record(changelog_key("\x00clock/1"), b"[3,4]", 3),
        ],
        3,
    )
    store._restore_apply(tp, (), 5)  # the last offsets were compacted away
    assert store.persisted_offset(tp) == 5
    assert store._restore_from(tp) == 6
    assert _local(table) == {"b": b"[2]", "\x00clock/1": b"[3,4]"}


def test_memory_store_keeps_standbys_and_forgets_partitions_it_no_longer_holds(
    tmp_path: Path,
) -> None:
    table = _table("memory", tmp_path)
    store: BulkMemoryStore = table.data
    topic = table.changelog_topic_name
    for p in range(3):
        store._restore_apply(TP(topic, p), [Record(changelog_key(f"c{p}"), b"[0]", 7)], 7)
    asyncio.run(store.on_recovery_completed({TP(topic, 0)}, {TP(topic, 1)}))
    assert dict(store.data) == {"c0": b"[0]", "c1": b"[0]"}
    assert store.persisted_offset(TP(topic, 1)) == 7
    assert store.persisted_offset(TP(topic, 2)) is None
    # a partition not held completely never claims an offset (it is read whole next time)
    store.set_persisted_offset(TP(topic, 2), 9)
    assert store.persisted_offset(TP(topic, 2)) is None
    store.set_persisted_offset(TP(topic, 0), 9)
    assert store.persisted_offset(TP(topic, 0)) == 9


def test_memory_store_holds_values_at_their_own_size(tmp_path: Path) -> None:
    """orjson's results sit in 4 KiB+ allocations: the store keeps right-sized copies."""
    import tracemalloc

    import orjson

    table = _table("memory", tmp_path)
    store: BulkMemoryStore = table.data
    tracemalloc.start()
    try:
        rows = [(f"c{i}", orjson.dumps([2, f"c{i}", "x" * 300])) for i in range(500)]
        store.write_acknowledged(0, rows, 499)
        del rows
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store.data) == 500
    assert held / 500 < 1024, f"{held / 500:.0f} B held per value of ~320 B"


def test_an_acknowledged_tombstone_removes_the_local_row(table: Any) -> None:
    store = table.data
    store.write_acknowledged(3, [("gone", b"[1]"), ("kept", b"[2]")], 10)
    store.write_acknowledged(3, [("gone", None)], 11)
    assert _local(table) == {"kept": b"[2]"}
    assert store.persisted_offset(TP(table.changelog_topic_name, 3)) in (11, None)


def test_a_state_is_read_directly_as_the_table_would_read_it(table: Any) -> None:
    """``TableStore.get`` reads the store's row without Faust's table and current event."""
    state = CustomerState("cust-7")
    table.data.write_acknowledged(1, [("cust-7", state.to_bytes())], 5)
    assert table.data.read_raw(1, "cust-7") == state.to_bytes()
    with as_current_event(CurrentRecord(Msg(1))):
        assert table.get("cust-7") == state.to_bytes()  # what Faust's own lookup gives
    got = TableStore(table, 1).get("cust-7")
    assert got is not None and got.to_bytes() == state.to_bytes()
    assert TableStore(table, 1).get("nobody") is None
    assert table.data.read_raw(1, "nobody") is None


def test_the_store_writes_skip_rocksdbs_write_ahead_log(tmp_path: Path) -> None:
    """The write options the RocksDB store writes with leave the write-ahead log empty, where
    the default options log every batch (the changelog is the store's log)."""
    import rocksdict

    from streams.worker.bulk_store import _NO_WAL

    def wal_bytes(directory: Path, options: rocksdict.WriteOptions | None) -> int:
        db = rocksdict.Rdict(str(directory), options=rocksdict.Options(raw_mode=True))
        try:
            for i in range(200):
                batch = rocksdict.WriteBatch(raw_mode=True)
                batch.put(f"k{i}".encode(), b"x" * 100)
                db.write(batch, options)
            return sum(f.stat().st_size for f in directory.glob("*.log"))
        finally:
            db.close()

    assert wal_bytes(tmp_path / "default", None) > 20_000
    assert wal_bytes(tmp_path / "store", _NO_WAL) == 0
