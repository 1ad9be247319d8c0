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

from liteheart_core.config import FedConfig
from liteheart_core.federated import LocalData, simulated_client_data, site_data
from liteheart_core.regions import compute_regions
from liteheart_core.round_config import RoundConfig
from liteheart_core.wearable import WearableView

KINDS = ("paired", "wearable")


def client_kind(context: Context, wearables: int = 0) -> str:
    """``paired`` or ``wearable``, from the node config or (simulation) the partition id.

    ``wearables`` is the run's count of simulated wearables (the last partitions); a node config's
    ``client-kind`` always wins.
    """
    node = context.node_config
    if "client-kind" in node:
        kind = str(node["client-kind"])
        if kind not in KINDS:
            raise ValueError(f"node config client-kind={kind!r}: must be one of {', '.join(KINDS)}")
        return kind
    if wearables and "partition-id" in node:
        return "wearable" if int(node["partition-id"]) >= int(node["num-partitions"]) - wearables else "paired"
    return "paired"


def wearable_view(run: FedConfig, context: Context) -> WearableView:
    """How this wearable degrades lead I (seeded per node, fixed across rounds: its recordings don't change)."""
    node_seed = int(context.node_config.get("partition-id", context.node_id % 100_000))
    return WearableView(degrade=run.wearable_degrade, native_rate=run.wearable_rate, seed=run.seed * 10_007 + node_seed)


def labelled_fraction(context: Context, run: FedConfig, kind: str) -> float:
    """The share of this node's training records whose labels it uses.

    The node's own ``labelled-fraction`` (node config) when it gives one, else the run's: a wearable's
    ``wearable-labelled-fraction`` when that is set (>= 0), else ``labelled-fraction``. A deployed node
    therefore follows the run's ``labelled-fraction`` (FedConfig's default 0.3: the label-scarce setting
    LiteHeart is benchmarked in) unless its operator says otherwise; a site that means to use every label
    it holds starts with ``liteheart-client start --labelled-fraction 1``. One default, in one place
    (FedConfig), for simulated and deployed nodes alike.
    """
    own = context.node_config.get("labelled-fraction")
    if own is not None:
        fraction = float(own)
        if not 0 <= fraction <= 1:
            raise ValueError(f"node config labelled-fraction={own!r}: must be in [0, 1]")
        return fraction
    if kind == "wearable" and run.wearable_labelled_fraction >= 0:
        return run.wearable_labelled_fraction
    return run.labelled_fraction


def local_data(context: Context, rc: RoundConfig, kind: str = "paired") -> LocalData:
    """This node's records: its own folder or store in deployment, its partition in simulation."""
    node, run = context.node_config, rc.run
    view = wearable_view(run, context) if kind == "wearable" else None
    if "store" in node:
        if kind != "wearable":
            raise ValueError(
                "node config store= is for wearables (client-kind=wearable); a paired site gives data-path="
            )
        return store_data(str(node["store"]), run.task)
    if "data-path" in node:
        return site_data(str(node["data-path"]), run.task, labelled_fraction(context, run, kind), run.seed, view)
    if "partition-id" not in node:
        raise ValueError("node config has neither data-path, store nor partition-id: this node has no data")
    # a deployed node names its own copy of the dataset; a simulated one shares the server's
    data = node.get("data", rc.data)
    if data is None:
        raise ValueError(
            "node config has partition-id but no data=: a deployed node names its own copy of the "
            "dataset (the server does not say where its own is)"
        )
    # -1: the partition's own labelled records (drawn at the run's labelled-fraction); a node, or a wearable
    # with wearable-labelled-fraction set, holds its own share instead
    if "labelled-fraction" in node:
        own = labelled_fraction(context, run, kind)
    else:
        own = run.wearable_labelled_fraction if view is not None else -1.0
    return simulated_client_data(
        str(data),
        run.synth_records,
        run.task,
        int(node["partition-id"]),
        int(node["num-partitions"]),
        run.partition,
        run.alpha,
        run.labelled_fraction,
        run.seed,
        view,
        own,
        run.server_fold_tuple,
    )


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
    return LocalData(
        x=torch.as_tensor(x, dtype=torch.float32),
        y=torch.as_tensor(y),
        labelled=np.concatenate([p.labelled for p in parts]),
        regions=regions,
        val_x=torch.zeros(0, 1, t),
        val_y=torch.zeros(0, len(classes)),
        classes=list(classes),
        fs=float(parts[0].fs),
        name=f"store:{url}",
    )
