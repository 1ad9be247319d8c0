"""Score a checkpoint on a prepared dataset: the one evaluation every path uses."""

from __future__ import annotations

from liteheart_core.checkpoint import thresholds_of
from liteheart_core.data.dataset import PreparedData
from liteheart_core.data.signal import lead_indices
from liteheart_core.data.splits import split_folds
from liteheart_core.metrics import evaluate
from liteheart_core.models import Net
from liteheart_core.train import predict, resolve_device


def score(
    net: Net,
    meta: dict,
    data: PreparedData,
    split: str = "test",
    device: str = "auto",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Macro F1 / AUC / AP with intervals and the per-class table, thresholds from the checkpoint.

    Raises
    ------
    ValueError
        The data lack the checkpoint's task or classes, or the split is empty.
    """
    task = meta["task"]
    if task not in data.tasks:
        raise ValueError(f"{data.root} has no {task!r} labels (it has {', '.join(data.tasks)})")
    classes, y = data.labels(task)
    if classes != list(meta["classes"]):
        raise ValueError(f"classes differ: checkpoint {meta['classes']}, data {classes}")
    if data.fs != meta["fs"] or int(data.meta["length"]) != meta["length"]:
        raise ValueError(
            f"data are {data.fs} Hz x {data.meta['length']} samples, the model expects "
            f"{meta['fs']} Hz x {meta['length']}"
        )
    trained = meta.get("train_config") or {}
    folds = split_folds(
        split, {k: tuple(trained[f"{k}_folds"]) for k in ("train", "val", "test") if trained.get(f"{k}_folds")}
    )
    rows = data.rows(task, folds=list(folds) if folds else None)
    if len(rows) == 0:
        present = sorted(set(data.index["fold"]))
        raise ValueError(
            f"split {split!r} (folds {list(folds) if folds else 'all'}) holds no labelled record in "
            f"{data.root}; folds present: {present}"
        )
    dev = resolve_device(device)
    probs = predict(net.to(dev), data.x(rows, leads=[data.meta["leads"][i] for i in lead_indices(meta["leads"])]), dev)
    result = evaluate(y[rows], probs, thresholds_of(meta), classes, n_bootstrap=n_bootstrap, seed=seed)
    return {
        "model_kind": meta["kind"],
        "method": meta.get("method"),
        "task": task,
        "split": split,
        "data_fingerprint": data.fingerprint,
        **result,
    }
