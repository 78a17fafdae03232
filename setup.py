"""Build hook: compile the domain core (``streams/domain``) with mypyc when possible.

Everything else about the package is declared in pyproject.toml. The compiled core is the
same code as the pure-Python one (mypyc compiles the type-annotated source as it is) and gives
byte-identical outputs, about twice as fast. When mypyc or a C compiler is missing, or the
compilation fails, the package installs as pure Python with a message saying why; nothing
else changes. ``RFM_PURE_PYTHON=1`` at build time skips the compilation.

    pip install .                          # a wheel with the compiled core (or pure Python)
    python setup.py build_ext --inplace    # compile next to the sources (./dev setup does it)

``streams/domain/__init__.py`` records nothing and compiles nothing: it picks the compiled
modules at import time only when their source hashes match the sources beside them (see it).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DOMAIN = Path("streams") / "domain"
STAMP = "_compiled.sha256"


def say(message: str) -> None:
    print(f"[rfm-stream] {message}", file=sys.stderr, flush=True)


# The modules on the per-event path. Not compiled: the package __init__ (it chooses at
# import), ``rules`` (pydantic models, read once), ``model`` (calibration, once per model) and
# ``events`` (dataclasses only: a compiled dataclass is built through the same interpreted
# ``__init__``, with slower attribute stores, so compiling it makes each profile dearer).
COMPILED = (
    "churn",
    "classify",
    "drift",
    "engine",
    "facts",
    "offers",
    "outcomes",
    "scoring",
    "segments",
    "state",
)


def domain_sources() -> list[str]:
    return [str(DOMAIN / f"{name}.py") for name in COMPILED]


def stamp_text() -> str:
    """sha256 of each compiled source: the import-time check that the build is current."""
    lines = []
    for source in domain_sources():
        digest = hashlib.sha256((ROOT / source).read_bytes()).hexdigest()
        lines.append(f"{digest}  {Path(source).name}\n")
    return "".join(lines)


class BuildCore(build_ext):
    """build_ext that falls back to the pure-Python core instead of failing the install."""

    def run(self) -> None:
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as exc:  # no compiler, a compile error, a link error...
            say(
                f"could not compile the domain core with mypyc ({type(exc).__name__}: {exc}; "
                "the compiler's own messages are above); installing the pure-Python core: "
                "same results, about half the speed. A C compiler and the Python headers "
                "(apt-get install gcc python3-dev) are what it needs."
            )
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            return
        target = ROOT if self.inplace else Path(self.build_lib)
        (target / DOMAIN / STAMP).write_text(stamp_text())
        say("compiled the domain core with mypyc")

    def get_outputs(self) -> list[str]:
        outputs: list[str] = super().get_outputs()
        if self.extensions and not self.inplace:
            outputs.append(str(Path(self.build_lib) / DOMAIN / STAMP))
        return outputs


# Editable installs run the sources as they are; `python setup.py build_ext --inplace` compiles
# them in place (./dev setup does). Only real builds run mypy and the C compiler.
BUILDS = {"build", "build_ext", "bdist_wheel", "install"}


def core_extensions() -> list[Any]:
    if not BUILDS.intersection(sys.argv[1:]):
        return []  # metadata only (egg_info, sdist): no need to run mypy
    if os.environ.get("RFM_PURE_PYTHON", "") not in ("", "0"):
        say("RFM_PURE_PYTHON is set: installing the pure-Python domain core")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        say("mypyc is not available: installing the pure-Python domain core")
        return []
    try:
        extensions: list[Any] = mypycify(
            # No project mypy config (its pydantic plugin), third-party modules an isolated
            # build environment lacks (orjson, numpy, pydantic) typed Any, and no errors
            # reported outside the compiled modules: their own annotations are what counts.
            [
                "--config-file=",
                "--ignore-missing-imports",
                "--follow-imports=silent",
                *domain_sources(),
            ],
            opt_level="3",
            strip_asserts=False,
            verbose=False,
            group_name="streams.domain._native",
        )
    except BaseException as exc:  # mypy reports type errors with SystemExit
        say(f"mypyc could not translate the domain core ({exc!r}); installing pure Python")
        return []
    return extensions


setup(ext_modules=core_extensions(), cmdclass={"build_ext": BuildCore})
