"""The declared dependency floors are the ones tested: tox's ``floors`` env pins exactly the
lowest versions pyproject.toml allows for the core (issue 15: ``np.trapezoid`` needed
NumPy 2 while ``numpy>=1.26`` was declared)."""

import configparser
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _floors_pins() -> dict[str, str]:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    pins = {}
    for line in tox["testenv:floors"]["deps"].split("\n"):
        if match := re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([0-9][^\s]*)\s*", line):
            pins[match[1].lower()] = match[2]
    return pins


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))[:3]


def test_the_floors_env_pins_every_core_dependency_at_its_declared_floor():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _floors_pins()
    for requirement in declared:
        name, floor = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement).groups()
        assert name.lower() in pins, f"tox env floors does not pin {name}"
        pinned = _release(pins[name.lower()])
        assert pinned[:len(_release(floor))] == _release(floor), (
            f"{name}: declared >={floor}, floors env tests {pins[name.lower()]}")


def test_the_floors_env_runs_in_ci():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert "floors" in [e.strip() for e in tox["tox"]["env_list"].split(",")]
