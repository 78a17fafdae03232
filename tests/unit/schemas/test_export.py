"""The committed JSON Schema files match the models, and the export CLI reports drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import DeadLetterReason, Limits
from schemas.export import SCHEMA_DIR, SCHEMAS, drift, main, render_all


def test_committed_schema_files_match_the_models() -> None:
    assert drift() == [], "run `python -m schemas.export` and commit schemas/json/"


def test_every_schema_is_valid_json_with_its_examples() -> None:
    for name, text in render_all().items():
        document = json.loads(text)
        assert document["$schema"].endswith("2020-12/schema"), name
        assert document["examples"], name


def test_check_mode_detects_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    target = tmp_path / "purchase.schema.json"
    target.write_text(target.read_text().replace("purchase", "order"))
    (tmp_path / "gone.schema.json").write_text("{}")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "purchase.schema.json" in err
    assert "gone.schema.json" in err


def test_schema_dir_holds_one_file_per_event() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(
        f"{name}.schema.json" for name in SCHEMAS
    )


def test_dead_letter_schema_lists_every_reason_code() -> None:
    document = json.loads(render_all()["dead_letter.schema.json"])
    codes = document["$defs"]["DeadLetterReason"]["enum"]
    assert codes == [reason.value for reason in DeadLetterReason]


def test_contract_document_lists_every_reason_code_and_limit() -> None:
    text = (SCHEMA_DIR.parent / "CONTRACT.md").read_text(encoding="utf-8")
    for reason in DeadLetterReason:
        assert f"| `{reason.value}` |" in text, reason
    for limit in Limits.__dataclass_fields__:
        assert f"`{limit}`" in text, limit
