"""The naive job written as a plain Quix Streams app: what a user of the peer framework writes.

    .local/venv-quix/bin/python bench/quix_contender.py --bootstrap HOST:PORT \\
        --purchases TOPIC --interactions TOPIC --out TOPIC --group GROUP --expected N

Both input topics as one dataframe (``concat``), values parsed as JSON (a record that is not
JSON, 1 % of the log, is skipped), per-customer state in its RocksDB store with a changelog
topic, one output record per event, at-least-once (the framework's defaults otherwise). Prints
one JSON line,
``{"events": n, "seconds": s, "outputs": k}``, timed from the first record processed to the last
(like the plain loops of ``bench/contenders.py``). Deletes its changelog topics at the end.

It imports nothing from rfm-stream: quixstreams 3.28 pins ``pydantic<2.14`` and the product needs
2.14, so it runs from its own environment (``python -m venv .local/venv-quix &&
.local/venv-quix/bin/pip install quixstreams==3.28.1``); ``bench_throughput`` finds it there.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import orjson


def run(args: argparse.Namespace) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient
    from quixstreams import Application, message_context

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        state_dir=tempfile.mkdtemp(prefix="rfm-bench-quix-"),
        use_changelog_topics=True,
        loglevel="WARNING",
    )
    # bytes, parsed in the step: Quix's JSON deserializer stops the app on the log's bad records
    purchases = app.topic(args.purchases, key_deserializer="bytes", value_deserializer="bytes")
    interactions = app.topic(
        args.interactions, key_deserializer="bytes", value_deserializer="bytes"
    )
    out = app.topic(args.out, key_serializer="bytes", value_serializer="bytes")
    expected = args.expected
    seen = outputs = 0
    started = finished = 0.0

    def step(raw: bytes, state: Any) -> bytes | None:
        """Parse, check the fields the job needs, update the customer's totals, emit them."""
        nonlocal seen, outputs, started, finished
        seen += 1
        if seen == 1:
            started = time.perf_counter()
        if seen >= expected:
            finished = time.perf_counter()
            app.stop()
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None  # the naive app's dead letter: drop it
        if not isinstance(value, dict) or not isinstance(value.get("customer_id"), str):
            return None  # the naive app's dead letter: drop it
        s = state.get("s") or {"orders": 0, "cents": 0, "touches": 0}
        if message_context().topic == args.purchases:
            amount: Any = value.get("amount")
            try:
                cents = int(float(amount) * 100)
            except (TypeError, ValueError):
                return None
            s["orders"] += 1
            s["cents"] += cents
            s["last"] = value.get("occurred_at")
        else:
            s["touches"] += 1
        state.set("s", s)
        outputs += 1
        return orjson.dumps(s)

    sdf = app.dataframe(purchases).concat(app.dataframe(interactions))
    sdf = sdf.apply(step, stateful=True).filter(lambda v: v is not None)
    sdf.to_topic(out)
    try:
        app.run()
    finally:  # its changelog topics are not under the run's prefix: delete them here
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        stem = f"changelog__{args.group}"
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(stem)]
        if names:
            for future in admin.delete_topics(names).values():
                future.result()
    return {"events": seen, "seconds": max(finished - started, 1e-9), "outputs": outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("bootstrap", "purchases", "interactions", "out", "group"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--expected", type=int, required=True, help="records to read")
    print(orjson.dumps(run(parser.parse_args())).decode(), flush=True)


if __name__ == "__main__":
    main()
