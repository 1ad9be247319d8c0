"""Run configuration of a federated LiteHeart run: one frozen dataclass, kebab-case keys in TOML.

The same keys are used in scenario TOML files (``[tool.flwr.app.config]``-style
flat tables), on the command line, and in the ConfigRecord the server sends to
clients. Unknown keys and bad values are errors that name the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from liteheart_core.data.splits import SPLITS
from liteheart_core.methods import (
    DEFAULT_METHOD,
    METHODS,
    STUDENT_METHODS,
    method_spec,
)  # the one table of methods (what each needs)

PARTITIONS = ("iid", "site", "dirichlet")
STRATEGIES = ("fedavg", "fedprox", "fedmedian", "trimmed-mean", "krum")
WEARABLE_WEIGHTINGS = ("examples", "validated")
# teachers the server can train for lead-I-only devices (liteheart_core.wearable.wearable_teacher_config)
WEARABLE_TEACHER_KINDS = ("lead-dropout", "assistant")
DP_MODES = ("none", "client", "server", "dp-sgd")
# settings that are paths on the server's machine: they stay there (the app bundle and the round config leave them
# out; a simulation shares `data` with its nodes, which run on the same machine)
SERVER_PATHS = ("data", "teacher", "wearable-teacher")


def _folds_ok(text: str) -> bool:
    if not text.strip():
        return True
    try:
        folds = [int(f) for f in text.split(",")]
    except ValueError:
        return False
    return all(f in SPLITS["train"] for f in folds) and len(set(folds)) < len(SPLITS["train"])


@dataclass(frozen=True)
class FedConfig:
    """Everything a federated run needs. Field ``foo_bar`` is key ``foo-bar`` in TOML."""

    data: str = "synth"  # "synth" (embedded generator) or a PTB-XL/Challenge/prepared folder
    synth_records: int = 600
    task: str = "superdiagnostic"
    clients: int = 4
    rounds: int = 8
    partition: str = "iid"
    alpha: float = 0.5
    labelled_fraction: float = 0.3
    method: str = DEFAULT_METHOD
    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-3
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    trim_fraction: float = 0.2  # trimmed-mean: fraction of updates cut at each end, per coordinate
    krum_byzantine: int = 1  # krum: hostile clients tolerated (f); needs more than 2f + 2 replies
    max_update_norm: float = 1e4  # an update (client weights - global weights) longer than this is rejected
    fraction_train: float = 1.0
    min_clients: int = 2  # nodes that must be connected before a round starts
    min_replies: int = 1  # successful replies needed to aggregate a round
    round_timeout: float = 600.0
    teacher: str = ""  # teacher checkpoint; empty: train one on the server's data (cached)
    teacher_epochs: int = 10
    # the server's own archive: training folds (e.g. "1,2") that no client holds; a teacher trained here is
    # trained on them alone, and a given --teacher must not have seen any other fold (a teacher that saw the
    # clients' labels is not a federated result). Empty: clients hold every training fold.
    server_folds: str = ""
    seed: int = 0
    device: str = "auto"
    student_lead: str = "I"
    # wearables (lead I only, no teacher): in simulation the last `wearables` of the `clients` partitions;
    # in deployment a node says so itself (node config client-kind=wearable)
    wearables: int = 0
    wearable_weight: float = 1.0  # aggregation weight per example of a wearable, relative to a paired client's
    wearable_labelled_fraction: float = -1.0  # labels a wearable holds; -1: the same as labelled-fraction
    wearable_degrade: bool = True  # motion artefacts, electrode noise, the device's own rate
    wearable_rate: int = 250  # a wearable's native sampling rate (Hz)
    # a teacher that answers from lead I, shipped once (by hash) to every wearable, which then distils from its
    # soft targets on its own recordings: a checkpoint (a lead-I teacher assistant or a 12-lead teacher trained
    # with lead dropout), or "assistant" / "lead-dropout": the server trains one on its data (cached).
    # Empty: wearables learn by mean-teacher consistency against the global student
    wearable_teacher: str = ""
    # how the wearables' updates count: "examples" (FedAvg by examples x wearable-weight) or "validated" (each
    # round, the sites' and the wearables' averages are mixed at the share of the wearables that scores best
    # on the server's validation records)
    wearable_weighting: str = "examples"
    # SecAgg+ secure aggregation (server/secagg.py): the server only ever unmasks the sum of the updates
    secagg: bool = False
    secagg_shares: float = 1.0  # key shares per node: <= 1 a fraction of the sampled nodes, else a count (>= 3)
    secagg_threshold: float = 0.67  # shares that rebuild a node's masks: <= 1 a fraction of the shares, else a count
    secagg_clipping_range: float = 8.0  # each example-weighted weight is clipped to +-this before quantisation
    secagg_quantization_range: int = 4194304  # integer levels over [-clip, clip] (2**22)
    secagg_max_weight: int = 1000  # largest num-examples of a client: weights are scaled by it before masking
    # differential privacy (liteheart_core/privacy.py): none; client or server (client-level DP, Flower's fixed-
    # clipping wrappers, updates clipped on the client or on the server); dp-sgd (record-level, on each client).
    # A numeric dp-* key at 0 is unset: dp-delta then means 1e-5 and dp-max-grad-norm 1.0
    dp: str = "none"
    dp_epsilon: float = 0.0  # target epsilon after `rounds` rounds: the noise is derived from it ...
    dp_noise_multiplier: float = 0.0  # ... or the noise multiplier itself (give exactly one of the two)
    dp_clip_norm: float = 0.0  # client/server: L2 bound on a client's update (required)
    dp_max_grad_norm: float = 0.0  # dp-sgd: L2 bound on one record's gradient
    dp_delta: float = 0.0  # delta of (epsilon, delta)-DP, in (0, 1)

    def __post_init__(self) -> None:
        checks = [
            (self.clients >= 1, "clients must be >= 1"),
            (self.rounds >= 1, "rounds must be >= 1"),
            (self.partition in PARTITIONS, f"partition must be one of {', '.join(PARTITIONS)}"),
            (self.alpha > 0, "alpha must be > 0"),
            (0 <= self.labelled_fraction <= 1, "labelled-fraction must be in [0, 1]"),
            # a federated client trains the student; the teacher is the server's (trained or given)
            (
                self.method in STUDENT_METHODS,
                f"method {self.method!r} is not a method a client can train; expected one of "
                f"{', '.join(STUDENT_METHODS)}",
            ),
            (self.local_epochs >= 1, "local-epochs must be >= 1"),
            (self.batch_size >= 2, "batch-size must be >= 2"),
            (self.lr > 0, "lr must be > 0"),
            (self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}"),
            (self.proximal_mu >= 0, "proximal-mu must be >= 0"),
            (0 < self.trim_fraction < 0.5, "trim-fraction must be in (0, 0.5)"),
            (self.krum_byzantine >= 0, "krum-byzantine must be >= 0"),
            (
                math.isfinite(self.max_update_norm) and self.max_update_norm > 0,
                "max-update-norm must be a finite number > 0",
            ),
            (0 < self.fraction_train <= 1, "fraction-train must be in (0, 1]"),
            (self.min_clients >= 1, "min-clients must be >= 1"),
            (self.min_replies >= 1, "min-replies must be >= 1"),
            (self.round_timeout > 0, "round-timeout must be > 0"),
            (self.synth_records >= 50, "synth-records must be >= 50"),
            (self.teacher_epochs >= 1, "teacher-epochs must be >= 1"),
            (
                _folds_ok(self.server_folds),
                f"server-folds must be training folds ({', '.join(map(str, SPLITS['train']))}) separated by commas, "
                f"leaving at least one to the clients; got {self.server_folds!r}",
            ),
            (0 <= self.wearables <= self.clients, "wearables must be in [0, clients]"),
            (math.isfinite(self.wearable_weight) and self.wearable_weight >= 0, "wearable-weight must be >= 0"),
            (
                self.wearable_weight > 0 or self.wearables < self.clients,
                "wearable-weight 0 with every client a wearable leaves nothing to aggregate",
            ),
            (
                self.wearable_labelled_fraction == -1 or 0 <= self.wearable_labelled_fraction <= 1,
                "wearable-labelled-fraction must be in [0, 1] (or -1: the same as labelled-fraction)",
            ),
            (25 <= self.wearable_rate <= 2000, "wearable-rate must be in [25, 2000] Hz"),
            (
                self.wearable_weighting in WEARABLE_WEIGHTINGS,
                f"wearable-weighting must be one of {', '.join(WEARABLE_WEIGHTINGS)}",
            ),
            (
                not self.wearable_teacher or method_spec(self.method).needs_teacher,
                f"wearable-teacher: method {self.method} uses no teacher, so a wearable would not use it either",
            ),
            (
                self.wearable_weighting != "validated"
                or (self.strategy in ("fedavg", "fedprox") and self.dp == "none"),
                "wearable-weighting validated mixes the sites' and the wearables' FedAvg averages: it needs strategy "
                "fedavg or fedprox and dp none",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad run config: {message}")
        self._check_robust_strategy()
        if self.secagg:
            self._check_secagg()
        self._check_dp()

    @property
    def server_fold_tuple(self) -> tuple[int, ...]:
        return tuple(int(f) for f in self.server_folds.split(",") if f.strip()) if self.server_folds.strip() else ()

    @property
    def client_folds(self) -> tuple[int, ...]:
        """The training folds the clients hold (every training fold but the server's archive)."""
        return tuple(f for f in SPLITS["train"] if f not in self.server_fold_tuple)

    def replies_per_round(self) -> int:
        """Nodes sampled each round (Flower's FedAvg rule), with ``clients`` or at least ``min-clients`` connected."""
        connected = max(self.clients, self.min_clients)
        return min(connected, max(int(connected * self.fraction_train), self.min_clients))

    def _check_dp(self) -> None:
        # which guarantees combine with what: the reasons are in liteheart_core/privacy.py
        numbers = {
            "dp-epsilon": self.dp_epsilon,
            "dp-noise-multiplier": self.dp_noise_multiplier,
            "dp-clip-norm": self.dp_clip_norm,
            "dp-max-grad-norm": self.dp_max_grad_norm,
            "dp-delta": self.dp_delta,
        }
        bad = [
            f"{k} must be a finite number > 0, got {v}" for k, v in numbers.items() if not (math.isfinite(v) and v >= 0)
        ]
        if self.dp not in DP_MODES:
            bad.insert(0, f"dp must be one of {', '.join(DP_MODES)}, got {self.dp!r}")
        elif self.dp == "none":
            given = [k for k, v in numbers.items() if v]
            if given and not bad:
                bad.append(
                    f"{', '.join(given)} given but dp = none: set dp = client, server or dp-sgd, "
                    "or leave the dp-* keys out"
                )
        else:
            mode = f"dp = {self.dp}"
            client_level = self.dp in ("client", "server")
            checks = [
                (
                    (self.dp_epsilon > 0) != (self.dp_noise_multiplier > 0),
                    f"{mode} needs exactly one of dp-epsilon (the target epsilon, > 0: the noise is derived from it "
                    "and the planned rounds) and dp-noise-multiplier (> 0)",
                ),
                (self.dp_delta < 1, f"dp-delta must be in (0, 1) (default 1e-5), got {self.dp_delta}"),
                (
                    not client_level or self.dp_clip_norm > 0,
                    f"{mode} needs dp-clip-norm > 0: the L2 bound on each client's update",
                ),
                (
                    not client_level or not self.dp_max_grad_norm,
                    "dp-max-grad-norm bounds one record's gradient in dp-sgd; client-level DP uses dp-clip-norm",
                ),
                (
                    client_level or not self.dp_clip_norm,
                    "dp-clip-norm bounds a client's update in dp = client/server; dp-sgd uses dp-max-grad-norm",
                ),
                (
                    not client_level or self.strategy in ("fedavg", "fedprox"),
                    f"{mode} works with strategy fedavg or fedprox: its noise is calibrated to the mean of the clipped "
                    f"updates, and {self.strategy} does not average them",
                ),
                (
                    not client_level or self.wearable_weight == 1.0,
                    f"{mode} averages the clipped updates with equal weights (the noise is calibrated to that): "
                    "wearable-weight must stay 1",
                ),
                (
                    client_level or self.wearables == 0,
                    "dp-sgd runs in the 12-lead (paired) clients' round; wearables would train without it",
                ),
                (
                    client_level or self.method not in METHODS or not method_spec(self.method).uses_bank,
                    f"dp-sgd clips each record's gradient of the per-record objective, which the view bank of "
                    f"{self.method} (teacher targets on mixups of two records) does not have: use method kd, fitnets "
                    "or liteheart (v1) with dp-sgd",
                ),
            ]
            bad += [message for ok, message in checks if not ok]
        if bad:
            raise ValueError(f"bad run config: {bad[0]}")

    def _check_secagg(self) -> None:
        # SecAgg+ (Flower's secaggplus_mod + SecAggPlusWorkflow) hands the server the unmasked SUM of the
        # example-weighted updates and nothing else: whatever needs one client's update cannot combine with it
        n = self.replies_per_round()
        shares, threshold = float(self.secagg_shares), float(self.secagg_threshold)
        checks = [
            (
                self.strategy in ("fedavg", "fedprox"),
                f"secagg works with strategy fedavg or fedprox (a plain weighted mean); {self.strategy} must see "
                "every client's update, which secure aggregation hides from the server",
            ),
            (
                self.wearables == 0,
                "secagg cannot combine with wearables: a wearable's weight (wearable-weight) is "
                "applied by the server to each update, which secure aggregation hides, and the SecAgg+ client runs "
                "the 12-lead round only",
            ),
            (
                self.dp != "server",
                "secagg cannot combine with dp = server: server-side clipping needs each "
                "client's update, which secure aggregation hides from the server",
            ),
            (
                self.dp not in ("client", "dp-sgd"),
                f"secagg with dp = {self.dp} is not wired: that DP runs in the "
                "Message API strategy and client, and the SecAgg+ path is Flower's legacy stack (the two could "
                "combine in principle: the clipping/noise happens on the clients or on the sum)",
            ),
            (
                n >= 2,
                f"secagg needs at least 2 clients per round (this config samples {n}): the sum of one "
                "update is that update",
            ),
            (
                0 < shares <= 1 or (shares.is_integer() and 3 <= shares <= self.clients),
                f"secagg-shares {shares:g} must be a fraction in (0, 1] of the sampled nodes or a whole number "
                f"of nodes in [3, clients={self.clients}]",
            ),
            (
                0 < threshold <= 1 or (threshold.is_integer() and threshold >= 2),
                f"secagg-threshold {threshold:g} must be a fraction in (0, 1] of the shares or a whole number >= 2",
            ),
            (
                threshold <= 1 or threshold <= (shares if shares > 1 else n) - (1 if shares > 1 else 0),
                f"secagg-threshold {threshold:g} must be below secagg-shares {shares:g} (a count) and at most the "
                f"{n} nodes sampled per round",
            ),
            (
                math.isfinite(self.secagg_clipping_range) and self.secagg_clipping_range > 0,
                "secagg-clipping-range must be a finite number > 0",
            ),
            (self.secagg_quantization_range >= 2, "secagg-quantization-range must be >= 2"),
            (
                self.secagg_quantization_range * self.clients < 2**32,
                f"secagg-quantization-range {self.secagg_quantization_range} x clients {self.clients} reaches the "
                "2**32 modulus of the masks: the masked sum would overflow; lower secagg-quantization-range",
            ),
            (self.secagg_max_weight >= 1, "secagg-max-weight must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad run config: {message}")

    def _check_robust_strategy(self) -> None:
        # settings that would make a robust strategy impossible, or silently a plain mean
        n = self.replies_per_round()
        if self.strategy == "krum" and n < 2 * self.krum_byzantine + 3:
            raise ValueError(
                f"bad run config: strategy krum with krum-byzantine {self.krum_byzantine} needs more than "
                f"2f + 2 = {2 * self.krum_byzantine + 2} replies per round, but clients {self.clients} with "
                f"fraction-train {self.fraction_train} and min-clients {self.min_clients} sample only {n}; "
                f"add clients or lower krum-byzantine"
            )
        if self.strategy == "trimmed-mean" and int(self.trim_fraction * n) == 0:
            raise ValueError(
                f"bad run config: trim-fraction {self.trim_fraction} trims no update out of the {n} replies per "
                f"round (int({self.trim_fraction} x {n}) = 0), so trimmed-mean would be a plain mean; "
                f"use trim-fraction >= {1 / n:.3g} or more clients"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FedConfig:
        """Build from kebab-case (or snake_case) keys; unknown keys are an error."""
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in types:
                raise ValueError(
                    f"unknown run config key {key!r}; known keys: "
                    + ", ".join(sorted(k.replace("_", "-") for k in types))
                )
            default = getattr(cls, name)
            try:
                if isinstance(default, bool):
                    value = as_bool(value)
                elif isinstance(value, bool):
                    raise ValueError  # int(True) == 1, str(True) == "True": a boolean is no number or name
                elif isinstance(default, int):
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError
                    value = int(value)
                    if abs(value) >= 2**63:
                        raise ValueError
                elif isinstance(default, float):
                    value = float(value)
                elif not isinstance(value, str):
                    raise ValueError  # str([1]) or str({...}) would pass as a path or a name
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"bad run config: {key} = {value!r} is not a {type(default).__name__}") from None
            values[name] = value
        cfg = cls(**values)  # its own checks first: they say what a value must be
        for key, value in data.items():  # inf passes `x > 0`, and settings checked only when used pass unchecked
            if isinstance(values[key.replace("-", "_")], float) and not math.isfinite(values[key.replace("-", "_")]):
                raise ValueError(f"bad run config: {key} = {value!r} is not a finite number")
        return cfg

    @classmethod
    def from_toml(cls, path: Path, overrides: dict[str, Any] | None = None) -> FedConfig:
        """Read a scenario file (a flat table, or the ``[liteheart]`` table of it)."""
        try:
            doc = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"scenario file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"scenario file {path} is not valid TOML: {exc}") from None
        table = doc.get("liteheart", doc)
        if not isinstance(table, dict):
            raise ValueError(f"scenario file {path}: liteheart must be a table ([liteheart]), not {table!r}")
        return cls.from_dict({**table, **(overrides or {})})

    def to_dict(self) -> dict[str, Any]:
        """Kebab-case keys, as in TOML and Flower ConfigRecords."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def checked_run_config(values: dict[str, Any]) -> FedConfig:
    """The checks every entry point makes (``liteheart-sim run`` and ``flwr run .``) before a run starts.

    Besides :meth:`FedConfig.from_dict`: the data folder and the teacher checkpoints must exist,
    and ``min-clients`` never exceeds ``clients`` (a small federation must not wait for nodes
    that will never come).
    """
    cfg = FedConfig.from_dict(values)
    if cfg.data != "synth" and not Path(cfg.data).exists():
        raise ValueError(f"data folder {cfg.data} does not exist")
    if cfg.teacher and not Path(cfg.teacher).is_file():
        raise ValueError(f"teacher checkpoint {cfg.teacher} does not exist")
    if (
        cfg.wearable_teacher
        and cfg.wearable_teacher not in WEARABLE_TEACHER_KINDS
        and not Path(cfg.wearable_teacher).is_file()
    ):
        raise ValueError(f"wearable teacher checkpoint {cfg.wearable_teacher} does not exist")
    return FedConfig.from_dict({**cfg.to_dict(), "min-clients": min(cfg.min_clients, cfg.clients)})


def as_bool(value: Any) -> bool:
    """true/false, 1/0 or their strings (a bare ``bool("false")`` would be True)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"{value!r} is not a boolean")
