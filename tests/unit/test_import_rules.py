"""The import rules of docs/architecture.md, read from the source: who may import whom.

Every ``import`` and ``from … import`` of the project's own modules counts, wherever it stands
(module level, inside a function, under ``TYPE_CHECKING``): a lazy import is still a
dependency, and a circle through a type-only import is still a circle for a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "schemas")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imported(path: Path, name: str, known: Iterable[str]) -> set[str]:
    """The project modules ``path`` (module ``name``) imports, resolved to known module names."""
    modules = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module pkg.mod when there is one
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.split(".")[0] in PACKAGES:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def breaches(
    graph: Mapping[str, set[str]], source: str, forbidden: str, allowed: Iterable[str] = ()
) -> list[str]:
    """``importer -> imported`` for every import from ``source`` into ``forbidden``."""
    exempt = set(allowed)
    return sorted(
        f"{importer} -> {target}"
        for importer, targets in graph.items()
        if within(importer, source) and importer not in exempt
        for target in targets
        if within(target, forbidden)
    )


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def package_graph(graph: Mapping[str, set[str]], packages: Iterable[str]) -> dict[str, set[str]]:
    """The graph between rooms: each module counted in the first room that holds it."""
    rooms = sorted(packages, key=len, reverse=True)

    def room(module: str) -> str:
        return next((r for r in rooms if within(module, r)), module)

    out: dict[str, set[str]] = {}
    for importer, targets in graph.items():
        out.setdefault(room(importer), set()).update(
            room(t) for t in targets if room(t) != room(importer)
        )
    return out


ROOMS = (
    "streams.domain",
    "streams.adapters",
    "streams.worker",
    "streams.web",
    "streams.tools",
    "schemas",
)

RULES: list[tuple[str, str, tuple[str, ...]]] = [
    # (importer, may not import, except these importers)
    ("streams.domain", "streams.adapters", ()),
    ("streams.domain", "streams.worker", ()),
    ("streams.domain", "streams.web", ()),
    ("streams.domain", "streams.tools", ()),
    ("streams.domain", "schemas", ()),
    ("streams.tools", "streams.worker", ("streams.tools.demo",)),
    ("streams.worker", "streams.tools", ()),
    ("streams.web", "streams.worker", ()),
    ("streams.web", "streams.tools", ()),
    ("streams.adapters", "streams.worker", ()),
    ("streams.adapters", "streams.web", ()),
    ("streams.adapters", "streams.tools", ()),
    ("schemas", "streams", ()),
]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_the_tree(graph: dict[str, set[str]]) -> None:
    """A guard on the reader itself: it must find the rooms and their known imports."""
    for room in ROOMS:
        assert any(within(m, room) for m in graph), f"no module found in {room}"
    assert "streams.worker.batches" in graph["streams.worker.app"]
    assert "streams.domain.engine" in graph["streams.processor"]
    assert "streams.config" in graph["streams.tools.demo"]


def test_domain_imports_only_itself(graph: dict[str, set[str]]) -> None:
    outside = sorted(
        f"{importer} -> {target}"
        for importer, targets in graph.items()
        if within(importer, "streams.domain")
        for target in targets
        if not within(target, "streams.domain")
    )
    assert outside == [], "streams.domain must import nothing of the project but itself"


@pytest.mark.parametrize(("source", "forbidden", "allowed"), RULES)
def test_import_rule(
    graph: dict[str, set[str]], source: str, forbidden: str, allowed: tuple[str, ...]
) -> None:
    found = breaches(graph, source, forbidden, allowed)
    assert found == [], f"{source} must not import {forbidden}: {found}"


def test_no_module_circles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_no_circles_between_rooms(graph: dict[str, set[str]]) -> None:
    assert cycles(package_graph(graph, ROOMS)) == []


def test_the_checks_can_fail() -> None:
    """The checks find a breach and a circle when there is one (a made-up graph)."""
    made_up = {
        "streams.worker.app": {"streams.tools.replay"},
        "streams.tools.replay": {"streams.config"},
        "streams.config": {"streams.security"},
        "streams.security": {"streams.config"},
    }
    assert breaches(made_up, "streams.worker", "streams.tools") == [
        "streams.worker.app -> streams.tools.replay"
    ]
    assert cycles(made_up) == [["streams.config", "streams.security"]]
