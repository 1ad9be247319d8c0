"""SecAgg+ runs: the server-side strategy receives the unmasked mean of the updates, never one client's update."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from client.secagg_app import check_before_masking
from liteheart_core.config import FedConfig


def record_updates_mod(folder: str):
    """A client mod placed INSIDE secaggplus_mod: it sees each client's true update before it is masked."""
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        if msg.metadata.message_type == "train" and reply.has_content():
            fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
            name = f"r{int(fitins.config['server-round'])}-p{int(context.node_config['partition-id'])}.npz"
            np.savez(Path(folder) / name, *parameters_to_ndarrays(fitres.parameters), n=fitres.num_examples)
        return reply

    return mod


class GridSpy:
    """The server's Grid, recording every train reply that reaches the server."""

    def __init__(self, grid, replies: list) -> None:
        self._grid, self._replies = grid, replies

    def send_and_receive(self, messages, *args, **kwargs):
        got = list(self._grid.send_and_receive(messages, *args, **kwargs))
        self._replies += [r for r in got if r.metadata.message_type == "train"]
        return got

    def __getattr__(self, name):
        return getattr(self._grid, name)


def test_strategy_sees_only_the_secure_aggregate(tmp_path: Path, synth_data, tiny_teacher: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import parameters_to_ndarrays
    from ray import cloudpickle

    from client.secagg_app import client_fn, teacher_query_mod
    from liteheart_core.storage import Registry
    from server import secagg
    from server.orchestrate import ServerOptions
    from simulations.run_cmd import simulate

    # Prepare: 3 clients, 2 rounds; the client mod and the spies record both sides
    monkeypatch.setenv("LITEHEART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the Ray workers cannot import tests/
    (tmp_path / "updates").mkdir()
    client_app = ClientApp(client_fn=client_fn,
                           mods=[teacher_query_mod, secaggplus_mod, record_updates_mod(str(tmp_path / "updates"))])
    received: list[list[list[np.ndarray]]] = []  # per aggregate_fit call: the arrays of each FitRes
    replies: list = []
    aggregate_fit, start = secagg.LegacySecAggFedAvg.aggregate_fit, secagg.SecAggFedAvg.start

    def spy_aggregate_fit(self, server_round, results, failures):
        received.append([parameters_to_ndarrays(res.parameters) for _, res in results])
        return aggregate_fit(self, server_round, results, failures)

    monkeypatch.setattr(secagg.LegacySecAggFedAvg, "aggregate_fit", spy_aggregate_fit)
    monkeypatch.setattr(secagg.SecAggFedAvg, "start", lambda self, grid, **kw: start(self, GridSpy(grid, replies), **kw))
    cfg = FedConfig(data=str(synth_data.root), teacher=str(tiny_teacher), clients=3, min_clients=3, rounds=2,
                    local_epochs=1, device="cpu", secagg=True, secagg_max_weight=100, secagg_clipping_range=4.0)
    opts = ServerOptions(run_dir=tmp_path / "runs")

    # Execute
    try:
        result = simulate(cfg, opts, client_app=client_app)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])

    # Assert: the run is recorded like any other
    with Registry(Registry.default_url(tmp_path / "runs")) as registry:
        shown = registry.show_run(result["run_id"])
    assert shown["run"]["status"] == "completed"
    assert [r["number"] for r in shown["rounds"]] == [1, 2]
    assert all(len(r["participants"]) == 3 and r["train_metrics"]["aggregated"] == 1.0 for r in shown["rounds"])
    assert all(Path(c["path"]).is_file() for c in shown["checkpoints"]) and len(shown["checkpoints"]) == 2
    assert 1 <= result["teacher_transfers"] <= 3
    # no train reply carried arrays: the masked update travels as bytes in a ConfigRecord
    assert len(replies) == 2 * 4 * 3  # 4 SecAgg+ stages x 3 clients x 2 rounds
    assert all(sum(len(a) for a in r.content.array_records.values()) == 0 for r in replies if r.has_content())
    # one aggregate_fit per round, and every FitRes it got holds the same (aggregated) arrays
    assert len(received) == 2
    for per_round in received:
        assert len(per_round) == 3
        assert all(all(np.array_equal(a, b) for a, b in zip(per_round[0], other)) for other in per_round[1:])
    step = 2 * cfg.secagg_clipping_range / cfg.secagg_quantization_range  # one quantisation level
    for number, per_round in enumerate(received, start=1):
        got = np.concatenate([a.ravel() for a in per_round[0]])
        updates, weights = [], []
        for pid in range(3):
            saved = np.load(tmp_path / "updates" / f"r{number}-p{pid}.npz")
            updates.append(np.concatenate([saved[f"arr_{i}"].ravel() for i in range(len(per_round[0]))]))
            weights.append(float(saved["n"]))
        mean = np.average(np.stack(updates), axis=0, weights=weights)
        # each client's weighted weights are rounded to one level (and its weight to 1/quantization-range):
        # the mean may be off by 3 levels over the sum of the weights' fractions of max-weight
        tolerance = 3 * step / (sum(weights) / cfg.secagg_max_weight) + 1e-6 * np.abs(mean).max()
        assert np.abs(got - mean).max() <= tolerance
        for update in updates:  # what the strategy got is none of the clients' updates
            assert np.abs(got - update).max() > 20 * tolerance
            assert np.linalg.norm(got - update) > 20 * np.linalg.norm(got - mean)


def test_secagg_config_refuses_what_cannot_combine() -> None:
    ok = FedConfig(secagg=True, clients=4, secagg_shares=3, secagg_threshold=2)
    dp = {"dp_noise_multiplier": 1.0, "dp_clip_norm": 1.0}

    assert (ok.secagg_shares, ok.secagg_threshold) == (3, 2)
    for bad, why in [({"strategy": "krum", "clients": 5}, "krum must see every client's update"),
                     ({"strategy": "fedmedian"}, "fedmedian must see every client's update"),
                     ({"wearables": 1}, "cannot combine with wearables"),
                     ({"dp": "server", **dp}, "cannot combine with dp = server"),
                     ({"dp": "client", **dp}, "dp = client is not wired"),
                     ({"clients": 1, "min_clients": 1}, "at least 2 clients per round"),
                     ({"secagg_shares": 2}, "secagg-shares 2 must be"),
                     ({"secagg_shares": 3, "secagg_threshold": 3}, "must be below secagg-shares"),
                     ({"secagg_threshold": 1.5}, "secagg-threshold 1.5 must be"),
                     ({"secagg_clipping_range": 0.0}, "secagg-clipping-range must be"),
                     ({"secagg_quantization_range": 2 ** 31}, "would overflow"),
                     ({"secagg_max_weight": 0}, "secagg-max-weight must be")]:
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
