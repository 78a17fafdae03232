"""Faust's Kafka consumer, made to hand each input partition to the agents in order and whole.

Why: the agents' redelivery guard is "the highest offset applied per input partition" (see
:mod:`streams.domain.state`), so a record handed out *after* a later one of its partition is
ignored as a redelivery: lost. Faust's fetch loop can do exactly that around a rebalance
(each of these lost a purchase in ``bench/soak.py --workers 2``):

* a fetched batch is handed out even when a seek moved the partition while the batch waited
  (recovery resumes the input partitions *before* its seek to the committed offsets), so
  records past the committed offset reach the agents before the ones at it;
* a record whose hand-out a stopped flow cut short still counts as read;
* a jump between two records read is taken for a hole in the log and counted as processed
  (``Consumer._add_gap``), and the commit accepts a run that starts one past the committed
  offset — so the commit may pass a record nobody processed.

:class:`ContiguousConsumer` replaces the fetch loop and the commit rule for acknowledged topics
(the inputs and the offer triggers; changelogs keep Faust's way, they are read by recovery):

* **Anchor.** Each partition has a next offset to hand out, set only by a seek to the committed
  offset (or to the partition's start when nothing is committed), together with the aiokafka
  partition state it holds for — a new assignment makes new states, so old anchors die.
* **Fresh records only.** The consumer thread stamps each fetch with every partition's state and
  position right after it. A record is handed out only while both are unchanged; after a seek
  the rest of the batch is stale and dropped (harmless: the seek moved the position).
* **No skipping.** A fresh record that cannot be handed out (flow stopped, partition paused, no
  anchor, hand-out cut short) leaves the fetch position past it, so the partition loses its
  anchor and is read again from the committed offset: by the rebalance's seek, or by ours.
* **Nothing during a rebalance.** Until the rebalance ends, input records are not handed out
  at all: Faust's recovery seeks to the committed offsets *before* it resumes the flow, and
  resuming clears the agents' queues, so a record handed out in between would vanish
  unprocessed while the ones after it went on (``bench/soak.py`` lost a purchase this way).
* **Holes.** A fresh record past the anchor means the log itself has no record there (a
  transaction marker, compaction, retention): the offsets are remembered and committed over.
* **Commit.** Only a run of acknowledged offsets and holes starting exactly at the committed
  offset is committed (:func:`committable`).

Re-reading from the committed offset hands out again what was processed but not yet committed:
the redelivery guard makes that a no-op, and every output carries an id.

**Bulk hand-out.** The topics of a :class:`BulkInbox` (every agent of the worker has one: the
customers agent's inputs, and the profiles, triggers, offers and outcomes its other agents
read) skip Faust's conductor: no event, channel decode or queue put per record. The records of
one fetch that pass every rule above are collected per inbox, with no await in between (so the
rules still hold when they are handed out), and put in each inbox as one run; a put that a
stopped flow or worker cuts short unanchors every partition of its run and of the runs not yet
put, exactly as a cut record does. An inbox is a Faust flow-control queue cleared when the
flow resumes, like the agents' own queues.

**Pinned.** These classes subclass and override private parts of faust-streaming's consumer
(its fetch loop, ``_add_gap``, the commit), of its aiokafka driver and of aiokafka's partition
state. A minor release of any of them can change those parts silently and with them the loss
guarantees, so pyproject.toml pins exactly the versions in :data:`WRITTEN_FOR`, and
:func:`version_mismatches` (a unit test, and a loud warning when a worker starts) says when the
installed ones differ. Upgrading means re-reading those parts, then the fault suite and a soak.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Iterable, Mapping
from importlib import metadata
from typing import Any, ClassVar, Final

from aiokafka.structs import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, ConsumerMessage
from mode.utils.queues import ThrowableQueue

log = logging.getLogger(__name__)

Hole = tuple[int, int]
"""Offsets ``[start, end)`` of a partition where the log has no record to process."""


def committable(start: int, acked: list[int], holes: list[Hole]) -> tuple[int, int, int]:
    """Where a commit may go from ``start``: ``(offset, acked used, holes used)``.

    ``acked`` is sorted. The run goes on while the next offset is acknowledged or in a hole;
    acknowledged offsets below ``start`` (already committed) are used up on the way. The offset
    returned is ``start`` itself when nothing can be committed.
    """
    pos = start
    i = j = 0
    n, m = len(acked), len(holes)
    while True:
        while i < n and acked[i] < pos:
            i += 1
        if i < n and acked[i] == pos:
            pos += 1
            i += 1
            continue
        while j < m and holes[j][1] <= pos:
            j += 1
        if j < m and holes[j][0] <= pos:
            pos = holes[j][1]
            j += 1
            continue
        return pos, i, j


WRITTEN_FOR: Final = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}
"""The distributions whose internals this module overrides, at the versions it was written for."""


def version_mismatches() -> list[str]:
    """``name installed X, written for Y`` for each pinned distribution that differs."""
    found: list[str] = []
    for name, wanted in WRITTEN_FOR.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "nothing"
        if installed != wanted:
            found.append(f"{name} installed {installed}, written for {wanted}")
    return found


class StampedMessage(ConsumerMessage):
    """A consumed message that knows which anchor of its partition handed it out.

    :class:`streams.worker.batches.Batches` uses it to drop, after a record it had to drop, the
    rest of the same read: they are read again after the record.
    """

    __slots__ = ("lineage",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lineage: int | None = None


class RecordQueue(ThrowableQueue):  # type: ignore[type-arg]
    """Faust's throwable, flow-controlled queue of runs, whose size is the records it holds.

    Why records and not runs: a run is one fetch, and a fetch of live traffic holds a handful
    of records. Bounded at a few runs, the inbox stopped the fetch loop (which also feeds the
    other agents) while the customers agent waited for its acknowledgements, and the next
    batch could only be those few runs: at 1,000 events/s with a 10 ms batch window a worker
    fell seconds behind while its event loop was about half idle. A put waits only while
    ``maxsize`` records or more wait; a single run is never split.
    """

    _queue: deque[Any]  # asyncio.Queue's storage (untyped in its stubs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.records = 0
        super().__init__(*args, **kwargs)

    def _put(self, item: Any) -> None:
        self._queue.append(item)
        self.records += len(item)

    def _get(self) -> Any:
        item = self._queue.popleft()
        self.records -= len(item)
        return item

    def qsize(self) -> int:
        return self.records

    def clear(self) -> None:
        super().clear()
        self.records = 0


class BulkInbox:
    """Runs of fetched messages of ``topics``, handed to one agent without Faust's conductor.

    A run is a list of :class:`StampedMessage` of one fetch, each partition's records in order.
    Up to ``max_records`` records may wait (backpressure on the fetch loop, as a full agent
    queue does; see :class:`RecordQueue`). The agent reads it with
    :func:`streams.worker.batches.consume_bulk`; it must be the only reader of these topics
    (the conductor no longer sees their records).
    """

    def __init__(self, app: Any, topics: Iterable[str], max_records: int = 8_000) -> None:
        self.app = app
        self.topics = frozenset(topics)
        # cleared when the flow resumes, as the agents' queues are (see the module doc)
        self.queue: Any = RecordQueue(
            maxsize=max_records, flow_control=app.flow_control, clear_on_resume=True
        )

    async def put(self, run: list[Any]) -> None:
        """As the conductor does: wait for an active flow and a producer buffer that ebbed."""
        await self.app.flow_control.acquire()
        await self.app.producer.buffer.wait_until_ebb()
        await self.queue.put(run)


class FetchedRecords(dict[Any, Any]):
    """One fetch's records, with each partition's aiokafka state and position right after it."""

    marks: dict[Any, tuple[Any, int | None]]


def _state(consumer: Any, tp: Any) -> Any:
    """aiokafka's state object of ``tp`` in the current assignment, or None."""
    subscription = getattr(getattr(consumer, "_subscription", None), "subscription", None)
    assignment = getattr(subscription, "assignment", None)
    return None if assignment is None else assignment.state_value(tp)


