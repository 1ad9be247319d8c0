"""1-D residual ECG networks: one ``Net`` class for the 12-lead teacher and the 1-lead student.

Both networks read standardised ECG windows ``[B, n_leads, T]`` (100 Hz, T = 1000 for 10 s by
default, any T >= 1 works) and return multi-label logits ``[B, n_classes]`` (apply a sigmoid).

Architecture (xresnet1d, after fastai's XResNet and the PTB-XL benchmark's 1-D port)::

    stem:   ``stem_convs`` convs (first one stride ``stem_stride``) [+ max-pool stride 2]
    stages: ``depths[i]`` residual blocks of ``widths[i]`` channels; block 0 of stage i has
            stride ``strides[i]``; shortcuts are avg-pool (stride) + 1x1 conv (channel change)
    head:   global average pooling -> dropout -> linear

Length rule: every stride-s layer maps a length L to ``ceil(L / s)`` (odd kernels with padding
k // 2, ceil-mode pooling), so stage i's feature map has exactly
``ceil(T / stage_strides[i])`` time steps.

The student (``kind="student"``) uses depthwise-separable blocks and GroupNorm: it has no running
statistics at all, so its ``state_dict`` holds only weights that federated averaging and DP noise
can treat uniformly.

This module imports only torch so that it can be shipped to devices on its own.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("xresnet1d", "student")
NORMS = ("batch", "group", "layer")
BLOCKS = ("basic", "bottleneck", "separable")


def _as_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass; a stray `true` in a TOML file must not become a width of 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"NetConfig.{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"NetConfig.{name} must be >= {minimum}, got {value}")
    return value


def _as_int_tuple(name: str, value: Any, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"NetConfig.{name} must be a sequence of ints, got {value!r}")
    items = tuple(value)
    if not items:
        raise ValueError(f"NetConfig.{name} must not be empty")
    return tuple(_as_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(items))


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a :class:`Net`; frozen so it can key caches and travel in run configs.

    Parameters
    ----------
    kind : str
        ``"xresnet1d"`` (teacher family) or ``"student"`` (must not use BatchNorm).
    widths : tuple of int
        Inner channels of each stage; a stage outputs ``widths[i] * expansion`` channels for
        ``block="bottleneck"`` and ``widths[i]`` otherwise.
    depths : tuple of int
        Residual blocks per stage (same length as ``widths``).
    kernel_size : int
        Odd temporal kernel of the non-pointwise convolutions (odd keeps padding symmetric
        and the ``ceil(L / s)`` length rule exact).
    stem_width : int
        Channels of the last stem conv; earlier stem convs use ``stem_width // 2``.
    norm : str
        ``"batch"`` (BatchNorm1d), ``"group"`` (GroupNorm with ``norm_groups`` groups) or
        ``"layer"`` (GroupNorm with one group: normalises over channels and time per sample).
    dropout : float
        Dropout on the pooled features before the classifier, in [0, 1).
    block : str
        ``"basic"`` (two k-convs), ``"bottleneck"`` (1x1, k, 1x1 with expansion) or
        ``"separable"`` (depthwise k-conv, then two pointwise convs).
    expansion : int
        Output/inner channel ratio of bottleneck blocks; ignored by other blocks.
    strides : tuple of int or None
        Stride of each stage's first block; ``None`` means ``(1, 2, 2, ...)`` as in xresnet.
    stem_convs : int
        Number of stem convolutions.
    stem_stride : int
        Stride of the first stem conv.
    stem_pool : bool
        Whether a stride-2 max-pool follows the stem.
    norm_groups : int
        Groups for ``norm="group"``; every normalised channel count must be divisible by it.
    zero_init_residual : bool
        Start each residual branch's last norm at zero scale so every block begins as the
        identity (fastai's trick; deep nets train stably from the first step).
    """

    kind: str
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernel_size: int
    stem_width: int
    norm: str
    dropout: float
    block: str = "basic"
    expansion: int = 4
    strides: tuple[int, ...] | None = None
    stem_convs: int = 3
    stem_stride: int = 2
    stem_pool: bool = True
    norm_groups: int = 8
    zero_init_residual: bool = True

    def __post_init__(self) -> None:
        # Normalise sequences (TOML/JSON give lists) so equality and hashing work.
        set_ = object.__setattr__
        set_(self, "widths", _as_int_tuple("widths", self.widths, 1))
        set_(self, "depths", _as_int_tuple("depths", self.depths, 1))
        if len(self.widths) != len(self.depths):
            raise ValueError(
                f"NetConfig.widths and depths need one entry per stage, got "
                f"{len(self.widths)} widths and {len(self.depths)} depths"
            )
        if self.strides is not None:
            set_(self, "strides", _as_int_tuple("strides", self.strides, 1))
            if len(self.strides) != len(self.widths):
                raise ValueError(
                    f"NetConfig.strides needs one entry per stage ({len(self.widths)}), got {len(self.strides)}"
                )
        if self.kind not in KINDS:
            raise ValueError(f"NetConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.norm not in NORMS:
            raise ValueError(f"NetConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"NetConfig.block must be one of {BLOCKS}, got {self.block!r}")
        if self.kind == "student" and self.norm == "batch":
            raise ValueError(
                "NetConfig.kind='student' must not use norm='batch': running statistics do not "
                "average meaningfully across federated clients; use 'group' or 'layer'"
            )
        if _as_int("kernel_size", self.kernel_size, 1) % 2 == 0:
            raise ValueError(f"NetConfig.kernel_size must be odd, got {self.kernel_size}")
        _as_int("stem_width", self.stem_width, 1)
        _as_int("expansion", self.expansion, 1)
        _as_int("stem_convs", self.stem_convs, 1)
        _as_int("stem_stride", self.stem_stride, 1)
        _as_int("norm_groups", self.norm_groups, 1)
        if self.stem_convs > 1 and self.stem_width < 2:
            raise ValueError("NetConfig.stem_width must be >= 2 when stem_convs > 1")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"NetConfig.dropout must be a float, got {self.dropout!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"NetConfig.dropout must be in [0, 1), got {self.dropout}")
        set_(self, "dropout", float(self.dropout))
        for flag in ("stem_pool", "zero_init_residual"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"NetConfig.{flag} must be a bool, got {getattr(self, flag)!r}")

    @property
    def stage_stride_list(self) -> tuple[int, ...]:
        """Per-stage strides with the xresnet default ``(1, 2, 2, ...)`` filled in."""
        if self.strides is not None:
            return self.strides
        return (1,) + (2,) * (len(self.widths) - 1)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> NetConfig:
        """Build a config from a plain mapping (e.g. a TOML table).

        Raises
        ------
        ValueError
            If ``d`` has keys that are not fields, lacks required fields, or holds bad values.
        """
        names = {f.name for f in fields(NetConfig)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown NetConfig keys: {unknown}; known keys: {sorted(names)}")
        required = [f.name for f in fields(NetConfig) if f.default is MISSING]
        missing = [n for n in required if n not in d]
        if missing:
            raise ValueError(f"NetConfig is missing required keys: {missing}")
        return NetConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping with lists instead of tuples, so it serialises to TOML/JSON."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def teacher_config() -> NetConfig:
    """xresnet1d50-style 12-lead teacher (bottleneck blocks, BatchNorm, ~4.7 M parameters).

    Depths (3, 4, 6, 3) and a 3-conv stem follow xresnet50; the inner widths are halved
    (32..256 instead of 64..512; outputs 128..1024 channels) because PTB-XL-sized data does
    not need the ~18 M parameters of the full-width version, and a smaller teacher is
    cheaper to run on every distillation batch.
    """
    return NetConfig(
        kind="xresnet1d",
        widths=(32, 64, 128, 256),
        depths=(3, 4, 6, 3),
        kernel_size=5,
        stem_width=64,
        norm="batch",
        dropout=0.2,
        block="bottleneck",
        expansion=4,
    )


def student_config() -> NetConfig:
    """Compact 1-lead student: depthwise-separable blocks, GroupNorm, ~78 k parameters.

    One stem conv plus pooling (/4), then four single-block stages down to /32. The
    depthwise kernel is wide (9 taps) because depthwise taps are nearly free and the
    receptive field must span a full beat; a single block per stage keeps the operator
    count, and hence batch-1 CPU latency, low.
    """
    return NetConfig(
        kind="student",
        widths=(32, 64, 96, 128),
        depths=(1, 1, 1, 1),
        kernel_size=9,
        stem_width=32,
        norm="group",
        dropout=0.1,
        block="separable",
        stem_convs=1,
        norm_groups=8,
    )


def _norm(cfg: NetConfig, channels: int, zero: bool = False) -> nn.Module:
    if cfg.norm == "batch":
        layer: nn.Module = nn.BatchNorm1d(channels)
    elif cfg.norm == "layer":
        layer = nn.GroupNorm(1, channels)
    else:
        if channels % cfg.norm_groups:
            raise ValueError(
                f"norm='group' needs channel counts divisible by norm_groups={cfg.norm_groups}, "
                f"but a layer has {channels} channels"
            )
        layer = nn.GroupNorm(cfg.norm_groups, channels)
    if zero:
        nn.init.zeros_(layer.weight)  # type: ignore[arg-type]
    return layer


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv1d:
    # Bias-free: every conv feeds a norm (directly or through a pointwise conv), and the
    # norm's shift makes a bias redundant.
    return nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False)


def _conv_norm(
    cfg: NetConfig, c_in: int, c_out: int, k: int, stride: int = 1, act: bool = True, zero: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = [_conv(c_in, c_out, k, stride), _norm(cfg, c_out, zero)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Residual block ``relu(branch(x) + shortcut(x))`` with an avg-pool shortcut.

    The shortcut down-samples by averaging (not a strided 1x1 conv) so that it keeps the
    information of every input sample, as in xresnet.
    """

    def __init__(self, cfg: NetConfig, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        zero = cfg.zero_init_residual
        k = cfg.kernel_size
        if cfg.block == "bottleneck":
            c_out = width * cfg.expansion
            self.branch = nn.Sequential(
                _conv_norm(cfg, c_in, width, 1),
                _conv_norm(cfg, width, width, k, stride),  # stride in the middle, as in xresnet
                _conv_norm(cfg, width, c_out, 1, act=False, zero=zero),
            )
        elif cfg.block == "basic":
            c_out = width
            self.branch = nn.Sequential(
                _conv_norm(cfg, c_in, width, k, stride),
                _conv_norm(cfg, width, width, k, act=False, zero=zero),
            )
        else:
            c_out = width
            # One depthwise conv per block (then a pointwise MLP), not two: in eager PyTorch
            # each depthwise conv costs ~40 us of fixed oneDNN overhead at batch 1, which
            # would dominate the student's latency; no norm between depthwise and pointwise
            # for the same reason.
            self.branch = nn.Sequential(
                _conv(c_in, c_in, k, stride, groups=c_in),
                _conv_norm(cfg, c_in, width, 1),
                _conv_norm(cfg, width, width, 1, act=False, zero=zero),
            )
        short: list[nn.Module] = []
        if stride > 1:
            # ceil_mode keeps the ceil(L / stride) length of the strided branch for odd L.
            short.append(nn.AvgPool1d(stride, ceil_mode=True))
        if c_in != c_out:
            short.append(_conv_norm(cfg, c_in, c_out, 1, act=False))
        self.shortcut = nn.Sequential(*short)  # empty Sequential is the identity
        self.act = nn.ReLU(inplace=True)
        self.out_channels = c_out

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


class Net(nn.Module):
    """Residual 1-D CNN with a GAP + linear head; one class for teacher and student.

    Parameters
    ----------
    n_leads : int
        Input channels (12 for the teacher, 1 for the student).
    n_classes : int
        Number of multi-label outputs (logits; apply a sigmoid).
    cfg : NetConfig
        Architecture.

    Attributes
    ----------
    stage_channels : tuple of int
        Channels of each stage's output feature map.
    stage_strides : tuple of int
        Total temporal down-sampling of each stage's output relative to the input: stage i
        has exactly ``ceil(T / stage_strides[i])`` time steps for an input of length T.
    """

    def __init__(self, n_leads: int, n_classes: int, cfg: NetConfig) -> None:
        super().__init__()
        if isinstance(n_leads, bool) or not isinstance(n_leads, int) or n_leads < 1:
            raise ValueError(f"n_leads must be a positive int, got {n_leads!r}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        if not isinstance(cfg, NetConfig):
            raise ValueError(f"cfg must be a NetConfig, got {type(cfg).__name__}")
        self.n_leads = n_leads
        self.n_classes = n_classes
        self.cfg = cfg

        stem: list[nn.Module] = []
        c = n_leads
        for i in range(cfg.stem_convs):
            c_out = cfg.stem_width if i == cfg.stem_convs - 1 else cfg.stem_width // 2
            stem.append(_conv_norm(cfg, c, c_out, cfg.kernel_size, cfg.stem_stride if i == 0 else 1))
            c = c_out
        total = cfg.stem_stride
        if cfg.stem_pool:
            stem.append(nn.MaxPool1d(3, stride=2, padding=1))
            total *= 2
        self.stem = nn.Sequential(*stem)

        stages: list[nn.Module] = []
        channels: list[int] = []
        strides: list[int] = []
        for width, depth, stride in zip(cfg.widths, cfg.depths, cfg.stage_stride_list):
            blocks: list[nn.Module] = []
            for j in range(depth):
                block = ResBlock(cfg, c, width, stride if j == 0 else 1)
                c = block.out_channels
                blocks.append(block)
            total *= stride
            stages.append(nn.Sequential(*blocks))
            channels.append(c)
            strides.append(total)
        self.stages = nn.ModuleList(stages)
        self.stage_channels: tuple[int, ...] = tuple(channels)
        self.stage_strides: tuple[int, ...] = tuple(strides)

        self.head_drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(c, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def _check_input(self, x: Tensor) -> None:
        # Shape checks would be frozen into (or warn about) a traced graph; the eager model
        # already validated the example, so skip them while tracing or scripting.
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return
        if x.dim() != 3 or x.shape[1] != self.n_leads or x.shape[2] < 1:
            raise ValueError(f"expected input [B, {self.n_leads}, T] with T >= 1, got {tuple(x.shape)}")

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and every stage's output feature map.

        Parameters
        ----------
        x : Tensor
            ECG windows ``[B, n_leads, T]``.

        Returns
        -------
        logits : Tensor
            ``[B, n_classes]``.
        feats : list of Tensor
            ``feats[i]`` is ``[B, stage_channels[i], ceil(T / stage_strides[i])]``.
        """
        self._check_input(x)
        h = self.stem(x)
        feats: list[Tensor] = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        logits = self.fc(self.head_drop(h.mean(dim=-1)))
        return logits, feats

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, n_classes]`` for ECG windows ``[B, n_leads, T]``."""
        return self.forward_features(x)[0]

    def class_evidence(self, feat: Tensor) -> Tensor:
        """Class-activation map: the classifier applied at every time step of the last stage.

        Because the head is global average pooling followed by a linear layer (both linear),
        ``class_evidence(feats[-1]).mean(-1) == logits`` exactly (up to float rounding) in
        eval mode, or in train mode when ``dropout == 0``; in train mode with dropout the
        logits see dropped-out pooled features while the evidence never does.

        Parameters
        ----------
        feat : Tensor
            Last-stage features ``[B, stage_channels[-1], L]``.

        Returns
        -------
        Tensor
            Per-time-step logits ``[B, n_classes, L]`` (bias included at every step).
        """
        if feat.dim() != 3 or feat.shape[1] != self.fc.in_features:
            raise ValueError(f"expected last-stage features [B, {self.fc.in_features}, L], got {tuple(feat.shape)}")
        return F.conv1d(feat, self.fc.weight.unsqueeze(-1), self.fc.bias)


def build_net(n_leads: int, n_classes: int, cfg: NetConfig | dict[str, Any]) -> Net:
    """Build a :class:`Net` from a config or a plain mapping (see :meth:`NetConfig.from_dict`)."""
    if isinstance(cfg, dict):
        cfg = NetConfig.from_dict(cfg)
    return Net(n_leads, n_classes, cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (trainable or frozen; shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())
