"""SecAgg+ figures: how close what the strategy receives is to the true mean, and how far from any one update.

``python -m simulations.secagg_figures`` runs a SecAgg+ federation (3 clients, 2 rounds by default, the
embedded synthetic data; the real server and the legacy SecAgg+ ClientApp over the in-process grid of
``simulations/local_grid.py``, which serialises every message as the SuperLink would — no Ray, so it
also runs on a loaded machine) with two probes that do not touch the protocol: a
client mod placed inside ``secaggplus_mod``, which saves each client's true update before it is
masked, and a spy on the server's ``aggregate_fit`` and Grid, which keeps what the server gets. It
writes, per round, the largest coordinate distance between the aggregate and the example-weighted
mean of the true updates, the quantisation bound that distance must stay under, and the aggregate's
distance to the nearest single client's update (``results/secagg.md`` and ``.json``).
``tests/test_secagg.py`` runs the same measurement and asserts on it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast
from unittest import mock

import numpy as np
import typer

if TYPE_CHECKING:
    from flwr.serverapp import Grid

STAGES = 4  # SecAgg+ exchanges per round: setup, share keys, collect masked vectors, unmask


def record_updates_mod(folder: str):
    """A client mod for INSIDE secaggplus_mod: it sees each client's true update before it is masked."""

    def mod(msg, context, call_next):
        from flwr.common import parameters_to_ndarrays
        from flwr.compat.common import recorddict_compat as compat

        reply = call_next(msg, context)
        if msg.metadata.message_type == "train" and reply.has_content():
            fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
            name = f"r{int(fitins.config['server-round'])}-p{int(context.node_config['partition-id'])}.npz"
            np.savez(Path(folder) / name, *parameters_to_ndarrays(fitres.parameters), n=fitres.num_examples)
        return reply

    return mod


class GridSpy:
    """The server's Grid, keeping every train reply that reaches the server."""

    def __init__(self, grid: Any, replies: list) -> None:
        self._grid, self._replies = grid, replies

    def send_and_receive(self, messages, *args, **kwargs):
        got = list(self._grid.send_and_receive(messages, *args, **kwargs))
        self._replies += [r for r in got if r.metadata.message_type == "train"]
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


@contextlib.contextmanager
def server_spies(received: list, replies: list) -> Iterator[None]:
    """Record each ``aggregate_fit`` call's FitRes arrays and each train reply; restored afterwards."""
    from flwr.common import parameters_to_ndarrays

    from server import secagg

    aggregate_fit, start = secagg.LegacySecAggFedAvg.aggregate_fit, secagg.SecAggFedAvg.start

    def spy_aggregate_fit(self, server_round, results, failures):
        received.append([parameters_to_ndarrays(res.parameters) for _, res in results])
        return aggregate_fit(self, server_round, results, failures)

    def spy_start(self, grid, **kw):
        return start(self, cast("Grid", GridSpy(grid, replies)), **kw)  # GridSpy forwards what a Grid does

    # the two methods spied on for the length of one figure's run
    with (
        mock.patch.object(secagg.LegacySecAggFedAvg, "aggregate_fit", spy_aggregate_fit),
        mock.patch.object(secagg.SecAggFedAvg, "start", spy_start),
    ):
        yield


