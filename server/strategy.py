"""LiteHeart strategies: Flower's FedAvg, FedProx, FedMedian, trimmed mean and Krum, with the teacher shipped
once, every reply checked (rejected ones reported with the node and the reason) and a report per client.

Only ``configure_train`` and ``aggregate_train`` are overridden; Flower's own
``start()`` runs the rounds. ``round_offset`` keeps round numbers continuous when
a run is resumed from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg, Krum
from flwr.serverapp.strategy.multikrum import select_multikrum

from liteheart_core.config import FedConfig
from liteheart_core.methods import method_spec

log = logging.getLogger("liteheart.server")


def check_update(reply: ArrayRecord, reference: dict[str, np.ndarray], max_norm: float) -> str | None:
    """Why a client's update must be rejected (None when it is acceptable)."""
    try:
        arrays = {k: v.numpy() for k, v in reply.items()}
    except Exception as exc:  # a forged dtype or buffer: whatever numpy makes of it, the reply is unusable
        return f"arrays cannot be read ({type(exc).__name__}: {str(exc)[:80]})"
    if set(arrays) != set(reference):
        missing, extra = set(reference) - set(arrays), set(arrays) - set(reference)
        return f"wrong arrays (missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})"
    for key, ref in reference.items():
        if arrays[key].shape != ref.shape:
            return f"array {key} has shape {arrays[key].shape}, expected {ref.shape}"
        if arrays[key].dtype != ref.dtype:
            return f"array {key} has dtype {arrays[key].dtype}, expected {ref.dtype}"
        if not np.all(np.isfinite(arrays[key])):
            return f"array {key} holds NaN or infinite values"
    delta = math.sqrt(sum(float(np.sum((arrays[k].astype(np.float64) - reference[k]) ** 2)) for k in reference))
    if delta > max_norm:
        return f"update norm {delta:.3g} exceeds the limit {max_norm:.3g} (max-update-norm)"
    return None


# more 10-s windows than any site holds; a larger FedAvg weight is a lie or a bug
MAX_NUM_EXAMPLES = 10**8


def check_metrics(metrics: MetricRecord) -> str | None:
    """Why a reply's metrics are unusable: a non-scalar or non-finite value, or a bad ``num-examples``.

    ``num-examples`` is FedAvg's weight: a negative or zero one would flip or void the
    average, a huge one would let one client outweigh all others.
    """
    numbers: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"metric {key} = {repr(value)[:40]} is not a finite number"
        numbers[key] = float(value)
    if "num-examples" not in numbers:
        return "metrics lack num-examples (the aggregation weight)"
    n = numbers["num-examples"]
    if not n.is_integer() or not 1 <= n <= MAX_NUM_EXAMPLES:
        return f"num-examples {n:g} is not a whole number in [1, {MAX_NUM_EXAMPLES:.0e}]"
    return None


def check_reply(content: RecordDict, reference: dict[str, np.ndarray], max_norm: float) -> str | None:
    """Why a train reply must be rejected (None when it is acceptable).

    Flower's aggregation raises (and stops the run) on a reply with more or other records,
    so the shape of the reply is checked here, then its arrays, then its metrics.
    """
    records = sorted(f"{name} ({type(rec).__name__})" for name, rec in content.items())
    if set(content.array_records) != {"arrays"} or set(content.metric_records) != {"metrics"} or content.config_records:
        return f"reply must hold one ArrayRecord 'arrays' and one MetricRecord 'metrics', not {records[:5]}"
    return check_update(content.array_records["arrays"], reference, max_norm) or check_metrics(
        content.metric_records["metrics"]
    )


def same_metric_keys(replies: list[Message]) -> None:
    """Keep only the metric keys every reply holds: Flower's averaging raises on differing keys.

    The client reports keep each client's full metrics.
    """
    common = set.intersection(*(set(r.content.metric_records["metrics"]) for r in replies))
    for r in replies:
        metrics = r.content.metric_records["metrics"]
        if set(metrics) != common:
            r.content["metrics"] = MetricRecord({k: v for k, v in metrics.items() if k in common})


