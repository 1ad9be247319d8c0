"""What a client is told each round: the run's settings plus what travels with them, parsed once on the client.

The server writes it (:meth:`RoundConfig.to_record`, a flat dict that becomes the train message's
ConfigRecord); a client reads it back once, at the message boundary (:meth:`RoundConfig.from_record`),
and hands typed values on. The run's settings are a :class:`~liteheart_core.config.FedConfig`, so
every key has one validation and one default, the same on both sides. The server's paths
never travel: the teacher checkpoints (paths on the server's machine) and, in deployment, ``data``
(each node names its own data in its node config): ``SERVER_PATHS`` of config.py.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from liteheart_core.config import SERVER_PATHS, FedConfig

TRANSPORT = ("teacher-hash", "wearable-teacher-hash", "student-net", "run-id", "server-round", "client-threads")


@dataclass(frozen=True)
class RoundConfig:
    """One round's configuration as a client sees it."""

    run: FedConfig  # the run's settings (``run.data`` is the default "synth" when ``data`` is None: use ``data``)
    teacher_hash: str = ""  # the teacher's content hash: how a node finds it in its cache
    wearable_teacher_hash: str = ""  # the wearable teacher's (a teacher that answers from lead I); "": none
    student_net: dict[str, Any] = field(default_factory=dict)  # NetConfig of the global student
    run_id: str = ""  # the registry's run id, which a resumed run keeps (nodes key persisted state by it)
    server_round: int = 0  # set by the strategy when it sends the round
    client_threads: int = 1
    data: str | None = None  # the run's dataset when the nodes share it (simulation); None: the node's own

    @classmethod
    def from_run(
        cls,
        cfg: FedConfig,
        teacher_hash: str,
        student_net: dict[str, Any],
        run_id: str = "",
        share_data: bool = True,
        wearable_teacher_hash: str = "",
    ) -> RoundConfig:
        """The server's side: what every client of run ``cfg`` is told (``share_data``: simulation only)."""
        return cls(
            run=cfg,
            teacher_hash=teacher_hash,
            wearable_teacher_hash=wearable_teacher_hash,
            student_net=dict(student_net),
            run_id=run_id,
            data=cfg.data if share_data else None,
        )

    def to_record(self) -> dict[str, Any]:
        """Flat kebab-case keys of scalars, as a Flower ConfigRecord holds them (``server-round`` is the strategy's)."""
        values = {k: v for k, v in self.run.to_dict().items() if k not in SERVER_PATHS}
        if self.data is not None:
            values["data"] = self.data
        values.update(
            {
                "teacher-hash": self.teacher_hash,
                "wearable-teacher-hash": self.wearable_teacher_hash,
                "student-net": json.dumps(self.student_net),
                "run-id": self.run_id,
                "client-threads": self.client_threads,
            }
        )
        return values

    @classmethod
    def from_record(cls, record: Mapping[str, Any], ignore: Collection[str] = ()) -> RoundConfig:
        """The client's side: parse a round's config once; an unknown key or a bad value is a ValueError.

        ``ignore`` names keys that other layers add to the same record (Flower's client-side
        clipping puts its clipping norm there).
        """
        values = {k: v for k, v in record.items() if k not in ignore}
        unexpected = sorted(set(values) & (set(SERVER_PATHS) - {"data"}))
        if unexpected:
            raise ValueError(f"bad round config: {', '.join(unexpected)} belongs to the server's machine")
        transport = {k: values.pop(k) for k in TRANSPORT if k in values}
        data = values.pop("data", None)
        run = FedConfig.from_dict(values)  # FedConfig's checks, FedConfig's defaults; unknown keys refused
        given: dict[str, Any] = {}  # a key the record lacks keeps the field's default (one default per key)
        try:
            for key, value in transport.items():
                name = key.replace("-", "_")
                if key == "student-net":
                    given[name] = json.loads(str(value))
                elif key in ("server-round", "client-threads"):
                    if isinstance(value, bool) or float(value) != int(value):
                        raise ValueError(f"{key} = {value!r} is not a whole number")
                    given[name] = int(value)
                else:
                    given[name] = str(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad round config: {exc}") from None
        if not isinstance(given.get("student_net", {}), dict):
            raise ValueError(f"bad round config: student-net must be a JSON object, got {transport['student-net']!r}")
        parsed = cls(run=run, data=None if data is None else str(data), **given)
        if parsed.client_threads < 1 or parsed.server_round < 0:
            raise ValueError("bad round config: client-threads must be >= 1 and server-round >= 0")
        return parsed
