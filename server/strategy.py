"""LiteHeart strategy: FedAvg/FedProx that ships the teacher once, checks replies and reports per client.

Only ``configure_train`` and ``aggregate_train`` are overridden; Flower's own
``start()`` runs the rounds. ``round_offset`` keeps round numbers continuous when
a run is resumed from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

log = logging.getLogger("liteheart.server")


def check_update(reply: ArrayRecord, reference: dict[str, np.ndarray], max_norm: float) -> str | None:
    """Why a client's update must be rejected (None when it is acceptable)."""
    arrays = {k: v.numpy() for k, v in reply.items()}
    if set(arrays) != set(reference):
        missing, extra = set(reference) - set(arrays), set(arrays) - set(reference)
        return f"wrong arrays (missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})"
    for key, ref in reference.items():
        if arrays[key].shape != ref.shape:
            return f"array {key} has shape {arrays[key].shape}, expected {ref.shape}"
        if not np.all(np.isfinite(arrays[key])):
            return f"array {key} holds NaN or infinite values"
    delta = math.sqrt(sum(float(np.sum((arrays[k].astype(np.float64) - reference[k]) ** 2)) for k in reference))
    if delta > max_norm:
        return f"update norm {delta:.3g} exceeds the limit {max_norm:.3g}"
    return None


class LiteHeartMixin:
    """Teacher shipping, reply checks, per-client reports and round offsets on top of a Flower strategy."""

    def setup(self, teacher: ArrayRecord, teacher_hash: str, teacher_meta: dict, timeout: float,
              round_offset: int = 0, min_replies: int = 1, max_update_norm: float = 1e4) -> None:
        self.teacher = teacher
        self.teacher_hash = teacher_hash
        self.teacher_meta = json.dumps(teacher_meta)
        self.timeout = timeout
        self.round_offset = round_offset
        self.min_replies = min_replies
        self.max_update_norm = max_update_norm
        self.nodes_with_teacher: set[int] = set()
        self.teacher_transfers = 0
        self.sampled: list[int] = []
        self.sent: list[Message] = []
        self.reports: list[dict] = []
        self.reference: dict[str, np.ndarray] = {}
        self.aggregated = False

    def ship_teacher(self, grid: Grid, node_ids: list[int]) -> None:
        """Send the teacher to the nodes that lack it (asked by hash first), in its own message."""
        todo = [n for n in node_ids if n not in self.nodes_with_teacher]
        if not todo:
            return
        ask = ConfigRecord({"action": "teacher-check", "teacher-hash": self.teacher_hash})
        replies = grid.send_and_receive([Message(RecordDict({"config": ask}), dst_node_id=n, message_type="query")
                                         for n in todo], timeout=self.timeout)
        need = []
        for r in replies:
            node = r.metadata.src_node_id
            if r.has_error():
                log.warning("node %s did not answer the teacher check: %s", node, r.error.reason)
            elif int(r.content["status"]["has-teacher"]):
                self.nodes_with_teacher.add(node)
            else:
                need.append(node)
        if not need:
            return
        cfg = ConfigRecord({"action": "teacher-install", "teacher-hash": self.teacher_hash,
                            "teacher-meta": self.teacher_meta})
        replies = grid.send_and_receive(
            [Message(RecordDict({"config": cfg, "teacher": self.teacher}), dst_node_id=n, message_type="query")
             for n in need], timeout=self.timeout)
        for r in replies:
            if r.has_error():
                log.warning("node %s could not install the teacher: %s", r.metadata.src_node_id, r.error.reason)
            else:
                self.nodes_with_teacher.add(r.metadata.src_node_id)
                self.teacher_transfers += 1

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(super().configure_train(server_round + self.round_offset, arrays, config, grid))
        self.sampled = [m.metadata.dst_node_id for m in messages]
        self.sent = messages  # the Grid sets their message ids when it pushes them
        if str(config.get("method", "")) != "supervised":
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
                reports.append({"node_id": str(node), "status": "failed", "num_examples": 0, "metrics": {},
                                "reason": f"client error: {r.error.reason}"})
                continue
            reason = check_update(r.content["arrays"], self.reference, self.max_update_norm) \
                if "arrays" in r.content else "reply holds no arrays"
            metrics = {k: float(v) for k, v in r.content["metrics"].items()} if "metrics" in r.content else {}
            if reason is None and not all(math.isfinite(v) for v in metrics.values()):
                reason = "non-finite metrics"
            if reason:
                reports.append({"node_id": str(node), "status": "failed", "num_examples": 0, "metrics": {},
                                "reason": f"rejected update: {reason}"})
                continue
            reports.append({"node_id": str(node), "status": "ok", "num_examples": int(metrics.get("num-examples", 0)),
                            "metrics": metrics, "reason": None})
            good.append(r)
        for node in self.sampled:
            if node not in answered:
                reports.append({"node_id": str(node), "status": "failed", "num_examples": 0, "metrics": {},
                                "reason": f"no reply within {self.timeout:.0f} s"})
        self.reports = reports
        self.aggregated = len(good) >= self.min_replies
        if not self.aggregated:
            log.warning("round %s: %d usable replies < min-replies %d; the global model is kept",
                        server_round + self.round_offset, len(good), self.min_replies)
            return None, None
        return super().aggregate_train(server_round + self.round_offset, good)


class LiteHeartFedAvg(LiteHeartMixin, FedAvg):
    """FedAvg weighted by ``num-examples``."""


class LiteHeartFedProx(LiteHeartMixin, FedProx):
    """FedProx: clients add mu/2 ||w - w_global||^2 (``proximal-mu`` in the round config)."""
