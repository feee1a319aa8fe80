"""The CPU runs' process handling: a run past its time limit is killed with everything it
started (torchrun's trainer, Ray's processes), and its log is kept."""

from __future__ import annotations

import os
import sys

from msagent_training.cpu_runs import ENV, run


def test_a_run_past_its_limit_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('started', flush=True); "
              "time.sleep(600)")
    result = run([sys.executable, "-c", script], tmp_path / "run.log", cwd=tmp_path, timeout=3)
    assert result.returncode is None and "started" in result.log
    child = int(pid_file.read_text())
    try:
        os.kill(child, 0)
    except ProcessLookupError:
        return
    with open(f"/proc/{child}/stat") as stat:  # killed, maybe not yet reaped by init
        assert stat.read().split()[2] == "Z"


def test_a_run_gets_the_cpu_environment_and_its_exit_status(tmp_path):
    script = "import os, sys; print(os.environ['VERL_PLATFORM']); sys.exit(3)"
    result = run([sys.executable, "-c", script], tmp_path / "run.log", cwd=tmp_path, timeout=60)
    assert result.returncode == 3 and result.log.strip() == ENV["VERL_PLATFORM"]
