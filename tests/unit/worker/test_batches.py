"""Batches: what an agent takes, what it leaves unacknowledged, and when a batch closes.

The app and channel here are stand-ins with only the attributes :class:`Batches` reads (flow
control, generation, the consumer's tracking); the real thing runs in every integration test
and in the fault suite, where a lost acknowledgement shows up as a lost record.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.worker.batches import Batches, BulkBatches

pytestmark = pytest.mark.asyncio


@dataclass(eq=False)
class Message:
    offset: int
    generation_id: int = 1
    tracked: bool = False
    tp: str = "purchases-0"
    lineage: int | None = None


@dataclass(eq=False)
class Event:
    message: Message
    acked: bool = False

    def ack(self) -> bool:
        self.acked = True
        return True


@dataclass
class Flow:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class Consumer:
    tracked: list[int] = field(default_factory=list)
    invalidated: list[tuple[str, int | None]] = field(default_factory=list)

    def track_message(self, message: Message) -> None:
        self.tracked.append(message.offset)

    def invalidate(self, tp: str, lineage: int | None) -> None:
        self.invalidated.append((tp, lineage))


@dataclass
class Sensors:
    """Faust's sensor hooks: what went in, what came out (the monitor's view)."""

    calls: list[tuple[str, int]] = field(default_factory=list)

    def on_stream_event_in(self, tp: str, offset: int, stream: Any, event: Any) -> dict[str, int]:
        self.calls.append(("in", offset))
        return {"offset": offset}

    def on_stream_event_out(
        self, tp: str, offset: int, stream: Any, event: Any, state: dict[str, int] | None
    ) -> None:
        assert state == {"offset": offset}, "the state from on_stream_event_in goes back out"
        self.calls.append(("out", offset))

    def on_message_out(self, tp: str, offset: int, message: Any) -> None:
        self.calls.append(("done", offset))


@dataclass
class Monitor:
    """Faust's monitor: when a partition's stream last took an event (its livelock check)."""

    stream_inbound_time: dict[str, float] = field(default_factory=dict)


@dataclass
class App:
    monitor: Monitor = field(default_factory=Monitor)
    flow_control: Flow = field(default_factory=Flow)
    consumer_generation_id: int = 1
    consumer: Consumer = field(default_factory=Consumer)
    sensors: Sensors = field(default_factory=Sensors)


@dataclass
class Queue(asyncio.Queue[Any]):
    """An asyncio queue that, like Faust's, can have an error thrown into it."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def empty(self) -> bool:
        return super().empty() and not self.errors

    def throw(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self._wakeup_next(self._getters)  # type: ignore[attr-defined]

    def get_nowait(self) -> Any:
        if self.errors:
            raise self.errors.pop(0)
        return super().get_nowait()


@dataclass
class Channel:
    queue: Queue = field(default_factory=Queue)


@dataclass
class Stream:
    channel: Channel = field(default_factory=Channel)


def events(*offsets: int, generation: int = 1) -> list[Event]:
    return [Event(Message(o, generation)) for o in offsets]


async def test_a_full_batch_closes_at_once_and_is_tracked_not_acknowledged() -> None:
    app, stream = App(), Stream()
    channel = stream.channel
    for e in events(*range(5)):
        channel.queue.put_nowait(e)
    batches = Batches(app, stream, 3, within_s=60)
    batch = await asyncio.wait_for(batches.next(), 1)
    assert [e.message.offset for e in batch] == [0, 1, 2]
    assert app.consumer.tracked == [0, 1, 2]
    assert not any(e.acked for e in batch)
    batches.ack(batch)
    assert all(e.acked for e in batch)
    assert app.sensors.calls == [
        *(("in", o) for o in range(3)),
        *(step for o in range(3) for step in (("out", o), ("done", o))),
    ]
    assert channel.queue.qsize() == 2


async def test_a_partial_batch_closes_when_the_window_ends() -> None:
    app, stream = App(), Stream()
    channel = stream.channel
    channel.queue.put_nowait(events(7)[0])
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await Batches(app, stream, 100, within_s=0.05).next()
    assert [e.message.offset for e in batch] == [7]
    assert loop.time() - started >= 0.05


async def test_an_event_arriving_within_the_window_joins_the_batch() -> None:
    app, stream = App(), Stream()
    channel = stream.channel
    first, second = events(1, 2)
    channel.queue.put_nowait(first)
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, channel.queue.put_nowait, second)
    batch = await Batches(app, stream, 100, within_s=2.0).next()
    assert batch == [first, second]


async def test_events_during_a_paused_flow_are_dropped_unacknowledged() -> None:
    app, stream = App(), Stream()
    channel = stream.channel
    app.flow_control.active = False  # a rebalance is under way
    paused = events(10, 11)
    for e in paused:
        channel.queue.put_nowait(e)
    later = events(12)[0]

    def resume() -> None:  # the rebalance ends, and fetching starts again
        app.flow_control.active = True
        channel.queue.put_nowait(later)

    asyncio.get_running_loop().call_later(0.02, resume)
    batches = Batches(app, stream, 10, within_s=0)
    assert await asyncio.wait_for(batches.next(), 1) == [later]
    assert batches.skipped == 2
    assert not any(e.acked or e.message.tracked for e in paused)
    assert app.consumer.tracked == [12]


async def test_events_of_an_older_generation_are_dropped_unacknowledged() -> None:
    app, stream = App(consumer_generation_id=3), Stream()
    channel = stream.channel
    stale, fresh = events(5, generation=2)[0], events(5, generation=3)[0]
    channel.queue.put_nowait(stale)
    channel.queue.put_nowait(fresh)
    batches = Batches(app, stream, 10, within_s=0)
    assert await asyncio.wait_for(batches.next(), 1) == [fresh]
    assert batches.skipped == 1
    assert not stale.acked and not stale.message.tracked


