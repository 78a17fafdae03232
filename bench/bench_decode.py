"""Decode throughput of the wire contract: the per-message cost on the stream's hot path.

Measures ``decode_purchase`` / ``decode_interaction`` on pre-built payloads (no Kafka, no I/O)
in one thread and prints events per second for valid purchases, valid interactions, a mix of
both with a share of invalid messages, and invalid messages alone (the dead-letter path).
Then the same for what the Processor runs: the fast path for plain payloads
(``streams.convert.fast_purchase`` / ``fast_interaction``) with the decoders as its fallback,
facts included.

    python bench/bench_decode.py [--n N] [--invalid-share 0.05] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pydantic

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from schemas import (  # noqa: E402
    DEFAULT_LIMITS,
    EXAMPLES,
    DeadLetter,
    SourceRef,
    decode_interaction,
    decode_purchase,
)
from streams.convert import fast_interaction, fast_purchase  # noqa: E402

NOW = datetime(2024, 6, 1, tzinfo=UTC)
PURCHASES = SourceRef("rfm.purchases", 0, 0, b"c")
INTERACTIONS = SourceRef("rfm.interactions", 0, 0, b"c")

Decoder = Callable[..., object]
Message = tuple[Decoder, SourceRef, bytes]


def _stamp(rng: random.Random) -> str:
    return (NOW - timedelta(seconds=rng.randrange(0, 400 * 86_400))).isoformat()


def purchase(rng: random.Random, i: int) -> bytes:
    data: dict[str, Any] = {
        **EXAMPLES["purchase"],
        "event_id": f"evt-{i:09d}",
        "customer_id": f"c-{rng.randrange(1_000_000)}",
        "order_id": f"o-{i}",
        "occurred_at": _stamp(rng),
        "amount": round(rng.uniform(0, 500), 2),
    }
    if rng.random() < 0.5:
        del data["line_items"]
    return orjson.dumps(data)


def interaction(rng: random.Random, i: int) -> bytes:
    data: dict[str, Any] = {
        **EXAMPLES["interaction"],
        "event_id": f"evt-{i:09d}",
        "customer_id": f"c-{rng.randrange(1_000_000)}",
        "occurred_at": _stamp(rng),
        "type": rng.choice(["visit", "product_view", "cart_add", "email_open"]),
    }
    return orjson.dumps(data)


def invalid(rng: random.Random, i: int) -> Message:
    """One broken message of a kind seen in practice, for either topic."""
    good = purchase(rng, i)
    kind = rng.randrange(6)
    if kind == 0:
        raw = good[: len(good) // 2]  # truncated JSON
    elif kind == 1:
        raw = good.replace(b"+00:00", b"")  # naive timestamp
    elif kind == 2:
        raw = good.replace(b'"currency":"EUR"', b'"currency":"euro"')
    elif kind == 3:
        raw = good.replace(b'"schema_version":1', b'"schema_version":2')
    elif kind == 4:
        raw = good.replace(b'"amount":', b'"amount":-')
    else:
        raw = b"\xff" + good  # not UTF-8
    return decode_purchase, PURCHASES, raw


def workload(kind: str, n: int, invalid_share: float, seed: int) -> list[Message]:
    rng = random.Random(seed)
    messages: list[Message] = []
    for i in range(n):
        if kind == "invalid" or (kind == "mix" and rng.random() < invalid_share):
            messages.append(invalid(rng, i))
        elif kind == "purchase" or (kind == "mix" and rng.random() < 0.5):
            messages.append((decode_purchase, PURCHASES, purchase(rng, i)))
        else:
            messages.append((decode_interaction, INTERACTIONS, interaction(rng, i)))
    return messages


def run(messages: Sequence[Message]) -> tuple[float, int]:
    """Seconds taken and number of dead letters produced."""
    dead = 0
    start = time.perf_counter()
    for decode, source, raw in messages:
        if type(decode(raw, source, now=NOW)) is DeadLetter:
            dead += 1
    return time.perf_counter() - start, dead


def run_fast(messages: Sequence[Message]) -> tuple[float, int]:
    """As :func:`run`, the Processor's way: the fast path first, the decoder when it declines."""
    dead = 0
    start = time.perf_counter()
    for decode, source, raw in messages:
        fast = fast_purchase if decode is decode_purchase else fast_interaction
        if fast(raw, NOW, DEFAULT_LIMITS) is None and type(decode(raw, source, now=NOW)) is (
            DeadLetter
        ):
            dead += 1
    return time.perf_counter() - start, dead


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Decode throughput (events/s, one thread) of the rfm-stream wire contract."
    )
    parser.add_argument("--n", type=int, default=100_000, help="messages per workload")
    parser.add_argument(
        "--invalid-share", type=float, default=0.05, help="share of invalid messages in the mix"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload; best is shown")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    print(
        f"decode throughput, n={args.n}, best of {args.repeat}, one thread "
        f"(python {platform.python_version()}, pydantic {pydantic.VERSION}, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})"
    )
    for title, runner in (("decoders (pydantic)", run), ("fast path + decoders", run_fast)):
        print(f" {title}")
        for kind in ("purchase", "interaction", "mix", "invalid"):
            messages = workload(kind, args.n, args.invalid_share, args.seed)
            runner(messages[: min(1_000, len(messages))])  # warm-up
            seconds, dead = min(runner(messages) for _ in range(max(args.repeat, 1)))
            label = f"mix ({args.invalid_share:.0%} invalid)" if kind == "mix" else kind
            rate = len(messages) / seconds if seconds else float("inf")
            print(
                f"  {label:<20} {rate:>12,.0f} events/s"
                f"  {seconds / max(len(messages), 1) * 1e6:6.2f} us/event  dead letters: {dead}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
