"""The agents' inboxes: bounded by the records waiting, not by the runs; one inbox per topic."""

from __future__ import annotations

import asyncio

import pytest
from mode.utils.queues import FlowControlEvent

from streams.worker.consumer import BulkInbox, ContiguousConsumer, RecordQueue, install

pytestmark = pytest.mark.asyncio


def queue(maxsize: int) -> RecordQueue:
    flow = FlowControlEvent()
    flow.resume()  # a running worker's flow (suspended during a rebalance)
    return RecordQueue(maxsize=maxsize, flow_control=flow, clear_on_resume=True)


async def test_many_small_runs_fit_until_the_records_reach_the_bound() -> None:
    """Live traffic fetches a few records at a time: a bound of runs stopped the fetch loop."""
    q = queue(maxsize=10)
    for _ in range(4):
        await asyncio.wait_for(q.put([1, 2]), 1)  # 8 records in 4 runs: still room
    assert q.qsize() == 8 and not q.full()
    await asyncio.wait_for(q.put([3, 4]), 1)
    assert q.full()
    blocked = asyncio.ensure_future(q.put([5]))
    await asyncio.sleep(0.01)
    assert not blocked.done(), "a put waits while the bound is reached"
    assert q.get_nowait() == [1, 2]
    await asyncio.wait_for(blocked, 1)
    assert q.qsize() == 9


async def test_a_run_larger_than_the_bound_is_taken_whole_into_an_empty_queue() -> None:
    q = queue(maxsize=3)
    await asyncio.wait_for(q.put(list(range(5))), 1)
    assert q.qsize() == 5
    assert await q.get() == [0, 1, 2, 3, 4]
    assert q.qsize() == 0 and q.empty()


async def test_clearing_on_a_rebalance_forgets_the_records() -> None:
    q = queue(maxsize=4)
    await q.put([1, 2, 3, 4])
    blocked = asyncio.ensure_future(q.put([5]))
    await asyncio.sleep(0.01)
    q.clear()  # what flow control does when the flow resumes
    assert q.qsize() == 0 and q.empty()
    await asyncio.sleep(0)
    assert blocked.cancelled(), "a put waiting on the cleared queue is cut (read again later)"
    await asyncio.wait_for(q.put([6, 7]), 1)
    assert q.qsize() == 2


class _FakeApp:
    """What ``BulkInbox`` and ``install`` touch of a Faust app."""

    def __init__(self) -> None:
        self.flow_control = FlowControlEvent()

        class Transport:
            Consumer: type[ContiguousConsumer] | None = None

        self.transport = Transport()


async def test_install_maps_every_inbox_topic_to_its_inbox() -> None:
    """Every agent has its inbox; the consumer finds a record's inbox by its topic."""
    app = _FakeApp()
    inputs = BulkInbox(app, ("purchases", "interactions"))
    triggers = BulkInbox(app, ("segment-changes", "churn-alerts"))
    install(app, inputs, triggers)
    consumer = app.transport.Consumer
    assert consumer is not None and consumer is not ContiguousConsumer
    assert consumer.inboxes == {
        "purchases": inputs,
        "interactions": inputs,
        "segment-changes": triggers,
        "churn-alerts": triggers,
    }
    assert ContiguousConsumer.inboxes == {}, "the installed class is the app's own subclass"


async def test_a_topic_in_two_inboxes_is_refused() -> None:
    """Its records would be handed to one reader only, and the other would wait forever."""
    app = _FakeApp()
    with pytest.raises(ValueError, match="two inboxes"):
        install(app, BulkInbox(app, ("profiles",)), BulkInbox(app, ("profiles", "offers")))
