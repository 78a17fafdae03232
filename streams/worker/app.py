"""The Faust app: the one module that wires topics, the state table and the agents.

Agents are glue. ``customers`` reads both input topics (one stream, so purchases and
interactions never interleave their writes), hands each record to the :class:`Processor`,
waits for the outputs of a batch to be acknowledged and only then writes the changed states
(see :mod:`streams.worker.table_store`). ``offers`` turns segment changes and churn alerts into
retention offers, with caps and idempotency in Redis, and feeds the dashboard's recent
alerts and changes. ``views`` keeps the Redis profiles
and audiences from the compacted ``profiles`` topic. While Redis is down, those two agents
wait and retry with backoff (their Kafka lag grows; nothing is dropped). Every agent reads
its channel through :class:`streams.worker.batches.Batches`, which acknowledges an event only after
its batch is done (an acknowledged offset gets committed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from schemas import ChurnAlert, OfferOutcome, SegmentChange, parse_output, to_json_bytes
from streams.adapters import connect
from streams.adapters.erasure import RedisEraser
from streams.adapters.offer_store import OfferStore, keep_ms_for
from streams.adapters.outcome_store import OutcomeStore
from streams.adapters.redis_views import ProfileViews, profile_update
from streams.adapters.retry import with_backoff
from streams.config import Settings, erasure_salt_is_default
from streams.convert import retention_offer, trigger_of
from streams.domain.erasure import customer_hash
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules
from streams.processor import TICK_HEADER, InRecord, OutRecord, Processor, tick_record
from streams.security import faust_broker_options
from streams.web import register_web
from streams.worker.batches import consume_bulk
from streams.worker.bulk_store import STORE_URLS, BulkRestore
from streams.worker.consumer import BulkInbox
from streams.worker.consumer import install as install_contiguous_consumer
from streams.worker.memory import (
    TRIM_EVERY_S,
    MemoryTrimmer,
    freeze_startup_heap,
    malloc_trim,
)
from streams.worker.model_watch import ModelWatcher
from streams.worker.produce import Record, send_batched
from streams.worker.table_store import (
    ChangelogWrite,
    TableStores,
    as_current_event,
    changelog_written,
)

log = logging.getLogger(__name__)

OFFER_BATCH = 100
"""Triggers per offers batch: offers are decided one by one (Redis), and sent together."""
FEED_BATCH = 500
"""Offers per batch of the ``web_feed`` agent (it only counts them)."""
SIDE_INBOX_RECORDS = 4_096
"""Records waiting for the views or the offers agent at most (Faust's stream buffer size, which
bounded them before they had inboxes): each waiting profile holds its fetched bytes, and
8,192 of them left ~25 MiB more resident after a backlog than 4,096 did."""
REDIS_SIDE_WITHIN_S = 0.1
"""Shortest batch window of the agents that write to Redis (views, offers, outcomes).

