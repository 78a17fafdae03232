"""The worker's data directory is created with its parents (Faust makes only the last level)."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from streams.config import Settings, prepare_data_dir


def faust_app(data_dir: str) -> faust.App:
    return faust.App("data-dir-test", broker="kafka://127.0.0.1:1", datadir=data_dir)


def test_the_default_data_dir_works_in_a_directory_without_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RFM_DATA_DIR", raising=False)
    settings = Settings()
    assert settings.data_dir == ".local/worker"
    with pytest.raises(FileNotFoundError):  # what `rfm-stream worker` died of
        faust_app(settings.data_dir)._create_directories()

    made = prepare_data_dir(settings)
    assert made == Path(".local/worker")
    assert (tmp_path / ".local" / "worker").is_dir()
    faust_app(str(made))._create_directories()  # Faust's own start-up step now succeeds
    assert prepare_data_dir(settings) == made  # and again: it exists already


def test_a_nested_data_dir_under_home_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    made = prepare_data_dir(Settings(data_dir="~/state/rfm/worker-1"))
    assert made == tmp_path / "state" / "rfm" / "worker-1"
    assert made.is_dir()
