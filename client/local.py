"""Where a node's records come from, and which kind of client it is.

Kinds
-----
``paired``    a hospital site: 12-lead records, the teacher's targets computed locally, the full objective.
``wearable``  lead I only: never reads a 12-lead record and never holds the 12-lead teacher. With the
              run's wearable teacher (one that answers from lead I, shipped once by hash) it runs the
              distillation objective against that teacher's soft targets on its own recordings; without
              one, mean-teacher consistency and pseudo-labels against the global student, plus its labels.

A node states its kind in its node config (``client-kind``). A simulated node without one is a
wearable when its partition id is among the last ``wearables`` of the run's partitions.

Sources (node config)
---------------------
``data-path``  a PTB-XL/Challenge/prepared folder (a wearable reads its lead I only)
``store``      a device record store filled by ``liteheart-client ingest`` (wearables): its usable
               lead-I recordings, or lead I of 12-lead ones
``partition-id`` / ``num-partitions`` (+ ``data``)  a partition of the run's dataset (simulation)
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Context

from liteheart_core.federated import LocalData, simulated_client_data, site_data
from liteheart_core.regions import compute_regions
from liteheart_core.wearable import WearableView

KINDS = ("paired", "wearable")


def client_kind(context: Context, cfg: dict) -> str:
    """``paired`` or ``wearable``, from the node config or (simulation) the partition id."""
    node = context.node_config
    if "client-kind" in node:
        kind = str(node["client-kind"])
        if kind not in KINDS:
            raise ValueError(f"node config client-kind={kind!r}: must be one of {', '.join(KINDS)}")
        return kind
    wearables = int(cfg.get("wearables", 0))
    if wearables and "partition-id" in node:
        return "wearable" if int(node["partition-id"]) >= int(node["num-partitions"]) - wearables else "paired"
    return "paired"


def wearable_view(cfg: dict, context: Context) -> WearableView:
    """How this wearable degrades lead I (seeded per node, fixed across rounds: its recordings don't change)."""
    node_seed = int(context.node_config.get("partition-id", context.node_id % 100_000))
    return WearableView(degrade=bool(cfg.get("wearable-degrade", True)), native_rate=int(cfg.get("wearable-rate", 250)),
                        seed=int(cfg.get("seed", 0)) * 10_007 + node_seed)


def local_data(context: Context, cfg: dict, kind: str = "paired") -> LocalData:
    """This node's records: its own folder or store in deployment, its partition in simulation."""
    node = context.node_config
    view = wearable_view(cfg, context) if kind == "wearable" else None
    if "store" in node:
        if kind != "wearable":
            raise ValueError("node config store= is for wearables (client-kind=wearable); a paired site gives "
                             "data-path=")
        return store_data(str(node["store"]), str(cfg["task"]))
    if "data-path" in node:
        fraction = float(node.get("labelled-fraction", _fraction(cfg, kind)))
        return site_data(str(node["data-path"]), str(cfg["task"]), fraction, int(cfg.get("seed", 0)), view)
    if "partition-id" not in node:
        raise ValueError("node config has neither data-path, store nor partition-id: this node has no data")
    # a deployed node names its own copy of the dataset; a simulated one shares the server's
    data = node.get("data", cfg.get("data"))
    if data is None:
        raise ValueError("node config has partition-id but no data=: a deployed node names its own copy of the "
                         "dataset (the server does not say where its own is)")
    data = str(data)
    own = float(node.get("labelled-fraction", cfg.get("wearable-labelled-fraction", -1.0) if view else -1.0))
    return simulated_client_data(data, int(cfg["synth-records"]), str(cfg["task"]),
                                 int(node["partition-id"]), int(node["num-partitions"]), str(cfg["partition"]),
                                 float(cfg["alpha"]), float(cfg["labelled-fraction"]), int(cfg.get("seed", 0)),
                                 view, own, _server_folds(cfg))


def _server_folds(cfg: dict) -> tuple[int, ...]:
    text = str(cfg.get("server-folds", "") or "")
    return tuple(int(f) for f in text.split(",") if f.strip())


def _fraction(cfg: dict, kind: str) -> float:
    own = float(cfg.get("wearable-labelled-fraction", -1.0))
    return own if kind == "wearable" and own >= 0 else float(cfg.get("labelled-fraction", 1.0))


def store_data(url: str, task: str) -> LocalData:
    """A wearable's usable recordings from its device store, lead I only (labels where the store has them)."""
    from client.store import RecordStore

    with RecordStore(url) as store:
        if store.task != task:
            raise ValueError(f"store {url} holds {store.task} labels; this run trains {task}")
        single = [c.key for c in store.candidates(n_leads=1)]
        full = [c.key for c in store.candidates(n_leads=12)]
        parts = [store.load(keys) for keys in (single, full) if keys]
        if not parts:
            raise ValueError(f"store {url} holds no usable recording to train on")
        classes = store.classes
    x = np.concatenate([p.x[:, :1] for p in parts])  # lead I is the first lead of a 12-lead window
    y = np.concatenate([p.y for p in parts]).astype(np.float32)
    t = x.shape[-1]
    regions = torch.as_tensor(compute_regions(x, float(parts[0].fs)), dtype=torch.int64)  # delineated on lead I
    return LocalData(x=torch.as_tensor(x, dtype=torch.float32), y=torch.as_tensor(y),
                     labelled=np.concatenate([p.labelled for p in parts]), regions=regions,
                     val_x=torch.zeros(0, 1, t), val_y=torch.zeros(0, len(classes)), classes=list(classes),
                     fs=float(parts[0].fs), name=f"store:{url}")
