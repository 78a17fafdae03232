"""The product's domain core: pure, typed Python with no Faust, Kafka or Redis import.

Where each rule lives:

* ``facts``     — what the core consumes (purchases, refunds, interactions) in its units
* ``state``     — one bounded record per customer; folding purchases into it
* ``rules``     — every tunable threshold, validated from ``rules.toml``
* ``scoring``   — R, F, M scores 1–5 with hysteresis
* ``segments``  — named RFM segments; loyalty × profitability quadrants
* ``churn``     — BG/NBD: P(alive), its closed-form crossing times, the maximum-likelihood fit
* ``drift``     — churn severity from P(alive) and the customer's own purchase rhythm
* ``model``     — population cut points + BG/NBD parameters, versioned; ``calibrate``
* ``classify``  — evaluate a customer at an event time; what changed; when next due
* ``engine``    — one partition: clock, lateness, redelivery guard, due index
* ``offers``    — retention offer policy per quadrant, caps, cooldown, holdout
* ``events``    — what the core reports
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# Compiled or pure Python. ``python setup.py build_ext --inplace`` (``./dev setup``) or a wheel
# built by ``pip install .`` puts mypyc-compiled modules beside the sources, with the sha256
# of each source they were compiled from in ``_compiled.sha256``. Python would import an
# extension module in preference to the source beside it, so this package only lets it when
# every listed source still has its hash: a core edited since its last compilation runs as
# the edited Python, with a warning, rather than as stale machine code. RFM_PURE_PYTHON=1
# always runs the sources (the tests run the domain suite both ways).

_HERE = Path(__file__).resolve().parent
_STAMP = _HERE / "_compiled.sha256"
_PURE_ENV = "RFM_PURE_PYTHON"


def _compiled_modules() -> tuple[list[str], str | None]:
    """(modules whose compiled build is current, why the build is not used if it is not)."""
    try:
        lines = _STAMP.read_text().splitlines()
    except FileNotFoundError:
        return [], None  # never compiled: nothing to say
    names: list[str] = []
    for line in lines:
        digest, _, filename = line.partition("  ")
        source = _HERE / filename
        try:
            current = hashlib.sha256(source.read_bytes()).hexdigest()
        except FileNotFoundError:
            return [], f"{filename} is gone"
        if current != digest:
            return [], f"{filename} changed since it was compiled"
        names.append(filename.removesuffix(".py"))
    return names, None


class _SourceFirst(importlib.machinery.PathFinder):
    """Imports ``streams.domain.*`` from the ``.py`` sources even where an extension exists.

    ``compiled`` names the modules whose current build may be used; every other module comes
    from its source, including one a build left behind before it was taken off the compiled
    list (its extension would need an entry point the current shared library lacks).
    """

    compiled: frozenset[str] = frozenset()

    @classmethod
    def find_spec(
        cls,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name in cls.compiled:
            return None
        source = _HERE / f"{name}.py"
        if not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def _choose() -> bool:
    compiled, stale = _compiled_modules()
    pure = os.environ.get(_PURE_ENV, "") not in ("", "0")
    if stale is not None:
        warnings.warn(
            f"the compiled domain core is out of date ({stale}): running the pure-Python "
            "sources. Run ./dev setup (or python setup.py build_ext --inplace) to recompile.",
            RuntimeWarning,
            stacklevel=2,
        )
    use = bool(compiled) and not pure and stale is None
    _SourceFirst.compiled = frozenset(compiled) if use else frozenset()
    if any(_HERE.glob("*.so")) or any(_HERE.glob("*.pyd")):
        sys.meta_path.insert(0, _SourceFirst)
    return use


COMPILED: bool = _choose()
"""True when the per-event modules run as mypyc-compiled code (same results, faster)."""
