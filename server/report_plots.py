"""The static figures of a run report, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function takes plain numbers from the registry or the scoring, writes one
PNG and returns its path; none of them reads files or the registry itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from liteheart_core.calibration import reliability

DPI = 110
COLOURS = {
    "macro_f1": "#1f77b4",
    "macro_auc": "#d62728",
    "macro_ap": "#2ca02c",
    "ok": "#2ca02c",
    "failed": "#d62728",
    "epsilon": "#9467bd",
}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg: works headless whatever matplotlib's default backend is
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _rounds_axis(ax, rounds: Sequence[int]) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if rounds:
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    ax.set_xlabel("round")
    ax.grid(True, alpha=0.3)


def _series(rounds: list[dict], source: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rounds:
        value = (r.get(source) or {}).get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(int(r["number"]))
            ys.append(float(value))
    return xs, ys


def plot_global_metrics(rounds: list[dict], path: Path) -> Path:
    """Global macro F1 / AUC / AP on the server's validation fold per round, with the clients' local validation."""
    fig = _figure(8, 4.8)
    ax = fig.add_subplot()
    labels = {"macro_f1": "macro F1", "macro_auc": "macro AUC", "macro_ap": "macro AP"}
    for key, label in labels.items():
        xs, ys = _series(rounds, "central_metrics", key)
        if xs:
            ax.plot(xs, ys, marker="o", color=COLOURS[key], label=f"global {label} (server, fold 9)")
    # measured by each client on its own fold-9 records with its locally trained model, before aggregation
    for key, colour, label in (
        ("local-val-f1", COLOURS["macro_f1"], "local models' F1 on local validation (mean)"),
        ("local-val-auc", COLOURS["macro_auc"], "local models' AUC on local validation (mean)"),
    ):
        xs, ys = _series(rounds, "train_metrics", key)
        if xs:
            ax.plot(xs, ys, marker="s", linestyle="--", color=colour, alpha=0.6, label=label)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title("Global student per round")
    _rounds_axis(ax, [int(r["number"]) for r in rounds])
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return _save(fig, path)


def plot_losses(rounds: list[dict], terms: Sequence[str], weights: dict[str, float], path: Path) -> Path:
    """One small panel per loss term: the example-weighted mean over the clients of each round."""
    n = max(1, len(terms))
    cols = min(4, n)
    rows_n = math.ceil(n / cols)
    fig = _figure(3.1 * cols, 2.5 * rows_n + 0.4)
    fig.suptitle("Training loss terms (clients' mean, weighted by examples)")
    for i, term in enumerate(terms):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        xs, ys = _series(rounds, "train_metrics", term)
        ax.plot(xs, ys, marker="o", color="#444444" if term == "total" else "#1f77b4")
        weight = weights.get(term)
        ax.set_title(term if weight is None else f"{term} (weight {weight:g})", fontsize=10)
        _rounds_axis(ax, [int(r["number"]) for r in rounds])
    return _save(fig, path)


def plot_participation(rounds: list[dict], configured: int | None, path: Path) -> Path:
    """Clients that replied with a usable update, and failures, per round."""
    fig = _figure(8, 3.6)
    ax = fig.add_subplot()
    xs = [int(r["number"]) for r in rounds]
    ok = [len(r.get("participants") or []) for r in rounds]
    failed = [int(r.get("n_failures") or 0) for r in rounds]
    ax.bar(xs, ok, color=COLOURS["ok"], label="updates aggregated")
    ax.bar(xs, failed, bottom=ok, color=COLOURS["failed"], label="failures (rejected or no reply)")
    if configured:
        ax.axhline(configured, color="#555555", linestyle=":", label=f"clients configured ({configured})")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([configured or 0] + [a + b for a, b in zip(ok, failed)]) + 1)
    ax.set_ylabel("clients")
    ax.set_title("Client participation per round")
    _rounds_axis(ax, xs)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    return _save(fig, path)


def plot_privacy(xs: list[int], epsilon: list[float], path: Path) -> Path:
    """Privacy spent (epsilon) per round, as the rounds recorded it."""
    fig = _figure(8, 3.4)
    ax = fig.add_subplot()
    ax.plot(xs, epsilon, marker="o", color=COLOURS["epsilon"])
    ax.set_ylabel("epsilon spent")
    ax.set_ylim(bottom=0)
    ax.set_title("Differential privacy: epsilon per round")
    _rounds_axis(ax, xs)
    return _save(fig, path)


def plot_calibration(
    y: np.ndarray, probs: np.ndarray, classes: list[str], thresholds: Sequence[float], path: Path, bins: int = 10
) -> tuple[Path, dict[str, float]]:
    """Reliability diagram per class (predicted probability vs observed frequency); returns the ECE per class."""
    n = len(classes)
    cols = min(3, n)
    rows_n = math.ceil(n / cols)
    fig = _figure(3.5 * cols, 3.9 * rows_n + 0.6)
    fig.suptitle(
        f"Calibration on the server's validation fold ({len(y)} records, {bins} bins)\n"
        "dashed: perfect calibration; red dotted: the class threshold;\n"
        "grey bars and marker size: records per bin",
        fontsize=10,
    )
    eces = {}
    for c, name in enumerate(classes):
        rel = reliability(y[:, c], probs[:, c], bins)
        eces[name] = rel.ece
        ax = fig.add_subplot(rows_n, cols, c + 1)
        width = rel.edges[1] - rel.edges[0]
        hist = ax.twinx()
        hist.bar(rel.edges[:-1] + width / 2, rel.counts, width=width * 0.9, color="#cccccc", alpha=0.5)
        hist.set_yticks([])
        hist.set_ylim(0, max(1, int(rel.counts.max())) * 2.5)  # keep the bars in the lower part
        ax.set_zorder(hist.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1)
        filled = rel.counts > 0
        # a bin of 3 records says little: marker area grows with the records in the bin
        ax.plot(rel.mean_predicted[filled], rel.observed[filled], color="#1f77b4", linewidth=1, alpha=0.7)
        ax.scatter(
            rel.mean_predicted[filled],
            rel.observed[filled],
            s=12 + 120 * rel.counts[filled] / len(y),
            color="#1f77b4",
            zorder=3,
        )
        ax.axvline(float(thresholds[c]), color="#d62728", linestyle=":", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_box_aspect(1)
        ax.set_title(f"{name}: {int(y[:, c].sum())} positive, ECE {rel.ece:.3f}", fontsize=9)
        ax.set_xlabel("predicted probability", fontsize=8)
        if c % cols == 0:
            ax.set_ylabel("observed frequency", fontsize=8)
        ax.tick_params(labelsize=7)
    return _save(fig, path), eces
