"""The one table of training methods: what each is, what it needs, its loss weights.

Torch-free, so command-line help and config checks can read it without loading a model.
Every layer asks this table ("needs a teacher?", "labelled records only?", "region maps?")
instead of comparing method names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LossWeights:
    """Weight of every term of the objective (0 switches a term off)."""

    bce: float = 1.0
    kd: float = 0.0
    feature: float = 0.0
    evidence: float = 0.0
    mi: float = 0.0
    pseudo: float = 0.0
    consistency: float = 0.0
    crd: float = 0.0
    waves: float = 0.0


@dataclass(frozen=True)
class Method:
    """What a training method is and needs: the one table every layer asks.

    ``views`` is the number of teacher views per record in the view bank (0: no bank,
    the teacher's targets are computed once on the clean record), ``mix_views`` how many
    of those are mixups, ``consistent`` whether the student sees the view the teacher saw.
    """

    name: str
    label: str
    weights: LossWeights
    student: bool = True
    needs_teacher: bool = True
    labelled_only: bool = False  # trains on labelled records only
    region_aware: bool = False  # v1: P/QRS/T-weighted feature term
    views: int = 0
    mix_views: int = 0
    consistent: bool = True
    ablation: bool = False  # a method with one part of another taken out (benchmarked against it, not alone)

    @property
    def uses_bank(self) -> bool:
        """Whether the teacher's targets come from a bank of views per record."""
        return self.views > 0

    @property
    def needs_regions(self) -> bool:
        """Whether it reads the P/QRS/T region maps (prepared with ``data prepare --regions``)."""
        return self.region_aware or self.weights.waves > 0

    @property
    def uses_unlabelled(self) -> bool:
        """Whether records without labels take part (through the teacher's targets)."""
        return not self.labelled_only


_V1 = LossWeights(kd=1.0, feature=1.0, evidence=0.5, mi=0.1, pseudo=0.5, consistency=0.5)
# LiteHeart v2 (results/central_benchmark.md): consistent teaching on a bank of 8 teacher views per record
# (2 of them mixups), logit KD, contrastive distillation of the teacher's embedding against a memory of
# teacher embeddings, and per-wave (P, QRS, T) class-evidence distillation. Pseudo-labels (a copy of KD on
# the same records), feature-map imitation through large adapters and in-batch InfoNCE are gone.
_V2 = LossWeights(kd=1.0, crd=0.2, waves=2.0)
_TABLE = [
    Method("teacher", "12-lead teacher", LossWeights(), student=False, needs_teacher=False, labelled_only=True),
    Method("supervised", "lead-I student, labels only", LossWeights(), needs_teacher=False, labelled_only=True),
    Method("kd", "vanilla KD", LossWeights(kd=1.0)),
    Method("fitnets", "FitNets feature KD", LossWeights(kd=1.0, feature=1.0)),
    Method("liteheart", "LiteHeart v1", _V1, region_aware=True),
    Method("liteheart-no-region", "LiteHeart v1 w/o region-aware", replace(_V1, evidence=0.0), ablation=True),
    Method(
        "liteheart-no-mi", "LiteHeart v1 w/o mutual information", replace(_V1, mi=0.0), region_aware=True, ablation=True
    ),
    Method(
        "liteheart-no-semi",
        "LiteHeart v1 w/o semi-supervision",
        replace(_V1, pseudo=0.0, consistency=0.0),
        region_aware=True,
        ablation=True,
    ),
    Method("liteheart-v2", "LiteHeart v2", _V2, views=8, mix_views=2),
    Method(
        "liteheart-v2-no-views",
        "LiteHeart v2 w/o consistent views (teacher on the clean record)",
        _V2,
        views=1,
        consistent=False,
        ablation=True,
    ),
    Method("liteheart-v2-no-mix", "LiteHeart v2 w/o mixup views", _V2, views=8, ablation=True),
    Method(
        "liteheart-v2-no-crd",
        "LiteHeart v2 w/o contrastive distillation",
        replace(_V2, crd=0.0),
        views=8,
        mix_views=2,
        ablation=True,
    ),
    Method(
        "liteheart-v2-no-region",
        "LiteHeart v2 w/o region-aware evidence",
        replace(_V2, waves=0.0),
        views=8,
        mix_views=2,
        ablation=True,
    ),
]
METHOD_TABLE: dict[str, Method] = {m.name: m for m in _TABLE}
METHODS = tuple(METHOD_TABLE)
STUDENT_METHODS = tuple(m.name for m in _TABLE if m.student)
# the methods a benchmark compares head to head (the ablations are run against their full method)
CORE_METHODS = tuple(m.name for m in _TABLE if m.student and not m.ablation)
# chosen on the selection fold (fold 9) under protocol v2: results/central_selection.md, results/central_benchmark.md
DEFAULT_METHOD = "liteheart-v2"
# the --method help of every command that trains students (from the table, so a new method shows up everywhere)
METHOD_HELP = f"The student's objective (default {DEFAULT_METHOD}): {', '.join(STUDENT_METHODS)}."


def method_spec(method: str) -> Method:
    """The table row of a method; an unknown name is an error that lists the known ones."""
    try:
        return METHOD_TABLE[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}") from None
