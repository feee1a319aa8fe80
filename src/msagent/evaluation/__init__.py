"""Evaluation: datasets × backbones × policies/protocols → per-case results and summaries.

>>> from msagent.evaluation import evaluate
>>> summary = evaluate(cases, "eval-out", backbones=["litemedsam"],
...                    policies=["expert", "oracle-box"], protocols=["noc", "cvpr"])

Protocols (:mod:`~msagent.evaluation.protocols`): agent episodes (a policy drives the
backbone), RITM's NoC@85/90 (clicks only, at most 20) and the CVPR 2025 interactive protocol
(box + 5 clicks, DSC/NSD AUC). Whole-volume cases (:class:`msagent.datasets.VolumeCase`)
run the 3-D protocols (:mod:`~msagent.evaluation.volume_protocols`: agent and cvpr; noc is
recorded as skipped), one record per volume, in summary groups of their own ("backbone/method
(volumes)"). Output directory:

- ``records.jsonl``: append-only per-case records (the resume state);
- ``results.csv``/``results.parquet``: one row per (backbone, method, case);
- ``summary.json``: aggregates (:mod:`~msagent.evaluation.summary`);
- ``masks/``, ``overlays/``, ``trajectories/``: per case, under ``backbone/method/`` (a
  volume: its mask as ``.nii.gz`` on the input's grid, or ``.npz``; the key slice's overlay;
  the :class:`msagent.VolumeTrajectory` JSON);
- ``plots/*.png`` and ``report.html`` (self-contained).
"""

from msagent.evaluation.config import EvalConfig, Method, methods_from
from msagent.evaluation.job import evaluate, finish
from msagent.evaluation.protocols import Outcome, cvpr_click, ritm_click, run_agent, run_cvpr, run_noc
from msagent.evaluation.records import CaseRecord, RecordStore
from msagent.evaluation.runner import Evaluation
from msagent.evaluation.summary import markdown_table, summarize

__all__ = ["CaseRecord", "EvalConfig", "Evaluation", "Method", "Outcome", "RecordStore",
           "cvpr_click", "evaluate", "finish", "markdown_table", "methods_from", "ritm_click",
           "run_agent", "run_cvpr", "run_noc", "summarize"]