def measure(cfg: Any, opts: Any, workdir: Path) -> dict:
    """Run ``cfg`` (secagg on) with the probes; returns the run's result and the figures of each round."""
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    from client.secagg_app import client_fn, teacher_query_mod
    from server.orchestrate import run_federation
    from simulations.local_grid import LocalGrid, server_identity

    updates_dir = workdir / "updates"
    updates_dir.mkdir(parents=True, exist_ok=True)
    client_app = ClientApp(
        client_fn=client_fn, mods=[teacher_query_mod, secaggplus_mod, record_updates_mod(str(updates_dir))]
    )
    received: list[list[list[np.ndarray]]] = []
    replies: list = []
    grid = LocalGrid(client_app, list(range(301, 301 + cfg.clients)), workdir / "nodes")
    with server_identity(), server_spies(received, replies):
        run_federation(grid, cfg, opts)
    result = dict(opts.result)
    step = 2 * cfg.secagg_clipping_range / cfg.secagg_quantization_range  # one quantisation level
    rounds = []
    for number, per_round in enumerate(received, start=1):
        got = np.concatenate([a.ravel() for a in per_round[0]])
        updates, weights = [], []
        for saved_path in sorted(updates_dir.glob(f"r{number}-p*.npz")):
            saved = np.load(saved_path)
            updates.append(np.concatenate([saved[f"arr_{i}"].ravel() for i in range(len(per_round[0]))]))
            weights.append(float(saved["n"]))
        mean = np.average(np.stack(updates), axis=0, weights=weights)
        # each client's weighted weights are rounded to one level (and its weight to 1/quantization-range):
        # the mean may be off by 3 levels over the sum of the weights' fractions of max-weight
        bound = 3 * step / (sum(weights) / cfg.secagg_max_weight) + 1e-6 * float(np.abs(mean).max())
        to_mean = float(np.abs(got - mean).max())
        rounds.append(
            {
                "round": number,
                "clients": len(updates),
                "fitres_received": len(per_round),
                "fitres_identical": all(
                    all(np.array_equal(a, b) for a, b in zip(per_round[0], other)) for other in per_round[1:]
                ),
                "max_abs_to_mean": to_mean,
                "bound": bound,
                "min_max_abs_to_single": min(float(np.abs(got - u).max()) for u in updates),
                "min_l2_to_single_over_l2_to_mean": min(
                    float(np.linalg.norm(got - u) / np.linalg.norm(got - mean)) for u in updates
                ),
            }
        )
    arrays_in_replies = sum(sum(len(a) for a in r.content.array_records.values()) for r in replies if r.has_content())
    return {
        "result": result,
        "rounds": rounds,
        "train_replies": len(replies),
        "arrays_in_replies": arrays_in_replies,
        "stages": STAGES,
    }


def write_report(figures: dict, cfg: Any, out: Path) -> tuple[Path, Path]:
    """``out``.md and ``out``.json: the settings and each round's figures."""
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in cfg.to_dict().items() if k.startswith("secagg") or k in ("clients", "rounds")}
    doc = {
        "command": "python -m simulations.secagg_figures " + " ".join(sys.argv[1:]),
        "settings": settings,
        "rounds": figures["rounds"],
        "train_replies": figures["train_replies"],
        "arrays_in_train_replies": figures["arrays_in_replies"],
    }
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    lines = [
        "# SecAgg+: what the server's strategy receives",
        "",
        f"Written by `{doc['command'].strip()}`. {settings['clients']} clients, {settings['rounds']} rounds, "
        f"clipping range {settings['secagg-clipping-range']}, quantisation range "
        f"{settings['secagg-quantization-range']}, max weight {settings['secagg-max-weight']}.",
        "",
        "| round | FitRes received (all the same aggregate) | max abs distance to the true weighted mean | "
        "quantisation bound | distance to the nearest single update (max abs) | nearest single update / "
        "mean (L2 distance ratio) |",
        "|---|---|---|---|---|---|",
    ]
    for r in figures["rounds"]:
        lines.append(
            f"| {r['round']} | {r['fitres_received']} ({'yes' if r['fitres_identical'] else 'NO'}) | "
            f"{r['max_abs_to_mean']:.2e} | {r['bound']:.2e} | {r['min_max_abs_to_single']:.2e} | "
            f"{r['min_l2_to_single_over_l2_to_mean']:.0f} |"
        )
    lines += [
        "",
        f"Train replies that reached the server: {figures['train_replies']} "
        f"({figures['stages']} SecAgg+ stages x clients x rounds); arrays in them: "
        f"{figures['arrays_in_replies']} (the masked vectors travel as bytes).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return out.with_suffix(".md"), out.with_suffix(".json")


def main(
    clients: Annotated[int, typer.Option(help="Simulated clients (>= 3 for SecAgg+ shares).")] = 3,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 2,
    records: Annotated[int, typer.Option(help="Synthetic records of the embedded set.")] = 200,
    out: Annotated[Path, typer.Option(help="Report path without suffix (.md and .json are written).")] = Path(
        "results/secagg"
    ),
) -> None:
    """Measure SecAgg+ on a small simulated federation and write the figures."""
    import os

    from liteheart_core.config import FedConfig
    from server.orchestrate import ServerOptions

    work = Path(tempfile.mkdtemp(prefix="lh-secagg-"))
    os.environ.setdefault("LITEHEART_CACHE", str(work / "cache"))
    cfg = FedConfig(
        data="synth",
        synth_records=records,
        clients=clients,
        min_clients=clients,
        rounds=rounds,
        local_epochs=1,
        teacher_epochs=1,
        device="cpu",
        secagg=True,
        secagg_max_weight=100,
        secagg_clipping_range=4.0,
    )
    figures = measure(cfg, ServerOptions(run_dir=work / "runs"), work)
    md, js = write_report(figures, cfg, out)
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    typer.run(main)
