"""Aggregates over case records, with the upstream MedSAM-Agent definitions.

Per (backbone, method), over the cases that ran (status ``ok``; failures are counted in
``n_errors``, cases with an empty ground truth in ``n_skipped`` as upstream skips them; neither
is averaged in):

- ``dice``/``iou``/``nsd``: mean over cases (upstream ``mean_dice``/``mean_iou``);
- ``class_dice``/``class_iou``: mean of the per-class means (upstream ``mean_class_dice``),
  the class being ``case.meta["label"]`` or else the target text, as upstream;
- ``per_class``, ``per_dataset``, ``per_modality``: n and the means per group;
- agent: turn statistics (mean, median, histogram), stop reasons, invalid replies, usage;
  ``dice_by_turn``: mean Dice after turn t, an episode that stopped keeping its final mask;
- noc: mean NoC@85/90 and ``noc85_over_max``/``noc90_over_max`` (RITM's count of cases with
  NoC = max clicks), ``iou_by_click`` (mean IoU after click k, carried forward);
- cvpr: mean DSC_AUC, NSD_AUC, final DSC/NSD and the mean DSC/NSD after each step;
- the refine protocol (``refine_from``): ``dice_before``/``iou_before``/``nsd_before`` (the
  initial mask's, turn 0), ``dice_gain``, ``refine_not_worse``, ``refine_cases`` and the
  curves from turn 0; from proposals also ``proposal_cases`` and ``proposal_unmatched`` (the
  cases where no candidate matched: they start empty and count Dice 0 before).

Whole-volume records (``kind`` "volume") form their own groups, ``"backbone/method
(volumes)"``, never averaged with slice rows; their means are of 3-D scores, and they add
``slices_mean``, ``encodes_mean``, ``propagation_decodes_mean`` and, for agents,
``episodes_mean``/``reviews_mean`` (turns are summed over a volume's episodes; no
``dice_by_turn``). Every group says its ``kind``, ``backbone`` and ``method``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from msagent import metrics
from msagent.evaluation.records import CaseRecord

MAIN_METRICS = ("dice", "iou", "nsd")
VOLUMES = " (volumes)"


def group_name(record: CaseRecord) -> str:
    """The summary group of ``record``: "backbone/method", "backbone/method (volumes)" for a
    whole-volume record."""
    name = f"{record.backbone}/{record.method}"
    return name + VOLUMES if record.kind == "volume" else name


def _mean(values: Iterable[float | None]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


def curve_mean(curves: Sequence[Sequence[float]], length: int | None = None) -> list[float]:
    """Mean of per-case curves of unequal length, each carried forward at its last value."""
    lists = [list(c) for c in curves if len(c)]
    if not lists:
        return []
    length = length or max(len(c) for c in lists)
    padded = np.array([c[:length] + [c[-1]] * (length - len(c[:length])) for c in lists], float)
    return [float(v) for v in padded.mean(axis=0)]


def _rows(records: Sequence[CaseRecord]) -> list[dict[str, Any]]:
    return [{"label": r.label or r.target, "dataset": r.dataset or "-",
             "modality": r.modality or "-", "dice": r.dice, "iou": r.iou, "nsd": r.nsd}
            for r in records]


def summarize_group(records: Sequence[CaseRecord]) -> dict[str, Any]:
    """The summary of one (backbone, method)'s records."""
    ok = [r for r in records if r.ok]
    failed = [r for r in records if r.status == "error"]
    first = records[0] if records else None
    out: dict[str, Any] = {"kind": first.kind if first else "image",
                           "backbone": first.backbone if first else "",
                           "method": first.method if first else "",
                           "n": len(records), "n_ok": len(ok), "n_errors": len(failed),
                           "n_skipped": len(records) - len(ok) - len(failed)}
    skips = Counter(r.error or "" for r in records if r.status == "skipped")
    if skips:
        out["skipped"] = dict(skips)
    errors = Counter((r.error or "").split(":")[0] for r in failed)
    out["errors"] = dict(errors)
    for name in MAIN_METRICS:
        out[name] = _mean(getattr(r, name) for r in ok)
    rows = _rows(ok)
    per_class = metrics.aggregate(rows, MAIN_METRICS, by="label")
    out["class_dice"] = _mean(g["dice"] for g in per_class.values())
    out["class_iou"] = _mean(g["iou"] for g in per_class.values())
    out["per_class"] = per_class
    out["per_dataset"] = metrics.aggregate(rows, MAIN_METRICS, by="dataset")
    out["per_modality"] = metrics.aggregate(rows, MAIN_METRICS, by="modality")
    out["seconds"] = _mean(r.seconds for r in ok)
    out.update(_turn_stats(ok))
    out.update(_protocol_stats(ok))
    out.update(_volume_stats(ok))
    return out


