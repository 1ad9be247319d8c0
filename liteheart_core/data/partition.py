"""Split a prepared dataset's rows among simulated federated clients (iid, by site, label-skewed).

Every scheme moves whole patient groups (all rows of a patient; a record without a
patient id is its own group), so no patient is ever seen by two clients.
"""

from __future__ import annotations

import heapq
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from liteheart_core.data.splits import labelled_subset, primary_labels

SCHEMES = ("iid", "site", "dirichlet")
UNKNOWN_SITE = "?"
# Dirichlet draws tried before the smallest clients are topped up from the largest.
DIRICHLET_ATTEMPTS = 20


@dataclass(frozen=True)
class Partition:
    """One client's share of the data.

    Attributes
    ----------
    client : int
        Client number, ``0 .. n_clients - 1``.
    name : str
        What the share is, e.g. ``"site 0"``, ``"sites 4+10+17"``, ``"site ? part 2"``, ``"iid 3"``.
    rows : np.ndarray
        Sorted int64 dataset row indices.
    labelled : np.ndarray
        Boolean mask over ``rows``: which rows keep their labels.
    patients : int
        Number of patient groups in ``rows`` (kept here so summaries need no index).
    """

    client: int
    name: str
    rows: np.ndarray
    labelled: np.ndarray
    patients: int


@dataclass(frozen=True)
class _Groups:
    """Patient groups of the partitioned rows.

    ``of_row[i]`` is the group of ``rows[i]``; ``size``, ``primary`` and ``site`` are per group.
    """

    rows: np.ndarray
    of_row: np.ndarray
    size: np.ndarray
    primary: np.ndarray
    site: np.ndarray

    def __len__(self) -> int:
        return len(self.size)


