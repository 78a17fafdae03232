"""Batches of events read straight from an agent's channel, acknowledged only once done.

Every agent of the worker reads its topic through :class:`Batches` instead of iterating its
Faust stream (``stream.take_events`` and friends), because of what the stream does with an
event's acknowledgement, and an acknowledged offset is one the consumer commits:

* an event that reaches the stream while a rebalance has paused the flow, or one fetched in an
  older consumer generation, is *skipped and acknowledged*. Such events are common after a
  rebalance: Faust's conductor hands records to a full queue from a background task that
  outlives the rebalance's queue clearing. Skipped-and-acknowledged means never processed yet
  committed, i.e. lost (the soak, ``bench/soak.py``, lost inputs, states and offers this way);
* ``take_events`` acknowledges its whole buffer in a ``finally`` — also when the batch's
  processing was cancelled half-way.

Here an event is *tracked* when taken (so a rebalance or a shutdown waits for its batch) and
acknowledged only by :meth:`Batches.ack`, after its batch is done. An event that arrives while
the flow is paused, or from an older generation, is dropped *unacknowledged*: the commit stops
before it, and the seek to the committed offsets that ends every rebalance reads it again. The
records after it from the same read of its partition are dropped too (processing them first
would make the dropped one look like a redelivery), and the consumer is told to read the
partition again (:meth:`streams.worker.consumer.ContiguousConsumer.invalidate`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


class Batches:
    """Up to ``max_events`` events, or what arrived within ``within_s`` of the first one.

    ``stream`` is the agent's Faust stream: its channel is read, never the stream itself. The
    sensors Faust's stream would call are called here too (monitor, livelock diagnostics).
    """

    def __init__(self, app: Any, stream: Any, max_events: int, within_s: float) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self.app = app
        self.stream = stream
        self.channel = stream.channel
        self.max_events = max_events
        self.within_s = max(within_s, 0.0)
        self.skipped = 0
        """Events dropped unacknowledged because they arrived during or before a rebalance."""
        self._error: BaseException | None = None
        self._sensor_states: dict[int, Any] = {}
        self._dropped: dict[Any, int] = {}
        """Partition -> the read (``StampedMessage.lineage``) a record was dropped from."""

    def _admit(self, message: Any) -> bool:
        """Whether ``message`` may be processed now; if not, it is left unacknowledged."""
        app = self.app
        tp = message.tp
        lineage = getattr(message, "lineage", None)
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            self.skipped += 1  # left unacknowledged on purpose (module doc)
            if lineage is not None:
                self._dropped[tp] = lineage
                invalidate = getattr(app.consumer, "invalidate", None)
                if invalidate is not None:
                    invalidate(tp, lineage)
            return False
        if tp in self._dropped:
            if self._dropped[tp] == lineage:
                self.skipped += 1  # after a dropped record of the same read: read again too
                return False
            del self._dropped[tp]  # a new read of the partition: it starts at or before the drop
        if not message.tracked:
            message.tracked = True
            app.consumer.track_message(message)
        return True

    def _take(self, item: Any, batch: list[Any]) -> None:
        message = getattr(item, "message", None)
        if message is None:  # not an event from a topic: nothing to acknowledge, nothing to do
            return
        if not self._admit(message):
            return
        self._sensor_states[id(item)] = self.app.sensors.on_stream_event_in(
            message.tp, message.offset, self.stream, item
        )
        batch.append(item)

    def _queue(self) -> Any:
        return self.channel.queue

    async def next(self) -> list[Any]:
        """Wait for the next non-empty batch.

        An error thrown into the channel (Faust's way of stopping a reader) is raised, but
        only once the events already taken are handed out: a batch is never left half-read.
        """
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        queue = self._queue()
        loop = asyncio.get_running_loop()
        batch: list[Any] = []
        while not batch:
            self._take(await queue.get(), batch)
        deadline = loop.time() + self.within_s
        try:
            while len(batch) < self.max_events:
                if not queue.empty():
                    self._take(queue.get_nowait(), batch)
                    continue
                if loop.time() >= deadline:
                    break
                try:
                    # a Queue.get cut short by the timeout leaves its item in the queue
                    async with asyncio.timeout_at(deadline):
                        item = await queue.get()
                except TimeoutError:
                    break
                self._take(item, batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
        return batch

    def ack(self, events: Sequence[Any]) -> None:
        """Mark the events processed: their offsets may now be committed."""
        sensors = self.app.sensors
        states = self._sensor_states
        for event in events:
            message = event.message
            state = states.pop(id(event), None)
            sensors.on_stream_event_out(message.tp, message.offset, self.stream, event, state)
            if event.ack():
                sensors.on_message_out(message.tp, message.offset, message)

    def __aiter__(self) -> Batches:
        return self

    async def __anext__(self) -> list[Any]:
        return await self.next()


class BulkBatches(Batches):
    """Batches of messages (not events) from a :class:`streams.worker.consumer.BulkInbox`.

    The inbox holds whole runs of a fetch, so a batch is one or more runs: no Faust event,
    channel or queue put per record. Each message goes through the same rules as an event in
    :class:`Batches` (dropped unacknowledged during a rebalance or from an older generation,
    and the rest of its read with it), is tracked when taken and acknowledged with the
    consumer once its batch is done. There is no stream, so Faust's stream sensors are not
    called; the message sensors are (on tracking and on acknowledgement).
    """

    def __init__(self, app: Any, inbox: Any, max_events: int, within_s: float) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self.app = app
        self.inbox = inbox
        self.max_events = max_events
        self.within_s = max(within_s, 0.0)
        self.skipped = 0
        self._error: BaseException | None = None
        self._sensor_states: dict[int, Any] = {}
        self._dropped: dict[Any, int] = {}

    def _queue(self) -> Any:
        return self.inbox.queue

    def _take(self, item: Any, batch: list[Any]) -> None:
        admit = self._admit
        start = len(batch)
        batch.extend(message for message in item if admit(message))
        monitor = getattr(self.app, "monitor", None)
        if monitor is not None and len(batch) > start:
            # what Faust's on_stream_event_in records per event, once per partition of the
            # run: without it Faust's livelock check logs "Stream has not started processing"
            # for every partition of a backlog read for longer than stream_processing_timeout
            now = time.monotonic()
            inbound = monitor.stream_inbound_time
            for tp in {message.tp for message in batch[start:]}:
                inbound[tp] = now

    def ack(self, events: Sequence[Any]) -> None:
        consumer = self.app.consumer
        on_message_out = self.app.sensors.on_message_out
        for message in events:
            if consumer.ack(message):
                on_message_out(message.tp, message.offset, message)


EXIT_AGENT_FAILED = 70
"""Exit status of a worker whose agent failed unexpectedly (``EX_SOFTWARE``)."""


async def consume_bulk(
    app: Any,
    inbox: Any,
    handle: Callable[[list[Any]], Awaitable[None]],
    *,
    max_events: int,
    within_s: float,
    what: str,
) -> None:
    """Run ``handle`` on each batch of an agent's :class:`streams.worker.consumer.BulkInbox`
    (messages), then acknowledge it; an error in ``handle`` ends the worker.

    Why end the worker: the batch's events are tracked and unacknowledged, and carrying on
    past them would let later acknowledgements commit over them (Faust commits past a gap of
    one offset), while a rebalance or a shutdown would wait for them forever. Exiting at once
    is a crash like any other: nothing unacknowledged is committed, and the next owner (or the
    restarted worker) reads the batch again. Expected failures never get here — bad records
    become dead letters, an unreachable broker or Redis is waited for.
    """
    await run_batches(BulkBatches(app, inbox, max_events, within_s), handle, what)


async def run_batches(
    batches: Batches, handle: Callable[[list[Any]], Awaitable[None]], what: str
) -> None:
    """Handle each batch, then acknowledge it; see :func:`consume_bulk` for an error in
    ``handle``."""
    async for events in batches:
        try:
            await handle(events)
        except Exception:
            log.critical(
                "%s failed on a batch of %d events; stopping the worker (exit %d) so that "
                "nothing after it is committed — restart it: it resumes from the last "
                "committed offset, and the traceback below says what went wrong",
                what,
                len(events),
                EXIT_AGENT_FAILED,
                exc_info=True,
            )
            logging.shutdown()
            os._exit(EXIT_AGENT_FAILED)
        batches.ack(events)
