"""The record store on every backend: round trip, idempotence, retention, unusable records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from client.store import RecordStore, StoreError
from tests.continual.conftest import fake_recording

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(store_url: str):
    rs = RecordStore(store_url)
    yield rs
    rs.close()


def test_add_then_load_gives_back_the_prepared_windows_regions_and_label(store: RecordStore) -> None:
    # Prepare
    rec = fake_recording("r1", label=[0, 1, 0, 1, 0], seed=3)

    # Execute
    first = store.add(rec, now=T0)
    again = store.add(rec, now=T0 + timedelta(hours=1))
    batch = store.load([first.key])

    # Assert
    assert first.status == "added" and again.status == "duplicate" and again.key == first.key
    np.testing.assert_array_equal(batch.x, rec.prepared.windows)
    np.testing.assert_array_equal(batch.regions, rec.prepared.regions)
    np.testing.assert_array_equal(batch.y[0], [0, 1, 0, 1, 0])
    assert batch.labelled.tolist() == [True] and batch.keys.tolist() == [first.key]
    assert store.info()["recordings"] == 1


def test_same_name_with_new_bytes_is_a_new_recording(store: RecordStore) -> None:
    store.add(fake_recording("r1", seed=1), now=T0)
    store.add(fake_recording("r1", seed=2), now=T0)

    rows = store.rows()

    assert [r["record_id"] for r in rows] == ["r1", "r1"]
    assert len({r["content_hash"] for r in rows}) == 2


def test_unusable_recordings_are_stored_with_their_reason_and_never_offered_for_training(store: RecordStore) -> None:
    # Prepare
    keys = {}
    for i in range(20):
        keys[f"r{i}"] = store.add(fake_recording(f"r{i}", usable=i % 3 != 0, seed=i), now=T0).key

    # Execute
    candidates = {c.key for c in store.candidates()}
    bad = [k for rid, k in keys.items() if int(rid[1:]) % 3 == 0]

    # Assert
    assert candidates == set(keys.values()) - set(bad)
    info = store.info()
    assert info["unusable_held"] == len(bad) and info["flags"] == {"noisy": len(bad)}
    with pytest.raises(ValueError, match=r"record r0 \(key \d+\) is unusable and never trains: noisy: lead I noisy"):
        store.load([keys["r1"], keys["r0"]])


def test_mark_used_counts_every_use(store: RecordStore) -> None:
    a = store.add(fake_recording("a"), now=T0).key
    b = store.add(fake_recording("b"), now=T0).key

    store.mark_used([a, b], round_number=1)
    store.mark_used([a], round_number=2)

    used = {c.key: c.times_used for c in store.candidates()}
    rows = {r["id"]: r for r in store.rows()}
    assert used == {a: 2, b: 1}
    assert rows[a]["last_used_round"] == 2 and rows[b]["last_used_round"] == 1
    with pytest.raises(ValueError, match="unknown"):
        store.mark_used([a, 999], round_number=3)


def test_max_records_holds_at_every_commit_and_evicts_in_the_documented_order(store: RecordStore) -> None:
    # Prepare: 3 unusable, 4 unlabelled, 4 labelled recordings, one an hour; then some are used
    store.set_retention(max_records=100)
    kinds = ["bad"] * 3 + ["unl"] * 4 + ["lab"] * 4
    keys = []
    for i, kind in enumerate(kinds):
        rec = fake_recording(
            f"{kind}{i}", usable=kind != "bad", label=[1, 0, 0, 0, 0] if kind == "lab" else None, seed=i
        )
        keys.append(store.add(rec, now=T0 + timedelta(hours=i)).key)
    unl, lab = keys[3:7], keys[7:11]
    store.mark_used([unl[0], lab[0]], round_number=1, now=T0 + timedelta(hours=20))  # touched last

    # Execute: shrink to 6, then keep adding labelled ones with a bound of 6
    evicted = store.set_retention(max_records=6, now=T0 + timedelta(hours=21))
    held_after_each = []
    for i in range(5):
        store.add(fake_recording(f"new{i}", label=[0, 0, 1, 0, 0], seed=100 + i), now=T0 + timedelta(hours=22 + i))
        held_after_each.append(store.info()["held"])

    # Assert: unusable first, then unlabelled by last touch (unl[0] was used, so it goes last of them)
    assert evicted == keys[:3] + unl[1:3]
    assert held_after_each == [6] * 5
    rows = {r["id"]: r for r in store.rows()}
    assert all(rows[k]["evicted_at"] is not None and not rows[k]["held"] for k in evicted)
    held = [k for k, r in rows.items() if r["held"]]
    assert not any(rows[k]["label"] is None for k in held)  # every unlabelled one went before a labelled one
    assert store.info()["recordings"] == len(kinds) + 5  # tombstones stay


def test_max_age_evicts_what_arrived_too_long_ago(store: RecordStore) -> None:
    for day in range(10):
        store.add(fake_recording(f"d{day}", label=[1, 0, 0, 0, 0], seed=day), now=T0 + timedelta(days=day))

    evicted = store.set_retention(max_age=timedelta(days=3), now=T0 + timedelta(days=9) - timedelta(hours=1))

    held = sorted(r["record_id"] for r in store.rows() if r["held"])
    assert held == ["d6", "d7", "d8", "d9"] and len(evicted) == 6


def test_an_evicted_recording_is_not_brought_back_by_ingesting_it_again(store: RecordStore) -> None:
    store.set_retention(max_records=2)
    recs = [fake_recording(f"r{i}", seed=i) for i in range(4)]
    for i, rec in enumerate(recs):
        store.add(rec, now=T0 + timedelta(minutes=i))

    again = [store.add(rec, now=T0 + timedelta(hours=1)).status for rec in recs]

    assert again == ["duplicate"] * 4
    assert store.info()["held"] == 2


def test_state_is_kept_beside_the_records(store: RecordStore) -> None:
    store.set_state("replay", {"members": [[1, 2], [3]]})
    store.set_state("replay", {"members": [[4]]})

    assert store.get_state("replay") == {"members": [[4]]} and store.get_state("other") is None


def test_reopening_with_another_task_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    RecordStore(path).close()

    with pytest.raises(StoreError, match="holds 'superdiagnostic' labels, not 'challenge2021'"):
        RecordStore(path, task="challenge2021")


@pytest.mark.parametrize(
    "url,message",
    [
        ("notadb://x", "cannot open store notadb://x"),
        ("sqlite:////no/such/folder/s.sqlite", "folder /no/such/folder does not exist"),
    ],
)
def test_bad_store_urls_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        RecordStore(url)


def test_a_label_of_the_wrong_length_is_refused(store: RecordStore) -> None:
    with pytest.raises(ValueError, match="record r1: label must be 0/1 over 5 classes"):
        store.add(fake_recording("r1", label=[1, 0]))
    assert store.info()["recordings"] == 0
