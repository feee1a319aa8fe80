"""Plots (matplotlib) and a self-contained HTML report (images embedded as base64 PNG).

Plots, written to ``plots/``: ``dice_by_turn.png`` (agent methods: mean Dice after each turn),
``per_class.png`` (mean Dice per class and method), ``noc_curve.png`` (mean IoU after each
click, NoC protocol, with the 0.85/0.90 lines), ``cvpr_curve.png`` (mean DSC and NSD after
the box and each click). ``report.html`` shows the headline table, per-class/dataset tables,
the plots and, for every backbone/method, the best and worst cases by Dice as overlays
(prediction in green, ground-truth contour in yellow, the final box and clicks drawn), each a
thumbnail that links to its full-size picture in ``overlays/``.

Whole-volume runs (``msagent eval --volumes``) have a "Volumes" section of their own: the
headline table of their groups (3-D scores, encodes, seconds) and one row per volume (its key
slice, 3-D scores, AUCs, encodes, seconds, a link to its mask); their best and worst cases
show the key slice, apart from the slice groups. Groups run under the refine protocol have a
"Refine" section (Dice before, the initial mask's, and after, the agent's; the cases where no
proposal matched), and their cases' captions read "Dice before → after".
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from msagent.evaluation.records import CaseRecord
from msagent.evaluation.summary import group_name, refine_rows, table_rows
from msagent.io.atomic import atomic_write
from msagent.render import LEGEND, annotate
from msagent.types import Trajectory

THUMB = 256


def case_overlay(image: np.ndarray, gt: np.ndarray, mask: np.ndarray, size: int | None = None,
                 trajectory: Trajectory | None = None) -> np.ndarray:
    """The case's picture, at a size a reader can judge (:func:`msagent.render.annotate`: a
    small image enlarged): prediction blended green, ground truth outlined yellow and, from
    ``trajectory``, the final prompts (box cyan, clicks blue + / red −). ``size`` caps the
    longest side (None: no cap); the report shows it as a thumbnail linked to this file."""
    steps = trajectory.executed_steps if trajectory is not None else ()
    prompts = steps[-1].prompts if steps else None
    out = annotate(image, mask, gt, prompts)
    scale = (size or max(out.shape[:2])) / max(out.shape[:2])
    if scale < 1:
        out = cv2.resize(out, (max(1, round(out.shape[1] * scale)), max(1, round(out.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def plot_curves(summary: dict[str, Any], key: str, title: str, xlabel: str, ylabel: str,
                path: Path, first_x: int = 1, hlines: Sequence[float] = ()) -> Path | None:
    """One line per backbone/method that has the curve ``key``; None when none has it."""
    series = {name: s[key] for name, s in summary.items() if s.get(key)}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in series.items():
        ax.plot(range(first_x, first_x + len(values)), values, marker="o", markersize=3, label=name)
    for y in hlines:
        ax.axhline(y, color="gray", linestyle=":", linewidth=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, 1.02))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_cvpr(summary: dict[str, Any], path: Path) -> Path | None:
    series = {name: s for name, s in summary.items() if s.get("dsc_by_step")}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in series.items():
        steps = range(len(s["dsc_by_step"]))
        line, = ax.plot(steps, s["dsc_by_step"], marker="o", markersize=3, label=f"{name} DSC")
        ax.plot(steps, s["nsd_by_step"], marker="s", markersize=3, linestyle="--",
                color=line.get_color(), label=f"{name} NSD")
    ax.set_xticks(list(range(len(next(iter(series.values()))["dsc_by_step"]))))
    ax.set_xticklabels(["box"] + [f"+{i}" for i in range(1, len(ax.get_xticks()))])
    ax.set(title="CVPR 2025 protocol: box, then corrective clicks", xlabel="interaction",
           ylabel="mean score", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_per_class(summary: dict[str, Any], path: Path, metric: str = "dice") -> Path | None:
    classes = sorted({c for s in summary.values() for c in s.get("per_class", {})})
    if not classes:
        return None
    plt = _pyplot()
    names = list(summary)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(classes) * max(1, len(names)) / 2 + 3), 4))
    x = np.arange(len(classes))
    for i, name in enumerate(names):
        groups = summary[name].get("per_class", {})
        values = [(groups.get(c) or {}).get(metric) or 0.0 for c in classes]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([c[:28] for c in classes], rotation=30, ha="right", fontsize=8)
    ax.set(title=f"Mean {metric.upper() if metric != 'dice' else 'Dice'} per class", ylim=(0, 1.02))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    plots = out_dir / "plots"
    made = [
        plot_curves(summary, "dice_by_turn", "Agent: Dice after each turn", "turn", "mean Dice",
                    plots / "dice_by_turn.png"),
        plot_per_class(summary, plots / "per_class.png"),
        plot_curves(summary, "iou_by_click", "NoC protocol: IoU after each click", "clicks",
                    "mean IoU", plots / "noc_curve.png", hlines=(0.85, 0.9)),
        plot_cvpr(summary, plots / "cvpr_curve.png"),
        plot_curves(summary, "refine_dice_by_turn", "Refine: Dice from the initial mask (turn 0)",
                    "turn", "mean Dice", plots / "refine_curve.png", first_x=0),
    ]
    return [p for p in made if p is not None]


def _img(path: Path, alt: str, width: int | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{size}>'


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


HEADERS = {"noc85": "NoC@85", "noc90": "NoC@90", "dsc_auc": "DSC AUC", "nsd_auc": "NSD AUC",
           "dice": "Dice", "iou": "IoU", "nsd": "NSD", "n": "cases", "key_slice": "key slice",
           "case_id": "case", "dice_before": "Dice before", "dice_gain": "gain",
           "not_worse": "not worse", "unmatched": "no proposal"}


def _table(rows: list[dict[str, Any]], columns: Sequence[str], raw: Sequence[str] = ()) -> str:
    """An HTML table; the ``raw`` columns hold HTML already (links), the others are escaped."""
    head = "".join(f"<th>{html.escape(HEADERS.get(c, c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{(r.get(c) or '') if c in raw else _fmt(r.get(c))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


VOLUME_COLUMNS = ["backbone", "method", "n", "errors", "skipped", "dice", "iou", "nsd", "turns",
                  "dsc_auc", "nsd_auc", "slices", "encodes", "seconds"]
VOLUME_ROW_COLUMNS = ["case_id", "method", "status", "dice", "iou", "nsd", "dsc_auc", "nsd_auc",
                      "key_slice", "slices", "turns", "encodes", "seconds", "mask"]


def _volume_rows(records: Sequence[CaseRecord]) -> list[dict[str, Any]]:
    """One row per volume run: its 3-D scores, key slice, encodes and seconds, why it was
    skipped or failed, and a link to its mask."""
    rows = []
    for r in records:
        if r.kind != "volume":
            continue
        mask = (f'<a href="{html.escape(Path(r.mask_file).as_posix())}">mask</a>'
                if r.mask_file else "")
        rows.append({"case_id": r.case_id, "method": f"{r.backbone}/{r.method}",
                     "status": r.status if r.ok else f"{r.status}: {r.error or ''}",
                     "dice": r.dice, "iou": r.iou, "nsd": r.nsd,
                     "dsc_auc": r.values.get("dsc_auc"), "nsd_auc": r.values.get("nsd_auc"),
                     "key_slice": r.values.get("key_slice"), "slices": r.slices or None,
                     "turns": r.turns, "encodes": r.values.get("count_encodes"),
                     "seconds": r.seconds if r.ok else None, "mask": mask})
    return rows


def _volumes_section(records: Sequence[CaseRecord], summary: dict[str, Any]) -> list[str]:
    rows = _volume_rows(records)
    if not rows:
        return []
    return ["<h2>Volumes</h2>",
            "<p>Whole-volume cases, scored in 3-D with the voxel spacing (NSD in mm); turns are "
            "summed over a volume's episodes, encodes count slice encodings.</p>",
            _table(table_rows(summary, "volume"), VOLUME_COLUMNS),
            "<h3>Per volume</h3>", _table(rows, VOLUME_ROW_COLUMNS, raw=("mask",))]


REFINE_COLUMNS = ["backbone", "method", "n", "dice_before", "dice", "dice_gain", "not_worse",
                  "unmatched"]


def _refine_section(summary: dict[str, Any]) -> list[str]:
    rows = refine_rows(summary)
    if not rows:
        return []
    return ["<h2>Refine</h2>",
            "<p>Episodes started from an initial mask (turn 0): Dice before is the initial "
            "mask's, Dice after the agent's. From proposals, a case where no candidate matched "
            "the target started empty (Dice before 0): counted under no proposal.</p>",
            _table(rows, REFINE_COLUMNS)]


def _group_table(summary: dict[str, Any], key: str) -> str:
    rows = [{"method": name, "group": group, **values}
            for name, s in summary.items() for group, values in s.get(key, {}).items()]
    return _table(rows, ["method", "group", "n", "dice", "iou", "nsd"])


def _cases(records: Sequence[CaseRecord], out_dir: Path, count: int) -> str:
    parts = []
    by_method: dict[str, list[tuple[float, str, CaseRecord]]] = {}  # (dice, overlay, record)
    for r in records:
        if r.ok and r.dice is not None and r.overlay_file and (out_dir / r.overlay_file).exists():
            by_method.setdefault(group_name(r), []).append((r.dice, r.overlay_file, r))
    for name, group in sorted(by_method.items()):
        ranked = sorted(group, key=lambda item: item[0], reverse=True)
        worst = ranked[max(count, len(ranked) - count):][::-1]
        for title, chosen in (("best", ranked[:count]), ("worst", worst)):
            if not chosen:
                continue
            figures = "".join(
                f'<figure><a href="{html.escape(Path(overlay).as_posix())}">'
                f'{_img(out_dir / overlay, r.case_id, THUMB)}</a><figcaption>'
                f"{html.escape(r.case_id)}<br>{html.escape(r.label[:40])}<br>{_dice(r, dice)}"
                f"{f', {r.turns} turn(s)' if r.protocol == 'agent' else ''}"
                f"{_key_slice(r)}</figcaption></figure>"
                for dice, overlay, r in chosen)
            parts.append(f"<h3>{html.escape(name)}: {title}</h3><div class='cases'>{figures}</div>")
    return "".join(parts)


def _dice(record: CaseRecord, dice: float) -> str:
    """A case's Dice; under the refine protocol, from the initial mask's."""
    before = record.values.get("dice_before")
    return f"Dice {dice:.3f}" if before is None else f"Dice {float(before):.3f} → {dice:.3f}"


def _key_slice(record: CaseRecord) -> str:
    key = record.values.get("key_slice") if record.kind == "volume" else None
    return "" if key is None else f"<br>key slice {int(key)} of {record.slices}"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th{background:#f0f0f0}.cases{display:flex;flex-wrap:wrap;
gap:8px}figure{margin:0;font-size:12px;text-align:center}.plots img{max-width:48%;margin:4px}"""


