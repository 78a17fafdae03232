"""Table stores that restore the changelog in bulk and write locally only what the broker has.

Why: Faust's own recovery turns every changelog record into an event and costs ~200 µs of CPU
per record (4,400 records/s): a million customers took ~4 minutes to restore. These stores
restore in their ``on_rebalance`` instead, which Faust awaits before its ``Recovery`` service
decides what to read: for each assigned changelog partition (active or standby) a plain
aiokafka consumer reads from the store's persisted offset + 1 to the end offset in large
fetches and writes the raw records into the store (~5 µs a record). The store then reports
the last offset it holds from :meth:`persisted_offset`, and ``Recovery`` (which starts reading
at that offset + 1 and compares with the highwater) has nothing, or only a short tail, left.

Both stores also take the worker's table writes through :meth:`write_acknowledged`, called
only once the broker acknowledged those changelog records (``table_store.changelog_written``):
local state, and the offset it claims, are never ahead of the changelog. (Faust's own table
writes go to RocksDB first and to the changelog later: a worker killed in between kept rows
the changelog never got, and skipped redelivered events as applied while another worker that
took the partition over restored the older rows.)

**Pinned.** These classes override parts of faust-streaming's stores (the memory store's
``_key_partition``, the RocksDB store's per-partition databases and offset key) and rely on
``Recovery`` reading from ``persisted_offset(tp) + 1``; they are written for the versions in
``streams.worker.consumer.WRITTEN_FOR`` (checked by a unit test and at worker start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
import rocksdict
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP
from faust.stores import STORES
from faust.stores import memory as faust_memory
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP

from streams.worker.memory import malloc_trim, trim_now

log = logging.getLogger(__name__)

FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_BYTES = 16 * 1024 * 1024
RESTORE_RECORDS = 5_000
"""Records read per ``getmany`` of the bulk restore (one write batch each).

Why not more: the records of one ``getmany`` are alive together, and the rows kept are
allocated among them; at 50,000 a worker that restored 99,376 customers kept ~25 MiB of
Python's pools half-empty, 1,511 B of RSS per customer; at 5,000, 959 B
(``bench/bench_recovery.py --only-processed``, 2026-12-07)."""

STORE_URLS = {
    "memory": "rfm-memory://",
    "rocksdb": "rfm-rocksdb://",
}
"""The ``store=`` URL of the worker's app for each ``RFM_STORE`` value."""

STORES.aliases.setdefault("rfm-memory", "streams.worker.bulk_store:BulkMemoryStore")
STORES.aliases.setdefault("rfm-rocksdb", "streams.worker.bulk_store:BulkRocksStore")


def decode_key(raw: bytes) -> str:
    """The table key of a changelog key (JSON text, see ``table_store.changelog_key``)."""
    key = orjson.loads(raw)
    if not isinstance(key, str):
        raise ValueError(f"changelog key is not a JSON string: {raw[:40]!r}")
    return key


