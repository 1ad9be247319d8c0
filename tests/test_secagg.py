"""SecAgg+ runs: the server-side strategy receives the unmasked mean of the updates, never one client's update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from client.secagg_app import check_before_masking
from liteheart_core.config import FedConfig


def test_strategy_sees_only_the_secure_aggregate(
    tmp_path: Path, synth_data, tiny_teacher: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The measurement of ``python -m simulations.secagg_figures`` (results/secagg.md), asserted on."""
    from liteheart_core.storage import Registry
    from server.orchestrate import ServerOptions
    from simulations.secagg_figures import STAGES, measure

    # Prepare: 3 clients, 2 rounds over the in-process grid; a client mod inside secaggplus_mod and spies on
    # the server record both sides
    monkeypatch.setenv("LITEHEART_CACHE", str(tmp_path / "cache"))
    cfg = FedConfig(
        data=str(synth_data.root),
        teacher=str(tiny_teacher),
        clients=3,
        min_clients=3,
        rounds=2,
        local_epochs=1,
        device="cpu",
        secagg=True,
        secagg_max_weight=100,
        secagg_clipping_range=4.0,
    )

    # Execute
    figures = measure(cfg, ServerOptions(run_dir=tmp_path / "runs"), tmp_path)

    # Assert: the run is recorded like any other
    with Registry(Registry.default_url(tmp_path / "runs")) as registry:
        shown = registry.show_run(figures["result"]["run_id"])
    assert shown["run"]["status"] == "completed"
    assert [r["number"] for r in shown["rounds"]] == [1, 2]
    assert all(len(r["participants"]) == 3 and r["train_metrics"]["aggregated"] == 1.0 for r in shown["rounds"])
    assert all(Path(c["path"]).is_file() for c in shown["checkpoints"]) and len(shown["checkpoints"]) == 2
    assert 1 <= figures["result"]["teacher_transfers"] <= 3
    # no train reply carried arrays: the masked update travels as bytes in a ConfigRecord
    assert figures["train_replies"] == 2 * STAGES * 3  # 4 SecAgg+ stages x 3 clients x 2 rounds
    assert figures["arrays_in_replies"] == 0
    # one aggregate_fit per round, every FitRes it got holds the same (aggregated) arrays: the weighted mean of
    # the clients' true updates within the quantisation bound, and none of the updates themselves
    assert [r["round"] for r in figures["rounds"]] == [1, 2]
    for r in figures["rounds"]:
        assert r["clients"] == r["fitres_received"] == 3 and r["fitres_identical"]
        assert r["max_abs_to_mean"] <= r["bound"]
        assert r["min_max_abs_to_single"] > 20 * r["bound"]
        assert r["min_l2_to_single_over_l2_to_mean"] > 20


def test_secagg_config_refuses_what_cannot_combine() -> None:
    ok = FedConfig(secagg=True, clients=4, secagg_shares=3, secagg_threshold=2)
    dp = {"dp_noise_multiplier": 1.0, "dp_clip_norm": 1.0}

    assert (ok.secagg_shares, ok.secagg_threshold) == (3, 2)
    for bad, why in [
        ({"strategy": "krum", "clients": 5}, "krum must see every client's update"),
        ({"strategy": "fedmedian"}, "fedmedian must see every client's update"),
        ({"wearables": 1}, "cannot combine with wearables"),
        ({"dp": "server", **dp}, "cannot combine with dp = server"),
        ({"dp": "client", **dp}, "dp = client is not wired"),
        ({"clients": 1, "min_clients": 1}, "at least 2 clients per round"),
        ({"secagg_shares": 2}, "secagg-shares 2 must be"),
        ({"secagg_shares": 3, "secagg_threshold": 3}, "must be below secagg-shares"),
        ({"secagg_threshold": 1.5}, "secagg-threshold 1.5 must be"),
        ({"secagg_clipping_range": 0.0}, "secagg-clipping-range must be"),
        ({"secagg_quantization_range": 2**31}, "would overflow"),
        ({"secagg_max_weight": 0}, "secagg-max-weight must be"),
    ]:
        with pytest.raises(ValueError, match=why):
            FedConfig(**{"secagg": True, "clients": 4, **bad})
    assert FedConfig(strategy="krum", clients=5).secagg is False  # nothing is checked without secagg
    with pytest.raises(ValueError, match="secagg = 'maybe'"):
        FedConfig.from_dict({"secagg": "maybe"})


def test_cli_refuses_secagg_with_a_robust_strategy() -> None:
    from simulations.cli import app

    done = CliRunner().invoke(app, ["run", "--secagg", "--strategy", "krum", "--clients", "5"])

    assert done.exit_code != 0
    assert "krum must see every client's update" in done.output


def test_client_refuses_updates_secagg_would_corrupt() -> None:
    fine = [np.full(4, 0.5, dtype=np.float32)]

    check_before_masking(fine, num_examples=50, max_weight=100, clipping_range=1.0)
    with pytest.raises(ValueError, match="exceed secagg-max-weight 100"):
        check_before_masking(fine, 150, 100, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        check_before_masking([np.array([np.nan], dtype=np.float32)], 50, 100, 1.0)
    with pytest.raises(ValueError, match="beyond secagg-clipping-range"):
        check_before_masking([np.full(4, 3.0, dtype=np.float32)], 100, 100, 1.0)
