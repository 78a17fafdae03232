"""The CDNOW transaction logs and summary shipped in the Lifetimes wheel, read for the tests.

``lifetimes.datasets`` is avoided because it imports ``pkg_resources``, which recent setuptools
no longer ship; the files are read through :mod:`importlib.resources` instead.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import lifetimes  # noqa: F401  (the CDNOW logs ship in its wheel)
import pandas as pd

OBSERVATION_END = "1998-06-30"


def dataset(name: str) -> Any:
    return files("lifetimes") / "datasets" / name


def read_transactions(name: str) -> Any:
    """CDNOW logs: whitespace-separated id(s), date YYYYMMDD, number of CDs, dollar value.

    ``CDNOW_master.txt`` has a header and one customer id; ``CDNOW_sample.txt`` has no header
    and two ids (master id, then the sample's own 1..2357 id, used here).
    """
    if name == "CDNOW_master.txt":
        columns = ["customer_id", "date", "cds", "dollars"]
        header: int | None = 0
    else:
        columns = ["master_id", "customer_id", "date", "cds", "dollars"]
        header = None
    log = pd.read_csv(
        dataset(name),
        sep=r"\s+",
        header=header,
        names=columns,
        dtype={"customer_id": str, "date": str},
    )
    log["date"] = pd.to_datetime(log["date"], format="%Y%m%d")
    return log
