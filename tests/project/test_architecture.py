"""The layering is data: pyproject.toml's import-linter contracts, run as a test.

The contracts (``[tool.importlinter]``): one exhaustive ``layers`` contract over the children
of ``msagent`` (apps > jobs > engines > contracts > foundation: every child has a layer, and a
module imports only from layers below its own), and plugins import only the public SDK.
``lint-imports`` runs the same contracts by hand. Besides: the top level holds the foundation
only, and no two modules of msagent import each other, directly or in a circle.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
from importlinter.application.use_cases import lint_imports
from importlinter.configuration import configure

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "msagent"
MAX_TOP_LEVEL_MODULES = 16


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _contract(contract_id: str) -> dict:
    return next(c for c in _config()["contracts"] if c["id"] == contract_id)


def test_the_import_contracts_hold(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    configure()
    passed = lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None,
                          no_logo=True)
    report = capsys.readouterr().out
    assert passed, "an import contract is broken (pyproject.toml [tool.importlinter]):\n" + report


def test_the_top_level_is_the_foundation_and_every_role_a_package():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, f"{len(modules)} top-level modules: {modules}"
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"plugins", "backbones", "policies", "agent", "volume", "generation", "export",
            "evaluation", "io", "datasets", "server", "webapp", "cli", "testing"} <= packages


def _cycles() -> list[list[str]]:
    """Strongly connected groups of msagent modules (import circles), type-only imports aside."""
    graph = grimp.build_graph("msagent", exclude_type_checking_imports=True, cache_dir=None)
    modules = sorted(graph.modules)
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit)
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]; counter[0] += 1
                    stack.append(child); on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop(); on_stack.discard(member); group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_no_import_circles():
    assert _cycles() == []
