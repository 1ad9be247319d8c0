"""``liteheart-sim plot-record``: one ECG as the model sees it, its P/QRS/T regions and the model's answer.

The record is prepared with the checkpoint's own settings
(:func:`liteheart_core.data.record.prepare_record`), so the picture shows the
exact window the model scores: the 12 leads, lead I large with the detected
P, QRS and T regions shaded, and the per-class probabilities against the
checkpoint's thresholds.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from liteheart_core.cli.console import fail, out

REGION_STYLE = {1: ("P wave", "#1f77b4"), 2: ("QRS", "#d62728"), 3: ("T wave", "#2ca02c")}


def _runs(codes: np.ndarray, value: int) -> list[tuple[int, int]]:
    """Half-open [start, stop) sample runs where ``codes == value``."""
    hit = np.r_[False, codes == value, False].astype(np.int8)
    edges = np.flatnonzero(np.diff(hit))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def analyse(record: Path, checkpoint: Path) -> dict:
    """Prepare a record for a checkpoint, find its beats and regions, and score it.

    Returns
    -------
    dict
        ``prepared`` (:class:`PreparedRecord`), ``regions`` int8 [T] (-1 on padding),
        ``r_peaks``, ``heart_rate``, ``probs`` [C], ``meta`` (the checkpoint's).

    Raises
    ------
    CheckpointError
        The checkpoint cannot be read or lacks preparation settings.
    RecordError
        The record is missing, corrupt, truncated or otherwise unusable.
    """
    import torch

    from liteheart_core.checkpoint import CheckpointError, load_checkpoint
    from liteheart_core.data.record import prepare_record
    from liteheart_core.data.signal import lead_indices
    from liteheart_core.regions import PAD, delineate, detect_r_peaks, heart_rate

    if Path(checkpoint).is_file() and not zipfile.is_zipfile(checkpoint):
        raise CheckpointError(f"{checkpoint} is not a LiteHeart checkpoint (not a file written by torch.save)")
    net, meta = load_checkpoint(checkpoint)
    if not meta.get("prep_settings"):
        raise CheckpointError(f"{checkpoint} carries no preparation settings (prep_settings)")
    prepared = prepare_record(record, meta["prep_settings"], int(meta["length"]))
    if prepared.fs != float(meta["fs"]):
        raise CheckpointError(
            f"{checkpoint}: its preparation settings give {prepared.fs:g} Hz but the model expects {meta['fs']} Hz"
        )
    window = prepared.window
    # what preparation caches for training: region_codes(window) = delineate(detect_r_peaks(window)), padding masked
    peaks = detect_r_peaks(window, prepared.fs)
    regions = delineate(peaks, window.shape[1], prepared.fs)
    regions[prepared.valid :] = PAD
    peaks = peaks[peaks < prepared.valid]
    with torch.no_grad():
        x = torch.as_tensor(window[lead_indices(meta["leads"])][None])
        probs = torch.sigmoid(net(x)).numpy()[0]
    return {
        "prepared": prepared,
        "regions": regions,
        "r_peaks": peaks,
        "heart_rate": heart_rate(peaks, prepared.fs),
        "probs": probs,
        "meta": meta,
    }


def draw(result: dict, path: Path, checkpoint_name: str = "") -> Path:
    """Draw :func:`analyse`'s result into one PNG."""
    from matplotlib.artist import Artist
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from liteheart_core.checkpoint import thresholds_of
    from liteheart_core.data.signal import STANDARD_LEADS

    prep, meta, regions = result["prepared"], result["meta"], result["regions"]
    window, fs = prep.window, prep.fs
    t = np.arange(window.shape[1]) / fs
    fig = Figure(figsize=(14, 13), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(8, 2, height_ratios=[1] * 6 + [2.6, 2.4])
    hr = result["heart_rate"]
    fig.suptitle(
        f"record {prep.record}: {prep.source_seconds:.1f} s at {prep.source_fs:g} Hz -> "
        f"{window.shape[1] / fs:g}-s window at {fs:g} Hz; {len(result['r_peaks'])} beats"
        + (f" (~{hr:.0f} bpm)" if np.isfinite(hr) else "")
        + (f"; model {checkpoint_name}" if checkpoint_name else ""),
        fontsize=12,
    )
    first = None
    for i, lead in enumerate(STANDARD_LEADS):
        ax = fig.add_subplot(grid[i % 6, i // 6], sharex=first)
        first = first or ax
        ax.plot(t, window[i], color="black", linewidth=0.6)
        ax.set_ylabel(lead, rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.25)
        if i % 6 != 5:
            ax.tick_params(labelbottom=False)
    big = fig.add_subplot(grid[6, :], sharex=first)
    for code, (_label, colour) in REGION_STYLE.items():
        for a, b in _runs(regions, code):
            big.axvspan(a / fs, b / fs, color=colour, alpha=0.18, linewidth=0)
    pad = _runs(regions, -1)
    for a, b in pad:
        big.axvspan(a / fs, b / fs, color="#999999", alpha=0.3, hatch="//", linewidth=0)
    lead_i = STANDARD_LEADS.index("I")
    big.plot(t, window[lead_i], color="black", linewidth=0.9)
    peaks = np.asarray(result["r_peaks"], dtype=int)
    big.plot(peaks / fs, window[lead_i, peaks], "v", color="#d62728", markersize=5)
    handles: list[Artist] = [Patch(color=c, alpha=0.35, label=name) for name, c in REGION_STYLE.values()]
    handles.append(Line2D([], [], marker="v", color="#d62728", linestyle="", label="R peak"))
    if pad:
        handles.append(Patch(color="#999999", alpha=0.3, hatch="//", label="zero padding"))
    big.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=9, borderaxespad=0)
    big.set_title("lead I with the detected P / QRS / T regions", fontsize=11)
    big.set_xlabel("time (s)")
    big.set_ylabel("standardised amplitude")
    big.grid(True, alpha=0.25)
    big.set_xlim(0, t[-1])

    bars = fig.add_subplot(grid[7, :])
    classes, probs = list(meta["classes"]), result["probs"]
    thr = thresholds_of(meta)
    xs = np.arange(len(classes))
    positive = probs >= thr
    bars.bar(xs, probs, color=np.where(positive, "#d62728", "#1f77b4"), width=0.6)
    bars.hlines(thr, xs - 0.38, xs + 0.38, color="black", linewidth=2)
    for x, p in zip(xs, probs):
        bars.text(float(x), min(p + 0.03, 0.97), f"{p:.2f}", ha="center", va="bottom", fontsize=9)
    bars.set_xticks(xs, classes, fontsize=9 if len(classes) <= 12 else 7, rotation=0 if len(classes) <= 12 else 45)
    bars.set_ylim(0, 1.05)
    bars.set_ylabel("probability")
    bars.set_title(
        f"{meta.get('kind', 'model')} ({meta.get('method') or meta.get('kind')}, leads "
        f"{','.join(meta['leads'])}): per-class probabilities",
        fontsize=11,
    )
    bars.legend(
        handles=[
            Patch(color="#d62728", label="at or above threshold"),
            Patch(color="#1f77b4", label="below threshold"),
            Line2D([], [], color="black", linewidth=2, label="threshold"),
        ],
        loc="upper right",
        fontsize=9,
    )
    bars.grid(True, axis="y", alpha=0.25)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white")
    return path


def plot_record_cmd(
    record: Annotated[Path, typer.Argument(help="A WFDB record (with or without .hea/.dat/.mat).")],
    model: Annotated[Path, typer.Option("--model", help="A student or teacher checkpoint.")],
    to: Annotated[Path | None, typer.Option("--out", help="PNG to write (default: <record>.png here).")] = None,
) -> None:
    """Plot one record as the model sees it: 12 leads, lead I with P/QRS/T regions, per-class probabilities."""
    from liteheart_core.checkpoint import CheckpointError
    from liteheart_core.data.record import record_base
    from liteheart_core.data.signal import RecordError

    path = to or Path(f"{record_base(record).name}.png")
    if path.suffix.lower() != ".png":
        fail(f"--out must name a .png file, not {path}")
    try:
        result = analyse(record, model)
    except (CheckpointError, RecordError) as exc:
        fail(str(exc))
    except ValueError as exc:  # preparation settings that do not fit the record (e.g. a band above Nyquist)
        fail(f"record {record}: {exc}")
    draw(result, path, model.name)
    meta, probs = result["meta"], result["probs"]
    found = [c for c, p, t in zip(meta["classes"], probs, meta.get("thresholds") or [0.5] * len(probs)) if p >= t]
    out.print(f"wrote {path}: {len(result['r_peaks'])} beats; above threshold: {', '.join(found) or 'none'}")
