"""Properties of the teacher/student networks in liteheart_core.models.nets."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from liteheart_core.models import (
    Net,
    NetConfig,
    build_net,
    count_parameters,
    student_config,
    teacher_config,
)
from server.model_files import export_torchscript, measure_latency  # export lives beside the export command

N_CLASSES = 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # These models are small enough that one intra-op thread is as fast as two, and on a
    # shared CI box spare OpenMP threads spin-wait against other jobs and slow tests ~10x.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _net(which: str, n_leads: int, n_classes: int = N_CLASSES, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    cfg = teacher_config() if which == "teacher" else student_config()
    return build_net(n_leads, n_classes, cfg).eval()


@pytest.mark.parametrize("which", ["teacher", "student"])
@pytest.mark.parametrize("n_leads", [1, 12])
@pytest.mark.parametrize("length", [500, 1000, 997])
def test_shapes_follow_ceil_length_rule(which: str, n_leads: int, length: int) -> None:
    # Prepare: 500 and 997 are not multiples of 32, so ceil and floor disagree somewhere.
    net = _net(which, n_leads)
    x = torch.randn(2, n_leads, length)

    # Execute
    with torch.no_grad():
        logits, feats = net.forward_features(x)

    # Assert: stage i has exactly ceil(T / stage_strides[i]) steps and stage_channels[i] maps.
    assert logits.shape == (2, N_CLASSES)
    assert len(feats) == len(net.stage_channels) == len(net.stage_strides)
    for feat, channels, stride in zip(feats, net.stage_channels, net.stage_strides):
        assert feat.shape == (2, channels, math.ceil(length / stride))
    assert list(net.stage_strides) == sorted(net.stage_strides)


def test_stage_strides_and_channels_of_default_configs() -> None:
    teacher, student = _net("teacher", 12), _net("student", 1)

    assert teacher.stage_strides == (4, 8, 16, 32)
    assert teacher.stage_channels == (128, 256, 512, 1024)
    assert student.stage_strides == (4, 8, 16, 32)
    assert student.stage_channels == student_config().widths


@pytest.mark.parametrize("which,n_leads", [("teacher", 12), ("student", 1)])
def test_logits_equal_mean_of_class_evidence(which: str, n_leads: int) -> None:
    net = _net(which, n_leads)
    x = torch.randn(3, n_leads, 1000)

    with torch.no_grad():
        logits, feats = net.forward_features(x)
        evidence = net.class_evidence(feats[-1])

    assert evidence.shape == (3, N_CLASSES, feats[-1].shape[-1])
    torch.testing.assert_close(evidence.mean(-1), logits, atol=1e-5, rtol=0)
    # Not trivially constant over time: the map must localise something.
    assert evidence.std(dim=-1).max() > 1e-4


def test_class_evidence_rejects_non_last_stage_features() -> None:
    net = _net("student", 1)
    with torch.no_grad():
        _, feats = net.forward_features(torch.randn(1, 1, 500))

    with pytest.raises(ValueError, match="last-stage"):
        net.class_evidence(feats[0])


def test_teacher_parameter_budget() -> None:
    n = count_parameters(_net("teacher", 12))

    assert 1_000_000 <= n <= 5_000_000


def test_student_is_at_most_a_tenth_of_the_teacher() -> None:
    n_teacher = count_parameters(_net("teacher", 12))
    n_student = count_parameters(_net("student", 1))

    assert n_student <= 0.1 * n_teacher
    assert 60_000 <= n_student <= 200_000


def test_count_parameters_counts_shared_tensors_once() -> None:
    lin = nn.Linear(4, 3)
    tied = nn.Sequential(lin, lin)

    assert count_parameters(tied) == 4 * 3 + 3


def test_student_has_no_running_statistics() -> None:
    student = _net("student", 1)

    assert list(student.buffers()) == []
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in student.modules())
    # Every state_dict entry is a trainable weight, so federated averaging sees only weights.
    assert set(student.state_dict()) == {n for n, _ in student.named_parameters()}


def test_student_kind_refuses_batch_norm() -> None:
    with pytest.raises(ValueError, match="student"):
        dataclasses.replace(student_config(), norm="batch")


def test_group_norm_needs_divisible_channels() -> None:
    cfg = dataclasses.replace(student_config(), widths=(32, 64, 100, 128))

    with pytest.raises(ValueError, match="100 channels"):
        build_net(1, N_CLASSES, cfg)


def test_layer_norm_variant_builds_and_runs() -> None:
    cfg = dataclasses.replace(student_config(), norm="layer", widths=(30, 50, 70, 90))
    net = build_net(1, N_CLASSES, cfg).eval()

    with torch.no_grad():
        out = net(torch.randn(2, 1, 600))

    assert out.shape == (2, N_CLASSES)
    assert list(net.buffers()) == []


def test_forward_rejects_wrong_lead_count() -> None:
    net = _net("student", 1)

    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        net(torch.randn(2, 12, 1000))
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        net(torch.randn(1, 1000))


def test_net_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_leads"):
        Net(0, N_CLASSES, student_config())
    with pytest.raises(ValueError, match="n_classes"):
        Net(1, 0, student_config())


@pytest.mark.parametrize("make", [teacher_config, student_config])
def test_config_round_trip(make: Callable[[], NetConfig]) -> None:
    cfg = make()

    d = cfg.to_dict()
    back = NetConfig.from_dict(json.loads(json.dumps(d)))  # lists, as TOML/JSON give them

    assert back == cfg
    assert hash(back) == hash(cfg)


def test_config_unknown_and_missing_keys_are_named() -> None:
    d = student_config().to_dict()

    with pytest.raises(ValueError, match="bogus_key"):
        NetConfig.from_dict({**d, "bogus_key": 1})
    d.pop("widths")
    with pytest.raises(ValueError, match="widths"):
        NetConfig.from_dict(d)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"kernel_size": 4}, "odd"),
        ({"depths": (1, 1, 1)}, "one entry per stage"),
        ({"norm": "instance"}, "norm"),
        ({"kind": "transformer"}, "kind"),
        ({"dropout": 1.0}, "dropout"),
        ({"widths": (32, 0, 96, 128)}, r"widths\[1\]"),
        ({"stem_pool": 1}, "stem_pool"),
        ({"strides": (1, 2)}, "strides"),
    ],
)
def test_config_rejects_bad_values(change: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        NetConfig.from_dict({**student_config().to_dict(), **change})


def test_build_net_accepts_dict() -> None:
    torch.manual_seed(0)
    from_cfg = build_net(1, N_CLASSES, student_config())
    torch.manual_seed(0)
    from_dict = build_net(1, N_CLASSES, student_config().to_dict())

    assert from_dict.cfg == from_cfg.cfg
    for a, b in zip(from_cfg.parameters(), from_dict.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("which,n_leads", [("teacher", 12), ("student", 1)])
def test_eval_mode_is_deterministic_and_train_mode_is_not(which: str, n_leads: int) -> None:
    net = _net(which, n_leads)
    x = torch.randn(4, n_leads, 500)

    with torch.no_grad():
        a, b = net(x), net(x)
        net.train()
        torch.manual_seed(1)
        c = net(x)
        torch.manual_seed(2)
        d = net(x)

    assert torch.equal(a, b)
    assert not torch.equal(c, d)  # head dropout is active in train mode


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("which,n_leads", [("teacher", 12), ("student", 1)])
def test_torchscript_export_matches_eager(which: str, n_leads: int, tmp_path: Path) -> None:
    net = _net(which, n_leads)
    net.train()  # export must switch to eval itself and restore the flag afterwards

    path = export_torchscript(net, tmp_path / "sub" / "net.pt", torch.randn(1, n_leads, 500))

    assert path.exists() and net.training
    loaded = torch.jit.load(str(path))
    net.eval()
    for length in (500, 1000, 333):  # other lengths: the trace must not freeze shapes
        x = torch.randn(2, n_leads, length)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), atol=1e-5, rtol=0)


def test_export_rejects_wrong_example(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="example"):
        export_torchscript(_net("student", 1), tmp_path / "s.pt", torch.randn(1, 12, 1000))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_student_exports_to_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    net = _net("student", 1)
    path = tmp_path / "student.onnx"

    torch.onnx.export(
        net,
        (torch.randn(1, 1, 1000),),
        str(path),
        dynamo=False,
        input_names=["ecg"],
        output_names=["logits"],
        dynamic_axes={"ecg": {0: "batch", 2: "time"}, "logits": {0: "batch"}},
    )

    assert path.stat().st_size > 10_000


def test_measure_latency_restores_threads_and_mode() -> None:
    net = _net("student", 1).train()
    torch.set_num_threads(2)  # differs from the 1 thread measured with; the fixture resets it

    stats = measure_latency(net, n_leads=1, length=1000, threads=1, repeats=5)

    assert torch.get_num_threads() == 2
    assert net.training
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(net, 1, 1000, repeats=0)


def _bursts(n: int, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: sine bursts; class 1: square bursts of the same frequency, amplitude and place."""
    t = torch.arange(length, dtype=torch.float32) / 100.0  # 100 Hz
    freq = 1.0 + 4.0 * torch.rand(n, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(n, 1, generator=gen)
    wave = torch.sin(2 * math.pi * freq * t + phase)
    label = torch.randint(0, 2, (n,), generator=gen)
    wave = torch.where(label[:, None] == 1, torch.sign(wave), wave)
    start = torch.randint(0, length // 2, (n, 1), generator=gen)
    idx = torch.arange(length)
    window = (idx >= start) & (idx < start + length // 2)
    x = wave * window * (0.5 + torch.rand(n, 1, generator=gen))
    x = x + 0.1 * torch.randn(n, length, generator=gen)
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)  # per-lead standardised
    return x[:, None, :], label


def test_student_learns_sine_vs_square_bursts() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x_train, y_train = _bursts(256, 300, gen)
    x_test, y_test = _bursts(256, 300, gen)
    net = build_net(1, 2, student_config())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    targets = nn.functional.one_hot(y_train, 2).float()  # multi-label style targets

    # Execute
    net.train()
    for _ in range(60):
        idx = torch.randint(0, len(x_train), (32,))
        loss = nn.functional.binary_cross_entropy_with_logits(net(x_train[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x_test).argmax(-1) == y_test).float().mean().item()

    # Assert: held-out windows, so this is learning, not memorisation.
    assert accuracy > 0.9