def _volume_stats(ok: Sequence[CaseRecord]) -> dict[str, Any]:
    volumes = [r for r in ok if r.kind == "volume"]
    if not volumes:
        return {}
    stats = {"slices_mean": _mean(r.slices for r in volumes)}
    for key in ("encodes", "propagation_decodes", "episodes"):
        values = [r.values.get(f"count_{key}") for r in volumes]
        if any(v is not None for v in values):
            stats[f"{key}_mean"] = _mean(values)
    if any("reviews" in r.values for r in volumes):
        stats["reviews_mean"] = _mean(r.values.get("reviews") for r in volumes)
    return stats


def _turn_stats(ok: Sequence[CaseRecord]) -> dict[str, Any]:
    ok = [r for r in ok if r.protocol == "agent"]
    turns = [r.turns for r in ok if r.turns is not None]
    if not turns:
        return {}
    stats: dict[str, Any] = {
        "turns_mean": float(np.mean(turns)), "turns_median": float(np.median(turns)),
        "turns_histogram": {str(k): v for k, v in sorted(Counter(turns).items())},
        "stop_reasons": dict(Counter(r.stop_reason for r in ok)),
        "no_mask": sum(1 for r in ok if r.turns == 0),
    }
    if any(r.kind == "volume" for r in ok):  # a volume's curve is its final score only
        return stats
    stats.update({
        "dice_by_turn": curve_mean([r.curves.get("dice", []) for r in ok]),
        "iou_by_turn": curve_mean([r.curves.get("iou", []) for r in ok]),
    })
    refined = [r for r in ok if "dice_before" in r.values]
    if refined:  # the refine protocol: curves start at the initial mask (turn 0)
        stats.update({key: _mean(r.values[key] for r in refined)
                      for key in ("dice_before", "iou_before", "nsd_before", "dice_gain")})
        stats["refine_not_worse"] = sum(1 for r in refined if r.values["dice_gain"] >= -1e-12)
        stats["refine_cases"] = len(refined)
        proposals = [r for r in refined if "proposal_matched" in r.values]
        if proposals:  # refine_from "proposal": how often nothing matched the target
            stats["proposal_cases"] = len(proposals)
            stats["proposal_unmatched"] = sum(1 for r in proposals
                                              if not r.values["proposal_matched"])
        stats["refine_dice_by_turn"] = stats.pop("dice_by_turn")
        stats["refine_iou_by_turn"] = stats.pop("iou_by_turn")
    invalid = [r.values["invalid_replies"] for r in ok if "invalid_replies" in r.values]
    if invalid:
        stats["invalid_replies"] = int(sum(invalid))
    usage: Counter = Counter()
    for r in ok:
        usage.update({k: v for k, v in r.usage.items() if isinstance(v, (int, float))})
    if usage:
        stats["usage"] = dict(usage)
    return stats


