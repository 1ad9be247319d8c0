"""Run reports (HTML + Markdown + PNGs) and record plots, on a real federated run of PTB-XL records."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from matplotlib.image import imread
from typer.testing import CliRunner

from tests.report.conftest import RealRun

runner = CliRunner()

# Appended to a copy of the page: after load, lists every image and whether it decoded.
CHECK_SCRIPT = """<script>
addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "lh-check";
  out.textContent = JSON.stringify([...document.images].map(
    (i) => ({src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0, width: i.naturalWidth})));
  document.body.appendChild(out);
});
</script>"""


def headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium headless, isolated (own profile, no network services, no sandbox as root in CI)."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


def make_report(run: RealRun, out: Path) -> str:
    from server.cli import app

    done = runner.invoke(
        app, ["runs", "report", run.run_id, "--out", str(out), "--run-dir", str(run.run_dir), "--bootstrap", "200"]
    )
    assert done.exit_code == 0, done.output
    return done.output


def test_report_of_a_real_run_renders_in_chromium(chromium: str, real_run: RealRun, tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "report"

    # Execute
    printed = make_report(real_run, out)
    page = (out / "report.html").read_text()
    check = out / "check.html"
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "\n</body>"))
    dom = headless(chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", check.as_uri())
    shot = tmp_path / "shot.png"
    headless(
        chromium,
        tmp_path / "profile",
        "--window-size=1200,3000",
        f"--screenshot={shot}",
        (out / "report.html").as_uri(),
    )

    # Assert: self-contained, every figure has alt text and exists, Markdown points at the same files
    assert "wrote" in printed and "report.html" in printed.replace("\n", "")  # rich wraps long paths
    assert "<script" not in page and "<link" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    images = re.findall(r'<img src="([^"]+)" alt="([^"]*)">', page)
    assert {Path(src).name for src, _ in images} == {
        "global_metrics.png",
        "losses.png",
        "participation.png",
        "calibration.png",
    }  # no epsilon in this run: no privacy plot
    assert all(alt.strip() and (out / src).is_file() and not Path(src).is_absolute() for src, alt in images)
    markdown = (out / "report.md").read_text()
    assert all(f"]({src})" in markdown for src, _ in images)
    # the config, partition, per-round and per-class content
    for text in (
        "superdiagnostic",
        "iid 0",
        "iid 1",
        "Per class, on the server",
        "F1 95% interval",
        "threshold",
        "Privacy",
        "no differential privacy and no secure aggregation",
    ):
        assert text in page
    per_class = page.split("Per class, on the server")[1].split("</table>")[0]
    assert all(f"<td>{c}</td>" in per_class for c in ("NORM", "MI", "STTC", "CD", "HYP"))
    # Chromium rendered the page and decoded every image
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="lh-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the check script did not run: {dom.stdout[-1000:]} {dom.stderr[-1000:]}"
    loaded = json.loads(html.unescape(found.group(1)))
    assert len(loaded) == len(images) and all(i["loaded"] and i["width"] > 300 for i in loaded), loaded
    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels[..., :3].std() > 0.05 and (pixels[..., :3] < 0.5).mean() > 0.005  # text and plots, not blank


def test_report_draws_privacy_spent_and_hides_deployment_partitions(real_run: RealRun, tmp_path: Path) -> None:
    from liteheart_core.storage import Registry
    from server.report import NO_PARTITION, build_report

    # Prepare: the same run as a deployment with differential privacy would record it
    with Registry(Registry.default_url(real_run.run_dir)) as registry:
        shown = copy.deepcopy(registry.export_run(real_run.run_id))
    shown["run"]["config"]["partition_table"] = None
    shown["run"]["config"]["fed"].update({"dp": "server", "dp-noise-multiplier": 1.1, "dp-clip-norm": 2.0})
    for i, r in enumerate(shown["rounds"], 1):
        r["train_metrics"]["epsilon"] = 0.8 * i

    # Execute
    made = build_report(shown, real_run.run_dir, tmp_path / "dp", n_bootstrap=20)

    # Assert
    page = made["html"].read_text()
    assert (tmp_path / "dp" / "figures" / "privacy.png").is_file()
    assert re.search(r'<img src="figures/privacy.png" alt="[^"]*epsilon[^"]*1.6', page)
    assert NO_PARTITION.capitalize() in page and "iid 0" not in page
    privacy = page.split("<h2>Privacy</h2>")[1]
    assert "dp-noise-multiplier" in privacy and "<td>differential privacy</td><td>on</td>" in privacy
    assert "epsilon spent after the last round" in privacy
    assert made["warnings"] == []


def test_privacy_is_none_unless_a_setting_is_on() -> None:
    from server.artifacts import privacy_summary

    rounds = [{"number": 1, "train_metrics": {"epsilon": 0.5}, "central_metrics": {}}]

    plain = privacy_summary({"fed": {"clients": 4, "proximal-mu": 0.0}}, [])
    off = privacy_summary({"fed": {"dp-noise-multiplier": 0.0, "secure-aggregation": "off"}}, [])
    on = privacy_summary({"fed": {"dp-noise-multiplier": 1.1}}, rounds)

    assert (plain["differential_privacy"], plain["secure_aggregation"], plain["settings"]) == ("none", "none", {})
    assert off["differential_privacy"] == "none" and off["secure_aggregation"] == "none" and len(off["settings"]) == 2
    assert on["differential_privacy"] == "on" and on["epsilon_spent"] == 0.5
    assert "without secure aggregation" in on["statement"]
    # a current run config says it outright: defaults such as secagg-clipping-range mean nothing while off
    from liteheart_core.config import FedConfig

    default = privacy_summary({"fed": FedConfig().to_dict()}, [])
    secagg = privacy_summary({"fed": FedConfig(secagg=True, clients=3).to_dict()}, [])
    assert (default["differential_privacy"], default["secure_aggregation"], default["settings"]) == ("none", "none", {})
    assert secagg["secure_aggregation"] == "on" and secagg["differential_privacy"] == "none"
    assert "secagg-clipping-range" in secagg["settings"] and not any(k.startswith("dp") for k in secagg["settings"])


def test_report_without_the_runs_data_says_what_is_missing(real_run: RealRun, tmp_path: Path) -> None:
    from liteheart_core.storage import Registry
    from server.report import build_report

    with Registry(Registry.default_url(real_run.run_dir)) as registry:
        shown = copy.deepcopy(registry.export_run(real_run.run_id))
    shown["run"]["config"]["fed"]["data"] = str(tmp_path / "elsewhere")

    made = build_report(shown, real_run.run_dir, tmp_path / "nodata")

    assert made["scores"] is None and not (tmp_path / "nodata" / "figures" / "calibration.png").exists()
    assert any("not on this machine" in w for w in made["warnings"])
    assert "not on this machine" in made["markdown"].read_text()


def test_report_errors_clearly_on_unknown_run_and_run_without_checkpoints(tmp_path: Path) -> None:
    from liteheart_core.storage import Registry
    from server.cli import app

    with Registry(Registry.default_url(tmp_path)) as registry:
        empty = registry.create_run({"fed": {"data": "synth"}, "partition_table": None}, "f" * 64, run_id="empty1")

    unknown = runner.invoke(app, ["runs", "report", "nope", "--out", str(tmp_path / "a"), "--run-dir", str(tmp_path)])
    bare = runner.invoke(app, ["runs", "report", empty, "--out", str(tmp_path / "b"), "--run-dir", str(tmp_path)])
    no_registry = runner.invoke(
        app, ["runs", "report", empty, "--out", str(tmp_path / "c"), "--run-dir", str(tmp_path / "none")]
    )

    assert unknown.exit_code == 2 and "no run 'nope'" in unknown.output and "empty1" in unknown.output
    assert bare.exit_code == 2 and "run empty1 has no checkpoint" in bare.output
    assert no_registry.exit_code == 2 and "no registry" in no_registry.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert all(r.exception is None or isinstance(r.exception, SystemExit) for r in (unknown, bare, no_registry))


def _record(run: RealRun, fold: int = 9) -> tuple[Path, int]:
    """A raw record of ``fold`` (path without extension) and its row in the prepared data."""
    index = run.data.index
    row = int(index.index[(index["fold"] == fold).to_numpy()][0])
    record = index.loc[row, "record"]
    return next(run.raw.glob(f"records100/*/{int(record):05d}_lr.hea")).with_suffix(""), row


def test_plot_record_draws_a_real_record_as_the_model_sees_it(real_run: RealRun, tmp_path: Path) -> None:
    from simulations.cli import app
    from simulations.plot_record import analyse

    # Prepare
    record, row = _record(real_run)
    model = real_run.run_dir / real_run.run_id / "global_student.pt"
    png = tmp_path / "plots" / "record.png"

    # Execute
    done = runner.invoke(app, ["plot-record", str(record) + ".hea", "--model", str(model), "--out", str(png)])
    result = analyse(record, model)

    # Assert: the window and regions are exactly what training prepared for this record
    assert done.exit_code == 0, done.output
    assert "beats" in done.output
    np.testing.assert_array_equal(result["prepared"].window, real_run.data.signals[row])
    np.testing.assert_array_equal(result["regions"], real_run.data.regions[row])
    assert set(np.unique(result["regions"])) >= {0, 1, 2, 3}
    assert result["probs"].shape == (5,) and np.all((result["probs"] >= 0) & (result["probs"] <= 1))
    pixels = imread(png)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1200 and pixels[..., :3].std() > 0.05


def test_plot_record_errors_clearly_on_truncated_record_and_bad_checkpoint(real_run: RealRun, tmp_path: Path) -> None:
    from simulations.cli import app

    # Prepare: a header with half of its signal file, and a "checkpoint" that is a header
    record, _ = _record(real_run)
    shutil.copy(record.with_suffix(".hea"), tmp_path / record.with_suffix(".hea").name)
    data = record.with_suffix(".dat").read_bytes()
    (tmp_path / record.with_suffix(".dat").name).write_bytes(data[: len(data) // 2])
    model = real_run.run_dir / real_run.run_id / "global_student.pt"

    # Execute
    truncated = runner.invoke(
        app, ["plot-record", str(tmp_path / record.name), "--model", str(model), "--out", str(tmp_path / "t.png")]
    )
    bad_model = runner.invoke(
        app, ["plot-record", str(record), "--model", str(record.with_suffix(".hea")), "--out", str(tmp_path / "m.png")]
    )
    missing = runner.invoke(app, ["plot-record", str(tmp_path / "nothing"), "--model", str(model)])

    # Assert
    assert truncated.exit_code == 2 and f"record {record.name}" in truncated.output
    assert "truncated" in truncated.output
    assert bad_model.exit_code == 2 and "not a LiteHeart checkpoint" in bad_model.output
    assert missing.exit_code == 2 and "header file" in missing.output and "missing" in missing.output
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "m.png").exists()
    assert all("Traceback" not in r.output for r in (truncated, bad_model, missing))
