"""The ``rfm-stream`` command line: one entry point for operators and developers."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from streams.config import Settings, load_settings, prepare_data_dir
from streams.domain.lift import ALL, ArmCounts, Key, LiftRow
from streams.domain.rules import Rules

app = typer.Typer(
    name="rfm-stream",
    help=(
        "Real-time customer segmentation over Kafka: RFM scores and segments, the loyalty x "
        "profitability quadrants, BG/NBD churn drift, retention offers.\n\n"
        "Settings come from RFM_* environment variables (see docs/operations.md, 'Configuration'); "
        "`./dev run COMMAND` sets them for the local stack."
    ),
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
console_out = Console()

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a service the command needs is down


@app.callback()
def _root() -> None:
    """rfm-stream: real-time customer segmentation over Kafka."""


def settings_or_exit() -> Settings:
    """Settings from the environment, or a message naming the bad variable and exit 2."""
    try:
        return load_settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = "RFM_" + str(err["loc"][0]).upper() if err["loc"] else "RFM_*"
            console.print(f"[red]bad setting {name}[/red]: {err['msg']}")
        raise typer.Exit(EXIT_USAGE) from exc


@app.command()
def health() -> None:
    """Check that Kafka and Redis answer. Exit 0 when both do, 69 when one does not."""
    from streams.tools.health import check_all

    checks = check_all(settings_or_exit())
    for check in checks:
        colour = "green" if check.ok else "red"
        console.print(f"[{colour}]{check.message()}[/{colour}]")
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_UNAVAILABLE)


RulesOption = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        help="A rules file like streams/domain/rules.toml (default: RFM_RULES_FILE, else it).",
    ),
]


def rules_or_exit(path: Path | None) -> Rules:
    """The rule book (``--rules``, else ``RFM_RULES_FILE``, else the defaults; the lateness
    settings of the environment over the file's), or what is wrong with it and exit 2."""
    from streams.config import load_rule_book

    settings = settings_or_exit()
    source = path if path is not None else settings.rules_file
    try:
        return load_rule_book(settings, path)
    except FileNotFoundError as exc:
        console.print(f"[red]rules file not found:[/red] {source}")
        raise typer.Exit(EXIT_USAGE) from exc
    except ValidationError as exc:
        console.print(f"[red]invalid rules (file {source or 'default'}, RFM_* settings):[/red]")
        console.print(str(exc))
        raise typer.Exit(EXIT_USAGE) from exc


def require_services(settings: Settings, *, redis: bool = False) -> None:
    """Exit 69 with a message saying how to start what is missing."""
    from streams.tools.health import check_kafka, check_redis

    checks = [check_kafka(settings)] + ([check_redis(settings)] if redis else [])
    failed = [c for c in checks if not c.ok]
    for check in failed:
        console.print(f"[red]{check.message()}[/red]")
    if failed:
        raise typer.Exit(EXIT_UNAVAILABLE)


@app.command()
def worker(rules: RulesOption = None) -> None:
    """Run a stream worker: consume purchases and interactions, keep customer state, publish
    segment changes, churn alerts and dead letters. Run more workers (same RFM_APP_ID) to scale
    out; partitions are shared among them. Stops cleanly on Ctrl-C / SIGTERM."""
    from faust.worker import Worker

    from streams.worker.app import build, use_fast_event_loop
    from streams.worker.memory import fix_mmap_threshold, tune_cycle_collector
    from streams.worker.model_watch import load_current_model
    from streams.worker.topics import ensure_topics

    use_fast_event_loop()
    fix_mmap_threshold()
    settings = settings_or_exit()
    tune_cycle_collector(settings.gc_young_threshold)
    rule_book = rules_or_exit(rules)
    require_services(settings)
    ensure_topics(settings)
    model = load_current_model(settings)
    settings = settings.model_copy(update={"data_dir": str(prepare_data_dir(settings))})
    topology = build(settings, rule_book, model)
    console.print(
        f"worker {settings.app_id}: model {topology.processor.model.version}, "
        f"topics {settings.topic_prefix}*, store {settings.store}, "
        f"live clock {'on' if settings.live_clock else 'off'}"
    )
    Worker(topology.app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


@app.command()
def replay(
    log_file: Annotated[Path, typer.Argument(help="JSON lines, or a CDNOW .txt log.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or cdnow (default: by extension).")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Event-time speed-up (e.g. 86400 = a day per second); 0 = max.")
    ] = 0.0,
    end_at: Annotated[
        str | None,
        typer.Option(help="Tick every partition's clock to this ISO time at the end."),
    ] = None,
    order: Annotated[
        str,
        typer.Option(
            help="event-time: sort by event time; delivery: keep the file's order (a log "
            "recorded as it arrived, late events included)."
        ),
    ] = "event-time",
    rules: RulesOption = None,
) -> None:
    """Produce a recorded event log into the input topics in event-time order, then tick every
    purchase partition's clock to the end of the log (or --end-at) so all pending work is
    evaluated. The same log with the same model always gives the same outputs."""
    from rich.progress import Progress

    from streams.tools.replay import detect_format, plan, produce, read_lines
    from streams.worker.topics import ensure_topics

    settings = settings_or_exit()
    rule_book = rules_or_exit(rules)
    if not log_file.is_file():
        console.print(f"[red]no such log file:[/red] {log_file}")
        raise typer.Exit(EXIT_USAGE)
    chosen = fmt or detect_format(log_file)
    if chosen not in ("jsonl", "cdnow"):
        console.print(f"[red]unknown --format {chosen}[/red]: use jsonl or cdnow")
        raise typer.Exit(EXIT_USAGE)
    if order not in ("event-time", "delivery"):
        console.print(f"[red]unknown --order {order}[/red]: use event-time or delivery")
        raise typer.Exit(EXIT_USAGE)
    end_ms = _parse_time_ms(end_at) if end_at else None
    planned = plan(
        read_lines(log_file),
        settings,
        chosen,  # type: ignore[arg-type]
        end_tick_ms=end_ms,
        lateness_ms=rule_book.allowed_lateness_ms,
        order="delivery" if order == "delivery" else "event_time",
    )
    require_services(settings)
    ensure_topics(settings)
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task(f"replaying {log_file.name}", total=len(planned))
        produced = produce(
            planned, settings, speed=speed, progress=lambda n: progress.advance(task, n)
        )
    console.print(
        f"produced {produced:,} records into {settings.topic_prefix}purchases/interactions"
    )


@app.command()
def tick(
    at: Annotated[str, typer.Argument(help="ISO time, e.g. 2026-01-31T00:00:00Z")],
) -> None:
    """Move every purchase partition's clock to AT (replay mode: time alone moves customers)."""
    from streams.processor import TICK_HEADER, tick_record
    from streams.tools.replay import Planned, produce
    from streams.worker.topics import ensure_topics

    settings = settings_or_exit()
    at_ms = _parse_time_ms(at)
    require_services(settings)
    ensure_topics(settings)  # else the producer waits a minute for a topic that never comes
    planned = []
    for p in range(settings.partitions):
        t = tick_record(settings.topics.purchases, p, at_ms)
        planned.append(Planned(t.topic, p, t.key, t.value, at_ms, ((TICK_HEADER, b"1"),)))
    produce(planned, settings)
    console.print(f"ticked {settings.partitions} partitions to {at}")


@app.command()
def forget(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase.")],
) -> None:
    """Erase a customer (the right to be forgotten): their state, Redis profile, audiences,
    history and offer records go, `customer-erased` tells downstream tools, and their later or
    replayed events are dead-lettered `erased`. Produces the request on the customer's input
    partition; the worker owning it does the erasing, in order with the customer's events."""
    import time

    from streams.erasure import BadEraseRequestError, erase_request
    from streams.tools.replay import Planned, produce
    from streams.worker.topics import ensure_topics

    settings = settings_or_exit()
    now = int(time.time() * 1000)
    try:
        r = erase_request(settings.topics.purchases, settings.partitions, customer_id, now)
    except BadEraseRequestError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    require_services(settings)
    ensure_topics(settings)
    produce([Planned(r.topic, r.partition, r.key, r.value, None, r.headers)], settings)
    console.print(
        f"erasure of {customer_id!r} requested on {r.topic}[{r.partition}]; the worker owning "
        f"that partition erases it (watch {settings.topics.customer_erased})"
    )


@app.command()
def calibrate(
    at: Annotated[
        str | None, typer.Option(help="Evaluation time (ISO); default: the newest clock.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the model, do not publish it.")] = False,
    rules: RulesOption = None,
) -> None:
    """Fit a new model (quintile cut points, split points, BG/NBD parameters) from every
    customer's state in the changelog — all partitions, not one worker's — and publish it on
    the model topic. Workers adopt it without a restart."""
    from streams.domain.model import calibrate as fit
    from streams.tools.calibration import read_states
    from streams.worker.model_watch import load_current_model, publish_model

    settings = settings_or_exit()
    rule_book = rules_or_exit(rules)
    require_services(settings)
    states, newest_clock = read_states(settings)
    if not states:
        console.print("[red]no customer state found[/red]: run a worker and replay events first")
        raise typer.Exit(EXIT_FAILED)
    at_ms = _parse_time_ms(at) if at else newest_clock
    if at_ms is None:
        console.print("[red]no clock in the changelog yet[/red]: pass --at")
        raise typer.Exit(EXIT_USAGE)
    model = fit(states, at_ms, rule_book, previous=load_current_model(settings))
    console.print_json(model.to_json().decode())
    if not dry_run:
        publish_model(settings, model)
        console.print(f"published model {model.version} ({model.population:,} customers)")


@app.command("import")
def import_history(
    log: Annotated[Path, typer.Argument(help="The history: JSON lines, CSV or CDNOW .txt.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="auto (by extension: .txt CDNOW, .csv CSV), jsonl, csv, cdnow."
        ),
    ] = "auto",
    csv_map: Annotated[
        str | None,
        typer.Option(
            help="CSV columns, field=column,...: customer_id, occurred_at and amount are needed; "
            "event_id, order_id, currency and type (purchase|refund) are optional. A negative "
            "amount is a refund."
        ),
    ] = None,
    keep_model: Annotated[
        bool, typer.Option(help="Keep the published (or default) model instead of calibrating.")
    ] = False,
    dead_letters: Annotated[
        Path, typer.Option(help="Where the invalid records go (JSON lines, dead-letter records).")
    ] = Path("import-dead-letters.jsonl"),
    emit_current: Annotated[
        bool,
        typer.Option(
            help="Also publish one segment change per customer and dimension (cause 'import', "
            "no previous value) stating its current memberships, for downstream tools; no "
            "offer is made for them."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Fold and report, write nothing to Kafka or Redis.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The summary as JSON on stdout.")] = False,
    rules: RulesOption = None,
) -> None:
    """Bootstrap a deployment from a shop's history, before its workers start.

    Runs the pure core over the whole log in-process (at the core's speed, not through Kafka),
    calibrates the model on it and publishes it, writes every customer's final state and each
    partition's clock to the table's changelog, and the profiles and audiences to Redis. No
    historic segment change or alert is published. Workers started afterwards restore the
    states and go on live: new purchases are applied, silent customers drift with time.

    Import history that is not also in the input topics (the live worker applies everything it
    reads there). Refused while workers of this app (RFM_APP_ID) consume: stop them first.
    Safe to run again after a crash: it writes the same rows. Exit 0 done, 1 nothing to import,
    2 bad usage, 69 a service is down.
    """
    import asyncio
    import json as jsonlib
    from collections.abc import Iterator

    from rich.progress import Progress

    from streams.adapters.redis_views import ProfileUpdate
    from streams.tools import importer
    from streams.worker.model_watch import load_current_model, publish_model
    from streams.worker.topics import ensure_topics

    settings = settings_or_exit()
    rule_book = rules_or_exit(rules)
    if not log.is_file():
        console.print(f"[red]no such file:[/red] {log}")
        raise typer.Exit(EXIT_USAGE)
    try:
        mapping = importer.parse_csv_map(csv_map) if csv_map else None
        lines, log_format = importer.read_log(log, fmt, settings, mapping)
    except importer.ImportRefusedError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    if not dry_run:
        require_services(settings, redis=True)
        consuming = importer.workers_consuming(settings)
        if consuming:
            console.print(
                f"[red]{len(consuming)} worker(s) of app {settings.app_id!r} are consuming[/red] "
                f"({', '.join(consuming)}): stop them, import, then start them again"
            )
            raise typer.Exit(EXIT_FAILED)
    if not dry_run:
        ensure_topics(settings)  # as a worker would: the model topic is read just below
    model = load_current_model(settings) if not dry_run else None
    if model is None:
        from streams.domain.model import default_model

        model = default_model()
    emitted = 0
    with (
        Progress(console=console, transient=False) as progress,
        importer.long_lived_heap(),
    ):
        task = progress.add_task(f"folding {log.name}", total=len(lines))
        folded = importer.fold(
            lines,
            log_format,
            settings,
            rule_book,
            model,
            progress=lambda n: progress.advance(task, n),
        )
        if folded.customers == 0:
            console.print("[red]no customer in the log[/red]: nothing to import")
            raise typer.Exit(EXIT_FAILED)
        if not dry_run:
            importer.drop_erased(settings, folded)  # an erased customer is never brought back
        if not keep_model:
            model = importer.recalibrate(folded, rule_book, model)
        if folded.dead_letters or dead_letters.exists():  # a clean import leaves no empty file
            dead_letters.write_bytes(b"".join(d + b"\n" for d in folded.dead_letters))
        if not dry_run:
            if not keep_model:
                publish_model(settings, model)
            rows = folded.customers + len(folded.stores)
            to_changelog = progress.add_task("changelog", total=rows)
            to_redis = progress.add_task("Redis views", total=folded.customers)
            updates: list[ProfileUpdate] = []

            def final_profiles() -> Iterator[list[ProfileUpdate]]:
                # built a batch at a time, kept for --emit-current
                for batch in importer.final_profile_batches(folded):
                    updates.extend(batch)
                    yield batch

            asyncio.run(
                importer.write_all(
                    settings,
                    folded,
                    final_profiles(),
                    changelog_progress=lambda n: progress.advance(to_changelog, n),
                    views_progress=lambda n: progress.advance(to_redis, n),
                )
            )
            progress.update(to_redis, total=len(updates), completed=len(updates))
            if emit_current:
                memberships = importer.current_memberships(settings, rule_book, updates)
                emitted = importer.publish(settings, memberships)
    figures = importer.summary(folded) | {
        "memberships_published": emitted,
        "model_version": model.version,
        "model_published": not dry_run and not keep_model,
        "dead_letter_file": str(dead_letters) if dead_letters.exists() else None,
        "written": not dry_run,
    }
    if as_json:
        console_out.print(jsonlib.dumps(figures))
        return
    console.print(
        f"imported {figures['customers']:,} customers from {figures['events']:,} records "
        f"in {figures['seconds']:.1f} s ({figures['events_per_s'] or 0:,} records/s), model "
        f"{model.version}{' (published)' if figures['model_published'] else ''}"
        + ("" if not dry_run else "; dry run: nothing written")
    )
    if folded.erased:
        console.print(
            f"left out {folded.erased:,} customers erased in this deployment "
            "(an erasure is permanent; their history is not imported)"
        )
    if folded.dead_reasons:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(folded.dead_reasons.items()))
        console.print(f"dead letters: {reasons} (written to {dead_letters})")


@app.command()
def generate(
    out: Annotated[Path, typer.Argument(help="Where to write the JSON-lines event log.")],
    truth: Annotated[
        Path | None, typer.Option(help="Ground-truth file (default: OUT with _truth).")
    ] = None,
    true_friends: Annotated[int, typer.Option(help="Loyal, profitable customers.")] = 200,
    butterflies: Annotated[int, typer.Option(help="Profitable, short-lived.")] = 200,
    barnacles: Annotated[int, typer.Option(help="Loyal, low value.")] = 200,
    strangers: Annotated[int, typer.Option(help="Neither.")] = 400,
    days: Annotated[int, typer.Option(help="Length of the log in days.")] = 365,
    churn_share: Annotated[
        float, typer.Option(help="Share of true friends who stop at a known moment.")
    ] = 0.2,
    invalid_share: Annotated[float, typer.Option(help="Share of invalid lines.")] = 0.03,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
) -> None:
    """Write a synthetic event log of customers whose true quadrant is known (and some who
    churn at a known moment), with seasonality, refunds, interactions, late, duplicate and
    invalid events, plus a ground-truth file. Deterministic for a given seed."""
    from streams.tools.personas import PersonaConfig, write
    from streams.tools.personas import generate as make

    try:
        config = PersonaConfig(
            true_friends=true_friends,
            butterflies=butterflies,
            barnacles=barnacles,
            strangers=strangers,
            days=days,
            churn_share=churn_share,
            invalid_share=invalid_share,
            seed=seed,
            partitions=settings_or_exit().partitions,
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    truth_path = truth or out.with_name(out.stem + "_truth" + out.suffix)
    with console.status("generating…"):
        log = make(config)
        write(log, out, truth_path)
    console.print(
        f"wrote {len(log.lines):,} events to {out} and {len(log.truth):,} customers' truth "
        f"to {truth_path}"
    )


@app.command()
def quality(
    log_file: Annotated[
        Path | None,
        typer.Argument(help="A generated log (default: generate one with --customers/--seed)."),
    ] = None,
    truth: Annotated[Path | None, typer.Option(help="Its truth file (default: LOG_truth).")] = None,
    customers: Annotated[int, typer.Option(help="Customers to generate.")] = 2_000,
    seed: Annotated[int, typer.Option(help="Seed of the generated log.")] = 0,
    silence_days: Annotated[int, typer.Option(help="Days without events after the log.")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    rules: RulesOption = None,
    cdnow: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Evaluate the churn alerts on a real holdout instead: the CDNOW master log "
                "(CDNOW_master.txt, from brucehardie.com or the lifetimes package's datasets)."
            ),
            dir_okay=False,
        ),
    ] = None,
    cut_off: Annotated[
        str,
        typer.Option(help="With --cdnow: last day of the calibration period (YYYY-MM-DD)."),
    ] = "1997-09-30",
    closed_loop: Annotated[
        bool,
        typer.Option(
            "--closed-loop",
            help="Measure offer lift instead: simulated customers answer the offers with a "
            "known effect; prints how often the 95 % interval holds it (exit 1 below 90 %).",
        ),
    ] = False,
    effect: Annotated[
        float, typer.Option(help="With --closed-loop: the simulated lift (a probability).")
    ] = 0.15,
    baseline: Annotated[
        float,
        typer.Option(help="With --closed-loop: P(return within the window) without an offer."),
    ] = 0.3,
    seeds: Annotated[int, typer.Option(help="With --closed-loop: runs, seeds 0..N-1.")] = 20,
    holdout_percent: Annotated[
        float,
        typer.Option(help="With --closed-loop: the holdout share of the simulated policy."),
    ] = 50.0,
) -> None:
    """Score segments and churn alerts against a log whose truth is known: quadrant accuracy
    (with the confusion matrix) and, for true friends who stop buying, alert recall,
    precision and detection delay. Runs the worker's own processing, without Kafka.

    With --cdnow PATH: the calibration/holdout evaluation on the real CDNOW log. Purchases up
    to --cut-off are folded through the core, the model is calibrated on them, the period is
    replayed with that model; churned = no purchase in the rest of the log (the holdout).
    Prints the drifting-true-friend alerts active at the cut-off against the lowest BG/NBD
    P(alive) and the lowest expected purchases in the holdout at the same count (precision,
    recall), precision per severity, alerts followed by a purchase within 90 days, quadrant
    changes undone within 30 days, the churn-risk bands' observed 90-day no-purchase rates and
    the outputs per customer-year. Under a minute of one core; no Kafka."""
    import orjson

    if cdnow is not None:
        _quality_cdnow(cdnow, cut_off, rules_or_exit(rules), as_json=as_json)
        return
    if closed_loop:
        _quality_closed_loop(
            rules_or_exit(rules),
            effect=effect,
            baseline=baseline,
            seeds=seeds,
            customers=customers if customers != 2_000 else 1_000,
            holdout_percent=holdout_percent,
            as_json=as_json,
        )
        return

    from streams.domain.model import default_model
    from streams.tools.personas import PersonaConfig, read_truth
    from streams.tools.personas import generate as make
    from streams.tools.quality import measure
    from streams.tools.replay import read_lines

    settings = settings_or_exit()
    rule_book = rules_or_exit(rules)
    with console.status("scoring…"):
        if log_file is None:
            config = PersonaConfig.for_customers(
                customers, seed=seed, partitions=settings.partitions
            )
            log = make(config)
            lines, people, end_ms = log.lines, log.truth, config.end_ms
        else:
            truth_path = truth or log_file.with_name(log_file.stem + "_truth" + log_file.suffix)
            lines, people, end_ms = read_lines(log_file), read_truth(truth_path), None
        report = measure(
            lines, people, end_ms, settings, rule_book, default_model(), silence_days=silence_days
        )
    if as_json:
        console_out.print_json(orjson.dumps(report.as_dict()).decode())
        return
    matrix = Table(title=f"quadrant at the end of the log ({report.active:,} active customers)")
    matrix.add_column("true \\ predicted")
    names = ["true_friend", "butterfly", "barnacle", "stranger", "unclassified"]
    for name in names:
        matrix.add_column(name, justify="right")
    for true_q in names[:4]:
        row: dict[str, int] = dict(report.confusion.get(true_q, {}))
        matrix.add_row(true_q, *(str(row.get(n, 0)) for n in names))
    console_out.print(matrix)
    d = report.as_dict()
    console_out.print(f"quadrant accuracy: {report.quadrant_accuracy:.1%}")
    console_out.print(
        f"drifting-true-friend alerts: recall {report.recall:.1%} "
        f"({report.detected}/{report.churned_true_friends} churned true friends), "
        f"precision {report.precision:.1%} ({report.alerted_and_stopped}/"
        f"{report.alerted_before_end} alerted customers had stopped)"
    )
    if report.delays_days:
        console_out.print(
            f"detection delay after the true stop: median {d['delay_days_median']:.1f} days, "
            f"p90 {d['delay_days_p90']:.1f}, max {d['delay_days_max']:.1f}"
            + (
                f"; median {d['delay_own_gaps_median']:.2f} of the customer's own mean gap"
                if report.delays_gaps
                else ""
            )
        )


def _quality_closed_loop(
    rule_book: Rules,
    *,
    effect: float,
    baseline: float,
    seeds: int,
    customers: int,
    holdout_percent: float,
    as_json: bool,
) -> None:
    import orjson

    from streams.domain.model import default_model
    from streams.tools.closed_loop import coverage, loop_rules

    if seeds < 1 or not 0 <= baseline <= 1 or not 0 <= baseline + effect <= 1:
        console.print(
            "[red]--seeds must be >= 1; --baseline and --baseline + --effect in [0, 1][/red]"
        )
        raise typer.Exit(EXIT_USAGE)
    settings = settings_or_exit()
    rules = loop_rules(rule_book, holdout_percent)
    with console.status(f"closed loop, {seeds} seeds of {customers:,} customers…"):
        result = coverage(
            effect,
            range(seeds),
            baseline=baseline,
            customers=customers,
            settings=settings,
            rules=rules,
            model=default_model(),
        )
    if as_json:
        console_out.print_json(orjson.dumps(result.as_dict()).decode())
    else:
        table = Table(
            title=f"closed loop: effect {effect:g}, baseline {baseline:g}, "
            f"holdout {holdout_percent:g} %, {customers:,} customers per seed"
        )
        for column in ("seed", "treated", "holdout", "lift", "95 % interval", "holds effect"):
            table.add_column(column, justify="right")
        for run in result.runs:
            row = run.overall
            holds = row.low is not None and row.high is not None and row.low <= effect <= row.high
            table.add_row(
                str(run.seed),
                f"{row.treated.converted}/{row.treated.n}",
                f"{row.holdout.converted}/{row.holdout.n}",
                "-" if row.lift is None else f"{row.lift:+.3f}",
                "-" if row.low is None else f"[{row.low:+.3f}, {row.high:+.3f}]",
                "yes" if holds else "NO",
            )
        console_out.print(table)
        d = result.as_dict()
        console_out.print(
            f"coverage: the 95 % interval holds the simulated effect {effect:g} in "
            f"{result.covered}/{len(result.runs)} seeds ({result.share:.0%}); mean lift "
            f"{d['mean_lift']:+.3f}; interval excludes 0 in {result.excluding_zero} seeds"
        )
    if result.share < 0.9:
        raise typer.Exit(EXIT_FAILED)


def render_lift(rows: list[LiftRow]) -> Table:
    """The lift table of ``rfm-stream lift``."""
    table = Table(title="retention offer lift: treated vs holdout (95 % Newcombe interval)")
    for column, justify in (
        ("strategy", "left"),
        ("quadrant", "left"),
        ("treated", "right"),
        ("holdout", "right"),
        ("lift", "right"),
        ("95 % interval", "right"),
        ("verdict", "left"),
        ("incr. revenue / offer", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]

    def arm(c: ArmCounts) -> str:
        return f"{c.converted}/{c.n} ({c.conversion:.1%})" if c.conversion is not None else "0"

    for r in rows:
        table.add_row(
            "all" if r.offer_code == ALL else r.offer_code,
            "all" if r.quadrant == ALL else r.quadrant,
            arm(r.treated),
            arm(r.holdout),
            "-" if r.lift is None else f"{r.lift:+.1%}",
            "-" if r.low is None or r.high is None else f"[{r.low:+.1%}, {r.high:+.1%}]",
            r.verdict,
            "-"
            if r.incremental_revenue_cents is None
            else f"{r.incremental_revenue_cents / 100:+.2f}",
        )
    return table


@app.command()
def lift(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Lift of the retention offers: conversion within the outcome window of the customers
    who were sent an offer against the holdout group, per strategy, per quadrant and overall,
    with a 95 % interval, and the incremental revenue per offer sent (from the outcome
    counters in Redis, which the workers keep from the offer-outcomes topic)."""
    import asyncio

    import orjson

    from streams.adapters import connect
    from streams.adapters.outcome_store import OutcomeStore
    from streams.domain.lift import lift_body, lift_table

    settings = settings_or_exit()
    require_services(settings, redis=True)

    async def read() -> dict[Key, ArmCounts]:
        client = connect(settings)
        try:
            return await OutcomeStore(client, settings.redis_prefix).aggregates()
        finally:
            await client.aclose()

    rows = lift_table(asyncio.run(read()))
    if as_json:
        console_out.print_json(orjson.dumps(lift_body(rows)).decode())
        return
    if not rows:
        console.print(
            f"no closed offer outcome yet under Redis prefix {settings.redis_prefix} "
            "(an outcome closes when its window ends)"
        )
        raise typer.Exit(EXIT_FAILED)
    console_out.print(render_lift(rows))


def _quality_cdnow(path: Path, cut_off: str, rule_book: Rules, *, as_json: bool) -> None:
    """``quality --cdnow``: the holdout evaluation, as a table or JSON."""
    from datetime import date

    import orjson

    from streams.tools.holdout import evaluate_holdout, read_cdnow

    try:
        cut = date.fromisoformat(cut_off)
    except ValueError as exc:
        console.print(f"[red]bad --cut-off {cut_off!r}[/red]: use YYYY-MM-DD")
        raise typer.Exit(EXIT_USAGE) from exc
    try:
        log = read_cdnow(path.read_bytes().splitlines())
    except OSError as exc:
        console.print(f"[red]cannot read {path}[/red]: {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    if not log:
        console.print(f"[red]{path} holds no CDNOW purchase rows[/red]")
        raise typer.Exit(EXIT_USAGE)
    with console.status("folding, calibrating, replaying…"):
        try:
            report = evaluate_holdout(log, rule_book, cut_off=cut)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(EXIT_USAGE) from exc
    if as_json:
        console_out.print_json(orjson.dumps(report.as_dict()).decode())
        return
    for line in report.lines():
        typer.echo(line)


@app.command()
def demo(
    log_file: Annotated[
        Path | None, typer.Argument(help="A JSON-lines log (default: the bundled sample).")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Event-time speed-up, e.g. 2e6 ≈ a year in 15 s; 0 = max.")
    ] = 4e6,
) -> None:
    """Start a worker, replay the sample log live, print segment changes, churn alerts and
    offers as they happen, let 60 days pass with no event (time alone moves customers), and
    end with customers per segment. Uses its own topics and Redis keys each run."""
    from streams.tools.demo import run_demo

    settings = settings_or_exit()
    require_services(settings, redis=True)
    raise typer.Exit(run_demo(settings, console_out, log_file, speed))


@app.command()
def inspect(
    customer_id: Annotated[str, typer.Argument(help="The customer id.")],
    history: Annotated[int, typer.Option(help="How many recent changes to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a customer's current profile (scores, segment, quadrant, P(alive), churn risk…)
    and recent segment changes and alerts, as materialised in Redis. Exit 1 if unknown."""
    import asyncio

    import orjson

    from streams.adapters import connect
    from streams.adapters.redis_views import ProfileViews

    settings = settings_or_exit()
    require_services(settings, redis=True)

    async def read() -> tuple[dict[str, str] | None, list[dict[str, object]]]:
        client = connect(settings)
        try:
            views = ProfileViews(client, settings.redis_prefix)
            return await views.profile(customer_id), await views.history(customer_id, history)
        finally:
            await client.aclose()

    profile, changes = asyncio.run(read())
    if profile is None:
        console.print(
            f"[red]no profile for customer {customer_id!r}[/red] (prefix "
            f"{settings.redis_prefix}); check RFM_REDIS_PREFIX or wait for the worker"
        )
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        console_out.print_json(orjson.dumps({"profile": profile, "history": changes}).decode())
        return
    table = Table(title=f"customer {customer_id}", show_header=False)
    for field, value in profile.items():
        table.add_row(field, value)
    console_out.print(table)
    for change in changes:
        kind = change.get("type", "?")
        what = (
            f"{change.get('dimension')}: {change.get('from_value')} → {change.get('to_value')}"
            if kind == "segment_change"
            else f"churn {change.get('severity')} (P(alive) {change.get('p_alive')})"
        )
        console_out.print(f"{change.get('event_time')}  {what}  ({change.get('cause')})")


@app.command()
def segments(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Customers per RFM segment and per loyalty x profitability quadrant, now (Redis)."""
    import asyncio

    import orjson

    from streams.adapters import connect
    from streams.adapters.redis_views import ProfileViews

    settings = settings_or_exit()
    require_services(settings, redis=True)

    async def read() -> dict[str, dict[str, int]]:
        client = connect(settings)
        try:
            return await ProfileViews(client, settings.redis_prefix).segment_counts()
        finally:
            await client.aclose()

    counts = asyncio.run(read())
    if as_json:
        console_out.print_json(orjson.dumps(counts).decode())
        return
    if not any(counts.values()):  # segment_counts() lists every dimension, even empty
        console.print(f"no customers yet under Redis prefix {settings.redis_prefix}")
        raise typer.Exit(EXIT_FAILED)
    for dimension, sizes in sorted(counts.items()):
        table = Table(title=dimension)
        table.add_column("segment")
        table.add_column("customers", justify="right")
        for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
            table.add_row(name, f"{size:,}")
        console_out.print(table)


@app.command("verify")
def verify_outputs(
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the workers to catch up (0: check now).")
    ] = 0.0,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log",
            help="Take the input from this log (as replayed into fresh "
            "topics) instead of reading the input topics.",
        ),
    ] = None,
    offers: Annotated[bool, typer.Option(help="Check the retention offers too.")] = True,
    state: Annotated[
        bool, typer.Option(help="Check the final state too (table changelog, profiles).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
    rules: RulesOption = None,
) -> None:
    """Check every output topic against the pure core run over the same input (after a
    backfill, a replay or an incident): by output id, nothing missing, nothing unexpected, no
    id with two contents (duplicates dropped are counted), retention offers by the offer
    policy, and the final state (table changelog and profiles) equal to the reference. Prints
    ALL-RECORDS-DELIVERED and exits 0 only then; otherwise says what is wrong and exits 1."""
    import orjson

    from streams.tools.verify import records_from_log, verify
    from streams.worker.model_watch import load_current_model

    settings = settings_or_exit()
    rule_book = rules_or_exit(rules)
    require_services(settings)
    model = load_current_model(settings)
    if model is None:
        from streams.domain.model import default_model

        model = default_model()
    records = records_from_log(log_file, settings, rule_book) if log_file else None
    with console.status("verifying…") as status:
        verdict = verify(
            settings,
            rule_book,
            model,
            records=records,
            wait=wait,
            offers=offers,
            state=state,
            progress=lambda text: status.update(text),
        )
    if as_json:
        console_out.print_json(orjson.dumps(verdict.counts() | {"ok": verdict.ok}).decode())
    else:
        typer.echo(verdict.report())
    if not verdict.ok:
        raise typer.Exit(EXIT_FAILED)


def _parse_time_ms(text: str) -> int:
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        console.print(f"[red]not an ISO time:[/red] {text} (e.g. 2026-01-31T00:00:00Z)")
        raise typer.Exit(EXIT_USAGE) from exc
    if when.tzinfo is None:
        console.print(f"[red]time needs a timezone:[/red] {text} (add Z or +00:00)")
        raise typer.Exit(EXIT_USAGE)
    return int(when.timestamp() * 1000)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for chatty in ("kafka", "aiokafka"):  # connection-level INFO drowns what the user asked for
        logging.getLogger(chatty).setLevel(logging.WARNING)
    sys.exit(app())


if __name__ == "__main__":
    main()