def partition(
    index: pd.DataFrame,
    y: np.ndarray,
    rows: np.ndarray,
    n_clients: int,
    scheme: str = "iid",
    *,
    alpha: float = 0.5,
    labelled_fraction: float | Sequence[float] = 1.0,
    seed: int = 0,
    min_records: int = 10,
) -> list[Partition]:
    """Split ``rows`` among ``n_clients`` clients without ever splitting a patient.

    Parameters
    ----------
    index : pd.DataFrame
        The prepared index (row index = dataset row; needs ``record``, ``patient`` and, for
        ``site``, a ``site`` column where ``""`` means unknown).
    y : np.ndarray
        Label matrix [N, C] of the task; a patient's primary label is its rarest present class.
    rows : np.ndarray
        Dataset rows to distribute (e.g. ``PreparedData.rows(task, train_folds)``).
    n_clients : int
        Number of clients; every client gets at least one patient group.
    scheme : str
        ``"iid"``: patient groups shuffled and dealt so that record counts balance.
        ``"site"``: one client per recording site, merged/split to ``n_clients`` (see Notes).
        ``"dirichlet"``: label skew; each primary class is spread over clients with
        proportions drawn from Dirichlet(``alpha``), smaller ``alpha`` meaning more skew.
    alpha : float
        Dirichlet concentration (> 0); only used by ``"dirichlet"``.
    labelled_fraction : float or sequence of float
        Fraction of patients per client that keep labels, in [0, 1]; one value for all
        clients or one per client. 0 gives a fully unlabelled client.
    seed : int
        Seeds the split; client ``k``'s labelled subset uses ``seed + k``.
    min_records : int
        ``"site"``: sites with fewer records are merged. ``"dirichlet"``: the floor on a
        client's records (lowered to ``len(rows) // n_clients`` when the data cannot give more).

    Returns
    -------
    list[Partition]
        One per client, ordered by ``client``; none is empty.

    Notes
    -----
    The ``site`` scheme, step by step (record counts are counts of the partitioned rows):

    1. Each patient group belongs to its most frequent known site; groups with no known
       site form the unknown pool ``"site ?"``.
    2. Known sites with fewer than ``min_records`` records are merged into one group
       (``"sites 4+10+17"``). If that merged group still has fewer than ``min_records``
       records it joins the smallest site that has enough (``"sites 3+4+10+17"``); with
       no such site it stays as it is. The unknown pool is never merged in this step.
    3. While there are more groups than ``n_clients``, the two smallest groups (fewest
       records; ties in natural site order) are merged, and the name lists every site.
    4. While there are fewer, the group with the most records per part gets one more
       part (only groups with more patient groups than parts can); each group is then
       split into its parts by dealing its patient groups, sorted by primary label, to
       the part with the fewest records (``"site ? part 1"`` .. ``"site ? part k"``).

    Clients are numbered in natural site order of their first site, parts consecutively.

    So PTB-XL's training folds with 8 clients give sites 0, 1, 2 and 3 whole, the
    one-to-three-record sites merged (into site 3 when they are still too few), and the
    unknown pool split into the remaining parts.
    """
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    fractions = _check_args(scheme, n_clients, alpha, labelled_fraction, min_records)
    groups = _patient_groups(index, y, rows, with_site=scheme == "site")
    if len(groups) < n_clients:
        raise ValueError(
            f"cannot give {n_clients} clients a patient each: the {len(rows)} rows hold only "
            f"{len(groups)} patient groups"
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        assign = _deal_balanced(np.arange(len(groups)), groups.size, n_clients, rng)
        names = [f"iid {k}" for k in range(n_clients)]
    elif scheme == "site":
        assign, names = _site_assign(groups, n_clients, min_records, rng)
    else:
        assign = _dirichlet(groups, n_clients, alpha, min(min_records, len(rows) // n_clients), rng)
        names = [f"dirichlet {k}" for k in range(n_clients)]
    return _build(index, y, groups, assign, names, fractions, seed)


def _check_args(
    scheme: str, n_clients: int, alpha: float, labelled_fraction: float | Sequence[float], min_records: int
) -> list[float]:
    """Validate the arguments; returns one labelled fraction per client."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if n_clients < 1:
        raise ValueError(f"n_clients must be at least 1, got {n_clients}")
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"dirichlet alpha must be a positive number, got {alpha}")
    if min_records < 0:
        raise ValueError(f"min_records must be non-negative, got {min_records}")
    if isinstance(labelled_fraction, numbers.Real):
        fractions = [float(labelled_fraction)] * n_clients
    else:
        fractions = [float(f) for f in cast(Sequence[float], labelled_fraction)]
        if len(fractions) != n_clients:
            raise ValueError(f"labelled_fraction lists {len(fractions)} values but there are {n_clients} clients")
    bad = [f for f in fractions if not 0 <= f <= 1]
    if bad:
        raise ValueError(f"labelled fractions must lie in [0, 1], got {bad[0]}")
    return fractions


def _patient_groups(index: pd.DataFrame, y: np.ndarray, rows: np.ndarray, with_site: bool) -> _Groups:
    """Group ``rows`` by patient and give each group its size, primary label and (optionally) site."""
    patient = index.loc[rows, "patient"].astype(str).to_numpy()
    record = index.loc[rows, "record"].astype(str).to_numpy()
    # Distinct prefixes keep a record id from colliding with an unrelated patient id.
    key = np.where(patient == "", np.char.add("record:", record), np.char.add("patient:", patient))
    _, of_row = np.unique(key, return_inverse=True)
    of_row = of_row.ravel()
    n_groups = int(of_row.max()) + 1 if len(rows) else 0
    size = np.bincount(of_row, minlength=n_groups)
    primary = primary_labels(y[rows], of_row, n_groups)
    site = _group_sites(index.loc[rows, "site"].astype(str).to_numpy(), of_row) if with_site else np.array([])
    return _Groups(rows=rows, of_row=of_row, size=size, primary=primary, site=site)


def _group_sites(site: np.ndarray, of_row: np.ndarray) -> np.ndarray:
    """A group's site: its most frequent known site (ties: the first in natural order), else unknown.

    A few PTB-XL patients were recorded at two sites, or once with and once without a site.
    """
    frame = pd.DataFrame({"group": of_row, "site": site})
    known = frame[frame["site"] != ""]
    counts = known.groupby(["group", "site"]).size().rename("n").reset_index()
    counts["order"] = counts["site"].map(_site_order)
    counts = counts.sort_values(["group", "n", "order"], ascending=[True, False, True], kind="stable")
    best = counts.drop_duplicates("group").set_index("group")["site"]
    out = np.full(int(of_row.max()) + 1 if len(of_row) else 0, UNKNOWN_SITE, dtype=object)
    out[best.index.to_numpy()] = best.to_numpy()
    return out


def _site_order(site: str) -> tuple[int, int, str]:
    """Natural order: numeric sites by value, then named sources, the unknown pool last."""
    if site == UNKNOWN_SITE:
        return (2, 0, site)
    return (0, int(site), site) if site.isdigit() else (1, 0, site)


def _deal_balanced(members: np.ndarray, size: np.ndarray, n_parts: int, rng: np.random.Generator) -> np.ndarray:
    """Deal groups ``members`` (in random order, biggest first) to the part with the fewest records.

    Returns the part of each member. Dealing biggest first (a stable sort of a shuffle)
    keeps record counts within one small group of each other.
    """
    order = rng.permutation(members)
    order = order[np.argsort(-size[order], kind="stable")]
    return _deal_in_order(order, members, size, n_parts)


def _deal_in_order(order: np.ndarray, members: np.ndarray, size: np.ndarray, n_parts: int) -> np.ndarray:
    """Give each group of ``order`` to the currently smallest part; returns parts aligned with ``members``."""
    heap = [(0, part) for part in range(n_parts)]
    part_of: dict[int, int] = {}
    for g in order:
        load, part = heapq.heappop(heap)
        part_of[int(g)] = part
        heapq.heappush(heap, (load + int(size[g]), part))
    return np.array([part_of[int(g)] for g in members], dtype=np.int64)


def _site_assign(
    groups: _Groups, n_clients: int, min_records: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """The ``site`` scheme: natural site clients, merged or split to exactly ``n_clients``.

    The exact rule is in the Notes of :func:`partition`.

    Returns
    -------
    tuple[np.ndarray, list[str]]
        The client of each patient group and the client names.
    """
    members = _merge_small_sites(_sites_by_records(groups), min_records)
    members = _merge_to(members, groups, n_clients)
    members.sort(key=lambda m: [_site_order(s) for s in m])
    site_to_group = {s: i for i, m in enumerate(members) for s in m}
    natural = np.array([site_to_group[s] for s in groups.site], dtype=np.int64)
    parts = _parts_per_group(natural, groups, n_clients)
    assign = np.empty(len(groups), dtype=np.int64)
    names: list[str] = []
    for g, m in enumerate(members):
        in_group = np.flatnonzero(natural == g)
        assign[in_group] = len(names) + _split_stratified(in_group, groups, parts[g], rng)
        base = _site_name(m)
        names += [base] if parts[g] == 1 else [f"{base} part {p + 1}" for p in range(parts[g])]
    return assign, names


def _sites_by_records(groups: _Groups) -> dict[str, int]:
    """Records per site (the unknown pool included), in natural site order."""
    counts = pd.Series(groups.size).groupby(groups.site).sum()
    return {s: int(counts[s]) for s in sorted(counts.index, key=_site_order)}


def _merge_small_sites(records: dict[str, int], min_records: int) -> list[list[str]]:
    """Step 2 of :func:`_site_assign`: one group per site, the small known sites merged."""
    known = {s: n for s, n in records.items() if s != UNKNOWN_SITE}
    small = [s for s, n in known.items() if n < min_records]
    big = [[s] for s, n in known.items() if n >= min_records]
    if small:
        if sum(known[s] for s in small) < min_records and big:
            smallest = min(big, key=lambda m: (known[m[0]], _site_order(m[0])))
            smallest += small
        else:
            big.append(small)
    if UNKNOWN_SITE in records:
        big.append([UNKNOWN_SITE])
    return big


def _merge_to(members: list[list[str]], groups: _Groups, n_clients: int) -> list[list[str]]:
    """Step 3 of :func:`_site_assign`: merge the two smallest groups until ``n_clients`` remain."""
    records = _sites_by_records(groups)
    members = [sorted(m, key=_site_order) for m in members]
    while len(members) > n_clients:
        members.sort(key=lambda m: (sum(records[s] for s in m), [_site_order(s) for s in m]))
        members = [sorted(members[0] + members[1], key=_site_order)] + members[2:]
    return members


def _parts_per_group(natural: np.ndarray, groups: _Groups, n_clients: int) -> list[int]:
    """Step 4 of :func:`_site_assign`: how many clients each merged site group is split into."""
    n_groups = int(natural.max()) + 1
    records = np.bincount(natural, weights=groups.size, minlength=n_groups)
    patients = np.bincount(natural, minlength=n_groups)
    parts = [1] * n_groups
    # Terminates: the caller checked there are at least n_clients patient groups in all.
    while sum(parts) < n_clients:
        can = [g for g in range(n_groups) if patients[g] > parts[g]]
        g = max(can, key=lambda g: (records[g] / parts[g], -g))
        parts[g] += 1
    return parts


def _split_stratified(members: np.ndarray, groups: _Groups, n_parts: int, rng: np.random.Generator) -> np.ndarray:
    """Split patient groups into ``n_parts`` of balanced records with each class spread over all parts."""
    if n_parts == 1:
        return np.zeros(len(members), dtype=np.int64)
    order = rng.permutation(members)
    # Class by class, biggest groups first within a class, always to the smallest part.
    order = order[np.lexsort((-groups.size[order], groups.primary[order]))]
    return _deal_in_order(order, members, groups.size, n_parts)


def _site_name(members: list[str]) -> str:
    """``"site 0"`` for one site, ``"sites 4+10+17"`` for a merged group."""
    return f"site {members[0]}" if len(members) == 1 else "sites " + "+".join(members)


def _dirichlet(groups: _Groups, n_clients: int, alpha: float, floor: int, rng: np.random.Generator) -> np.ndarray:
    """Label-skewed assignment; the first draw where every client has ``floor`` records wins.

    After ``DIRICHLET_ATTEMPTS`` draws without one, the draw with the largest smallest
    client is topped up from the largest clients instead of drawing forever.
    """
    best, best_min = np.zeros(len(groups), dtype=np.int64), -1
    for _ in range(DIRICHLET_ATTEMPTS):
        assign = _dirichlet_draw(groups, n_clients, alpha, rng)
        smallest = int(np.bincount(assign, weights=groups.size, minlength=n_clients).min())
        if smallest >= floor and np.bincount(assign, minlength=n_clients).min() > 0:
            return assign
        if smallest > best_min:
            best, best_min = assign, smallest
    return _top_up(best, groups.size, n_clients, max(floor, 1), rng)


def _dirichlet_draw(groups: _Groups, n_clients: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """One draw: each primary class's patient groups cut into client shares ~ Dirichlet(alpha)."""
    assign = np.empty(len(groups), dtype=np.int64)
    for label in np.unique(groups.primary):
        members = rng.permutation(np.flatnonzero(groups.primary == label))
        shares = rng.dirichlet(np.full(n_clients, alpha))
        # Cut points on the cumulative record count, so the shares are shares of records.
        cum = np.cumsum(groups.size[members])
        bounds = np.searchsorted(cum, np.cumsum(shares)[:-1] * cum[-1], side="right")
        assign[members] = np.searchsorted(bounds, np.arange(len(members)), side="right")
    return assign


def _top_up(assign: np.ndarray, size: np.ndarray, n_clients: int, floor: int, rng: np.random.Generator) -> np.ndarray:
    """Move patient groups from the largest clients to those under ``floor`` records.

    Each move takes the donor's smallest group that leaves the donor at ``floor`` or
    more, so at most one move per patient group; it stops early when no donor can give.
    """
    assign = assign.copy()
    tiebreak = rng.permutation(len(size))
    for _ in range(len(size)):
        counts = np.bincount(assign, weights=size, minlength=n_clients)
        needy = int(counts.argmin())
        if counts[needy] >= floor:
            break
        moved = False
        for donor in np.argsort(-counts, kind="stable"):
            # The donor must stay at the floor and above the receiver, or groups would ping-pong.
            keeps = counts[donor] - size >= np.maximum(floor, counts[needy] + size)
            candidates = np.flatnonzero((assign == donor) & keeps)
            if donor != needy and len(candidates):
                pick = candidates[np.lexsort((tiebreak[candidates], size[candidates]))[0]]
                assign[pick] = needy
                moved = True
                break
        if not moved:
            break
    return assign


def _build(
    index: pd.DataFrame,
    y: np.ndarray,
    groups: _Groups,
    assign: np.ndarray,
    names: list[str],
    fractions: list[float],
    seed: int,
) -> list[Partition]:
    """Turn a client per patient group into Partitions with their labelled masks."""
    client_of_row = assign[groups.of_row]
    parts = []
    for k, name in enumerate(names):
        rows = groups.rows[client_of_row == k]
        labelled = labelled_subset(index, y, rows, fractions[k], seed + k)
        n_patients = int(np.count_nonzero(assign == k))
        parts.append(Partition(client=k, name=name, rows=rows, labelled=labelled, patients=n_patients))
    return parts


def partition_table(parts: list[Partition], y: np.ndarray, classes: list[str]) -> list[dict]:
    """One summary row per client for printing at run start.

    ``records`` counts rows (records, or windows when long records were cut into
    windows), ``labelled`` the rows that keep labels, ``patients`` the patient groups,
    and each class name the rows carrying that class (a label histogram; multi-label
    rows count once per class).
    """
    table = []
    for p in parts:
        hist = y[p.rows].sum(0) if len(p.rows) else np.zeros(len(classes), dtype=np.int64)
        row = {
            "client": p.client,
            "name": p.name,
            "records": len(p.rows),
            "labelled": int(p.labelled.sum()),
            "patients": p.patients,
        }
        row.update({c: int(n) for c, n in zip(classes, hist)})
        table.append(row)
    return table
