"""Continual on-device learning: each round trains on what arrived since the last one, plus replay.

Recordings reach a device over time. A round's training set is

* the **new** records: usable records trained on fewer than ``new_uses`` times so far
  (with the default 1: exactly those that arrived since the last round), and
* a **replay** sample drawn from a :class:`ClassBalancedReservoir` of earlier records,
  ``ceil(replay_ratio * len(new))`` of them (at most ``replay_max``),

trained with the ordinary :func:`liteheart_core.federated.local_round` on a
:class:`~liteheart_core.federated.LocalData` built from them. Records enter the reservoir
after their first round, so replay only ever brings back the past.

Where the records live is the caller's business: anything with the :class:`RecordSource`
methods works (the client's SQL record store, or arrays in a simulation). Nothing here knows
Flower or SQL, and torch is imported only by the functions that train, so that a device's
ingest process (which needs :class:`Candidate` and :class:`StoredBatch`) does not load it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from liteheart_core.federated import LocalData
    from liteheart_core.models import Net
    from liteheart_core.train import TrainConfig

UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class Candidate:
    """A usable, stored record that a round may train on."""

    key: int
    label: np.ndarray | None  # uint8 multi-hot over the task's classes; None when unlabelled
    times_used: int


@dataclass(frozen=True)
class StoredBatch:
    """Training windows of some records, as a record source hands them out."""

    keys: np.ndarray  # int64 [N]: the record of each window
    x: np.ndarray  # float32 [N, leads, T]
    y: np.ndarray  # uint8 [N, C]; zeros where unlabelled
    labelled: np.ndarray  # bool [N]
    regions: np.ndarray | None  # int8 [N, T]
    fs: float


class RecordSource(Protocol):
    """What a continual round needs from wherever records are kept."""

    @property
    def classes(self) -> list[str]: ...

    def candidates(self) -> list[Candidate]: ...

    def load(self, keys: Sequence[int]) -> StoredBatch: ...

    def mark_used(self, keys: Sequence[int], round_number: int) -> None: ...


class ClassBalancedReservoir:
    """A replay buffer holding an equal share of every class seen so far.

    Every class (and "unlabelled", when ``keep_unlabelled``) has its own reservoir (Vitter's
    algorithm R) with a quota of ``capacity // active``, where ``active`` is the number of
    classes met so far; when a new class appears the quotas shrink and each reservoir drops
    random members down to its quota (a uniform subsample of a uniform sample is uniform).
    A multi-label record is offered to the reservoir of each of its classes, and the buffer
    is the union, so it never holds more than ``capacity`` records. A rare class keeps every
    record it has up to its quota, however common the others are.

    All randomness comes from one generator seeded with ``seed``: the same stream of
    offers gives the same buffer.
    """

    def __init__(self, capacity: int, n_classes: int, seed: int = 0, keep_unlabelled: bool = True) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        slots = n_classes + (1 if keep_unlabelled else 0)
        if capacity != 0 and capacity < slots:
            raise ValueError(
                f"capacity {capacity} cannot hold one record per class ({slots} slots); use 0 to switch replay off"
            )
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.n_classes = int(n_classes)
        self.keep_unlabelled = keep_unlabelled
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self._members: list[list[int]] = [[] for _ in range(slots)]
        self._seen = [0] * slots

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return any(key in m for m in self._members)

    @property
    def quota(self) -> int:
        active = sum(1 for s in self._seen if s > 0)
        return self.capacity // max(1, active)

    def _slots_of(self, label: np.ndarray | None) -> list[int]:
        if label is None or not np.any(label):
            return [self.n_classes] if self.keep_unlabelled else []
        label = np.asarray(label)
        if label.shape != (self.n_classes,):
            raise ValueError(f"label has shape {label.shape}, expected ({self.n_classes},)")
        return [int(c) for c in np.flatnonzero(label)]

    def offer(self, key: int, label: np.ndarray | None) -> None:
        """Offer one record (by key) with its multi-hot label (None: unlabelled)."""
        if self.capacity == 0:
            return
        key = int(key)
        slots = self._slots_of(label)
        new_class = any(self._seen[s] == 0 for s in slots)
        for s in slots:
            self._seen[s] += 1
        if new_class:
            self._shrink()
        quota = self.quota
        for s in slots:
            members = self._members[s]
            if key in members:
                continue
            if len(members) < quota:
                members.append(key)
            else:
                j = int(self._rng.integers(self._seen[s]))
                if j < quota:
                    members[j] = key

    def _shrink(self) -> None:
        quota = self.quota
        for s, members in enumerate(self._members):
            if len(members) > quota:
                keep = np.sort(self._rng.choice(len(members), size=quota, replace=False))
                self._members[s] = [members[i] for i in keep]

    def keys(self) -> list[int]:
        """Every record in the buffer, sorted."""
        return sorted(set().union(*map(set, self._members)))

    def class_members(self) -> list[list[int]]:
        """The reservoir of each class (then "unlabelled", when kept), as lists of keys."""
        return [list(m) for m in self._members]

    def discard(self, keys: Iterable[int]) -> None:
        """Forget records that no longer exist (evicted from the store)."""
        gone = {int(k) for k in keys}
        if gone:
            self._members = [[k for k in m if k not in gone] for m in self._members]

    def sample(self, n: int, rng: np.random.Generator, exclude: Iterable[int] = ()) -> list[int]:
        """Up to ``n`` distinct records, balanced over classes: one from each class in turn.

        Each pass visits the non-empty reservoirs in a random order and takes one random
        member not taken yet (nor in ``exclude``), until ``n`` are taken or all are used up.
        """
        taken: set[int] = {int(k) for k in exclude}
        out: list[int] = []
        pools = [[k for k in m if k not in taken] for m in self._members]
        pools = [list(rng.permutation(p)) for p in pools if p]
        while len(out) < n and pools:
            for i in rng.permutation(len(pools)):
                pool = pools[i]
                while pool and pool[-1] in taken:
                    pool.pop()
                if pool and len(out) < n:
                    key = int(pool.pop())
                    taken.add(key)
                    out.append(key)
            pools = [p for p in pools if any(k not in taken for k in p)]
        return out

    def state(self) -> dict[str, Any]:
        """Everything needed to continue identically (plain JSON types)."""
        return {
            "capacity": self.capacity,
            "n_classes": self.n_classes,
            "keep_unlabelled": self.keep_unlabelled,
            "seed": self.seed,
            "members": [list(m) for m in self._members],
            "seen": list(self._seen),
            "rng": self._rng.bit_generator.state,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClassBalancedReservoir:
        buf = cls(state["capacity"], state["n_classes"], state["seed"], state["keep_unlabelled"])
        buf._members = [[int(k) for k in m] for m in state["members"]]
        buf._seen = [int(s) for s in state["seen"]]
        buf._rng.bit_generator.state = state["rng"]
        return buf


@dataclass(frozen=True)
class RoundPlan:
    """Which records one round trains on."""

    new: tuple[int, ...]
    replay: tuple[int, ...]

    @property
    def keys(self) -> list[int]:
        return list(self.new) + list(self.replay)


def plan_round(
    candidates: Sequence[Candidate],
    buffer: ClassBalancedReservoir | None,
    rng: np.random.Generator,
    new_uses: int = 1,
    replay_ratio: float = 1.0,
    replay_max: int | None = None,
) -> RoundPlan:
    """The records of one round: the new ones plus a class-balanced replay sample.

    Parameters
    ----------
    candidates
        Usable stored records (the source leaves unusable ones out).
    buffer
        The replay reservoir (None or capacity 0: no replay). Keys it holds that are no
        longer candidates (evicted) are dropped from it.
    new_uses
        A record counts as new until it has been trained on this many times.
    replay_ratio, replay_max
        Replay ``ceil(replay_ratio * len(new))`` records, at most ``replay_max``
        (default: the buffer's capacity). No new records, no round.
    """
    if new_uses < 1:
        raise ValueError(f"new_uses must be >= 1, got {new_uses}")
    if replay_ratio < 0:
        raise ValueError(f"replay_ratio must be >= 0, got {replay_ratio}")
    new = tuple(sorted(c.key for c in candidates if c.times_used < new_uses))
    replay: tuple[int, ...] = ()
    if buffer is not None and buffer.capacity > 0:
        present = {c.key for c in candidates}
        buffer.discard([k for k in buffer.keys() if k not in present])  # noqa: SIM118  (a reservoir, not a dict)
        limit = buffer.capacity if replay_max is None else replay_max
        n = min(limit, math.ceil(replay_ratio * len(new)))
        replay = tuple(buffer.sample(n, rng, exclude=new)) if new and n > 0 else ()
    return RoundPlan(new=new, replay=replay)


def build_local_data(
    batch: StoredBatch, classes: list[str], name: str, val: tuple[np.ndarray, np.ndarray] | None = None
) -> LocalData:
    """A :class:`LocalData` from stored windows (12-lead, as the teacher needs).

    ``val`` is an optional ``(x [M, 12, T], y [M, C])`` local validation set; without it the
    round reports no local validation scores.
    """
    import torch

    from liteheart_core.federated import LocalData

    if batch.x.ndim != 3 or batch.x.shape[1] != 12:
        raise ValueError(f"client {name}: training windows must be [N, 12, T], got {batch.x.shape}")
    if batch.y.shape != (len(batch.x), len(classes)):
        raise ValueError(f"client {name}: labels have shape {batch.y.shape}, expected ({len(batch.x)}, {len(classes)})")
    t = batch.x.shape[-1]
    vx = np.zeros((0, 12, t), dtype=np.float32) if val is None else np.asarray(val[0], dtype=np.float32)
    vy = np.zeros((0, len(classes)), dtype=np.float32) if val is None else np.asarray(val[1], dtype=np.float32)
    regions = None if batch.regions is None else torch.as_tensor(batch.regions.astype(np.int64))
    return LocalData(
        x=torch.as_tensor(batch.x, dtype=torch.float32),
        y=torch.as_tensor(batch.y, dtype=torch.float32),
        labelled=np.asarray(batch.labelled, dtype=bool),
        regions=regions,
        val_x=torch.as_tensor(vx),
        val_y=torch.as_tensor(vy),
        classes=list(classes),
        fs=float(batch.fs),
        name=name,
    )


class TeacherTargets:
    """The frozen teacher's targets per record, computed once: they never change for a record.

    A device recomputing them every round would run the (large) teacher on every replayed
    record again; here each record pays once. Which stages are kept follows
    :func:`liteheart_core.train.make_trainable` for the method.
    """

    def __init__(self, teacher: Net, student: Net, cfg: TrainConfig, device: str = "cpu") -> None:
        from liteheart_core.train import Distiller, resolve_device

        self.teacher = teacher.eval()
        self.method = cfg.method
        self.device = resolve_device(device)
        stages = Distiller(student, teacher, cfg).teacher_stages() or [len(teacher.stage_channels) - 1]
        if cfg.loss_weights.evidence > 0:
            stages = sorted(set(stages) | {len(teacher.stage_channels) - 1})
        self.stages = stages
        self._logits: dict[int, torch.Tensor] = {}
        self._feats: dict[int, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._logits)

    @property
    def cache_key(self) -> tuple[Any, str]:
        """The key :func:`local_round` looks its cached targets up by."""
        return (getattr(self.teacher, "content_hash", id(self.teacher)), self.method)

    def fill(self, keys: Sequence[int] | np.ndarray, x: np.ndarray) -> None:
        """Compute the targets of the windows ``x`` (one per key) whose key has none yet."""
        missing = [i for i, k in enumerate(keys) if int(k) not in self._logits]
        if not missing:
            return
        import torch

        from liteheart_core.train import teacher_stage, teacher_targets

        xt = torch.as_tensor(np.asarray(x)[missing], dtype=torch.float32)
        logits, feats = teacher_targets(self.teacher, xt, self.stages, self.device)
        for j, i in enumerate(missing):
            self._logits[int(keys[i])] = logits[j].cpu()
            self._feats[int(keys[i])] = [teacher_stage(feats, s)[j].cpu() for s in self.stages]

    def get(self, keys: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Targets of ``keys`` stacked in order, in the layout ``make_trainable`` accepts."""
        import torch

        logits = torch.stack([self._logits[int(k)] for k in keys])
        n_stages = len(self.teacher.stage_channels)
        feats: list[torch.Tensor | None] = [None] * n_stages
        for pos, s in enumerate(self.stages):
            feats[s] = torch.stack([self._feats[int(k)][pos] for k in keys])
        return logits, feats


@dataclass
class RoundOutcome:
    """What one continual round did."""

    plan: RoundPlan
    state: dict[str, torch.Tensor]
    metrics: dict[str, float]
    distiller_state: dict = field(default_factory=dict)


def continual_round(
    source: RecordSource,
    buffer: ClassBalancedReservoir | None,
    student: Net,
    teacher: Net | None,
    cfg: TrainConfig,
    server_round: int,
    *,
    epochs: int = 1,
    new_uses: int = 1,
    replay_ratio: float = 1.0,
    replay_max: int | None = None,
    name: str = "client",
    distiller_state: dict | None = None,
    targets: TeacherTargets | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> RoundOutcome | None:
    """Plan, train and book one round on a device; None when nothing new has arrived.

    Trains ``student`` in place with :func:`local_round` on new + replay records, then marks
    every record of the round as used once more (``source.mark_used``) and offers the records
    trained on for the first time to the replay buffer. The replay sample is seeded by
    ``cfg.seed`` and ``server_round``.
    """
    from liteheart_core.federated import local_round

    candidates = source.candidates()
    rng = np.random.default_rng([cfg.seed, server_round, 7])
    plan = plan_round(candidates, buffer, rng, new_uses=new_uses, replay_ratio=replay_ratio, replay_max=replay_max)
    if not plan.new:
        return None
    batch = source.load(plan.keys)
    local = build_local_data(batch, source.classes, name, val)
    if targets is not None and teacher is not None and cfg.spec.needs_teacher:
        targets.fill(batch.keys, batch.x)
        local.teacher_cache[targets.cache_key] = targets.get(batch.keys)
    state, metrics, dstate = local_round(
        student, teacher, local, cfg, epochs, server_round, distiller_state=distiller_state
    )
    source.mark_used(plan.keys, server_round)
    if buffer is not None:
        first = {c.key: c for c in candidates if c.times_used == 0}
        for key in plan.new:
            if key in first:
                buffer.offer(key, first[key].label)
    metrics.update({"new-records": float(len(plan.new)), "replay-records": float(len(plan.replay))})
    return RoundOutcome(plan=plan, state=state, metrics=metrics, distiller_state=dstate)
