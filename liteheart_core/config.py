"""Run configuration of a federated LiteHeart run: one frozen dataclass, kebab-case keys in TOML.

The same keys are used in scenario TOML files (``[tool.flwr.app.config]``-style
flat tables), on the command line, and in the ConfigRecord the server sends to
clients. Unknown keys and bad values are errors that name the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

PARTITIONS = ("iid", "site", "dirichlet")
STRATEGIES = ("fedavg", "fedprox")


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
    method: str = "liteheart"
    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-3
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    fraction_train: float = 1.0
    min_clients: int = 2  # nodes that must be connected before a round starts
    min_replies: int = 1  # successful replies needed to aggregate a round
    round_timeout: float = 600.0
    teacher: str = ""  # teacher checkpoint; empty: train one on the server's data (cached)
    teacher_epochs: int = 10
    seed: int = 0
    device: str = "auto"
    student_lead: str = "I"

    def __post_init__(self) -> None:
        checks = [
            (self.clients >= 1, "clients must be >= 1"),
            (self.rounds >= 1, "rounds must be >= 1"),
            (self.partition in PARTITIONS, f"partition must be one of {', '.join(PARTITIONS)}"),
            (self.alpha > 0, "alpha must be > 0"),
            (0 <= self.labelled_fraction <= 1, "labelled-fraction must be in [0, 1]"),
            (self.local_epochs >= 1, "local-epochs must be >= 1"),
            (self.batch_size >= 2, "batch-size must be >= 2"),
            (self.lr > 0, "lr must be > 0"),
            (self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}"),
            (self.proximal_mu >= 0, "proximal-mu must be >= 0"),
            (0 < self.fraction_train <= 1, "fraction-train must be in (0, 1]"),
            (self.min_clients >= 1, "min-clients must be >= 1"),
            (self.min_replies >= 1, "min-replies must be >= 1"),
            (self.round_timeout > 0, "round-timeout must be > 0"),
            (self.synth_records >= 50, "synth-records must be >= 50"),
            (self.teacher_epochs >= 1, "teacher-epochs must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad run config: {message}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FedConfig":
        """Build from kebab-case (or snake_case) keys; unknown keys are an error."""
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in types:
                raise ValueError(f"unknown run config key {key!r}; known keys: "
                                 + ", ".join(sorted(k.replace('_', '-') for k in types)))
            default = getattr(cls, name)
            try:
                if isinstance(default, bool):
                    value = bool(value)
                elif isinstance(default, int):
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
                else:
                    value = str(value)
            except (TypeError, ValueError):
                raise ValueError(f"bad run config: {key} = {value!r} is not a {type(default).__name__}") from None
            values[name] = value
        return cls(**values)

    @classmethod
    def from_toml(cls, path: Path, overrides: dict[str, Any] | None = None) -> "FedConfig":
        """Read a scenario file (a flat table, or the ``[liteheart]`` table of it)."""
        try:
            doc = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"scenario file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"scenario file {path} is not valid TOML: {exc}") from None
        table = doc.get("liteheart", doc)
        return cls.from_dict({**table, **(overrides or {})})

    def to_dict(self) -> dict[str, Any]:
        """Kebab-case keys, as in TOML and Flower ConfigRecords."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}
