"""SecAgg+ for FedAvg runs: Flower's legacy ``SecAggPlusWorkflow`` driven from a LiteHeart strategy.

Why the legacy stack: in Flower 1.42 SecAgg+ exists only as ``SecAggPlusWorkflow``
(server) plus ``secaggplus_mod`` (client). They speak the legacy FitIns/FitRes
messages and call a legacy ``Strategy`` (``configure_fit``/``aggregate_fit``/
``evaluate``) inside ``DefaultWorkflow`` with a ``LegacyContext``. ``SecAggFedAvg``
is a LiteHeart strategy whose ``start`` runs that workflow instead of the Message
API's rounds, so ``server.orchestrate`` drives a SecAgg+ run like any other: the
same teacher, registry rows, global evaluation, checkpoints and resume.

What the server sees: each client scales its weights by ``num-examples /
secagg-max-weight``, clips them to +-``secagg-clipping-range``, quantises them to
``secagg-quantization-range`` levels, adds pairwise and private masks and sends the
masked integers. The workflow sums them, removes the masks with the key shares of
the surviving nodes and hands ``aggregate_fit`` the example-weighted mean: every
FitRes it receives carries that same mean, plus the client's ``num-examples`` and
scalar metrics, which travel in the clear.

The teacher is shipped as in the main path (``LiteHeartMixin.ship_teacher``: a
``query`` message, by content hash, to each sampled node that lacks it) from
``configure_fit``, before the SecAgg+ stages of the round begin; the legacy client
answers those queries through a mod (``client/secagg_app.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from liteheart_core.config import FedConfig
from liteheart_core.methods import method_spec
from server.strategy import LiteHeartFedAvg, check_update

log = logging.getLogger("liteheart.server")

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def _count_or_fraction(value: float) -> int | float:
    # Flower reads an int as a number of nodes and a float as a fraction
    return int(value) if value > 1 else float(value)


class SecAggFedAvg(LiteHeartFedAvg):
    """LiteHeart FedAvg whose rounds run Flower's SecAgg+ workflow (legacy stack) on the same Grid.

    The strategy of every ``secagg = true`` run, ``fedprox`` included: its proximal
    term lives on the clients (``proximal-mu`` in the round config), the server only averages.
    """

    def __init__(self, cfg: FedConfig) -> None:
        super().__init__(
            fraction_train=cfg.fraction_train,
            fraction_evaluate=0.0,
            min_train_nodes=cfg.min_clients,
            min_available_nodes=cfg.min_clients,
        )
        self.secagg = cfg

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> Result:
        """Run ``num_rounds`` SecAgg+ rounds; ``evaluate_fn`` scores (and records) the global model each round.

        The rounds are in the registry (through ``evaluate_fn``); the Result Flower's strategies return is empty.
        """
        cfg = self.secagg
        # the round config carries secagg-max-weight and secagg-clipping-range: the client checks its own
        # update against them before masking it (client/secagg_app.py)
        fit_config = dict(train_config or {})
        legacy = LegacySecAggFedAvg(self, grid, initial_arrays, fit_config, evaluate_fn)
        context = LegacyContext(
            Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
            config=ServerConfig(num_rounds=num_rounds, round_timeout=timeout),
            strategy=legacy,
        )
        workflow = SecAggPlusWorkflow(
            num_shares=_count_or_fraction(cfg.secagg_shares),
            reconstruction_threshold=_count_or_fraction(cfg.secagg_threshold),
            max_weight=float(cfg.secagg_max_weight),
            clipping_range=cfg.secagg_clipping_range,
            quantization_range=cfg.secagg_quantization_range,
            timeout=timeout,
        )
        DefaultWorkflow(fit_workflow=workflow)(grid, context)
        return Result()


class LegacySecAggFedAvg(LegacyFedAvg):
    """The legacy strategy the SecAgg+ workflow calls; it reports back to its ``SecAggFedAvg`` owner.

    ``aggregate_fit`` receives one FitRes per surviving client, every one holding the
    same unmasked weighted mean (never a client's own weights): that mean is checked
    like any aggregate and becomes the global model.
    """

    def __init__(
        self,
        owner: SecAggFedAvg,
        grid: Grid,
        initial_arrays: ArrayRecord,
        fit_config: dict,
        evaluate_fn: EvaluateFn | None,
    ) -> None:
        self.owner = owner
        self.grid = grid
        self.keys = list(initial_arrays.keys())  # the state_dict order the clients use for their arrays
        self.fit_config = fit_config
        self.score = evaluate_fn  # not `evaluate_fn`: the legacy FedAvg owns that name (and sets it to None)
        ndarrays = [initial_arrays[k].numpy() for k in self.keys]
        super().__init__(
            fraction_fit=owner.fraction_train,
            fraction_evaluate=0.0,
            min_fit_clients=owner.min_train_nodes,
            min_evaluate_clients=0,
            min_available_clients=owner.min_available_nodes,
            initial_parameters=ndarrays_to_parameters(ndarrays),
            on_fit_config_fn=self.round_config,
        )

    def round_config(self, server_round: int) -> dict:
        return {**self.fit_config, "server-round": server_round + self.owner.round_offset}

    def as_arrays(self, parameters: Parameters) -> ArrayRecord:
        ndarrays = parameters_to_ndarrays(parameters)
        if len(ndarrays) != len(self.keys):
            raise ValueError(f"SecAgg+ aggregate holds {len(ndarrays)} arrays, the student has {len(self.keys)}")
        return ArrayRecord({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in zip(self.keys, ndarrays)})

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        owner = self.owner
        instructions = super().configure_fit(server_round, parameters, client_manager)
        owner.sampled = [proxy.node_id for proxy, _ in instructions]
        owner.reference = {k: v.numpy() for k, v in self.as_arrays(parameters).items()}
        # what the round records if the workflow halts before aggregate_fit (too few nodes for the threshold)
        owner.reports = [
            {
                "node_id": str(n),
                "status": "failed",
                "num_examples": 0,
                "metrics": {},
                "reason": "SecAgg+ halted before aggregation: fewer nodes answered a stage than secagg-threshold needs",
            }
            for n in owner.sampled
        ]
        owner.aggregated = False
        if instructions and method_spec(str(self.fit_config["method"])).needs_teacher:
            owner.ship_teacher(self.grid, owner.sampled)
        return instructions

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list
    ) -> tuple[Parameters | None, dict]:
        owner = self.owner
        number = server_round + owner.round_offset
        reasons = (
            "; ".join(sorted({str(getattr(f.args[0], "reason", f)) if f.args else str(f) for f in failures}))[:500]
            or "no reply"
        )
        done = {proxy.node_id for proxy, _ in results}
        reports = []
        for proxy, res in results:
            metrics = {k: float(v) for k, v in res.metrics.items()}
            reports.append(
                {
                    "node_id": str(proxy.node_id),
                    "status": "ok",
                    "num_examples": int(res.num_examples),
                    "metrics": metrics,
                    "reason": None,
                }
            )
        # SecAgg+ reports errors without the node they came from: each missing node gets all of them
        reports += [
            {
                "node_id": str(n),
                "status": "failed",
                "num_examples": 0,
                "metrics": {},
                "reason": f"dropped out of SecAgg+ (its masks were removed with its neighbours' shares); "
                f"errors this round: {reasons}",
            }
            for n in owner.sampled
            if n not in done
        ]
        owner.reports = reports
        if len(results) < owner.min_replies:
            log.warning(
                "round %s: %d clients completed SecAgg+ < min-replies %d; the global model is kept",
                number,
                len(results),
                owner.min_replies,
            )
            return None, {}
        # the server cannot check one client's update; it checks what it has: the aggregate
        # (in the student's dtypes: SecAgg+ dequantises to float64)
        arrays = owner.checked_global(number, self.as_arrays(results[0][1].parameters))
        reason = "not finite" if arrays is None else check_update(arrays, owner.reference, owner.max_update_norm)
        if arrays is None or reason:
            log.warning("round %s: the SecAgg+ aggregate is unusable (%s); the global model is kept", number, reason)
            for report in reports:
                if report["status"] == "ok":
                    report["reason"] = f"aggregate rejected: {reason}"
            owner.aggregated = False
            return None, {}
        owner.aggregated = True
        return ndarrays_to_parameters([arrays[k].numpy() for k in self.keys]), {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict] | None:
        if self.score is None:
            return None
        metrics = self.score(server_round, self.as_arrays(parameters))
        return None if metrics is None else (math.nan, dict(metrics))