class StampingConsumerThread(AIOKafkaConsumerThread):
    """The aiokafka consumer thread, stamping each fetch (see the module doc)."""

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP],
        timeout: float | None = None,  # noqa: ASYNC109 - Faust calls it so
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        # No await between the fetch and the stamp: no seek of this thread can come in between.
        out = FetchedRecords(records)
        marks = {}
        for tp in records:
            state = _state(consumer, tp)
            marks[tp] = (state, None if state is None else state._position)
        out.marks = marks
        return out


class ContiguousConsumer(AIOKafkaConsumer):
    """See the module doc. Install with :func:`install` before the app creates its consumer."""

    inboxes: ClassVar[Mapping[str, BulkInbox]] = {}
    """Set by :func:`install`: topic -> the inbox its records are handed to in runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next: dict[TP, int] = {}
        self._anchor: dict[TP, Any] = {}
        self._lineage: dict[TP, int] = {}
        self._first: dict[TP, int] = {}
        self._holes: dict[TP, list[Hole]] = {}
        self._unanchored: set[TP] = set()
        self._seeks = 0
        self._seek_idle = asyncio.Event()
        self._seek_idle.set()
        self._last_reread = 0.0
        self.stats: Counter[str] = Counter()
        """holes, stale (dropped after a seek), cut (fresh but not handed out), rereads."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return StampingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _to_message(self, tp: TP, record: Any) -> ConsumerMessage:
        timestamp = record.timestamp
        return StampedMessage(
            record.topic,
            record.partition,
            record.offset,
            None if timestamp is None else timestamp / 1000.0,
            record.timestamp_type,
            record.headers,
            record.key,
            record.value,
            record.checksum,
            record.serialized_key_size,
            record.serialized_value_size,
            tp,
            generation_id=self.app.consumer_generation_id,
        )

    # ------------------------------------------------------------------ anchors
    def _current_state(self, tp: Any) -> Any:
        return _state(self._thread._consumer, tp)

    def _strict(self, tp: TP) -> bool:
        return bool(self.app.topics.acks_enabled_for(tp.topic))

    def _unanchor(self, tp: TP) -> None:
        self._next.pop(tp, None)
        self._anchor.pop(tp, None)
        self._unanchored.add(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Forget what this consumer knew of partitions it no longer has."""
        for tp in revoked:
            for known in (self._next, self._anchor, self._first, self._holes):
                known.pop(tp, None)
            self._unanchored.discard(tp)
        await super().on_partitions_revoked(revoked)

    def invalidate(self, tp: TP, lineage: int | None) -> None:
        """A record of ``tp`` handed out by ``lineage`` was dropped unprocessed: read it again."""
        if lineage is not None and self._lineage.get(tp) == lineage and tp in self._next:
            self._unanchor(tp)

    async def perform_seek(self) -> None:
        """Seek to the committed offsets (the start where none), then anchor there."""
        self._seeks += 1
        self._seek_idle.clear()
        try:
            strict = [tp for tp in self.assignment() if self._strict(tp)]
            before = {tp: self._current_state(tp) for tp in strict}
            await super().perform_seek()
            targets: dict[TP, int] = {}
            uncommitted = []
            for tp in strict:
                committed = self._committed_offset.get(tp)
                if committed is None:
                    uncommitted.append(tp)
                else:
                    targets[tp] = committed
            if uncommitted:
                # aiokafka wants its own TopicPartition, not Faust's TP
                await self._thread.seek_to_beginning(
                    *(TopicPartition(tp.topic, tp.partition) for tp in uncommitted)
                )
                earliest = await self.earliest_offsets(*uncommitted)
                for tp in uncommitted:
                    targets[tp] = self._first[tp] = int(earliest.get(tp) or 0)
            for tp, target in targets.items():
                state = self._current_state(tp)
                if state is None or state is not before[tp]:
                    self._unanchor(tp)  # reassigned meanwhile: that rebalance seeks again
                    continue
                self._next[tp] = target
                self._anchor[tp] = state
                self._lineage[tp] = self._lineage.get(tp, 0) + 1
                self._unanchored.discard(tp)
            self._unanchored.intersection_update(strict)
        finally:
            self._seeks -= 1
            if not self._seeks:
                self._seek_idle.set()

    async def _seek(self, partition: TP, offset: int) -> None:
        # Faust seeks here to a table's or a recovery's own offset, not the committed one:
        # the read from there is not anchored, so it is read again from the committed offset.
        if self._strict(partition):
            self._unanchor(partition)  # a seek elsewhere than committed: read again from there
        await super()._seek(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        for tp in partitions:
            if self._strict(tp):
                self._unanchor(tp)
        await super().seek_wait(partitions)

    async def _reread(self) -> None:
        """Read the unanchored partitions again from their committed offsets."""
        self._unanchored.intersection_update(self.assignment())
        if not self._unanchored:
            return
        now = asyncio.get_running_loop().time()
        if now - self._last_reread < 1.0:
            await asyncio.sleep(1.0 - (now - self._last_reread))
        self._last_reread = asyncio.get_running_loop().time()
        self.stats["rereads"] += 1
        log.info(
            "reading %s again from the committed offset: records fetched there could not be "
            "handed to the agents",
            ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in self._unanchored)),
        )
        try:
            await self.perform_seek()
        except Exception as exc:  # the next round tries again
            log.warning("seek to the committed offsets failed (%r); trying again", exc)

    # ------------------------------------------------------------------ commit
    def _new_offset(self, tp: TP) -> int | None:
        if not self._strict(tp):
            return super()._new_offset(tp)
        acked = self._acked[tp]
        start = self._committed_offset.get(tp)
        if start is None:
            start = self._first.get(tp)
        if start is None or not acked:
            return None
        acked.sort()
        holes = self._holes.get(tp, [])
        offset, used, holes_used = committable(start, acked, holes)
        if used:
            self._acked_index[tp].difference_update(acked[:used])
            del acked[:used]
        if holes_used:
            del holes[:holes_used]
        return offset if offset > start else None

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        if not self._strict(tp):
            await super()._add_gap(tp, offset_from, offset_to)

    def _add_hole(self, tp: TP, start: int, end: int) -> None:
        holes = self._holes.setdefault(tp, [])
        hole = (start, end)
        i = bisect.bisect_left(holes, hole)
        if i == len(holes) or holes[i] != hole:
            holes.insert(i, hole)
        self.stats["holes"] += 1
        log.debug("%s[%d]: no record at offsets %d..%d", tp.topic, tp.partition, start, end - 1)

    # ------------------------------------------------------------------ fetch loop
    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if self._unanchored and self.flow_active and not self.app.rebalancing:
                    await self._reread()
                self.diag.set_flag(CONSUMER_FETCHING)
                try:
                    records, active = await self._wait_next_records(1.0)
                    generation_id = self.app.consumer_generation_id
                    lineages = dict(self._lineage)
                    await self.sleep(0)
                    if not records or self.should_stop:
                        continue
                    if not self.flow_active:
                        # fetched while the flow stopped: positions are past records nobody
                        # will get, so back to the committed offsets (as Faust does)
                        try:
                            await self.perform_seek()
                        except Exception as exc:
                            log.warning("seek after a stopped flow failed: %r", exc)
                        continue
                    if not self._seek_idle.is_set():
                        await self._seek_idle.wait()
                    await self._hand_out(records, active, generation_id, lineages)
                finally:
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    def _fresh(self, tp: Any, marks: Mapping[Any, tuple[Any, int | None]]) -> bool:
        mark = marks.get(tp)
        if mark is None or mark[0] is None:
            return False
        state = self._current_state(tp)
        return state is mark[0] and state._position == mark[1]

    async def _hand_out(
        self,
        records: Any,
        active: set[TP] | None,
        generation_id: int,
        lineages: Mapping[TP, int],
    ) -> None:
        """Hand one fetch's records to the agents, under the rules of the module doc.

        ``generation_id`` and ``lineages`` are as they were when the fetch returned. Records of
        an inbox's topics are collected into one run per inbox, handed out before any await
        (module doc).
        """
        marks = getattr(records, "marks", {})
        buffered = self._buffered_partitions
        read_offset = self._read_offset
        commit_every = self._commit_every
        inboxes = self.inboxes
        runs: dict[BulkInbox, list[Any]] = {}
        ran: dict[TP, tuple[int, int | None]] = {}
        """Partition -> (last offset, lineage) of its records in ``runs``."""
        suspended = asyncio.ensure_future(self.suspend_flow.wait())
        stopping = asyncio.ensure_future(self._stopped.wait())
        cut = False
        yielded = 0

        async def hand_out_runs() -> bool:
            """Put each inbox's run; after one is cut short, the rest are not put (cut too)."""
            nonlocal runs, ran
            if not runs:
                return True
            handing, progress = runs, ran
            runs, ran = {}, {}
            done = True
            for box, handed in handing.items():
                mine = [tp for tp in progress if tp.topic in box.topics]
                if done and await self._deliver_run(box, handed, suspended, stopping):
                    for tp in mine:
                        offset, lineage = progress[tp]
                        if lineage == self._lineage.get(tp) and tp in self._next:
                            self._next[tp] = offset + 1  # unless a seek started a new read
                        read_offset[tp] = offset
                        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    continue
                done = False
                for tp in mine:
                    if tp in self._next:
                        self.stats["cut"] += 1
                        self._unanchor(tp)
            return done

        try:
            for tp, record in self.scheduler.iterate(records):
                strict = self._strict(tp)
                if not cut and (
                    not self.flow_active
                    or suspended.done()
                    or self.app.consumer_generation_id != generation_id
                ):
                    cut = True
                if strict and not self._fresh(tp, marks):
                    self.stats["stale"] += 1
                    mark = marks.get(tp)
                    if (
                        tp in self._next
                        and mark is not None
                        and self._anchor.get(tp) is mark[0]
                        and self._lineage.get(tp) == lineages.get(tp)
                    ):
                        # moved by no seek of ours (aiokafka's own reset): read again
                        self._unanchor(tp)
                    continue
                if strict and self.app.rebalancing:
                    # Faust's recovery seeks first and resumes the flow after, and resuming
                    # clears the agents' queues: a record handed out in between would vanish
                    # unprocessed while later ones go on. Read it again once the rebalance ends.
                    if tp in self._next:
                        self.stats["cut"] += 1
                        self._unanchor(tp)
                    continue
                if cut or not (active is None or tp in active or tp in buffered):
                    if strict and tp in self._next:
                        self.stats["cut"] += 1
                        self._unanchor(tp)
                    continue
                offset = record.offset
                lineage = None
                box = inboxes.get(tp.topic) if strict else None
                if strict:
                    expected = self._next.get(tp)
                    if box is not None and tp in ran:
                        expected = ran[tp][0] + 1
                    if expected is None or self._anchor.get(tp) is not marks[tp][0]:
                        self.stats["cut"] += 1
                        self._unanchor(tp)  # no read to hand it out in: read again
                        continue
                    if offset < expected:
                        continue  # handed out already in this read
                    if offset > expected:
                        self._add_hole(tp, expected, offset)
                    lineage = self._lineage.get(tp)
                else:
                    r_offset = read_offset.get(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # Faust's rule for changelogs
                message = self._to_message(tp, record)
                if isinstance(message, StampedMessage):
                    message.lineage = lineage
                if box is not None:
                    # no await until the run is handed out: the checks above still hold then
                    pending = runs.get(box)
                    if pending is None:
                        pending = runs[box] = []
                    pending.append(message)
                    ran[tp] = (offset, lineage)
                    continue
                if not await hand_out_runs():  # before any await, and to keep arrival order
                    cut = True
                    if strict and tp in self._next:
                        self.stats["cut"] += 1
                        self._unanchor(tp)
                    continue
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                if not await self._deliver(message, suspended, stopping):
                    cut = True
                    if strict:
                        self.stats["cut"] += 1
                        self._unanchor(tp)
                    continue
                if strict and lineage == self._lineage.get(tp) and tp in self._next:
                    self._next[tp] = offset + 1  # unless a seek started a new read meanwhile
                read_offset[tp] = offset
                yielded += 1
                if yielded % 100 == 0:
                    await asyncio.sleep(0)
            if not await hand_out_runs():
                cut = True
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
        finally:
            suspended.cancel()
            stopping.cancel()

    async def _deliver_run(
        self, inbox: BulkInbox, run: list[Any], suspended: asyncio.Future[Any], stopping: Any
    ) -> bool:
        """Put ``run`` in ``inbox``; False if a stopped flow or worker cut it short."""
        return await _unless_cut(inbox.put(run), suspended, stopping)

    async def _deliver(self, message: Any, suspended: asyncio.Future[Any], stopping: Any) -> bool:
        """Hand ``message`` to its channels; False if a stopped flow or worker cut it short."""
        return await _unless_cut(self.callback(message), suspended, stopping)


async def _unless_cut(
    hand_out: Awaitable[Any], suspended: asyncio.Future[Any], stopping: Any
) -> bool:
    """Run a hand-out until it is done or the flow stops or the worker stops; True if done.

    A hand-out cancelled under us (e.g. a queue cleared by Faust's flow control) counts as
    not done, like one cut short: the partition is read again from its committed offset.
    """
    task = asyncio.ensure_future(hand_out)
    try:
        await asyncio.wait((task, suspended, stopping), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        if task.cancelled():
            return False
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


def install(app: Any, *inboxes: BulkInbox) -> None:
    """Make ``app`` create a :class:`ContiguousConsumer` (handing each inbox's topics in runs).

    A topic belongs to one inbox at most: its records are handed out once. Warns loudly on
    unpinned versions.
    """
    for mismatch in version_mismatches():
        log.error(
            "the consumer overrides were written for other versions (%s): the loss guarantees "
            "are untested with these; install rfm-stream's pinned versions",
            mismatch,
        )
    by_topic: dict[str, BulkInbox] = {}
    for box in inboxes:
        for topic in box.topics:
            if topic in by_topic:
                raise ValueError(f"topic {topic!r} is in two inboxes; a topic has one reader")
            by_topic[topic] = box

    class Consumer(ContiguousConsumer):
        pass

    Consumer.inboxes = by_topic
    app.transport.Consumer = Consumer
