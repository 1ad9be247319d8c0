"""``liteheart-server runs report``: what a run did and what its global student is worth, as HTML and Markdown.

The report is built once as a list of plain blocks (headings, paragraphs, tables,
figures) and rendered twice: a self-contained ``report.html`` (inline CSS, no
script, no network) and ``report.md``; both point at the PNGs in ``figures/`` by
relative path, so the folder can be zipped, mailed or served as it is.

Everything comes from the registry (config, partition table, per-round metrics,
participation, failures, checkpoints) except the per-class table and the
calibration diagram, which are recomputed from the final checkpoint on the
server's validation fold (fold 9) of the run's own data.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from liteheart_core.config import FedConfig
from server import report_plots as plots
from server.artifacts import (
    ArtifactError,
    data_notes,
    epsilon_per_round,
    final_model,
    privacy_summary,
    run_data,
    validation_results,
)

FIGURES = "figures"
NO_PARTITION = "clients keep their data; not known to the server"


@dataclass
class Doc:
    """The report's content, independent of the output format."""

    title: str
    blocks: list[tuple] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def h2(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    def warn(self, text: str) -> None:
        """A note about something wrong or missing, also returned to the caller."""
        self.note(text)
        self.warnings.append(text)

    def table(self, header: list[str], rows: list[list[object]], caption: str = "") -> None:
        self.blocks.append(("table", header, [[_cell(v) for v in row] for row in rows], caption))

    def figure(self, path: Path, alt: str, caption: str) -> None:
        self.blocks.append(("img", f"{FIGURES}/{path.name}", alt, caption))


def _cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _setting(value: object) -> str:
    """A config value as written in a scenario file (no rounding: 1e-4 stays 0.0001)."""
    return f"{value:g}" if isinstance(value, float) else _cell(value)


def _interval(ci: object) -> str:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or ci[0] is None:
        return "n/a"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3;text-align:left}td{text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
.note{background:#fff6d6;border-left:4px solid #e0b400;padding:.4em .8em}
"""


def render_html(doc: Doc) -> str:
    """The document as one self-contained HTML page (inline CSS, images by relative path)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(doc.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(doc.title)}</h1>",
    ]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h2":
            parts.append(f"<h2>{e(block[1])}</h2>")
        elif kind == "p":
            parts.append(f"<p>{e(block[1])}</p>")
        elif kind == "note":
            parts.append(f'<p class="note">{e(block[1])}</p>')
        elif kind == "table":
            _, header, rows, caption = block
            parts.append("<table>" + (f"<caption>{e(caption)}</caption>" if caption else ""))
            parts.append("<thead><tr>" + "".join(f'<th scope="col">{e(h)}</th>' for h in header) + "</tr></thead>")
            parts.append(
                "<tbody>"
                + "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
                + "</tbody></table>"
            )
        elif kind == "img":
            _, src, alt, caption = block
            parts.append(f'<figure><img src="{e(src)}" alt="{e(alt)}"><figcaption>{e(caption)}</figcaption></figure>')
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


_NUMBER = re.compile(r"-?\d+(\.\d+)?|\[-?\d.*\]|n/a")


def _td(text: str) -> str:
    return f'<td class="n">{html.escape(text)}</td>' if _NUMBER.fullmatch(text) else f"<td>{html.escape(text)}</td>"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Doc) -> str:
    """The document as GitHub-flavoured Markdown (images by relative path)."""
    lines = [f"# {doc.title}", ""]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "note":
            lines += [f"> **Note:** {block[1]}", ""]
        elif kind == "table":
            _, header, rows, caption = block
            if caption:
                lines += [f"**{caption}**", ""]
            lines.append("| " + " | ".join(_md(h) for h in header) + " |")
            lines.append("|" + "|".join(" --- " for _ in header) + "|")
            lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            _, src, alt, caption = block
            lines += [f"![{_md(alt)}]({src})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def loss_terms(rounds: list[dict]) -> list[str]:
    """The objective's terms present in the rounds' metrics, in the objective's order."""
    from liteheart_core.train import LossWeights

    order = ["total"] + [f.name for f in fields(LossWeights)] + ["proximal"]
    present = {k for r in rounds for k in (r.get("train_metrics") or {})}
    return [t for t in order if t in present]


def _config_section(doc: Doc, shown: dict) -> dict:
    run, config = shown["run"], shown["run"]["config"] or {}
    fed = dict(config.get("fed") or {})
    known = [k.replace("_", "-") for k in (f.name for f in fields(FedConfig))]
    doc.h2("Run")
    doc.table(
        ["field", "value"],
        [
            ["run id", run["id"]],
            ["name", run.get("name") or ""],
            ["status", run["status"]],
            ["created", run.get("created_at")],
            ["finished", run.get("finished_at")],
            ["data fingerprint", run.get("data_fingerprint")],
        ],
    )
    if run.get("error"):
        doc.warn(f"the run ended with an error: {run['error']}")
    doc.h2("Configuration")
    rows = [[k, fed[k]] for k in known if k in fed] + [[k, v] for k, v in fed.items() if k not in known]
    rows += [[k, v] for k, v in config.items() if k not in ("fed", "partition_table")]
    doc.table(["key", "value"], [[k, _setting(v)] for k, v in rows])
    doc.h2("Partition")
    table = config.get("partition_table")
    if "partition_table" not in config:
        doc.p("Not recorded for this run (made before the registry kept partition tables).")
    elif not table:
        doc.p(NO_PARTITION.capitalize() + ".")
    else:
        header = list(dict.fromkeys(k for row in table for k in row))
        doc.table(
            header,
            [[row.get(h, "") for h in header] for row in table],
            caption="What each simulated client held (records = rows of folds 1-9; train = folds 1-8; "
            "local val = fold 9)",
        )
    return fed


def _rounds_section(doc: Doc, shown: dict, fed: dict, fig_dir: Path) -> list[Path]:
    from liteheart_core.train import method_weights

    rounds = shown["rounds"]
    doc.h2("Rounds")
    if not rounds:
        doc.p("No round was recorded.")
        return []
    made = []
    last = rounds[-1]["central_metrics"]
    path = plots.plot_global_metrics(rounds, fig_dir / "global_metrics.png")
    made.append(path)
    doc.figure(
        path,
        f"Line chart of the global student's macro F1, AUC and AP on the server's validation fold over "
        f"rounds 1 to {rounds[-1]['number']}; after the last round macro F1 "
        f"{_cell(last.get('macro_f1'))}, macro AUC {_cell(last.get('macro_auc'))}.",
        "Global student on the server's validation fold per round (solid), and the clients' locally trained "
        "models on their own validation records before aggregation (dashed, mean over clients).",
    )
    terms = loss_terms(rounds)
    if terms:
        try:
            weights, _ = method_weights(str(fed.get("method", "")))
            weight_of = {f.name: getattr(weights, f.name) for f in fields(weights)}
        except ValueError:
            weight_of = {}
        path = plots.plot_losses(rounds, terms, weight_of, fig_dir / "losses.png")
        made.append(path)
        doc.figure(
            path,
            f"Small line charts, one per loss term ({', '.join(terms)}), of the clients' mean training loss per round.",
            "Every term of the clients' objective, per round (weight = its weight in the total for this method).",
        )
    path = plots.plot_participation(rounds, fed.get("clients"), fig_dir / "participation.png")
    made.append(path)
    failures = sum(int(r.get("n_failures") or 0) for r in rounds)
    doc.figure(
        path,
        f"Bar chart of clients per round: aggregated updates in green, failures in red; "
        f"{failures} failures in {len(rounds)} rounds.",
        "Client participation and failures per round.",
    )
    xs, eps = epsilon_per_round(rounds)
    if xs:
        path = plots.plot_privacy(xs, eps, fig_dir / "privacy.png")
        made.append(path)
        doc.figure(
            path,
            f"Line chart of the privacy budget spent (epsilon) per round, reaching {eps[-1]:.3g} at round {xs[-1]}.",
            "Differential privacy: epsilon spent per round.",
        )
    doc.table(
        ["round", "macro F1", "macro AUC", "macro AP", "loss", "clients", "failures", "seconds"],
        [
            [
                r["number"],
                r["central_metrics"].get("macro_f1"),
                r["central_metrics"].get("macro_auc"),
                r["central_metrics"].get("macro_ap"),
                r["train_metrics"].get("total"),
                len(r["participants"]),
                r["n_failures"],
                f"{r.get('duration_s') or 0:.1f}",
            ]
            for r in rounds
        ],
        caption="Per round",
    )
    failed = [
        [r["number"], rep["node_id"], rep.get("reason") or ""]
        for r in rounds
        for rep in r.get("client_reports") or []
        if rep.get("status") != "ok"
    ]
    if failed:
        doc.table(["round", "node", "reason"], failed, caption="Client failures")
    return made


def _privacy_section(doc: Doc, config: dict, rounds: list[dict]) -> None:
    doc.h2("Privacy")
    summary = privacy_summary(config, rounds)
    rows = [
        ["differential privacy", summary["differential_privacy"]],
        ["secure aggregation", summary["secure_aggregation"]],
    ]
    rows += [[k, _setting(v)] for k, v in summary["settings"].items()]
    if summary["epsilon_spent"] is not None:
        rows.append(["epsilon spent after the last round", f"{summary['epsilon_spent']:.3g}"])
    doc.table(["setting", "value"], rows)
    doc.p(summary["statement"][0].upper() + summary["statement"][1:] + ".")


def _model_section(
    doc: Doc, shown: dict, run_dir: Path, fig_dir: Path, n_bootstrap: int, progress: Callable[[int, int], None] | None
) -> tuple[list[Path], dict | None]:
    run = shown["run"]
    model = final_model(shown, run_dir)
    meta = model.meta
    doc.h2("Final global student")
    doc.table(
        ["field", "value"],
        [
            ["checkpoint", str(model.path)],
            ["round", model.round],
            ["sha256", model.sha256],
            ["matches the registry's record", model.verified],
            ["method", meta.get("method")],
            ["task", meta.get("task")],
            ["lead", ", ".join(meta.get("leads", []))],
            ["input", f"{meta.get('length')} samples at {meta.get('fs')} Hz"],
        ],
    )
    for text in model.notes:
        doc.warn(text)
    try:
        data = run_data(run["config"].get("fed") or {}, progress)
    except ArtifactError as exc:
        doc.warn(f"{exc}: the per-class table and the calibration diagram need them and are left out.")
        return [], None
    for text in data_notes(meta, data, run.get("data_fingerprint")):
        doc.warn(text)
    scores, y, probs = validation_results(model, data, n_bootstrap=n_bootstrap)
    classes = list(meta["classes"])
    thresholds = [scores["per_class"][c]["threshold"] for c in classes]
    cal_path, eces = plots.plot_calibration(y, probs, classes, thresholds, fig_dir / "calibration.png")
    ci = scores["ci"]
    doc.p(
        f"Recomputed from the checkpoint on the server's validation fold (fold 9, {scores['n']} records of "
        f"{data.root.name}): macro F1 {scores['macro_f1']:.3f} {_interval(ci['macro_f1'])}, macro AUC "
        f"{scores['macro_auc']:.3f} {_interval(ci['macro_auc'])}, macro AP {scores['macro_ap']:.3f} "
        f"{_interval(ci['macro_ap'])} (95% bootstrap intervals over records, {n_bootstrap} resamples)."
    )
    rows = [
        [c, pc["f1"], _interval(pc["f1_ci"]), pc["auc"], pc["ap"], pc["support"], pc["threshold"], eces[c]]
        for c, pc in scores["per_class"].items()
    ]
    doc.table(
        ["class", "F1", "F1 95% interval", "AUC", "AP", "support", "threshold", "ECE"],
        rows,
        caption="Per class, on the server's validation fold",
    )
    doc.note(
        "The thresholds were tuned for F1 on this same fold by the server after the round, so F1 here is "
        "optimistic; AUC and AP do not depend on thresholds. No client trained on fold 9."
    )
    worst = max(eces, key=lambda c: eces[c] if math.isfinite(eces[c]) else -1)
    doc.figure(
        cal_path,
        f"Reliability diagrams, one per class ({', '.join(classes)}), of predicted probability "
        f"against observed frequency on {scores['n']} validation records; the largest expected "
        f"calibration error is {eces[worst]:.3f} for {worst}.",
        "Calibration per class: points on the dashed diagonal are calibrated; above it the model "
        "under-predicts, below it over-predicts.",
    )
    return [cal_path], scores


def build_report(
    shown: dict, run_dir: Path, out: Path, n_bootstrap: int = 1000, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Write ``out/report.html``, ``out/report.md`` and ``out/figures/*.png`` for one run.

    Parameters
    ----------
    shown
        The registry's view of the run (``Registry.export_run``).
    run_dir
        The run folder (``<run_dir>/<run_id>/global_student.pt``, ``checkpoints/``).
    n_bootstrap
        Resamples for the 95% intervals of the validation scores.
    progress
        Called as ``progress(done, total)`` while the run's data are prepared (first use only).

    Returns
    -------
    dict
        ``html``, ``markdown``, ``figures`` (paths), ``scores`` (None without the data) and ``warnings``.

    Raises
    ------
    ArtifactError
        The run has no checkpoint, or its final checkpoint cannot be read.
    """
    run = shown["run"]
    out = Path(out)
    fig_dir = out / FIGURES
    doc = Doc(f"LiteHeart run {run['id']}")
    doc.p(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from the registry and the run folder {run_dir}.")
    # the final model first: a run without a usable checkpoint fails before anything is written
    model_blocks = Doc(doc.title)
    model_figs, scores = _model_section(model_blocks, shown, Path(run_dir), fig_dir, n_bootstrap, progress)
    fed = _config_section(doc, shown)
    figures = _rounds_section(doc, shown, fed, fig_dir) + model_figs
    doc.blocks += model_blocks.blocks
    doc.warnings = doc.warnings + model_blocks.warnings
    _privacy_section(doc, run["config"] or {}, shown["rounds"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(render_html(doc), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(doc), encoding="utf-8")
    return {
        "html": out / "report.html",
        "markdown": out / "report.md",
        "figures": figures,
        "scores": scores,
        "warnings": doc.warnings,
    }
