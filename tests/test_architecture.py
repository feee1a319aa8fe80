"""The layering is data: pyproject.toml's import-linter contracts, run as a test.

The contracts (``[tool.importlinter]``): the core depends on no app (server, web app, CLI,
training); nothing imports the CLI but ``msagent.__main__``; the CLI's modules import no
circle; plugins import only ``msagent`` and ``msagent.backbones`` (plus the modules the note
in pyproject.toml allows for now). ``lint-imports`` runs the same contracts by hand.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from importlinter.application.use_cases import lint_imports
from importlinter.configuration import configure

ROOT = Path(__file__).resolve().parents[1]
APPS = {"server", "cli", "webapp", "__main__"}


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _contract(contract_id: str) -> dict:
    return next(c for c in _config()["contracts"] if c["id"] == contract_id)


def _msagent_children() -> set[str]:
    package = ROOT / "src" / "msagent"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    return modules | {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}


def test_the_import_contracts_hold(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    configure()
    passed = lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None,
                          no_logo=True)
    report = capsys.readouterr().out
    assert passed, "an import contract is broken (pyproject.toml [tool.importlinter]):\n" + report


def test_every_module_is_either_core_or_an_app():
    """A new module must be placed: in the core contract's list, or one of the apps."""
    core = {name.removeprefix("msagent.") for name in _contract("core")["source_modules"]}
    children = _msagent_children()
    unplaced = sorted(children - core - APPS)
    assert not unplaced, f"add {unplaced} to the 'core' contract in pyproject.toml (or make it an app)"
    assert not sorted(core - children), "the 'core' contract lists modules that no longer exist"


def test_plugins_are_forbidden_every_core_module_but_the_sdk():
    allowed = {"backbones", "errors", "types", "policy", "options", "protocol", "segmenter"}
    forbidden = {name.removeprefix("msagent.").removesuffix(".**")
                 for name in _contract("plugins")["forbidden_modules"]}
    missing = sorted(_msagent_children() - {"__main__"} - allowed - forbidden)
    assert not missing, f"add {missing} to the 'plugins' contract's forbidden_modules"


@pytest.mark.parametrize("contract_id", ["core", "plugins"])
def test_the_web_app_is_forbidden_by_name_once_it_exists(contract_id):
    """Until msagent.webapp exists the contracts name its submodules (``msagent.webapp.**``):
    import-linter refuses a module that does not exist. Once it does, name the package."""
    if not (ROOT / "src" / "msagent" / "webapp" / "__init__.py").is_file():
        pytest.skip("msagent.webapp does not exist yet")
    assert "msagent.webapp" in _contract(contract_id)["forbidden_modules"]
