"""Beat detection and P / QRS / T region masks for region-weighted distillation."""

from liteheart_core.regions.delineate import (
    BACKGROUND,
    P_WAVE,
    PAD,
    QRS,
    T_WAVE,
    compute_regions,
    delineate,
    region_codes,
)
from liteheart_core.regions.detect import detect_r_peaks, heart_rate

__all__ = [
    "BACKGROUND",
    "P_WAVE",
    "PAD",
    "QRS",
    "T_WAVE",
    "compute_regions",
    "delineate",
    "detect_r_peaks",
    "heart_rate",
    "region_codes",
]