class BulkRestore:
    """What both stores share: the bulk read of their changelog partitions."""

    table: Any
    app: Any
    kafka_options: dict[str, Any] | None = None
    bootstrap: str | None = None
    restored_records = 0
    restore_seconds = 0.0

    def configure(self, bootstrap: str, kafka_options: dict[str, Any]) -> None:
        """Where the changelog is read from (the worker's Kafka settings)."""
        self.bootstrap = bootstrap
        self.kafka_options = dict(kafka_options)

    # -- implemented by the stores -------------------------------------------------------------
    def _restore_from(self, tp: TP) -> int:
        """The first changelog offset this store does not hold yet (0 if none)."""
        raise NotImplementedError

    def _restore_begin(self, tp: TP) -> None:
        """Called before a partition is read from offset 0 (drop what may be stale)."""

    def _restore_apply(self, tp: TP, records: Sequence[Any], last_offset: int) -> None:
        """Write ``records`` (aiokafka records, in order) and remember ``last_offset``."""
        raise NotImplementedError

    # -- the restore ---------------------------------------------------------------------------
    def _changelog_tps(self, assigned: Iterable[TP]) -> list[TP]:
        topic = self.table.changelog_topic_name
        return sorted(tp for tp in assigned if tp.topic == topic)

    async def bulk_restore(self, tps: Sequence[TP], generation_id: int) -> None:
        """Read each partition from what the store holds to the end offset, in bulk."""
        if not tps or self.bootstrap is None:
            return
        started = time.perf_counter()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=FETCH_MAX_BYTES,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            check_crcs=False,
            **(self.kafka_options or {}),
        )
        await consumer.start()
        count = 0
        try:
            ktps = [KafkaTP(tp.topic, tp.partition) for tp in tps]
            ends = await consumer.end_offsets(ktps)
            begins = await consumer.beginning_offsets(ktps)
            todo: dict[KafkaTP, TP] = {}
            starts: dict[KafkaTP, int] = {}
            for tp, ktp in zip(tps, ktps, strict=True):
                start = self._restore_from(tp)
                if start >= ends[ktp]:
                    if start == 0:  # an empty changelog partition: held completely
                        self._restore_apply(tp, (), -1)
                    continue
                if start == 0:
                    self._restore_begin(tp)
                todo[ktp] = tp
                starts[ktp] = max(start, begins[ktp])
            consumer.assign(list(todo))
            for ktp, start in starts.items():
                consumer.seek(ktp, start)
            while todo:
                if generation_id != self.app.consumer_generation_id:
                    log.info("rebalanced again: bulk restore stops (Faust reads the rest)")
                    return
                fetched = await consumer.getmany(*todo, timeout_ms=500, max_records=RESTORE_RECORDS)
                for ktp, records in fetched.items():
                    if records and ktp in todo:
                        self._restore_apply(todo[ktp], records, records[-1].offset)
                        count += len(records)
                for ktp in list(todo):
                    position = await consumer.position(ktp)
                    if position >= ends[ktp]:
                        # compaction or transaction markers can leave the last offsets empty
                        self._restore_apply(todo[ktp], (), ends[ktp] - 1)
                        del todo[ktp]
                        consumer.pause(ktp)
                await asyncio.sleep(0)
        finally:
            await consumer.stop()
            if count:
                # the fetched records are garbage now: give the heap they used back
                await trim_now(malloc_trim())
            elapsed = time.perf_counter() - started
            self.restored_records += count
            self.restore_seconds += elapsed
            if count:
                log.info(
                    "bulk restore: %d changelog records of %d partitions in %.1f s (%.0f/s)",
                    count,
                    len(tps),
                    elapsed,
                    count / elapsed if elapsed else 0.0,
                )


class BulkMemoryStore(BulkRestore, faust_memory.Store[Any, Any]):
    """Faust's memory store, restored in bulk, that knows which changelog offsets it holds.

    Faust's memory store says it holds nothing (``persisted_offset`` is None), so every
    rebalance replays whole partitions through Faust. This one keeps, per changelog partition
    it holds completely, the last offset applied; and it keeps standby partitions after a
    recovery (Faust's drops every key not of an active partition, leaving standbys with only
    what arrived after).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._offsets: dict[TP, int] = {}

    def persisted_offset(self, tp: TP) -> int | None:
        return self._offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        if tp in self._offsets:
            self._offsets[tp] = max(self._offsets[tp], offset)

    def _restore_from(self, tp: TP) -> int:
        offset = self._offsets.get(tp)
        return 0 if offset is None else offset + 1

    def _restore_begin(self, tp: TP) -> None:
        self._drop_partitions({tp.partition})

    def _restore_apply(self, tp: TP, records: Sequence[Any], last_offset: int) -> None:
        data = self.data
        where = self._key_partition
        partition = tp.partition
        for record in records:
            key = decode_key(record.key)
            if record.value is None:
                data.pop(key, None)
                where.pop(key, None)
            else:
                data[key] = record.value
                where[key] = partition
        self._offsets[tp] = max(self._offsets.get(tp, -1), last_offset)

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Any, to_value: Any) -> None:
        """Faust's reading of a changelog tail: also move the partition's offset on."""
        events = list(batch)
        super().apply_changelog_batch(events, to_key, to_value)
        for event in events:
            message = event.message
            self.set_persisted_offset(TP(message.topic, message.partition), message.offset)

    def write_acknowledged(
        self, partition: int, rows: Sequence[tuple[str, bytes | None]], offset: int
    ) -> None:
        """The worker's writes, once the changelog has them up to ``offset``.

        Each value is copied to an object of its own size: orjson's ``dumps`` (the states'
        ``to_bytes``) returns bytes inside a 4 KiB or larger allocation, so holding its result
        cost ~4-8 KB per customer instead of ~400 B.
        """
        data = self.data
        where = self._key_partition
        for key, raw in rows:
            if raw is None:  # a tombstone (an erased customer)
                data.pop(key, None)
                where.pop(key, None)
            else:
                data[key] = bytes(memoryview(raw))
                where[key] = partition
        self.set_persisted_offset(TP(self.table.changelog_topic_name, partition), offset)

    def read_raw(self, partition: int, key: str) -> bytes | None:
        """A row's raw value, without Faust's table wrapper (a worker reads one per event)."""
        value: bytes | None = self.data.get(key)
        return value

    def local_rows(self) -> Iterator[tuple[str, bytes]]:
        """Every (key, raw value) held, without Faust's table wrapper."""
        return iter(list(self.data.items()))

    def _drop_partitions(self, partitions: set[int]) -> None:
        drop = [k for k, p in self._key_partition.items() if p in partitions]
        for key in drop:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)
        for tp in [tp for tp in self._offsets if tp.partition in partitions]:
            del self._offsets[tp]

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        for tp in self._changelog_tps(revoked):
            # its rows stay until the recovery completes, but may be changed elsewhere from now
            self._offsets.pop(tp, None)
        await self.bulk_restore(self._changelog_tps(assigned), generation_id)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Drop the partitions no longer held (neither active nor standby), and their offsets."""
        keep = {tp.partition for tp in active_tps | standby_tps}
        gone = {p for p in self._key_partition.values() if p not in keep}
        gone |= {tp.partition for tp in self._offsets if tp.partition not in keep}
        if gone:
            self._drop_partitions(gone)


_NO_WAL = rocksdict.WriteOptions()
_NO_WAL.disable_wal = True  # type: ignore[method-assign, assignment]  # a property; the stub says method
"""Write options of every write: RocksDB's write-ahead log off (see :class:`BulkRocksStore`)."""


