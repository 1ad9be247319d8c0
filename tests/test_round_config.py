"""The round config: written by the server from the run's FedConfig, parsed once by a client into a frozen object."""

from __future__ import annotations

import dataclasses

import pytest

from liteheart_core.config import FedConfig
from liteheart_core.round_config import RoundConfig
from server.app import options_from_run_config
from server.orchestrate import round_config

NET = {"width": 16}


def test_a_client_reads_back_exactly_the_runs_settings() -> None:
    # Prepare: settings off every default, shared data (simulation)
    cfg = FedConfig(
        data="synth",
        clients=6,
        wearables=2,
        labelled_fraction=0.7,
        method="kd",
        local_epochs=3,
        proximal_mu=0.1,
        strategy="fedprox",
        seed=5,
        wearable_degrade=False,
    )
    record = dict(round_config(cfg, "ab" * 32, NET, run_id="r1"))
    record["server-round"] = 4  # the strategy's

    # Execute
    rc = RoundConfig.from_record(record)

    # Assert
    assert rc.run == dataclasses.replace(cfg, teacher="")
    assert (rc.data, rc.teacher_hash, rc.student_net, rc.run_id, rc.server_round) == ("synth", "ab" * 32, NET, "r1", 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rc.server_round = 5  # type: ignore[misc]


def test_the_servers_paths_never_travel_in_deployment() -> None:
    cfg = FedConfig(data="/srv/archive", teacher="/srv/teacher.pt")

    record = dict(round_config(cfg, "ab" * 32, NET, share_data=False))
    rc = RoundConfig.from_record(record)

    assert "/srv" not in repr(record) and "data" not in record and "teacher" not in record
    assert rc.data is None  # the node names its own data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "bogus"}, "method 'bogus' is not a method a client can train"),
        ({"labelled-fraction": 1.5}, r"labelled-fraction must be in \[0, 1\]"),
        ({"wearable-degrade": "maybe"}, "wearable-degrade = 'maybe' is not a bool"),
        ({"no-such-key": 1}, "unknown run config key 'no-such-key'"),
        ({"teacher": "/srv/teacher.pt"}, "teacher belongs to the server's machine"),
        ({"client-threads": 0}, "client-threads must be >= 1"),
        ({"server-round": 1.5}, "server-round = 1.5 is not a whole number"),
        ({"student-net": "[1]"}, "student-net must be a JSON object"),
    ],
)
def test_a_bad_round_config_is_refused_once_with_the_key(change: dict, message: str) -> None:
    record = {**round_config(FedConfig(), "ab" * 32, NET), **change}

    with pytest.raises(ValueError, match=message):
        RoundConfig.from_record(record)


def test_keys_other_layers_add_are_ignored_only_when_named() -> None:
    record = {**round_config(FedConfig(), "ab" * 32, NET), "clipping_norm": 1.0}

    assert RoundConfig.from_record(record, ignore=("clipping_norm",)).run == FedConfig()
    with pytest.raises(ValueError, match="unknown run config key 'clipping_norm'"):
        RoundConfig.from_record(record)


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("true", True), (False, False), (1, True)])
def test_a_deployed_servers_resume_flag_is_parsed_not_truthy(value: object, expected: bool) -> None:
    _, opts = options_from_run_config({"resume": value, "run-id": "r1"})

    assert opts.resume is expected


def test_a_key_the_record_lacks_keeps_the_one_default() -> None:
    record = {k: v for k, v in round_config(FedConfig(), "ab" * 32, NET).items() if k != "client-threads"}

    assert RoundConfig.from_record(record).client_threads == RoundConfig(run=FedConfig()).client_threads == 1