def write_report(records: Sequence[CaseRecord], summary: dict[str, Any], out_dir: Path,
                 cases_shown: int = 3) -> Path:
    """Write ``plots/*.png`` and the self-contained ``report.html``; return the HTML path."""
    plots = write_plots(summary, out_dir)
    columns = ["backbone", "method", "n", "errors", "dice", "iou", "nsd", "turns", "noc85",
               "noc90", "dsc_auc", "nsd_auc"]
    images = table_rows(summary)
    volumes = table_rows(summary, "volume")
    failures = [{"method": name, "errors": s["n_errors"], "no_mask": s.get("no_mask"),
                 "invalid_replies": s.get("invalid_replies"),
                 "stop_reasons": ", ".join(f"{k}: {v}" for k, v in s.get("stop_reasons", {}).items())}
                for name, s in summary.items()]
    body = [
        "<h1>msagent evaluation</h1>",
        f"<p>{len(records)} case runs; Dice/IoU/NSD are means over the cases that ran.</p>",
        *(["<h2>Summary</h2>", _table(images, columns)] if images or not volumes else []),
        *_volumes_section(records, summary),
        *_refine_section(summary),
        "<h2>Failures and stops</h2>",
        _table(failures, ["method", "errors", "no_mask", "invalid_replies", "stop_reasons"]),
        "<h2>Plots</h2><div class='plots'>" + "".join(_img(p, p.stem) for p in plots) + "</div>",
        "<h2>Per class</h2>", _group_table(summary, "per_class"),
        "<h2>Per dataset</h2>", _group_table(summary, "per_dataset"),
        "<h2>Per modality</h2>", _group_table(summary, "per_modality"),
        "<h2>Best and worst cases</h2>",
        f"<p>{html.escape(LEGEND)}. Click a picture for its full size.</p>",
        _cases(records, out_dir, cases_shown),
    ]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>msagent evaluation</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    path = out_dir / "report.html"
    atomic_write(path, page.encode())
    return path
