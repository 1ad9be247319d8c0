"""A server archive disjoint from the clients' records: no client holds its folds, the teacher knows only them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liteheart_core.config import FedConfig
from liteheart_core.federated import client_partitions, open_data
from server.orchestrate import provide_teacher


def test_server_folds_leave_the_other_training_folds_to_the_clients() -> None:
    cfg = FedConfig(server_folds="1,2")

    assert cfg.server_fold_tuple == (1, 2)
    assert cfg.client_folds == (3, 4, 5, 6, 7)
    assert FedConfig().client_folds == (1, 2, 3, 4, 5, 6, 7)


@pytest.mark.parametrize("bad", ["1,2,3,4,5,6,7", "9", "8", "one", "1;2"])
def test_bad_server_folds_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="server-folds"):
        FedConfig.from_dict({"server-folds": bad})


def test_no_client_holds_a_record_of_the_server_archive(synth_data) -> None:
    # Execute
    parts = client_partitions(str(synth_data.root), 600, "superdiagnostic", 3, "iid", 0.5, 0.3, 0, (1, 2))
    everyone = client_partitions(str(synth_data.root), 600, "superdiagnostic", 3, "iid", 0.5, 0.3, 0, ())
    # Assert
    data = open_data(str(synth_data.root), 600, 0)
    held = np.concatenate([p.rows for p in parts])
    folds = set(data.index.loc[held, "fold"].tolist())
    assert folds and not folds & {1, 2, 8, 10}
    assert {1, 2} <= set(data.index.loc[np.concatenate([p.rows for p in everyone]), "fold"].tolist())


def test_a_teacher_that_saw_the_clients_folds_is_refused(synth_data, tiny_teacher: Path) -> None:
    # the fixture's teacher learnt from every training fold, the clients' included
    cfg = FedConfig(teacher=str(tiny_teacher), server_folds="1,2")

    with pytest.raises(ValueError, match="which the clients hold"):
        provide_teacher(cfg, synth_data)
    assert provide_teacher(FedConfig(teacher=str(tiny_teacher)), synth_data)[1]["kind"] == "teacher"
