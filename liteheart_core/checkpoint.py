"""Checkpoints that carry everything needed to score another PTB-XL-layout folder.

A checkpoint holds the weights and the metadata: network config, classes,
task, leads, sampling rate, window, preparation settings (normalisation,
band-pass), per-class thresholds tuned on validation, validation metrics and
the fingerprint of the data it was trained on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from liteheart_core.models import Net, NetConfig, build_net

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or lacks what scoring needs."""


def save_checkpoint(path: Path, model: Net, meta: dict) -> str:
    """Write weights + metadata atomically; returns the file's sha256."""
    required = ("kind", "classes", "leads", "fs", "length", "net_config", "n_leads")
    missing = [k for k in required if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata lacks {', '.join(missing)}")
    meta = json.loads(json.dumps(meta))  # plain types only, so weights_only loading accepts it
    blob = {
        "format": FORMAT,
        "meta": {**meta, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    data = buffer.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: Path, map_location: str = "cpu") -> tuple[Net, dict]:
    """Rebuild the network of a checkpoint and return it (eval mode) with its metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "meta" not in blob:
        raise CheckpointError(f"{path} is not a LiteHeart checkpoint (format {FORMAT})")
    meta = blob["meta"]
    model = build_net(int(meta["n_leads"]), len(meta["classes"]), NetConfig.from_dict(meta["net_config"]))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored network config: {exc}") from exc
    model.eval()
    return model, meta


def thresholds_of(meta: dict) -> np.ndarray:
    """The per-class thresholds stored in a checkpoint (0.5 where none were tuned)."""
    thr = meta.get("thresholds")
    return np.asarray(thr if thr is not None else [0.5] * len(meta["classes"]), dtype=np.float64)
