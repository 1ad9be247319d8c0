"""Partitioning among federated clients: coverage, whole patients, sites, label skew, labelled fractions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liteheart_core.data.partition import SCHEMES, Partition, partition, partition_table
from liteheart_core.data.splits import labelled_subset

CLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]


def make_data(
    sites: dict[str, int], seed: int = 0, n_classes: int = 5, anonymous: int = 0, windows: int = 1
) -> tuple[pd.DataFrame, np.ndarray]:
    """A PreparedData-like index and label matrix.

    ``sites`` maps a site ("" = unknown) to its number of patients; each patient has 1-3
    records, ``anonymous`` extra records have no patient id, and every record is cut
    into ``windows`` rows. Labels follow a per-patient class with skewed prevalence.
    """
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.5, 0.2, 0.15, 0.1, 0.05])[:n_classes]
    prevalence /= prevalence.sum()
    records, rid = [], 0
    for site, n_patients in sites.items():
        for _ in range(n_patients):
            patient, cls = f"p{rid}", int(rng.choice(n_classes, p=prevalence))
            for _ in range(int(rng.integers(1, 4))):
                records.append((str(rid), patient, site, cls))
                rid += 1
    for _ in range(anonymous):
        records.append((str(rid), "", "", int(rng.choice(n_classes, p=prevalence))))
        rid += 1
    table, labels = [], []
    for record, patient, site, cls in records:
        extra = rng.random(n_classes) < 0.05
        for w in range(windows):
            table.append(
                {
                    "record": record,
                    "patient": patient,
                    "fold": 1 + int(record) % 10,
                    "site": site,
                    "age": 50.0,
                    "sex": 0,
                    "window": w,
                    "start": 0,
                    "valid": 1000,
                    "codes": "",
                }
            )
            row = extra.copy()
            row[cls] = True
            labels.append(row)
    columns = ["record", "patient", "fold", "site", "age", "sex", "window", "start", "valid", "codes"]
    index = pd.DataFrame(table, columns=columns).rename_axis("row")
    return index, np.array(labels, dtype=np.uint8).reshape(len(table), n_classes)


def group_keys(index: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """The patient of each row, or its record when the patient is unknown."""
    patient = index.loc[rows, "patient"].to_numpy()
    return np.where(patient == "", "rec " + index.loc[rows, "record"].to_numpy(), patient)


def client_of(parts: list[Partition], n_rows: int) -> np.ndarray:
    out = np.full(n_rows, -1)
    for p in parts:
        out[p.rows] = p.client
    return out


def assert_valid(parts: list[Partition], index: pd.DataFrame, rows: np.ndarray, n_clients: int) -> None:
    """Every row exactly once, no empty client, whole patients, masks aligned."""
    assert [p.client for p in parts] == list(range(n_clients))
    allrows = np.concatenate([p.rows for p in parts])
    assert len(allrows) == len(rows) and np.array_equal(np.sort(allrows), np.sort(rows))
    for p in parts:
        assert len(p.rows) > 0 and p.rows.dtype == np.int64 and np.all(np.diff(p.rows) > 0)
        assert p.labelled.dtype == bool and p.labelled.shape == p.rows.shape
        assert p.patients == len(np.unique(group_keys(index, p.rows)))
    owners = pd.Series(client_of(parts, len(index))[rows]).groupby(group_keys(index, rows)).nunique()
    assert owners.max() == 1


def label_distance(parts: list[Partition], y: np.ndarray) -> float:
    """Mean total-variation distance of client label distributions from the pooled one."""
    pooled = y[np.concatenate([p.rows for p in parts])].sum(0).astype(float)
    pooled /= pooled.sum()
    dists = []
    for p in parts:
        hist = y[p.rows].sum(0).astype(float)
        dists.append(0.5 * np.abs(hist / hist.sum() - pooled).sum())
    return float(np.mean(dists))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_row_once_and_patients_whole(scheme: str) -> None:
    index, y = make_data({"0": 60, "1": 40, "2": 5, "": 50}, anonymous=20, windows=2)
    rows = np.flatnonzero(index["fold"].to_numpy() <= 8)

    parts = partition(index, y, rows, 6, scheme, labelled_fraction=0.5)

    assert_valid(parts, index, rows, 6)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_split_other_seed_other_split(scheme: str) -> None:
    index, y = make_data({"0": 100, "": 100})
    rows = np.arange(len(index))

    a = partition(index, y, rows, 5, scheme, seed=3, labelled_fraction=0.4)
    b = partition(index, y, rows, 5, scheme, seed=3, labelled_fraction=0.4)
    c = partition(index, y, rows, 5, scheme, seed=4, labelled_fraction=0.4)

    assert all(np.array_equal(p.rows, q.rows) and np.array_equal(p.labelled, q.labelled) for p, q in zip(a, b))
    assert not np.array_equal(client_of(a, len(index)), client_of(c, len(index)))


def test_iid_balances_records_and_mixes_labels() -> None:
    index, y = make_data({"0": 300, "": 200})
    rows = np.arange(len(index))

    parts = partition(index, y, rows, 8, "iid")

    sizes = np.array([len(p.rows) for p in parts])
    assert sizes.max() - sizes.min() <= 3  # at most one patient's records apart
    assert sizes.max() / sizes.min() < 1.05
    assert [p.name for p in parts] == [f"iid {k}" for k in range(8)]
    assert label_distance(parts, y) < 0.1


def test_site_keeps_real_sites_whole_and_merges_small_ones() -> None:
    index, y = make_data({"0": 40, "1": 30, "2": 20, "7": 2, "8": 2, "10": 2, "": 60})
    rows = np.arange(len(index))
    site = index["site"].to_numpy()

    parts = partition(index, y, rows, 5, "site", min_records=10)

    assert [p.name for p in parts] == ["site 0", "site 1", "site 2", "sites 7+8+10", "site ?"]
    for p, members in zip(parts, [{"0"}, {"1"}, {"2"}, {"7", "8", "10"}, {""}]):
        assert set(site[p.rows]) == members and len(p.rows) == np.isin(site, list(members)).sum()


def test_site_too_small_merged_group_joins_smallest_real_site() -> None:
    index, y = make_data({"0": 40, "1": 20, "5": 1, "6": 1, "": 30})
    rows = np.arange(len(index))

    parts = partition(index, y, rows, 3, "site", min_records=10)

    assert [p.name for p in parts] == ["site 0", "sites 1+5+6", "site ?"]
    assert set(index.loc[parts[1].rows, "site"]) == {"1", "5", "6"}


def test_site_with_fewer_clients_merges_the_smallest_groups() -> None:
    index, y = make_data({"0": 80, "1": 20, "2": 15, "": 60})
    rows = np.arange(len(index))
    site = index["site"].to_numpy()

    parts = partition(index, y, rows, 2, "site", min_records=5)

    assert_valid(parts, index, rows, 2)
    assert [p.name for p in parts] == ["site 0", "sites 1+2+?"]
    assert set(site[parts[0].rows]) == {"0"} and set(site[parts[1].rows]) == {"1", "2", ""}


def test_site_with_more_clients_splits_the_largest_groups_by_patient() -> None:
    index, y = make_data({"0": 50, "1": 12, "": 150})
    rows = np.arange(len(index))
    site = index["site"].to_numpy()

    parts = partition(index, y, rows, 6, "site")

    assert_valid(parts, index, rows, 6)
    names = [p.name for p in parts]
    assert "site 1" in names and "site ? part 1" in names
    # the small real site is never split while bigger groups can give parts
    assert set(site[parts[names.index("site 1")].rows]) == {"1"}
    assert (site == "1").sum() == len(parts[names.index("site 1")].rows)
    unknown = [len(p.rows) for p in parts if p.name.startswith("site ?")]
    assert len(unknown) >= 3 and max(unknown) - min(unknown) <= 3


def test_site_patient_seen_at_two_sites_follows_its_usual_known_site() -> None:
    index, y = make_data({"0": 20, "1": 20})
    extra = index.iloc[:3].copy()
    extra["record"] = ["900", "901", "902"]
    extra["patient"] = "shared"
    extra["site"] = ["1", "1", ""]
    index = pd.concat([index, extra], ignore_index=True).rename_axis("row")
    y = np.concatenate([y, y[:3]])
    rows = np.arange(len(index))

    parts = partition(index, y, rows, 2, "site")

    mine = client_of(parts, len(index))[index["patient"].to_numpy() == "shared"]
    assert set(mine) == {[p.name for p in parts].index("site 1")}


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    index, y = make_data({"": 600})
    rows = np.arange(len(index))

    skew = {
        alpha: np.mean(
            [label_distance(partition(index, y, rows, 6, "dirichlet", alpha=alpha, seed=s), y) for s in range(3)]
        )
        for alpha in (0.1, 10.0)
    }

    assert skew[0.1] > skew[10.0] + 0.1


@pytest.mark.parametrize("seed", range(3))
def test_dirichlet_honours_min_records(seed: int) -> None:
    index, y = make_data({"": 300}, seed=seed)
    rows = np.arange(len(index))

    parts = partition(index, y, rows, 10, "dirichlet", alpha=0.05, min_records=40, seed=seed)

    assert_valid(parts, index, rows, 10)
    assert min(len(p.rows) for p in parts) >= 40


def test_dirichlet_lowers_an_impossible_floor_but_fills_every_client() -> None:
    index, y = make_data({"": 60})
    rows = np.arange(len(index))

    parts = partition(index, y, rows, 4, "dirichlet", alpha=0.05, min_records=1000)

    assert_valid(parts, index, rows, 4)
    assert min(len(p.rows) for p in parts) >= len(rows) // 4 - 2


def test_labelled_fractions_per_client_are_honoured_and_patient_consistent() -> None:
    index, y = make_data({"": 800}, windows=2)
    rows = np.arange(len(index))
    fractions = [0.0, 0.1, 0.5, 1.0]

    parts = partition(index, y, rows, 4, "iid", labelled_fraction=fractions)

    for p, f in zip(parts, fractions):
        keys = group_keys(index, p.rows)
        per_patient = pd.Series(p.labelled).groupby(keys).agg(["min", "max"])
        assert (per_patient["min"] == per_patient["max"]).all()
        assert per_patient["min"].mean() == pytest.approx(f, abs=0.03)
    assert not parts[0].labelled.any() and parts[3].labelled.all()


def test_each_client_draws_its_labelled_patients_with_its_own_seed() -> None:
    index, y = make_data({"": 400})
    rows = np.arange(len(index))

    parts = partition(index, y, rows, 3, "iid", labelled_fraction=0.3, seed=7)

    for p in parts:
        expected = labelled_subset(index, y, p.rows, 0.3, 7 + p.client)
        assert np.array_equal(p.labelled, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "random"}, "unknown partition scheme 'random'"),
        ({"n_clients": 0}, "n_clients must be at least 1"),
        ({"n_clients": 500}, "only .* patient groups"),
        ({"alpha": 0.0}, "alpha must be a positive"),
        ({"labelled_fraction": 1.5}, r"must lie in \[0, 1\], got 1.5"),
        ({"labelled_fraction": [0.5, -0.1, 1.0]}, r"must lie in \[0, 1\], got -0.1"),
        ({"labelled_fraction": [0.5, 0.5]}, "lists 2 values but there are 3 clients"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs: dict, message: str) -> None:
    index, y = make_data({"": 30})
    args = {"n_clients": 3, "scheme": "iid"} | kwargs

    with pytest.raises(ValueError, match=message):
        partition(index, y, np.arange(len(index)), **args)


def test_table_sums_match_the_data() -> None:
    index, y = make_data({"0": 40, "1": 30, "": 40}, anonymous=10)
    rows = np.flatnonzero(index["fold"].to_numpy() != 10)
    parts = partition(index, y, rows, 4, "site", labelled_fraction=[1.0, 0.5, 0.0, 0.2])

    table = partition_table(parts, y, CLASSES)

    assert [r["name"] for r in table] == [p.name for p in parts]
    assert sum(r["records"] for r in table) == len(rows)
    assert sum(r["labelled"] for r in table) == sum(int(p.labelled.sum()) for p in parts)
    assert sum(r["patients"] for r in table) == len(np.unique(group_keys(index, rows)))
    assert [sum(r[c] for r in table) for c in CLASSES] == y[rows].sum(0).tolist()


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 12), min_size=1, max_size=5),
    anonymous=st.integers(0, 8),
    n_clients=st.integers(1, 9),
    scheme=st.sampled_from(SCHEMES),
    seed=st.integers(0, 100),
    min_records=st.integers(0, 20),
)
def test_any_small_dataset_partitions_validly(
    sizes: list[int], anonymous: int, n_clients: int, scheme: str, seed: int, min_records: int
) -> None:
    sites = {str(i) if i else "": n for i, n in enumerate(sizes)}
    index, y = make_data(sites, seed=seed, anonymous=anonymous)
    rows = np.arange(len(index))
    n_groups = len(np.unique(group_keys(index, rows))) if len(rows) else 0

    if n_groups < n_clients:
        with pytest.raises(ValueError):
            partition(index, y, rows, n_clients, scheme, seed=seed, min_records=min_records)
        return
    parts = partition(index, y, rows, n_clients, scheme, seed=seed, min_records=min_records, labelled_fraction=0.5)

    assert_valid(parts, index, rows, n_clients)


@pytest.fixture(scope="module")
def real_ptbxl(ptbxl_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.data.prepare import PrepSettings

    return resolve_data(ptbxl_dir, tmp_path_factory.mktemp("partition_cache"), PrepSettings(regions=False))


@pytest.mark.realdata
def test_real_ptbxl_site_and_dirichlet_with_8_clients(real_ptbxl) -> None:
    classes, y = real_ptbxl.labels("superdiagnostic")
    index = real_ptbxl.index
    rows = real_ptbxl.rows("superdiagnostic", folds=list(range(1, 9)))

    by_site = partition(index, y, rows, 8, "site", labelled_fraction=0.2)
    skewed = partition(index, y, rows, 8, "dirichlet", alpha=0.5)

    assert_valid(by_site, index, rows, 8)
    owner = client_of(by_site, len(index))
    for s in ("0", "1", "2", "3"):
        mine = rows[index.loc[rows, "site"].to_numpy() == s]
        assert len(set(owner[mine])) == 1, f"site {s} was split"
        assert by_site[owner[mine][0]].name.startswith(("site " + s, "sites " + s))
    assert sum(p.name.startswith("site ? part") for p in by_site) >= 2
    assert_valid(skewed, index, rows, 8)
    assert min(len(p.rows) for p in skewed) >= 10
    table = partition_table(skewed, y, classes)
    assert [sum(r[c] for r in table) for c in classes] == y[rows].sum(0).tolist()
