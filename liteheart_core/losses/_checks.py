"""Input checks shared by the loss modules.

Every loss validates its inputs up front so that a shape mix-up between the
teacher and the student fails with a message naming the tensor and the
expected layout, instead of broadcasting silently into a wrong number.
"""

from __future__ import annotations

import math

from torch import Tensor


def check_tensor(value: object, name: str) -> Tensor:
    """Return ``value`` if it is a tensor, else raise ``TypeError``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_ndim(value: Tensor, ndim: int, name: str, layout: str) -> None:
    """Raise ``ValueError`` unless ``value`` has ``ndim`` dimensions.

    Parameters
    ----------
    value : Tensor
        Tensor to check.
    ndim : int
        Required number of dimensions.
    name : str
        Name used in the error message.
    layout : str
        Human-readable layout such as ``"[B, K]"``.
    """
    check_tensor(value, name)
    if value.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(value.shape)}")


def check_floating(value: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` has a floating-point dtype."""
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; they must match"
        )


def check_positive(value: float, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_probabilities(value: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless every entry of ``value`` lies in [0, 1]."""
    check_floating(value, name)
    if value.numel() and not bool(((value >= 0) & (value <= 1)).all()):
        raise ValueError(
            f"{name} must hold probabilities in [0, 1]; got values in "
            f"[{float(value.min()):.4g}, {float(value.max()):.4g}] (NaN counts as invalid)"
        )
