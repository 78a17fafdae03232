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
before it, and the seek to the committed offsets that ends every rebalance reads it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any


class Batches:
    """Up to ``max_events`` events, or what arrived within ``within_s`` of the first one."""

    def __init__(self, app: Any, channel: Any, max_events: int, within_s: float) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self.app = app
        self.channel = channel
        self.max_events = max_events
        self.within_s = max(within_s, 0.0)
        self.skipped = 0
        """Events dropped unacknowledged because they arrived during or before a rebalance."""

    def _take(self, item: Any, batch: list[Any]) -> None:
        message = getattr(item, "message", None)
        if message is None:  # not an event from a topic: nothing to acknowledge, nothing to do
            return
        app = self.app
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            self.skipped += 1  # left unacknowledged on purpose (module doc)
            return
        if not message.tracked:
            message.tracked = True
            app.consumer.track_message(message)
        batch.append(item)

    async def next(self) -> list[Any]:
        """Wait for the next non-empty batch."""
        queue = self.channel.queue
        loop = asyncio.get_running_loop()
        batch: list[Any] = []
        while not batch:
            self._take(await queue.get(), batch)
        deadline = loop.time() + self.within_s
        while len(batch) < self.max_events:
            if not queue.empty():
                self._take(queue.get_nowait(), batch)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                # a cancelled Queue.get leaves its item in the queue: nothing is lost here
                item = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
            self._take(item, batch)
        return batch

    @staticmethod
    def ack(events: Sequence[Any]) -> None:
        """Mark the events processed: their offsets may now be committed."""
        for event in events:
            event.ack()

    def __aiter__(self) -> Batches:
        return self

    async def __anext__(self) -> list[Any]:
        return await self.next()
