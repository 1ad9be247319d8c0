"""Differential privacy on the server: Flower's fixed-clipping wrappers around the LiteHeart strategy, and the
privacy spent per round.

``dp = server``: ``DifferentialPrivacyServerSideFixedClipping`` clips every update on the server;
``dp = client``: ``DifferentialPrivacyClientSideFixedClipping`` sends the clipping norm and each client's
``fixedclipping_mod`` clips (``client/app.py``); the server then rejects any update longer than the norm.
Either way the wrapper adds Gaussian noise to the mean of the clipped updates. Two changes to Flower's
``aggregate_train``, both for the accounting to hold:

- the mean is unweighted (every reply gets ``dp-weight`` 1): with example weights one client could
  move the mean by more than ``clip / n``, the bound the noise is calibrated to;
- a failed or rejected client does not void the round (Flower skips any round with an error): the
  LiteHeart strategy checks and reports every reply as usual, and the noise is calibrated to the number
  ``n`` of updates actually averaged (standard deviation ``noise_multiplier * clip / n``), never fewer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import (
    add_gaussian_noise_inplace,
    compute_clip_model_update,
    compute_stdv,
    get_norm,
)

from liteheart_core.config import FedConfig
from liteheart_core.privacy import DEFAULT_DELTA, ClientLevelDP
from server.strategy import LiteHeartMixin, check_update

WEIGHT_KEY = "dp-weight"


class _LiteHeartDP:
    """What both wrappers share: uniform weights, LiteHeart's reply checks, noise for the updates averaged."""

    strategy: Any  # the LiteHeart strategy wrapped (Flower's wrappers type it as a plain Strategy)
    noise_multiplier: float
    clipping_norm: float
    released: int  # rounds whose noised mean was released

    def _prepare(self, replies: list[Message]) -> None:
        for reply in replies:
            if not reply.has_error() and "metrics" in reply.content:
                reply.content.metric_records["metrics"][WEIGHT_KEY] = 1.0

    def _noised(self, server_round: int, replies: list[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:  # nothing released, nothing spent
            return None, metrics
        averaged = sum(r["status"] == "ok" for r in self.strategy.reports)
        ndarrays = arrays.to_numpy_ndarrays()
        add_gaussian_noise_inplace(ndarrays, compute_stdv(self.noise_multiplier, self.clipping_norm, averaged))
        self.released += 1
        return ArrayRecord({k: Array(np.asarray(v)) for k, v in zip(arrays.keys(), ndarrays)}), metrics


class ServerSideDP(_LiteHeartDP, DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping around a LiteHeart strategy (see the module docstring)."""

    released = 0

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        self._prepare(replies)
        current = self.current_arrays.to_numpy_ndarrays()
        reference = {k: v.numpy() for k, v in self.current_arrays.items()}
        for reply in replies:
            # a reply of the wrong shape cannot be clipped: it goes on unclipped, and the strategy rejects it
            if (
                reply.has_error()
                or "arrays" not in reply.content
                or check_update(reply.content.array_records["arrays"], reference, math.inf) is not None
            ):
                continue
            record = reply.content.array_records["arrays"]
            values = record.to_numpy_ndarrays()
            # Flower's clipping divides by the update's norm: an unchanged model (norm 0) would raise
            if get_norm([v - c for v, c in zip(values, current)]) > self.clipping_norm:
                compute_clip_model_update(param1=values, param2=current, clipping_norm=self.clipping_norm)
            reply.content["arrays"] = ArrayRecord({k: Array(np.asarray(v)) for k, v in zip(record.keys(), values)})
        return self._noised(server_round, replies)


class ClientSideDP(_LiteHeartDP, DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed clipping around a LiteHeart strategy: the clients' ``fixedclipping_mod`` clips."""

    released = 0

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        self._prepare(replies)
        return self._noised(server_round, replies)


def wrap(strategy: LiteHeartMixin, cfg: FedConfig) -> tuple[Strategy, ClientLevelDP | None]:
    """The strategy to ``start``: ``strategy`` itself, or wrapped for client-level DP (after ``setup``)."""
    flower = cast(Strategy, strategy)  # every LiteHeart strategy is a Flower strategy with the mixin
    if cfg.dp not in ("client", "server"):
        return flower, None
    sampled = cfg.replies_per_round()
    account = ClientLevelDP.resolve(
        cfg.dp_clip_norm, cfg.dp_noise_multiplier, cfg.dp_epsilon, cfg.dp_delta, sampled, cfg.clients, cfg.rounds
    )
    strategy.weighted_by_key = WEIGHT_KEY
    # a client-side-clipped update longer than the norm did not go through the clipping mod
    strategy.max_update_norm = min(strategy.max_update_norm, cfg.dp_clip_norm * (1 + 1e-4))
    cls = ServerSideDP if cfg.dp == "server" else ClientSideDP
    return cls(flower, account.noise_multiplier, cfg.dp_clip_norm, sampled), account


class RunPrivacy:
    """The privacy a run has spent after each round, for the registry's round metrics (``epsilon``, ``delta``).

    Client level: the accountant over the rounds whose noised mean was released (a resumed run counts
    every earlier round as released). DP-SGD: the largest epsilon any client reports, carried over rounds
    (a client that sits a round out has still spent what it spent before).
    """

    def __init__(self, cfg: FedConfig, wrapper: Strategy, account: ClientLevelDP | None, offset: int = 0) -> None:
        self.mode = cfg.dp
        self.delta = cfg.dp_delta or DEFAULT_DELTA
        self.wrapper = wrapper
        self.account = account
        self.offset = offset
        self.epsilon = 0.0

    def round_metrics(self, reports: list[dict]) -> dict[str, float]:
        if self.mode == "none":
            return {}
        if self.account is not None:
            released = self.wrapper.released if isinstance(self.wrapper, _LiteHeartDP) else 0
            self.epsilon = self.account.epsilon(self.offset + released)
            return {
                "epsilon": self.epsilon,
                "delta": self.delta,
                "noise-multiplier": self.account.noise_multiplier,
                "clip-norm": self.account.clip_norm,
            }
        spent = [r["metrics"]["dp-epsilon"] for r in reports if "dp-epsilon" in r.get("metrics", {})]
        self.epsilon = max([self.epsilon, *spent])
        noise = [r["metrics"]["dp-noise-multiplier"] for r in reports if "dp-noise-multiplier" in r.get("metrics", {})]
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            **({"noise-multiplier": float(min(noise))} if noise else {}),
        }