class BulkRocksStore(BulkRestore, faust_rocksdb.Store):
    """Faust's RocksDB store (rocksdict driver), restored in bulk, one write batch per fetch.

    Rows and the partition's offset key go in the same write batch, so the offset RocksDB
    claims always matches its rows, even after a SIGKILL.

    Writes skip RocksDB's write-ahead log: the changelog is this store's log already. After
    a crash, RocksDB comes back as of its last memtable flush, an atomic prefix of the write
    batches, so its rows and its offset key still match and are only older; the store then
    restores the rest from the changelog, from that offset. (A clean stop flushes the
    memtables as the database closes.) Logging every batch twice cost a RocksDB worker about
    a fifth of its throughput on 2 cores: 5,057-5,313 -> 5,959 events/s in
    ``bench_throughput --store rocksdb``, 2026-12-07.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.use_rocksdict:
            raise RuntimeError("the bulk RocksDB store needs the rocksdict driver")

    def _restore_from(self, tp: TP) -> int:
        offset = self.persisted_offset(tp)
        return 0 if offset is None else offset + 1

    def _restore_apply(self, tp: TP, records: Sequence[Any], last_offset: int) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for record in records:
            if record.value is None:
                batch.delete(record.key)
            else:
                batch.put(record.key, record.value)
        batch.put(self.offset_key, str(last_offset).encode())
        self._db_for_partition(tp.partition).write(batch, _NO_WAL)

    def write_acknowledged(
        self, partition: int, rows: Sequence[tuple[str, bytes | None]], offset: int
    ) -> None:
        """The worker's writes, once the changelog has them up to ``offset`` (one batch)."""
        from streams.worker.table_store import changelog_key

        batch = rocksdict.WriteBatch(raw_mode=True)
        index = self._key_index
        for key, raw in rows:
            encoded = changelog_key(key)
            if raw is None:  # a tombstone (an erased customer)
                batch.delete(encoded)
                index.pop(encoded, None)
            else:
                batch.put(encoded, raw)
                index[encoded] = partition
        current = self.persisted_offset(TP(self.table.changelog_topic_name, partition))
        batch.put(self.offset_key, str(max(offset, -1 if current is None else current)).encode())
        self._db_for_partition(partition).write(batch, _NO_WAL)

    def read_raw(self, partition: int, key: str) -> bytes | None:
        """A row's raw value from the partition's database, as Faust's ``_get`` reads it for
        the current event's partition, without the table wrapper and the current event."""
        from streams.worker.table_store import changelog_key

        encoded = changelog_key(key)
        value: bytes | None = self._db_for_partition(partition).get(encoded)
        if value is not None:
            self._key_index[encoded] = partition
        return value

    def local_rows(self) -> Iterator[tuple[str, bytes]]:
        """Every (key, raw value) of the active partitions, straight from RocksDB."""
        offset_key = self.offset_key
        loads = orjson.loads
        for db in self._dbs_for_actives():
            for raw_key, value in db.items():
                if raw_key != offset_key:
                    key = loads(raw_key)  # decode_key, inlined: once per row at a restart
                    if not isinstance(key, str):
                        raise ValueError(f"changelog key is not a JSON string: {raw_key[:40]!r}")
                    yield key, value

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        async with self.db_lock:
            await self.bulk_restore(self._changelog_tps(assigned), generation_id)
