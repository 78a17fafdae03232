"""Rules from the environment: RFM_RULES_FILE and the lateness settings over the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from streams.cli import app, rules_or_exit
from streams.config import Settings, load_rule_book
from streams.domain.rules import load_rules

DEFAULTS = load_rules()


def _rules_file(tmp_path: Path, lateness: float, horizon: float) -> Path:
    text = Path(__file__).parents[2].joinpath("streams/domain/rules.toml").read_text("utf-8")
    text = text.replace(
        "allowed_lateness_seconds = 5.0", f"allowed_lateness_seconds = {lateness}"
    ).replace("late_horizon_days = 30", f"late_horizon_days = {horizon}")
    path = tmp_path / "rules.toml"
    path.write_text(text, "utf-8")
    return path


def test_unset_gives_the_packaged_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RFM_RULES_FILE", "RFM_ALLOWED_LATENESS_SECONDS", "RFM_LATE_HORIZON_DAYS"):
        monkeypatch.delenv(name, raising=False)
    rules = load_rule_book(Settings())
    assert rules == DEFAULTS
    assert (rules.allowed_lateness_seconds, rules.late_horizon_days) == (5.0, 30.0)


def test_the_rules_file_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFM_RULES_FILE", str(_rules_file(tmp_path, 7.0, 3)))
    rules = load_rule_book(Settings())
    assert (rules.allowed_lateness_seconds, rules.late_horizon_days) == (7.0, 3.0)
    assert rules_or_exit(None) == rules


def test_lateness_settings_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFM_RULES_FILE", str(_rules_file(tmp_path, 7.0, 3)))
    monkeypatch.setenv("RFM_ALLOWED_LATENESS_SECONDS", "3600")
    monkeypatch.setenv("RFM_LATE_HORIZON_DAYS", "0")
    rules = load_rule_book(Settings())
    assert (rules.allowed_lateness_ms, rules.late_horizon_ms) == (3_600_000, 0)
    assert rules.segments == DEFAULTS.segments


def test_a_rules_option_wins_over_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFM_RULES_FILE", str(tmp_path / "missing.toml"))
    other = tmp_path / "other"
    other.mkdir()
    rules = load_rule_book(Settings(), _rules_file(other, 1.0, 60))
    assert (rules.allowed_lateness_seconds, rules.late_horizon_days) == (1.0, 60.0)


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFM_RULES_FILE", "")
    monkeypatch.setenv("RFM_LATE_HORIZON_DAYS", " ")
    settings = Settings()
    assert settings.rules_file is None and settings.late_horizon_days is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("RFM_LATE_HORIZON_DAYS", "-1"), ("RFM_ALLOWED_LATENESS_SECONDS", "ten")],
)
def test_bad_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
    result = CliRunner().invoke(app, ["quality"])
    assert result.exit_code == 2
    assert f"bad setting {name}" in result.output


def test_a_missing_rules_file_stops_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFM_RULES_FILE", str(tmp_path / "nope.toml"))
    result = CliRunner().invoke(app, ["quality"])
    assert result.exit_code == 2
    assert "rules file not found" in result.output
    # the console wraps long paths at its width: compare without the line breaks
    assert str(tmp_path / "nope.toml") in result.output.replace("\n", "")
