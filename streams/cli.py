"""The ``rfm-stream`` command line: one entry point for operators and developers."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.config import Settings, load_settings

app = typer.Typer(
    name="rfm-stream",
    help=(
        "Real-time customer segmentation over Kafka: RFM scores and segments, the loyalty x "
        "profitability quadrants, BG/NBD churn drift, retention offers.\n\n"
        "Settings come from RFM_* environment variables (see README, 'Configuration'); "
        "`./dev run COMMAND` sets them for the local stack."
    ),
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

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
    from streams.health import check_all

    checks = check_all(settings_or_exit())
    for check in checks:
        colour = "green" if check.ok else "red"
        console.print(f"[{colour}]{check.message()}[/{colour}]")
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_UNAVAILABLE)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