async def test_after_a_dropped_record_the_rest_of_its_read_waits_for_the_next_read() -> None:
    """Processing 6 before the dropped 5 would make 5 look like a redelivery: lost."""
    app, stream = App(consumer_generation_id=3), Stream()
    queue = stream.channel.queue
    dropped = Event(Message(5, generation_id=2, lineage=1))  # cut off by a rebalance
    same_read = [Event(Message(o, generation_id=3, lineage=1)) for o in (6, 7)]
    other_partition = Event(Message(9, generation_id=3, lineage=1, tp="purchases-1"))
    read_again = [Event(Message(o, generation_id=3, lineage=2)) for o in (4, 5, 6)]
    for e in (dropped, *same_read, other_partition, *read_again):
        queue.put_nowait(e)
    batches = Batches(app, stream, 10, within_s=0)
    batch = await asyncio.wait_for(batches.next(), 1)
    assert batch == [other_partition, *read_again]
    assert batches.skipped == 3
    assert app.consumer.invalidated == [("purchases-0", 1)]
    assert not any(e.message.tracked for e in (dropped, *same_read))


async def test_items_without_a_message_are_ignored() -> None:
    app, stream = App(), Stream()
    channel = stream.channel
    channel.queue.put_nowait("not an event")
    e = events(1)[0]
    channel.queue.put_nowait(e)
    assert await asyncio.wait_for(Batches(app, stream, 10, within_s=0).next(), 1) == [e]


async def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batches(App(), Stream(), 0, within_s=0)


async def test_an_error_thrown_into_the_channel_waits_for_the_events_already_taken() -> None:
    app, stream = App(), Stream()
    taken = events(1)[0]
    stream.channel.queue.put_nowait(taken)
    # Faust throws into the channel (e.g. to stop the reader) while a batch is being filled
    asyncio.get_running_loop().call_later(0.02, stream.channel.queue.throw, StopAsyncIteration())
    batches = Batches(app, stream, 10, within_s=2)
    assert await asyncio.wait_for(batches.next(), 1) == [taken]  # handed out, not dropped
    with pytest.raises(StopAsyncIteration):
        await batches.next()


@dataclass
class AckingConsumer(Consumer):
    """The consumer's acknowledgement, as :class:`BulkBatches` calls it (no Faust event)."""

    acked: list[int] = field(default_factory=list)

    def ack(self, message: Message) -> bool:
        self.acked.append(message.offset)
        return True


@dataclass
class Inbox:
    queue: Queue = field(default_factory=Queue)


async def test_runs_from_the_inbox_are_taken_whole_and_acknowledged_with_the_consumer() -> None:
    app = App(consumer=AckingConsumer())
    inbox = Inbox()
    inbox.queue.put_nowait([Message(o) for o in (0, 1, 2)])
    inbox.queue.put_nowait([Message(o) for o in (3, 4)])
    batches = BulkBatches(app, inbox, 4, within_s=60)
    batch = await asyncio.wait_for(batches.next(), 1)
    # a run is never split: the batch closes once it holds max_events or more
    assert [m.offset for m in batch] == [0, 1, 2, 3, 4]
    assert app.consumer.tracked == [0, 1, 2, 3, 4]
    assert isinstance(app.consumer, AckingConsumer)
    assert app.consumer.acked == []
    batches.ack(batch)
    assert app.consumer.acked == [0, 1, 2, 3, 4]
    assert app.sensors.calls == [("done", o) for o in range(5)]


async def test_a_stale_run_is_dropped_unacknowledged_with_the_rest_of_its_read() -> None:
    app = App(consumer_generation_id=3)
    inbox = Inbox()
    cut = [Message(o, generation_id=2, lineage=1) for o in (5, 6)]  # before the rebalance
    same_read = [Message(7, generation_id=3, lineage=1)]
    read_again = [Message(o, generation_id=3, lineage=2) for o in (5, 6, 7)]
    for run in (cut, same_read, read_again):
        inbox.queue.put_nowait(run)
    batches = BulkBatches(app, inbox, 10, within_s=0)
    assert await asyncio.wait_for(batches.next(), 1) == read_again
    assert batches.skipped == 3
    assert app.consumer.invalidated == [("purchases-0", 1), ("purchases-0", 1)]
    assert not any(m.tracked for m in (*cut, *same_read))


async def test_taking_a_run_tells_fausts_monitor_its_partitions_are_being_processed() -> None:
    """Faust's livelock check reads ``stream_inbound_time``: unset, a backlog read for longer
    than ``stream_processing_timeout`` logged "Stream has not started processing" errors."""
    app = App(consumer=AckingConsumer())
    inbox = Inbox()
    inbox.queue.put_nowait([Message(0, tp="purchases-0"), Message(0, tp="interactions-3")])
    before = time.monotonic()
    batches = BulkBatches(app, inbox, 10, within_s=0)
    await asyncio.wait_for(batches.next(), 1)
    inbound = app.monitor.stream_inbound_time
    assert set(inbound) == {"purchases-0", "interactions-3"}
    assert all(before <= t <= time.monotonic() for t in inbound.values())


async def test_a_dropped_run_does_not_count_as_processing() -> None:
    app = App(consumer_generation_id=3)
    inbox = Inbox()
    inbox.queue.put_nowait([Message(5, generation_id=2, lineage=1, tp="purchases-1")])
    inbox.queue.put_nowait([Message(6, generation_id=3, lineage=2, tp="purchases-2")])
    batches = BulkBatches(app, inbox, 10, within_s=0)
    await asyncio.wait_for(batches.next(), 1)
    assert set(app.monitor.stream_inbound_time) == {"purchases-2"}
