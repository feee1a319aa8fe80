"""What a new user meets first (issue 19): status lines, the plugins listing, one dataset
resolver, the eval outputs it names, and the tox environments the Quickstart builds."""

import configparser
import io
from pathlib import Path

import pytest

from msagent import _console
from msagent.cli import main

ROOT = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_status_is_quiet_off_a_terminal_and_says_done_or_failed_on_one(monkeypatch):
    monkeypatch.delenv("MSAGENT_QUIET", raising=False)
    piped = io.StringIO()
    with _console.Status(stream=piped).step("loading backbone x"):
        pass
    assert piped.getvalue() == ""
    terminal = Terminal()
    with _console.Status(stream=terminal).step("loading backbone x"):
        pass
    with pytest.raises(RuntimeError), _console.Status(stream=terminal).step("encoding"):
        raise RuntimeError
    lines = terminal.getvalue().splitlines()
    assert lines[0].startswith("loading backbone x … done in ") and lines[1] == "encoding … failed"
    monkeypatch.setenv("MSAGENT_QUIET", "1")
    assert not _console.wanted(stream=Terminal())


def test_segment_on_a_terminal_shows_loading_encoding_and_each_turn(monkeypatch, phantom, capsys):
    import msagent

    monkeypatch.delenv("MSAGENT_QUIET", raising=False)
    monkeypatch.setattr(_console, "wanted", lambda enabled=None, stream=None: True)
    image, gt = phantom
    policy = msagent.load_policy("expert")
    result = msagent.segment(image, "blob", backbone="mybackbone", policy=policy,
                             ground_truth=gt, backbone_options={"threshold": 120})
    err = capsys.readouterr().err
    assert "loading policy expert … done" in err and "loading backbone mybackbone … done" in err
    assert "encoding the image" in err
    assert err.count("\nturn ") + err.startswith("turn ") == len(result.trajectory.steps)
    assert "act" not in vars(policy)  # the policy is left as it was given


def test_plugins_listing_shows_descriptions(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-1] == "description"
    assert "Example third-party threshold backbone" in out


@pytest.mark.slow
def test_one_dataset_resolver_builds_mni152_once(tmp_path, monkeypatch):
    from msagent import datasets

    monkeypatch.setenv("MSAGENT_DATA_DIR", str(tmp_path / "cache"))
    assert datasets.resolve_dataset("some/folder") == Path("some/folder")
    built = datasets.resolve_dataset("mni152")
    assert built == tmp_path / "cache" / "mni152" and (built / "targets.csv").is_file()
    assert len(datasets.open_dataset("mni152")) == len(datasets.open_dataset(built)) > 0


@pytest.mark.slow
def test_export_accepts_mni152_as_eval_and_generate_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MSAGENT_DATA_DIR", str(tmp_path / "cache"))
    assert main(["export", "--dataset", "mni152", "--format", "verl-rl", "--out",
                 str(tmp_path / "rl"), "--quiet"]) == 0
    assert "verl-rl rows" in capsys.readouterr().out


def test_eval_names_only_the_files_it_wrote(tmp_path):
    from msagent.cli.evaluate import written_files

    (tmp_path / "results.csv").write_text("x")
    (tmp_path / "summary.json").write_text("{}")
    text = written_files(tmp_path)
    assert "results: " in text and "report: " not in text
    assert "no report.html: matplotlib is not installed" in text
    assert "no results.parquet: pyarrow is not installed" in text


def test_demo_and_bench_do_not_share_the_test_environment_folder():
    """tox records an environment's name in its folder: a second name on the same env_dir
    rebuilds it ("env type changed"). The demo and benchmarks exec into py311 instead."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    for name in ("demo", "bench"):
        section = ini[f"testenv:{name}"]
        assert "py311" not in section.get("env_dir", "{toxworkdir}{/}py311")
        assert "tox exec -q -e py311 --" in section["commands"]
