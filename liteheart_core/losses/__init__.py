"""Distillation and semi-supervised losses for LiteHeart.

Pure tensor code (only ``torch`` is imported):

- :mod:`~liteheart_core.losses.kd` -- multi-label logit distillation.
- :mod:`~liteheart_core.losses.region` -- P/QRS/T-weighted feature and class-evidence distillation.
- :mod:`~liteheart_core.losses.mi` -- cross-layer InfoNCE mutual-information distillation (v1).
- :mod:`~liteheart_core.losses.crd` -- contrastive distillation against a memory of teacher embeddings (v2).
- :mod:`~liteheart_core.losses.semi` -- labelled BCE, soft targets, pseudo-labels, consistency.
- :mod:`~liteheart_core.losses.augment` -- weak/strong ECG augmentations for consistency training.

Teacher-side tensors are detached inside every loss; callers need not do it.
"""

from liteheart_core.losses.augment import (
    amplitude_scale,
    baseline_wander,
    gaussian_noise,
    muscle_noise,
    span_mask,
    strong_augment,
    time_mask,
    time_shift,
    weak_augment,
)
from liteheart_core.losses.crd import memory_infonce
from liteheart_core.losses.kd import binary_kl_from_logits, kd_loss
from liteheart_core.losses.mi import CrossLayerMI, ProjectionHead, default_pairs, infonce
from liteheart_core.losses.region import (
    DEFAULT_REGION_WEIGHTS,
    RegionAdapter,
    check_region_codes,
    pool_region_evidence,
    region_evidence_loss,
    region_feature_loss,
    region_weight_map,
    wave_evidence_loss,
)
from liteheart_core.losses.semi import consistency_loss, masked_bce, pseudo_label_loss, soft_target_loss

__all__ = [
    "DEFAULT_REGION_WEIGHTS",
    "CrossLayerMI",
    "ProjectionHead",
    "RegionAdapter",
    "amplitude_scale",
    "baseline_wander",
    "binary_kl_from_logits",
    "check_region_codes",
    "consistency_loss",
    "default_pairs",
    "gaussian_noise",
    "infonce",
    "kd_loss",
    "masked_bce",
    "memory_infonce",
    "muscle_noise",
    "pool_region_evidence",
    "pseudo_label_loss",
    "region_evidence_loss",
    "region_feature_loss",
    "region_weight_map",
    "soft_target_loss",
    "span_mask",
    "strong_augment",
    "time_mask",
    "time_shift",
    "wave_evidence_loss",
    "weak_augment",
]
