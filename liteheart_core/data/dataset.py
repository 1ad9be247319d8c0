"""Read a prepared dataset (memory-mapped) and resolve any data argument to one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from liteheart_core.data.prepare import PrepSettings, detect_kind, prepare
from liteheart_core.data.ptbxl import LayoutError
from liteheart_core.data.signal import lead_indices


def default_cache_dir() -> Path:
    """Where raw folders are prepared when no ``--out`` is given (``$LITEHEART_CACHE``)."""
    return Path(os.environ.get("LITEHEART_CACHE", Path.home() / ".cache" / "liteheart"))


@dataclass
class PreparedData:
    """A prepared dataset: ``signals`` [N, 12, T] memmap, labels per task, regions, index."""

    root: Path
    meta: dict
    index: pd.DataFrame

    @classmethod
    def open(cls, root: Path) -> PreparedData:
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            raise LayoutError(f"{root} is not a prepared dataset (meta.json is missing)")
        meta = json.loads(meta_path.read_text())
        index = pd.read_csv(
            root / "index.csv",
            index_col="row",
            dtype={"record": str, "patient": str, "site": str},
            keep_default_na=False,
            na_values={"age": [""]},
        )
        return cls(root=root, meta=meta, index=index)

    @cached_property
    def signals(self) -> np.ndarray:
        return np.load(self.root / "signals.npy", mmap_mode="r")

    @cached_property
    def regions(self) -> np.ndarray | None:
        path = self.root / "regions.npy"
        return np.load(path, mmap_mode="r") if path.is_file() else None

    @property
    def fs(self) -> int:
        return int(self.meta["fs"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def tasks(self) -> dict[str, list[str]]:
        return dict(self.meta["tasks"])

    @property
    def default_task(self) -> str:
        return "superdiagnostic" if "superdiagnostic" in self.tasks else next(iter(self.tasks))

    def labels(self, task: str | None = None) -> tuple[list[str], np.ndarray]:
        """Class names and the uint8 label matrix [N, C] of a task."""
        task = task or self.default_task
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not in {self.root}; it has {', '.join(self.tasks)}")
        return list(self.tasks[task]), np.load(self.root / f"labels_{task}.npy")

    def rows(self, task: str | None = None, folds: list[int] | None = None) -> np.ndarray:
        """Row indices that carry at least one label of ``task`` and lie in ``folds``."""
        _, y = self.labels(task)
        keep = y.sum(axis=1) > 0
        if folds is not None:
            keep &= self.index["fold"].isin(list(folds)).to_numpy()
        return np.flatnonzero(keep)

    def x(self, rows: np.ndarray, leads: str | list[str] = "all") -> np.ndarray:
        """Signals of ``rows`` (a copy) restricted to ``leads`` ("all", "I", "I,II", ...)."""
        rows = np.asarray(rows, dtype=np.int64)
        if leads == "all":
            return np.asarray(self.signals[rows])
        # only the asked leads are read from the memmap (a wearable's lead I is 1/12 of the bytes)
        return np.asarray(self.signals[np.ix_(rows, np.asarray(lead_indices(leads), dtype=np.int64))])


def resolve_data(
    path: str | Path,
    cache_dir: Path | None = None,
    settings: PrepSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PreparedData:
    """Open a prepared dataset, preparing a raw PTB-XL/Challenge folder first when needed (``progress(done, total)``)."""
    path = Path(path)
    if not path.exists():
        raise LayoutError(f"data path {path} does not exist")
    if (path / "meta.json").is_file():
        return PreparedData.open(path)
    detect_kind(path)  # a clear error for a folder that is no dataset
    summary = prepare(path, cache_dir or default_cache_dir(), settings=settings, progress=progress)
    return PreparedData.open(Path(summary["path"]))