Each of their batches costs Redis round trips, and what they write is not on the path of a
segment change. With the customers agent's short window they made small batches, fell behind,
and filled their queues, and a full queue stops the fetch loop that feeds the customers agent
too: at 1,000 events/s and a 10 ms window, segment changes came seconds late."""


@dataclass
class Topology:
    """Everything the worker runs, built from settings; tests build it too."""

    app: faust.App
    processor: Processor
    stores: TableStores
    model_watcher: ModelWatcher
    outputs: dict[str, Any]


def use_fast_event_loop() -> bool:
    """Run the worker on uvloop when it is installed (~25 % more events/s through Faust).

    Must be called before the app or its worker touch an event loop. Returns whether uvloop
    is in use; without it (e.g. Windows) the default asyncio loop works the same, slower.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we ship
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def build(settings: Settings, rules: Rules, model: Model | None = None) -> Topology:
    """Create the Faust app with its topics, table and agents for ``settings``."""
    app = faust.App(
        settings.app_id,
        **faust_broker_options(settings),  # broker URLs + TLS/SASL credentials
        # Faust's stores, restored in bulk and written only with what the changelog has
        store=STORE_URLS["rocksdb" if settings.store == "rocksdb" else "memory"],
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        topic_disable_leader=True,
        # one produce request carries up to a batch per partition: at Faust's 16 KiB that
        # was ~40 records, so outputs, profiles and changelog writes went out in many small
        # requests (a tenth of the worker's time in socket writes)
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_acks=-1,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        stream_wait_empty=True,
        # records handed out per fetch: Faust's default (no limit) decoded a whole backlog's
        # fetch (~100,000 records) at once and made it one batch, whose records, outputs and
        # states were alive together; the rest waits in the fetch buffers as raw bytes
        broker_max_poll_records=settings.batch_max,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    t = settings.topics
    # Every agent reads whole fetched runs from its own inbox (see streams.worker.consumer):
    # Faust's per-record path (conductor, event, channel queue) cost as much per record as
    # Faust's do-nothing agent, and the other agents read ~1.5 records per input event
    # (profiles, segment changes, alerts, offers). The customers agent's inbox holds a few
    # batches; the others hold what Faust's stream buffer held (SIDE_INBOX_RECORDS).
    inbox = BulkInbox(app, (t.purchases, t.interactions), max_records=4 * settings.batch_max)
    views_inbox = BulkInbox(app, (t.profiles,), max_records=SIDE_INBOX_RECORDS)
    triggers_inbox = BulkInbox(
        app, (t.segment_changes, t.churn_alerts), max_records=SIDE_INBOX_RECORDS
    )
    outcomes_inbox = BulkInbox(app, (t.offer_outcomes,), max_records=4 * FEED_BATCH)
    feed_inbox = BulkInbox(app, (t.retention_offers,), max_records=4 * FEED_BATCH)
    install_contiguous_consumer(app, inbox, views_inbox, triggers_inbox, outcomes_inbox, feed_inbox)
    inputs = app.topic(t.purchases, t.interactions, key_type=bytes, value_type=bytes)
    outputs = {
        name: app.topic(name, key_type=bytes, value_type=bytes, internal=False)
        for name in t.outputs()
    }
    purchases_topic = app.topic(t.purchases, key_type=bytes, value_type=bytes)
    table = app.Table(
        "customers",
        default=None,
        # the types must be on the table too: its store picks the codec that restores the
        # changelog from them (with only the schema it restored JSON, not bytes)
        key_type=str,
        value_type=bytes,
        schema=faust.Schema(
            key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"
        ),
        partitions=settings.partitions,
        extra_topic_configs={"cleanup.policy": "compact"},
    )
    store = table.data
    if isinstance(store, BulkRestore):
        store.configure(settings.kafka_bootstrap, settings.kafka_client_options())
    stores = TableStores(table)
    processor = Processor(settings, rules, model or default_model(), stores.for_partition)
    watcher = ModelWatcher(settings, processor.set_model)
    web = register_web(app, settings, processor, api_token=settings.api_token)

    batch_within = settings.batch_within_ms / 1000
    redis_within = max(batch_within, REDIS_SIDE_WITHIN_S)
    trimmer = MemoryTrimmer(malloc_trim())

    @app.agent(inputs)
    async def customers(stream: Any) -> None:
        """Reads the inbox, not its stream: the consumer hands the inputs over in runs.

        Subscribing to ``inputs`` still makes Faust assign the input partitions to the worker.
        """

        async def handle(messages: list[Any]) -> None:
            started = time.perf_counter()
            await process_batch(messages, processor, stores, app.producer)
            web.observe_batch(time.perf_counter() - started, len(messages))
            trimmer.processed(len(messages))
            # an empty inbox after many events: a backlog was read, give its garbage back
            await trimmer.maybe_trim(drained=inbox.queue.empty())

        await consume_bulk(
            app,
            inbox,
            handle,
            max_events=settings.batch_max,
            within_s=batch_within,
            what="the customers agent",
        )

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Revoked partitions may be changed elsewhere: forget every cached state."""
        stores.reset()
        processor.forget(range(settings.partitions))

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        stores.reset()
        processor.forget(range(settings.partitions))

    @app.timer(interval=TRIM_EVERY_S)
    async def trim_memory() -> None:
        """Give freed heap back once events stop coming (see streams.worker.memory)."""
        await trimmer.maybe_trim(drained=True)

    @app.task
    async def freeze_heap() -> None:
        """Once the worker has started: keep its long-lived objects out of the full
        collections (see streams.worker.memory.freeze_startup_heap)."""
        log.info("startup heap frozen: %d objects", freeze_startup_heap())

    @app.task
    async def watch_model() -> None:
        await watcher.run()

    views_topic = app.topic(t.profiles, key_type=bytes, value_type=bytes)
    triggers = app.topic(t.segment_changes, t.churn_alerts, key_type=bytes, value_type=bytes)
    redis_side = RedisSide(settings, rules)

    @app.agent(views_topic)
    async def views(stream: Any) -> None:
        """Materialise the latest profile of each customer (and audiences) in Redis."""

        async def handle(events: list[Any]) -> None:
            await redis_side.apply_profile_records([(event.key, event.value) for event in events])

        await consume_bulk(
            app,
            views_inbox,
            handle,
            max_events=settings.batch_max,
            within_s=redis_within,
            what="the views agent",
        )

    @app.agent(triggers)
    async def offers(stream: Any) -> None:
        """Segment changes and churn alerts → retention offers (caps and idempotency in Redis).

        Also the dashboard's feed of recent alerts and changes: one agent per topic, since a
        record read by two agents is only committed once both acknowledge it, and a rebalance
        that cleared one agent's queue then waited for it forever.
        """

        async def handle(events: list[Any]) -> None:
            offered: list[OutRecord] = []
            # a trigger of a customer erased since it was published makes no offer
            erased = await redis_side.erased_customers(event.key for event in events)
            events = [event for event in events if event.key not in erased]
            for key, payload in await redis_side.offers_for([event.value for event in events]):
                offered.append(OutRecord(t.retention_offers, key, payload))
            # acknowledged only once the broker has every offer of the batch
            await send_all(offered, app.producer)
            await web.take_outputs([event.value for event in events])
            # erased while this batch was decided: delete what it wrote (checked after writing)
            for key in await redis_side.erased_customers(event.key for event in events):
                await redis_side.erase(key.decode())

        await consume_bulk(
            app,
            triggers_inbox,
            handle,
            max_events=OFFER_BATCH,
            within_s=redis_within,
            what="the offers agent",
        )

    outcomes_topic = app.topic(t.offer_outcomes, key_type=bytes, value_type=bytes)

    @app.agent(outcomes_topic)
    async def outcomes(stream: Any) -> None:
        """Offer outcomes → the lift aggregates in Redis, each outcome id counted once."""

        async def handle(events: list[Any]) -> None:
            await redis_side.count_outcomes([event.value for event in events])

        await consume_bulk(
            app,
            outcomes_inbox,
            handle,
            max_events=FEED_BATCH,
            within_s=redis_within,
            what="outcomes",
        )

    offers_topic = app.topic(t.retention_offers, key_type=bytes, value_type=bytes)

    @app.agent(offers_topic)
    async def web_feed(stream: Any) -> None:
        """Offers by decision, for /metrics. (Alerts and changes reach the web side from the
        ``offers`` agent, which already reads their topics.)"""

        async def handle(events: list[Any]) -> None:
            await web.take_outputs([event.value for event in events])

        await consume_bulk(
            app, feed_inbox, handle, max_events=FEED_BATCH, within_s=0.2, what="web feed"
        )

    if settings.live_clock:

        @app.timer(interval=settings.tick_seconds)
        async def live_clock() -> None:
            """Wall-clock ticks so that silent customers drift without any new event."""
            now_ms = int(time.time() * 1000)
            for tp in app.consumer.assignment():
                if tp.topic == t.purchases:
                    tick = tick_record(t.purchases, tp.partition, now_ms)
                    await purchases_topic.send(
                        key=tick.key,
                        value=tick.value,
                        partition=tp.partition,
                        headers={TICK_HEADER: b"1"},
                    )

    if erasure_salt_is_default(settings):
        log.warning(
            "RFM_ERASURE_SALT is not set: erased customers are remembered by a hash salted "
            "with the published default, which anyone can recompute for a guessed id; set a "
            "secret salt of your own before erasing anyone (and never change it afterwards)"
        )
    return Topology(app, processor, stores, watcher, outputs)


class RedisSide:
    """The Redis adapters, created lazily inside the worker's event loop."""

    def __init__(self, settings: Settings, rules: Rules) -> None:
        self.settings = settings
        self.rules = rules
        self._views: ProfileViews | None = None
        self._offers: OfferStore | None = None
        self._eraser: RedisEraser | None = None
        self._salt = settings.erasure_salt.get_secret_value()
        self._outcomes: OutcomeStore | None = None

    async def count_outcomes(self, batch: Sequence[bytes]) -> None:
        """Add closed offer outcomes to the lift counters (idempotent by outcome id)."""
        parsed = []
        for raw in batch:
            try:
                event = parse_output(raw)
            except ValueError:
                log.warning("ignoring a record on the outcomes topic that is not an outcome")
                continue
            if isinstance(event, OfferOutcome):
                parsed.append(orjson.loads(raw))
        if not parsed:
            return
        if self._outcomes is None:
            self._outcomes = OutcomeStore(connect(self.settings), self.settings.redis_prefix)
        store = self._outcomes
        await with_backoff(
            lambda: store.add(parsed), what="lift counters", where=self.settings.redis_url
        )

    def _connect(self) -> tuple[ProfileViews, OfferStore]:
        if self._views is None or self._offers is None or self._eraser is None:
            client = connect(self.settings)
            prefix = self.settings.redis_prefix
            self._views = ProfileViews(client, prefix)
            self._offers = OfferStore(client, prefix, keep_ms=keep_ms_for(self.rules.offers))
            self._eraser = RedisEraser(client, prefix)
        return self._views, self._offers

    def eraser(self) -> RedisEraser:
        self._connect()
        assert self._eraser is not None
        return self._eraser

    async def apply_profile_records(
        self, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> None:
        """Records of the profiles topic, in order: a tombstone (no value) is an erasure,
        done after the updates before it (the processor publishes none after it)."""
        pending: list[bytes] = []
        for key, value in records:
            if value is not None:
                pending.append(value)
                continue
            if pending:
                await self.apply_profiles(pending)
                pending = []
            if key:
                await self.erase(key.decode())
        if pending:
            await self.apply_profiles(pending)

    async def erase(self, customer_id: str) -> None:
        """Delete the customer's Redis keys and set the erased marker; waits while Redis is down."""
        eraser = self.eraser()
        hashed = customer_hash(customer_id, self._salt)
        removed = await with_backoff(
            lambda: eraser.erase(customer_id, hashed),
            what="erasure",
            where=self.settings.redis_url,
        )
        log.info("erased customer %s from Redis (%d keys and members)", hashed, removed)

    async def erased_customers(self, keys: Iterable[bytes | None]) -> set[bytes]:
        """The keys (customer ids) among ``keys`` whose customers were erased."""
        by_hash = {customer_hash(k.decode(), self._salt): k for k in keys if k}
        if not by_hash:
            return set()
        eraser = self.eraser()
        found = await with_backoff(
            lambda: eraser.erased_among(by_hash),
            what="erasure markers",
            where=self.settings.redis_url,
        )
        return {by_hash[h] for h in found}

    async def apply_profiles(self, batch: Sequence[bytes]) -> None:
        """One Redis round trip per batch; waits (with backoff) while Redis is down."""
        views, _ = self._connect()
        updates = [profile_update(raw) for raw in batch]
        await with_backoff(
            lambda: views.apply(updates), what="profile views", where=self.settings.redis_url
        )

    async def offers_for(self, raws: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """The retention offers (and recorded no-offers) for a batch of triggers, in order.

        Idempotent by trigger id: a redelivered trigger finds its stored decision and re-emits
        exactly it; nothing is offered twice, nothing is lost. Three Redis round trips for
        the whole batch (``OfferStore.decide_batch``), not three per trigger.
        """
        pairs = []
        for raw in raws:
            event = parse_output(raw)
            if not isinstance(event, SegmentChange | ChurnAlert):
                continue
            trigger = trigger_of(event)
            if trigger is not None:
                pairs.append((trigger, event))
        if not pairs:
            return []
        _, store = self._connect()
        triggers = [trigger for trigger, _ in pairs]
        decisions = await with_backoff(
            lambda: store.decide_batch(triggers, self.rules.offers),
            what="offer store",
            where=self.settings.redis_url,
        )
        return [
            (decision.customer_id.encode(), to_json_bytes(retention_offer(decision, event)))
            for (_, event), decision in zip(pairs, decisions, strict=True)
            if decision is not None
        ]


class CurrentRecord:
    """Stands for Faust's current event while a record is processed (see ``as_current_event``).

    A RocksDB table reads and writes the partition of the current event's message.
    """

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Any) -> None:
        self.message = message


async def process_batch(
    messages: Sequence[Any],
    processor: Processor,
    stores: TableStores,
    producer: Any,
) -> None:
    """Process, wait for the outputs to be acknowledged, then write states (module doc).

    ``messages`` are consumed messages (Faust events work too: their ``message`` is taken).
    """
    produced: list[OutRecord] = []
    current: dict[int, CurrentRecord] = {}
    direct = stores.read_directly()
    for item in messages:
        message = getattr(item, "message", item)
        partition = message.partition
        as_event = current.get(partition)
        if as_event is None:
            as_event = current[partition] = CurrentRecord(message)
        try:
            raw_headers = message.headers or ()
            pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
            record = InRecord(
                message.topic,
                partition,
                message.offset,
                message.key,
                message.value,
                tuple((str(k), bytes(v or b"")) for k, v in pairs) if pairs else (),
            )
            if direct:
                produced.extend(processor.process(record))
            else:
                # a plain Faust RocksDB store picks the partition of a read from the current
                # event: make it this record's (a customer's partition)
                with as_current_event(as_event):
                    produced.extend(processor.process(record))
        except Exception as exc:
            # Faust acknowledges an event whose processing raised: never let one escape.
            log.exception(
                "unexpected failure on %s[%s]@%s", message.topic, message.partition, message.offset
            )
            produced.append(processor.internal_error(message, exc))
    produced.extend(processor.drain_profiles())
    await send_all(produced, producer)
    writes: list[ChangelogWrite] = []
    for partition, as_event in current.items():
        writes.extend(stores.flush(partition, as_event))
    await changelog_written(writes, producer)
    stores.settle()


async def send_all(produced: Sequence[OutRecord], producer: Any) -> None:
    """Send and wait for every acknowledgement, retrying until the broker takes them.

    Never raises: Faust would acknowledge the batch's input events anyway, and the states
    (written after this returns) would be lost with them. While the broker is unreachable
    this waits, so the consumer's lag grows instead.
    """
    delay = 0.2
    records: list[Record] = [
        (out.topic, out.partition, out.key, None if out.tombstone else out.value)
        for out in produced
    ]
    while records:
        try:
            # whole batches per partition, one future each (see streams.worker.produce)
            sent = await send_batched(producer, records)
            await asyncio.gather(*{id(future): future for future, _ in sent}.values())
            return
        except Exception as exc:
            log.warning(
                "could not publish %d output records (%s: %s); retrying in %.1f s",
                len(records),
                type(exc).__name__,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