def _protocol_stats(ok: Sequence[CaseRecord]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for key in sorted({k for r in ok for k in r.values if k.startswith("noc")}):
        values = [r.values[key] for r in ok if r.values.get(key) is not None]
        stats[key] = _mean(values)
        max_clicks = max(r.values.get("max_clicks", 20) for r in ok)
        stats[f"{key}_over_max"] = sum(1 for v in values if v >= max_clicks)
    noc = [r for r in ok if r.protocol == "noc"]
    if noc:
        stats["clicks_mean"] = float(np.mean([r.turns or 0 for r in noc]))
        stats["iou_by_click"] = curve_mean([r.curves.get("iou", []) for r in noc])
    cvpr = [r for r in ok if r.protocol == "cvpr"]
    if cvpr:
        ok = cvpr
        for key in ("dsc_auc", "nsd_auc"):
            stats[key] = _mean(r.values.get(key) for r in ok)
        stats["dsc_by_step"] = curve_mean([r.curves.get("dice", []) for r in ok])
        stats["nsd_by_step"] = curve_mean([r.curves.get("nsd", []) for r in ok])
    return stats


def summarize(records: Iterable[CaseRecord]) -> dict[str, Any]:
    """``{"backbone/method": summary}`` for every pair in ``records`` (sorted), whole-volume
    records apart as ``"backbone/method (volumes)"``."""
    groups: dict[str, list[CaseRecord]] = defaultdict(list)
    for record in records:
        groups[group_name(record)].append(record)
    return {name: summarize_group(group) for name, group in sorted(groups.items())}


def table_rows(summary: dict[str, Any], kind: str | None = "image") -> list[dict[str, Any]]:
    """One row per backbone/method with the headline numbers (for README/HTML tables): the
    groups of ``kind`` ("image", "volume"; None: all)."""
    rows = []
    for name, s in summary.items():
        if kind is not None and s.get("kind", "image") != kind:
            continue
        backbone, _, method = name.removesuffix(VOLUMES).partition("/")
        rows.append({"backbone": backbone, "method": method, "n": s["n_ok"],
                     "errors": s["n_errors"], "skipped": s.get("n_skipped", 0),
                     "dice": s["dice"], "iou": s["iou"], "nsd": s["nsd"],
                     "turns": s.get("turns_mean"), "noc85": s.get("noc85"),
                     "noc90": s.get("noc90"), "dsc_auc": s.get("dsc_auc"),
                     "nsd_auc": s.get("nsd_auc"), "slices": s.get("slices_mean"),
                     "encodes": s.get("encodes_mean"), "seconds": s.get("seconds")})
    return rows


IMAGE_COLUMNS = {"backbone": "Backbone", "method": "Method", "n": "Cases", "dice": "Dice",
                 "iou": "IoU", "nsd": "NSD", "turns": "Turns", "noc85": "NoC@85",
                 "noc90": "NoC@90", "dsc_auc": "DSC AUC", "nsd_auc": "NSD AUC"}
VOLUME_COLUMNS = {"backbone": "Backbone", "method": "Method", "n": "Volumes", "dice": "Dice",
                  "iou": "IoU", "nsd": "NSD", "turns": "Turns", "dsc_auc": "DSC AUC",
                  "nsd_auc": "NSD AUC", "encodes": "Encodes", "seconds": "Seconds"}


def _markdown(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            cells.append("" if value is None else f"{value:.3f}" if isinstance(value, float)
                         else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


REFINE_COLUMNS = {"backbone": "Backbone", "method": "Method", "n": "Cases",
                  "dice_before": "Dice before", "dice": "Dice after", "dice_gain": "Gain",
                  "not_worse": "Not worse", "unmatched": "No proposal"}


def refine_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per backbone/method run under the refine protocol: Dice before (the initial
    mask's, turn 0) and after (the agent's), the gain, the cases not made worse and, for
    proposals, the cases where no candidate matched."""
    rows = []
    for name, s in summary.items():
        if "dice_before" not in s:
            continue
        backbone, _, method = name.removesuffix(VOLUMES).partition("/")
        rows.append({"backbone": backbone, "method": method, "n": s["refine_cases"],
                     "dice_before": s["dice_before"], "dice": s["dice"],
                     "dice_gain": s["dice_gain"], "not_worse": s["refine_not_worse"],
                     "unmatched": s.get("proposal_unmatched")})
    return rows


def markdown_table(summary: dict[str, Any]) -> str:
    """The headline table as Markdown (blank where a metric does not apply); whole-volume
    groups follow in a table of their own (3-D scores, one row per backbone/method), and
    groups run under the refine protocol in one with Dice before and after."""
    images, volumes = table_rows(summary, "image"), table_rows(summary, "volume")
    parts = [_markdown(images, IMAGE_COLUMNS)] if images or not volumes else []
    if volumes:
        parts.append("Volumes (3-D scores):\n\n" + _markdown(volumes, VOLUME_COLUMNS))
    if refined := refine_rows(summary):
        parts.append("Refine (before: the initial mask, turn 0; after: the agent's):\n\n"
                     + _markdown(refined, REFINE_COLUMNS))
    return "\n\n".join(parts)
