"""Write the JSON Schema of every wire event to ``schemas/json/``.

``python -m schemas.export`` regenerates the files; ``python -m schemas.export --check`` exits 1
when the committed files differ from the models (run in CI and by the test suite). Inputs are
described as accepted (validation mode), outputs as emitted (serialization mode), and each file
embeds its example from ``schemas.examples``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from schemas.examples import EXAMPLES
from schemas.inputs import Interaction, Purchase
from schemas.outputs import (
    ChurnAlert,
    CustomerErased,
    DeadLetter,
    OfferOutcome,
    RetentionOffer,
    SegmentChange,
)

SCHEMA_DIR: Final = Path(__file__).resolve().parent / "json"

Mode = Literal["validation", "serialization"]

SCHEMAS: Final[dict[str, tuple[type[BaseModel], Mode, tuple[str, ...]]]] = {
    "purchase": (Purchase, "validation", ("purchase", "refund")),
    "interaction": (Interaction, "validation", ("interaction",)),
    "segment_change": (SegmentChange, "serialization", ("segment_change",)),
    "churn_alert": (ChurnAlert, "serialization", ("churn_alert",)),
    "retention_offer": (RetentionOffer, "serialization", ("retention_offer",)),
    "offer_outcome": (OfferOutcome, "serialization", ("offer_outcome",)),
    "dead_letter": (DeadLetter, "serialization", ("dead_letter",)),
    "customer_erased": (CustomerErased, "serialization", ("customer_erased",)),
}
"""File stem -> (model, mode, names of the examples embedded in it)."""


def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema document for one event, as written to ``<name>.schema.json``."""
    model, mode, examples = SCHEMAS[name]
    body = model.model_json_schema(mode=mode)
    return {
        "$schema": GenerateJsonSchema.schema_dialect,
        "$id": f"urn:rfm-stream:schema:{name}:v1",
        **body,
        "examples": [EXAMPLES[example] for example in examples],
    }


def render_all() -> dict[str, str]:
    """File name -> exact file content, for every schema."""
    return {
        f"{name}.schema.json": json.dumps(schema_of(name), indent=2, ensure_ascii=False) + "\n"
        for name in SCHEMAS
    }


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of files that are missing, stale or unexpected in ``directory``."""
    wanted = render_all()
    present = {path.name for path in directory.glob("*.schema.json")}
    changed = [
        name
        for name, text in wanted.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(changed + sorted(present - wanted.keys()))


def write_all(directory: Path = SCHEMA_DIR) -> list[str]:
    """Regenerate every file (and remove schema files of events that no longer exist)."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render_all()
    for stale in directory.glob("*.schema.json"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(wanted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.export",
        description="Write the JSON Schema files of the rfm-stream wire contract.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files differ from the models",
    )
    parser.add_argument(
        "--dir", type=Path, default=SCHEMA_DIR, help=f"target directory (default {SCHEMA_DIR})"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = drift(args.dir)
        if stale:
            print(
                f"JSON Schema files out of date: {', '.join(stale)}; "
                "run `python -m schemas.export` and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"JSON Schema files in {args.dir} are up to date")
        return 0
    for name in write_all(args.dir):
        print(f"wrote {args.dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