def metric(reply: Message, key: str, default: float = 0.0) -> float:
    """One number of a train reply's metrics (checked to be finite numbers by ``check_metrics`` on arrival)."""
    value = reply.content.metric_records["metrics"].get(key, default)
    if isinstance(value, list):
        raise ValueError(f"metric {key} is a list, not a number")
    return float(value)


def query_status(reply: Message) -> dict[str, float] | None:
    """The ``status`` MetricRecord of a query reply as numbers, or None when it is missing or forged."""
    if reply.has_error() or not isinstance(reply.content.get("status"), MetricRecord):
        return None
    status = reply.content.metric_records["status"]
    numbers = {k: v for k, v in status.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if len(numbers) != len(status) or not all(math.isfinite(v) for v in numbers.values()):
        return None
    return {k: float(v) for k, v in numbers.items()}


class LiteHeartMixin:
    """Teacher shipping, reply checks, per-client reports and round offsets on top of a Flower strategy."""

    weighted_by_key: str  # FedAvg's: the metric that weights each reply (client-level DP sets its own)

    def setup(
        self,
        teacher: ArrayRecord,
        teacher_hash: str,
        teacher_meta: dict,
        timeout: float,
        round_offset: int = 0,
        min_replies: int = 1,
        max_update_norm: float = 1e4,
        wearables: int = 0,
        wearable_weight: float = 1.0,
        wearable_teacher: tuple[ArrayRecord, str, dict] | None = None,
        wearable_weighting: str = "examples",
        score: Callable[[ArrayRecord], float] | None = None,
    ) -> None:
        """Run-level state. ``wearable_teacher`` is (arrays, hash, meta) of the teacher shipped to wearables;
        ``score`` rates a candidate global model on the server's validation records (higher is better), for
        ``wearable_weighting = "validated"``."""
        self.teacher = teacher
        self.teacher_hash = teacher_hash
        self.teacher_meta = json.dumps(teacher_meta)
        self.wearable_teacher = wearable_teacher[0] if wearable_teacher else None
        self.wearable_teacher_hash = wearable_teacher[1] if wearable_teacher else ""
        self.wearable_teacher_meta = json.dumps(wearable_teacher[2]) if wearable_teacher else ""
        if wearable_weighting == "validated" and score is None:
            raise ValueError("wearable-weighting validated needs a validation score")
        self.wearable_weighting = wearable_weighting
        self.score = score
        self.wearable_share: float | None = None  # the wearables' share of the last aggregate (validated)
        self.share_scores: dict[float, float] = {}
        self.nodes_without_teacher: set[int] = set()  # nodes that said they use none (wearables without one)
        self.timeout = timeout
        self.round_offset = round_offset
        self.min_replies = min_replies
        self.max_update_norm = max_update_norm
        self.nodes_with_teacher: set[int] = set()
        self.wearables = wearables  # simulated nodes learn their kind from it in the teacher check
        self.wearable_weight = wearable_weight
        self.node_kinds: dict[int, str] = {}  # learnt from teacher checks and replies
        self.teacher_transfers = 0
        self.sampled: list[int] = []
        self.sent: list[Message] = []
        self.reports: list[dict] = []
        self.reference: dict[str, np.ndarray] = {}
        self.aggregated = False

    def ship_teacher(self, grid: Grid, node_ids: list[int]) -> None:
        """Send each node its teacher once (asked by hash first), in its own message.

        A site gets the 12-lead teacher; a wearable the run's wearable teacher, or none
        (it says so, and is not asked again).
        """
        todo = [n for n in node_ids if n not in self.nodes_with_teacher and n not in self.nodes_without_teacher]
        if not todo:
            return
        ask = ConfigRecord(
            {
                "action": "teacher-check",
                "teacher-hash": self.teacher_hash,
                "wearable-teacher-hash": self.wearable_teacher_hash,
                "wearables": self.wearables,
            }
        )
        replies = grid.send_and_receive(
            [Message(RecordDict({"config": ask}), dst_node_id=n, message_type="query") for n in todo],
            timeout=self.timeout,
        )
        need: dict[str, list[int]] = {"paired": [], "wearable": []}
        for r in replies:
            node = r.metadata.src_node_id
            status = query_status(r)
            if r.has_error():
                log.warning("node %s did not answer the teacher check: %s", node, r.error.reason)
                continue
            if status is None:  # a forged answer must not stop the run: the node is asked again next round
                log.warning("node %s answered the teacher check without a status of numbers; ignored", node)
                continue
            needs = int(status.get("needs-teacher", 1))
            # a node that states no kind and needs no teacher is a wearable of a run without a wearable teacher
            kind = "wearable" if int(status.get("wearable", not needs)) else "paired"
            self.node_kinds[node] = kind
            if not needs or (kind == "wearable" and self.wearable_teacher is None):
                self.nodes_without_teacher.add(node)  # lead I only and no wearable teacher: never sent one
            elif int(status.get("has-teacher", 0)):
                self.nodes_with_teacher.add(node)
            else:
                need[kind].append(node)
        for kind, nodes in need.items():
            if not nodes:
                continue
            if kind == "paired":
                self._install(grid, nodes, self.teacher, self.teacher_hash, self.teacher_meta)
            elif self.wearable_teacher is not None:  # a wearable that needs one: the run has one (it asked by hash)
                self._install(
                    grid, nodes, self.wearable_teacher, self.wearable_teacher_hash, self.wearable_teacher_meta
                )

    def _install(self, grid: Grid, nodes: list[int], teacher: ArrayRecord, digest: str, meta: str) -> None:
        cfg = ConfigRecord({"action": "teacher-install", "teacher-hash": digest, "teacher-meta": meta})
        replies = grid.send_and_receive(
            [
                Message(RecordDict({"config": cfg, "teacher": teacher}), dst_node_id=n, message_type="query")
                for n in nodes
            ],
            timeout=self.timeout,
        )
        for r in replies:
            if r.has_error():
                log.warning("node %s could not install the teacher: %s", r.metadata.src_node_id, r.error.reason)
            else:
                self.nodes_with_teacher.add(r.metadata.src_node_id)
                self.teacher_transfers += 1

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(
            super().configure_train(  # type: ignore[misc]  # a mixin: the Flower strategy has it
                server_round + self.round_offset, arrays, config, grid
            )
        )
        self.sampled = [m.metadata.dst_node_id for m in messages]
        self.sent = messages  # the Grid sets their message ids when it pushes them
        if method_spec(str(config["method"])).needs_teacher:
            self.ship_teacher(grid, self.sampled)
        self.reference = {k: v.numpy() for k, v in arrays.items()}
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        reports, good = [], []
        answered = set()
        # Flower's own error replies (node unavailable) come from the SuperLink (node id 1):
        # the message they answer names the node
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in self.sent}
        for r in replies:
            node = sent_to.get(r.metadata.reply_to_message_id, r.metadata.src_node_id)
            answered.add(node)
            if r.has_error():
                reports.append(
                    {
                        "node_id": str(node),
                        "status": "failed",
                        "num_examples": 0,
                        "metrics": self._kind_metric(node),
                        "reason": f"client error: {r.error.reason}",
                    }
                )
                continue
            reason = check_reply(r.content, self.reference, self.max_update_norm)
            if reason:
                reports.append(
                    {
                        "node_id": str(node),
                        "status": "failed",
                        "num_examples": 0,
                        "metrics": self._kind_metric(node),
                        "reason": f"rejected update: {reason}",
                    }
                )
                continue
            metrics = {k: metric(r, k) for k in r.content.metric_records["metrics"]}
            self.node_kinds[node] = "wearable" if metrics.get("wearable", 0.0) else "paired"
            reports.append(
                {
                    "node_id": str(node),
                    "status": "ok",
                    "num_examples": int(metrics.get("num-examples", 0)),
                    "metrics": metrics,
                    "reason": None,
                }
            )
            good.append(r)
        for node in self.sampled:
            if node not in answered:
                reports.append(
                    {
                        "node_id": str(node),
                        "status": "failed",
                        "num_examples": 0,
                        "metrics": self._kind_metric(node),
                        "reason": f"no reply within {self.timeout:.0f} s",
                    }
                )
        self.reports = reports
        self.aggregated = len(good) >= self.min_replies
        if not self.aggregated:
            log.warning(
                "round %s: %d usable replies < min-replies %d; the global model is kept",
                server_round + self.round_offset,
                len(good),
                self.min_replies,
            )
            return None, None
        self.weigh_kinds(good)
        if sum(metric(r, "num-examples") for r in good) <= 0:
            log.warning(
                "round %s: every usable reply has weight 0 (wearable-weight 0?); the global model is kept",
                server_round + self.round_offset,
            )
            self.aggregated = False
            return None, None
        same_metric_keys(good)
        arrays, metrics = self.robust_aggregate(server_round + self.round_offset, good)
        self.wearable_share = None
        if self.wearable_weighting == "validated" and arrays is not None:
            arrays = self.validated_mix(server_round + self.round_offset, good, arrays)
        return self.checked_global(server_round + self.round_offset, arrays), metrics

    def validated_mix(self, server_round: int, replies: list[Message], pooled: ArrayRecord) -> ArrayRecord:
        """The sites' and the wearables' FedAvg averages mixed at the wearables' share that validates best.

        Candidate shares: 0 (the sites alone), 1/8, 1/4, 1/2, 3/4 and the share plain FedAvg
        gives them (their examples' share, ``pooled``); the server's ``score`` on its
        validation records picks one, ties going to the earlier candidate. Every site's
        and every wearable's update still counts within its own kind by its examples.
        """
        kinds = {metric(r, "wearable") > 0 for r in replies}
        weight = {
            k: sum(metric(r, "num-examples") for r in replies if (metric(r, "wearable") > 0) == k)
            for k in (False, True)
        }
        natural = weight[True] / (weight[True] + weight[False])
        if kinds != {False, True}:  # one kind only this round: nothing to mix
            self.wearable_share = natural
            return pooled
        groups = [
            super(LiteHeartMixin, self).aggregate_train(  # type: ignore[misc]
                server_round, [r for r in replies if (metric(r, "wearable") > 0) == k]
            )[0]
            for k in (False, True)
        ]
        sites, worn = ({k: v.numpy() for k, v in g.items()} for g in groups)
        best: tuple[float, float, ArrayRecord] | None = None
        self.share_scores = {}
        for share in dict.fromkeys((0.0, 0.125, 0.25, 0.5, 0.75, round(natural, 4))):
            mixed = ArrayRecord(
                {
                    k: Array(
                        ((1 - share) * sites[k].astype(np.float64) + share * worn[k].astype(np.float64)).astype(
                            sites[k].dtype
                        )
                        if np.issubdtype(sites[k].dtype, np.floating)
                        else sites[k]
                    )
                    for k in sites
                }
            )
            score = float(self.score(mixed))  # type: ignore[misc]  # set in setup when weighting is validated
            self.share_scores[share] = score
            if best is None or score > best[0]:
                best = (score, share, mixed)
        assert best is not None
        self.wearable_share = best[1]
        log.info(
            "round %s: wearables' share %.3f (FedAvg's %.3f) scores %.4f on validation",
            server_round,
            best[1],
            natural,
            best[0],
        )
        return best[2]

    def robust_aggregate(self, server_round: int, replies: list[Message]):
        """The Flower strategy's own aggregation of the accepted replies (overridden to report Krum's choice)."""
        return super().aggregate_train(server_round, replies)  # type: ignore[misc]  # a mixin, as above

    def checked_global(self, server_round: int, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """The aggregate in the global model's dtypes; None (the global model is kept) if it is not finite."""
        if arrays is None:
            return None
        out = {}
        for key, ref in self.reference.items():
            value = arrays[key].numpy()
            if not np.all(np.isfinite(value)):
                log.warning("round %s: the aggregate of %s is not finite; the global model is kept", server_round, key)
                self.aggregated = False
                return None
            # the mean of integer buffers (e.g. BatchNorm's step count) comes back as float
            out[key] = Array(
                np.rint(value).astype(ref.dtype)
                if np.issubdtype(ref.dtype, np.integer)
                else value.astype(ref.dtype, copy=False)
            )
        return ArrayRecord(out)

    def _kind_metric(self, node: int) -> dict[str, float]:
        kind = self.node_kinds.get(node)
        return {} if kind is None else {"wearable": float(kind == "wearable")}

    def weigh_kinds(self, replies: list[Message]) -> None:
        """Scale a wearable's aggregation weight (``num-examples``) by ``wearable-weight``.

        The reports above keep the true example counts; only the weight the
        aggregation reads changes.
        """
        if self.wearable_weight == 1.0:
            return
        for r in replies:
            if metric(r, "wearable"):
                r.content.metric_records["metrics"]["num-examples"] = metric(r, "num-examples") * self.wearable_weight


class LiteHeartFedAvg(LiteHeartMixin, FedAvg):
    """FedAvg weighted by ``num-examples``."""


class LiteHeartFedProx(LiteHeartMixin, FedProx):
    """FedProx: clients add mu/2 ||w - w_global||^2 (``proximal-mu`` in the round config)."""


class LiteHeartFedMedian(LiteHeartMixin, FedMedian):
    """Coordinate-wise median of the accepted updates (unweighted: ``num-examples`` does not count)."""


class LiteHeartTrimmedMean(LiteHeartMixin, FedTrimmedAvg):
    """Coordinate-wise mean after cutting the ``trim-fraction`` largest and smallest values (unweighted)."""

    def robust_aggregate(self, server_round: int, replies: list[Message]):
        if int(self.beta * len(replies)) == 0:
            log.warning(
                "round %s: trim-fraction %s of %d accepted replies trims nothing; this round is a plain mean",
                server_round,
                self.beta,
                len(replies),
            )
        return super().robust_aggregate(server_round, replies)


class LiteHeartKrum(LiteHeartMixin, Krum):
    """Krum: the one update closest to its n - f - 2 nearest neighbours becomes the global model.

    Each client not chosen keeps status ok in the reports, with the reason it was left out.
    """

    def robust_aggregate(self, server_round: int, replies: list[Message]):
        n, f = len(replies), self.num_malicious_nodes
        weak = n < 2 * f + 3
        if weak:
            log.warning(
                "round %s: Krum with krum-byzantine %d needs more than 2f + 2 = %d replies, %d were "
                "accepted; it still picks one, without its guarantee",
                server_round,
                f,
                2 * f + 2,
                n,
            )
        chosen = select_multikrum([r.content for r in replies], f, self.num_nodes_to_select)
        keep = [r for r in replies if any(r.content is c for c in chosen)]
        picked = ", ".join(str(r.metadata.src_node_id) for r in keep)
        left_out = {str(r.metadata.src_node_id) for r in replies if not any(r is k for k in keep)}
        for report in self.reports:
            if report["status"] == "ok" and report["node_id"] in left_out:
                report["reason"] = (
                    f"not selected by Krum (f={f}, {n} replies{', fewer than 2f + 3' if weak else ''}; "
                    f"node {picked} was chosen)"
                )
        return FedAvg.aggregate_train(self, server_round, keep)


STRATEGY_CLASSES = {
    "fedavg": LiteHeartFedAvg,
    "fedprox": LiteHeartFedProx,
    "fedmedian": LiteHeartFedMedian,
    "trimmed-mean": LiteHeartTrimmedMean,
    "krum": LiteHeartKrum,
}


def strategy_for(cfg: FedConfig) -> LiteHeartMixin:
    """The run's strategy (``strategy`` and its keys); call ``setup`` before ``start``."""
    extras: dict[str, dict[str, float]] = {
        "fedprox": {"proximal_mu": cfg.proximal_mu},
        "trimmed-mean": {"beta": cfg.trim_fraction},
        "krum": {"num_malicious_nodes": cfg.krum_byzantine},
    }
    extra = extras.get(cfg.strategy, {})
    return STRATEGY_CLASSES[cfg.strategy](
        fraction_train=cfg.fraction_train,
        fraction_evaluate=0.0,
        min_train_nodes=cfg.min_clients,
        min_available_nodes=cfg.min_clients,
        **extra,
    )
