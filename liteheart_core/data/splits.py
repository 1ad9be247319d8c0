"""Fold splits and the labelled subset used by semi-supervised training.

Protocol v2 (``../shared/notes/benchmark-protocol.md``): folds 1-7 train, fold 9 selects
(early stopping, thresholds, every tuning choice), and the test split is every fold no
choice looked at -- fold 8 here (the developers' test fold) and fold 10, which PTB-XL
keeps for independent scoring. A checkpoint carries the folds it was trained with, so
``evaluate --split test`` on a folder holding only fold 10 scores fold 10.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = {"train": (1, 2, 3, 4, 5, 6, 7), "val": (9,), "test": (8, 10)}


def split_folds(split: str, splits: dict[str, tuple[int, ...]] | None = None) -> tuple[int, ...] | None:
    """Folds of a named split (``train`` 1-7, ``val`` 9, ``test`` 8 and 10); ``all`` gives None (every row).

    ``splits`` are a checkpoint's own folds (``train``/``val``/``test``); absent ones take the defaults.
    """
    if split == "all":
        return None
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected train, val, test or all")
    return tuple((splits or {}).get(split) or SPLITS[split])


def primary_labels(y_rows: np.ndarray, of_row: np.ndarray, n_groups: int) -> np.ndarray:
    """Each patient group's rarest present class (-1 when unlabelled), so rare classes are spread on purpose."""
    present = np.zeros((n_groups, y_rows.shape[1]), dtype=bool)
    np.logical_or.at(present, of_row, y_rows.astype(bool))
    prevalence = y_rows.sum(0).astype(float)
    scores = np.where(present, prevalence[None, :], np.inf)
    return np.where(present.any(1), scores.argmin(1), -1)


def labelled_subset(index: pd.DataFrame, y: np.ndarray, rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, patient-disjoint, label-stratified subset of ``rows`` that keeps its labels.

    Patients are grouped by the rarest class they carry (so rare classes are not
    lost at small fractions) and ``fraction`` of the patients of each group is
    taken; every window of a chosen patient is labelled, none of the others.

    Returns
    -------
    np.ndarray
        Boolean mask over ``rows``.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"labelled fraction must be in [0, 1], got {fraction}")
    if fraction == 0 or len(rows) == 0:  # a client without labels is a setting of its own (semi-supervised)
        return np.zeros(len(rows), dtype=bool)
    if fraction == 1:
        return np.ones(len(rows), dtype=bool)
    patients = index.loc[rows, "patient"].astype(str).to_numpy()
    patients = np.where(patients == "", index.loc[rows, "record"].astype(str).to_numpy(), patients)
    unique, inverse = np.unique(patients, return_inverse=True)
    inverse = inverse.ravel()
    stratum = primary_labels(y[rows], inverse, len(unique))
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(unique), dtype=bool)
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        k = max(1, int(round(fraction * len(members))))
        chosen[rng.choice(members, size=k, replace=False)] = True
    return chosen[inverse]
