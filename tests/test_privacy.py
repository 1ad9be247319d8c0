"""Differential privacy: config checks, the accountant, DP-SGD's per-record gradients and clipping, Flower's
fixed-clipping wrappers around the LiteHeart strategy, and epsilon in the registry."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, get_norm

from client.app import app, dp_clipping_mod
from liteheart_core.checkpoint import load_checkpoint
from liteheart_core.config import FedConfig
from liteheart_core.federated import simulated_client_data, student_for, train_config
from liteheart_core.models import build_net
from liteheart_core.privacy import (
    ORDERS,
    ClientLevelDP,
    DPSGDConfig,
    check_no_buffers,
    clip_and_sum,
    dp_sgd_local_round,
    dp_sgd_train_config,
    noise_for_epsilon,
    per_record_grads,
    rdp_epsilon,
)
from liteheart_core.train import _objective, make_trainable
from server import dp
from server.orchestrate import ServerOptions, round_config, run_federation
from server.strategy import strategy_for
from simulations.local_grid import LocalGrid
from tests.conftest import TINY_STUDENT, TINY_TEACHER


@pytest.fixture(autouse=True, scope="module")
def server_identity():
    """Messages built outside a running ServerApp need the identity Flower gives its processes."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = None, None, None


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """As a client runs (``client-threads`` 1): per-record gradients of small nets gain nothing from threads, and
    on a busy 2-core machine two threads per process lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"dp": "dp-sgd", "dp-epsilon": -1.0}, "dp-epsilon must be a finite number > 0, got -1.0"),
        ({"dp": "dp-sgd", "dp-epsilon": math.inf}, "dp-epsilon must be a finite number > 0"),
        ({"dp": "dp-sgd", "dp-epsilon": math.nan}, "dp-epsilon must be a finite number > 0"),
        ({"dp": "dp-sgd"}, "needs exactly one of dp-epsilon"),
        ({"dp": "dp-sgd", "dp-epsilon": 3.0, "dp-noise-multiplier": 1.0}, "needs exactly one of dp-epsilon"),
        ({"dp": "dp-sgd", "dp-epsilon": 3.0, "dp-delta": 1.0}, "dp-delta must be in (0, 1)"),
        ({"dp": "dp-sgd", "dp-epsilon": 3.0, "dp-delta": -1e-5}, "dp-delta must be a finite number > 0"),
        ({"dp": "dp-sgd", "dp-epsilon": 3.0, "dp-max-grad-norm": -1.0}, "dp-max-grad-norm must be a finite number"),
        ({"dp": "laplace"}, "dp must be one of none, client, server, dp-sgd, got 'laplace'"),
        ({"dp-epsilon": 3.0}, "dp-epsilon given but dp = none"),
        ({"dp": "server", "dp-noise-multiplier": 1.0}, "dp = server needs dp-clip-norm > 0"),
        (
            {"dp": "client", "dp-noise-multiplier": 1.0, "dp-clip-norm": 1.0, "dp-max-grad-norm": 1.0},
            "dp-max-grad-norm bounds one record's gradient",
        ),
        ({"dp": "dp-sgd", "dp-epsilon": 3.0, "dp-clip-norm": 1.0}, "dp-sgd uses dp-max-grad-norm"),
        (
            {"dp": "server", "dp-epsilon": 3.0, "dp-clip-norm": 1.0, "strategy": "fedmedian"},
            "works with strategy fedavg or fedprox",
        ),
        (
            {"dp": "server", "dp-epsilon": 3.0, "dp-clip-norm": 1.0, "strategy": "krum", "clients": 8},
            "krum does not average",
        ),
        (
            {"dp": "client", "dp-epsilon": 3.0, "dp-clip-norm": 1.0, "wearables": 1, "wearable-weight": 2.0},
            "wearable-weight must stay 1",
        ),
        ({"dp": "dp-sgd", "dp-epsilon": 3.0, "wearables": 1}, "wearables would train without it"),
        ({"dp": "dp-sgd", "dp-epsilon": 3.0, "method": "liteheart-v2"}, "does not have: use method kd"),
        ({"dp": "client", "dp-epsilon": 3.0, "dp-clip-norm": 1.0, "secagg": True}, "secagg"),  # (secagg's check)
    ],
)
def test_config_refuses_bad_dp_settings_with_the_reason(keys: dict, message: str) -> None:
    with pytest.raises(ValueError, match="bad run config: " + ".*" + _escape(message)):
        FedConfig.from_dict(keys)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_config_accepts_each_dp_mode_and_none_keeps_the_model_card_quiet() -> None:
    from server.artifacts import privacy_summary

    runs = [
        FedConfig.from_dict(k)
        for k in (
            {"dp": "dp-sgd", "dp-epsilon": 3.0, "method": "kd"},
            {"dp": "dp-sgd", "dp-noise-multiplier": 1.1, "dp-delta": 1e-6, "method": "liteheart"},
            {"dp": "server", "dp-noise-multiplier": 1.0, "dp-clip-norm": 2.0, "strategy": "fedprox"},
            {"dp": "client", "dp-epsilon": 8.0, "dp-clip-norm": 2.0},
            {},
        )
    ]

    # the DP keys alone (the model card reads any key named like dp/epsilon/delta/noise/clip)
    states = [
        privacy_summary({"fed": {k: v for k, v in c.to_dict().items() if k.startswith("dp")}}, [])[
            "differential_privacy"
        ]
        for c in runs
    ]

    assert states == ["on", "on", "on", "on", "none"]


# ---------------------------------------------------------------------------------------------- accountant


def test_accountant_matches_the_gaussian_mechanism_by_hand() -> None:
    # 10 releases without sampling (q = 1) of a sensitivity-1 sum with N(0, sigma^2) noise: RDP of order a
    # is 10 a / (2 sigma^2); (epsilon, delta) by the conversion of Balle et al. (2020), best order
    sigma, steps, delta = 2.0, 10, 1e-5
    a = np.array(ORDERS, dtype=float)
    by_hand = np.min(steps * a / (2 * sigma**2) + np.log((a - 1) / a) - (np.log(delta) + np.log(a)) / (a - 1))
    # the exact epsilon of that composition (a mu-GDP mechanism, mu = sqrt(steps) / sigma) is a lower bound
    from scipy.optimize import brentq
    from scipy.stats import norm

    mu = math.sqrt(steps) / sigma
    exact = brentq(lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - delta, 0, 100)

    epsilon = rdp_epsilon([(sigma, 1.0, steps)], delta)

    assert epsilon == pytest.approx(by_hand, rel=1e-9)
    assert exact <= epsilon <= 1.15 * exact  # 7.51 <= 8.08


def test_epsilon_grows_with_rounds_and_falls_with_noise() -> None:
    account = ClientLevelDP.resolve(
        clip_norm=1.0, noise_multiplier=1.0, target_epsilon=0.0, delta=1e-5, sampled=4, population=8, rounds=10
    )

    per_round = [account.epsilon(r) for r in range(11)]
    noisier = [rdp_epsilon([(z, 0.5, 10)], 1e-5) for z in (0.8, 1.0, 2.0, 4.0)]

    assert per_round[0] == 0.0 and all(b > a for a, b in zip(per_round, per_round[1:]))
    assert all(b < a for a, b in zip(noisier, noisier[1:]))


def test_noise_from_a_target_epsilon_spends_at_most_that_budget() -> None:
    for target in (1.0, 3.0, 8.0):
        sigma = noise_for_epsilon(target, 1e-5, 0.1, 200)
        spent = rdp_epsilon([(sigma, 0.1, 200)], 1e-5)
        assert target - 0.01 <= spent <= target


# ---------------------------------------------------------------------------------------------- DP-SGD


@pytest.fixture(scope="module")
def dp_client(synth_data, tiny_teacher):
    """A client of the synthetic set with a tiny student and teacher, LiteHeart's objective, MI off."""
    teacher, _ = load_checkpoint(tiny_teacher)
    local = simulated_client_data(str(synth_data.root), 600, "superdiagnostic", 0, 2, "iid", 0.5, 0.5, 0)
    cfg = dp_sgd_train_config(train_config(FedConfig(method="liteheart", batch_size=16, lr=1e-2, device="cpu")))
    torch.manual_seed(0)
    student = student_for(local.classes, "I", TINY_STUDENT)
    return student, teacher, local, cfg


def _singleton_grads(tr, cfg, i: int, seed: int) -> tuple[float, list[torch.Tensor]]:
    """The gradient of ``_objective`` (the code of ordinary training) on a batch holding record ``i`` alone."""
    sl = slice(i, i + 1)
    gen = torch.Generator().manual_seed(seed)
    loss, _ = _objective(
        cfg,
        tr.model,
        tr.teacher,
        tr.distiller,
        tr.x[sl],
        tr.y[sl],
        tr.mask[sl],
        tr.codes[sl],
        tr.t_logits[sl],
        [f[sl] if f is not None else None for f in tr.t_feats],
        gen,
        100.0,
    )
    params = [p for _, p in _named(tr)]
    return float(loss.detach()), list(torch.autograd.grad(loss, params))


def _named(tr):
    from liteheart_core.privacy import _PerRecord

    return [(k, p) for k, p in _PerRecord(tr.model, tr.distiller).named_parameters() if p.requires_grad]


def test_per_record_gradients_are_those_of_ordinary_training_on_one_record(dp_client) -> None:
    student, teacher, local, cfg = dp_client
    tr = make_trainable(student, cfg, local.x, local.y, local.labelled, local.regions, torch.device("cpu"), teacher)
    tr.model.train()
    labelled, unlabelled = int(np.flatnonzero(local.labelled)[0]), int(np.flatnonzero(~local.labelled)[0])
    names = [k for k, _ in _named(tr)]
    # every term of the objective, pseudo-labels and consistency included: one record at a time, with the
    # augmentations drawn from the same generator state
    for i in (labelled, unlabelled):
        loss, expected = _singleton_grads(tr, cfg, i, seed=5)
        grads, terms = per_record_grads(tr, cfg, torch.tensor([i]), torch.Generator().manual_seed(5), 100.0)
        assert terms["total"] == pytest.approx(loss, rel=1e-5)
        for name, e in zip(names, expected):
            torch.testing.assert_close(grads[name][0], e, rtol=1e-4, atol=1e-6)
    # several records mapped at once (no random views: those are drawn per batch)
    quiet = replace(cfg, weights=replace(cfg.loss_weights, pseudo=0.0, consistency=0.0))
    idx = [labelled, unlabelled, 3]
    grads, _ = per_record_grads(tr, quiet, torch.tensor(idx), torch.Generator(), 100.0)
    for row, i in enumerate(idx):
        _, expected = _singleton_grads(tr, quiet, i, seed=0)
        for name, e in zip(names, expected):
            torch.testing.assert_close(grads[name][row], e, rtol=1e-4, atol=1e-6)


def test_each_record_is_clipped_to_the_bound_before_noise(dp_client) -> None:
    student, teacher, local, cfg = dp_client
    tr = make_trainable(student, cfg, local.x, local.y, local.labelled, local.regions, torch.device("cpu"), teacher)
    grads, _ = per_record_grads(tr, cfg, torch.arange(12), torch.Generator().manual_seed(0), 100.0)
    bound = 0.05

    summed, norms = clip_and_sum(grads, bound)

    clipped = {k: g * (bound / norms.clamp_min(bound)).view(-1, *[1] * (g.dim() - 1)) for k, g in grads.items()}
    clipped_norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in clipped.values()))
    assert (norms > bound).sum() >= 10  # the bound bites: these records' gradients are longer than it
    assert torch.all(clipped_norms <= bound * (1 + 1e-5))
    for k in grads:
        torch.testing.assert_close(summed[k], clipped[k].sum(0), rtol=1e-5, atol=1e-7)
    total = math.sqrt(sum(float(s.pow(2).sum()) for s in summed.values()))
    assert total <= 12 * bound * (1 + 1e-5)


def test_dp_sgd_rounds_give_finite_weights_and_a_growing_epsilon(dp_client) -> None:
    student, teacher, local, cfg = dp_client
    dpc = DPSGDConfig(max_grad_norm=1.0, target_epsilon=2.0, planned_rounds=2)
    net = student_for(local.classes, "I", TINY_STUDENT)
    net.load_state_dict(student.state_dict())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ledger, spent, dstate = None, [], None
    for server_round in (1, 2):
        state, metrics, dstate, ledger = dp_sgd_local_round(
            net, teacher, local, cfg, 1, server_round, dpc, ledger, distiller_state=dstate
        )
        spent.append(metrics["dp-epsilon"])
        net.load_state_dict(state)

    assert set(state) == {k for k, _ in net.named_parameters()}  # GroupNorm: no buffer for the noise to hit
    assert all(torch.isfinite(v).all() for v in state.values())
    assert any(not torch.equal(before[k], state[k]) for k in state)
    assert spent[0] < spent[1] <= 2.0 and spent[1] > 1.9  # the target, spent over the planned rounds
    assert ledger.steps == 2 * math.ceil(local.n_train / cfg.batch_size)
    # a node without a ledger (restarted) counts every earlier round as spent
    _, fresh, _, _ = dp_sgd_local_round(net, teacher, local, cfg, 1, 2, dpc, None, distiller_state=dstate)
    assert fresh["dp-epsilon"] == pytest.approx(spent[1])


@pytest.mark.parametrize("given", [{"target_epsilon": 2.0, "planned_rounds": 3}, {"noise_multiplier": 0.7}])
def test_dp_sgd_noise_has_the_accountants_scale(dp_client, monkeypatch: pytest.MonkeyPatch, given: dict) -> None:
    """The noise each step adds is N(0, (z C)^2) per coordinate, z the multiplier the accountant was given."""
    import opacus.accountants.utils

    import liteheart_core.privacy as privacy

    student, teacher, local, cfg = dp_client
    dpc = DPSGDConfig(max_grad_norm=0.5, **given)
    q, steps = privacy.sampling_plan(local.n_train, cfg.batch_size, 1)
    # the multiplier, computed here from Opacus's accountant directly (not through noise_for_epsilon)
    z = given.get("noise_multiplier") or opacus.accountants.utils.get_noise_multiplier(
        target_epsilon=2.0, target_delta=dpc.delta, sample_rate=q, steps=steps * 3, accountant="rdp"
    )
    sums: list[dict[str, torch.Tensor]] = []
    grads: list[dict[int, torch.Tensor]] = []
    real_clip = privacy.clip_and_sum

    def recording_clip(per_record, bound):
        summed, norms = real_clip(per_record, bound)
        sums.append({k: v.detach().clone() for k, v in summed.items()})
        return summed, norms

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):  # the gradient the optimiser is handed: (clipped sum + noise) / batch
            grads.append({id(p): p.grad.detach().clone() for g in self.param_groups for p in g["params"]})
            return super().step(closure)

    monkeypatch.setattr(privacy, "clip_and_sum", recording_clip)
    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    net = student_for(local.classes, "I", TINY_STUDENT)
    net.load_state_dict(student.state_dict())
    named: dict[str, torch.nn.Parameter] = {}
    real_per_record = privacy._PerRecord

    class Naming(real_per_record):  # the round's own names for the parameters it noises
        def __init__(self, *args):
            super().__init__(*args)
            named.update({k: p for k, p in self.named_parameters() if p.requires_grad})

    monkeypatch.setattr(privacy, "_PerRecord", Naming)

    _, metrics, _, _ = dp_sgd_local_round(net, teacher, local, cfg, 1, 1, dpc, None)

    assert metrics["dp-noise-multiplier"] == pytest.approx(z, rel=1e-9)
    # no empty Poisson batch at this rate, so every step's clipped sum was recorded
    assert len(grads) == len(sums) == steps and named
    batch = q * local.n_train
    noise = torch.cat(
        [
            (step_grads[id(p)] * batch - summed[k]).flatten()
            for step_grads, summed in zip(grads, sums)
            for k, p in named.items()
        ]
    )
    noise_all = noise.double()
    expected = z * dpc.max_grad_norm
    assert noise_all.numel() > 5_000  # tolerances below are >= 4 standard errors at this size
    assert float(noise_all.std()) == pytest.approx(expected, rel=0.03)
    assert abs(float(noise_all.mean())) < 0.05 * expected
    assert float((noise_all.abs() < expected).double().mean()) == pytest.approx(0.6827, abs=0.025)  # Gaussian


def test_noise_needs_a_model_without_normalisation_buffers() -> None:
    with pytest.raises(ValueError, match="normalisation buffers.*running_mean"):
        check_no_buffers(build_net(12, 5, TINY_TEACHER))  # BatchNorm
    check_no_buffers(student_for(["A", "B"], "I"))  # the student: GroupNorm, nothing to noise but weights


# ---------------------------------------------------------------------------------------------- client level

NODES = [201, 202, 203, 204]


class Replies:
    """A ClientApp whose nodes answer a train message with a chosen update: moved by ``step`` x (1, 1, ...),
    NaN, or an exception."""

    def __init__(self, steps: dict[int, float | str]) -> None:
        self.steps = steps
        self.app = ClientApp()
        self.app.train(mods=[dp_clipping_mod])(self.train)

    def train(self, msg: Message, context: Context) -> Message:
        step = self.steps[context.node_id]
        if step == "raise":
            raise RuntimeError("the node crashed")
        state = {
            k: torch.as_tensor(v.numpy() + (np.nan if step == "nan" else step))
            for k, v in msg.content["arrays"].items()
        }
        metrics = MetricRecord({"num-examples": 10.0 * context.node_id, "total": 1.0})
        return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": metrics}), reply_to=msg)


def _one_round(tmp_path: Path, mode: str, steps: dict, noise: float, clip: float = 1.0):
    cfg = FedConfig.from_dict(
        {
            "clients": len(NODES),
            "min-clients": len(NODES),
            "dp": mode,
            "method": "supervised",
            "dp-noise-multiplier": noise,
            "dp-clip-norm": clip,
        }
    )
    strategy = strategy_for(cfg)
    strategy.setup(ArrayRecord({}), "0" * 64, {}, 60.0, max_update_norm=cfg.max_update_norm)
    wrapped, account = dp.wrap(strategy, cfg)
    student = student_for(["NORM", "MI"], "I", TINY_STUDENT)
    start = {k: v.detach().numpy().copy() for k, v in student.state_dict().items()}
    out = {}
    wrapped.start(
        grid=LocalGrid(Replies(steps).app, NODES, tmp_path),
        initial_arrays=ArrayRecord(student.state_dict()),
        num_rounds=1,
        timeout=60,
        train_config=round_config(cfg, "0" * 64, student.cfg.to_dict()),
        evaluate_fn=lambda rnd, arrays: out.update({rnd: arrays}),
    )
    moved = [out[1][k].numpy() - start[k] for k in start]
    return strategy, wrapped, account, moved


def test_server_side_clipping_with_the_liteheart_strategy(tmp_path: Path) -> None:
    # one honest small update, one 50x too long (clipped, not rejected), one NaN and one crash (reported)
    steps = {201: 0.001, 202: 0.05, 203: "nan", 204: "raise"}

    strategy, wrapped, account, moved = _one_round(tmp_path, "server", steps, noise=1e-6)

    status = {r["node_id"]: (r["status"], r["reason"] or "") for r in strategy.reports}
    assert status["201"][0] == status["202"][0] == "ok"
    assert "NaN" in status["203"][1] and "crashed" in status["204"][1]
    n_params = sum(a.size for a in moved)
    small = 0.001 * math.sqrt(n_params)  # node 201's update norm, under the bound: kept as it is
    assert small < 1.0 < 0.05 * math.sqrt(n_params)
    expected = (0.001 + 0.05 * 1.0 / (0.05 * math.sqrt(n_params))) / 2  # unweighted mean, 202 clipped to norm 1
    assert np.allclose(np.concatenate([a.ravel() for a in moved]), expected, atol=1e-5)
    assert wrapped.released == 1 and account.epsilon(1) > 0


def test_noise_is_calibrated_to_the_updates_averaged_and_stays_finite(tmp_path: Path) -> None:
    steps = {201: 0.0, 202: 0.0, 203: 0.0, 204: "raise"}

    _, _, _, moved = _one_round(tmp_path, "server", steps, noise=2.0, clip=1.0)

    flat = np.concatenate([a.ravel() for a in moved])
    assert np.isfinite(flat).all()
    assert flat.std() == pytest.approx(2.0 * 1.0 / 3, rel=0.1)  # z * C / n, n = 3 averaged (not 4 sampled)
    net = student_for(["NORM", "MI"], "I", TINY_STUDENT)  # even this much noise leaves a usable network
    state = dict(zip(net.state_dict(), (torch.as_tensor(v) for v in moved)))
    net.load_state_dict({k: net.state_dict()[k] + v for k, v in state.items()})
    assert torch.isfinite(net(torch.randn(2, 1, 300))).all()


def test_client_side_clipping_mod_clips_and_the_server_rejects_unclipped_updates(tmp_path: Path) -> None:
    sent = ArrayRecord({"w": torch.zeros(100)})
    msg = Message(
        RecordDict({"arrays": sent, "config": ConfigRecord({KEY_CLIPPING_NORM: 0.5})}),
        dst_node_id=7,
        message_type="train",
    )
    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})

    def reply_to(m: Message, c: Context) -> Message:
        return Message(
            RecordDict({"arrays": ArrayRecord({"w": torch.ones(100)}), "metrics": MetricRecord({"num-examples": 1.0})}),
            reply_to=m,
        )

    plain = Message(
        RecordDict({"arrays": sent, "config": ConfigRecord({"dp": "none"})}), dst_node_id=7, message_type="train"
    )

    clipped = dp_clipping_mod(msg, ctx, reply_to).content["arrays"]
    untouched = dp_clipping_mod(plain, ctx, reply_to).content["arrays"]

    assert get_norm(clipped.to_numpy_ndarrays()) == pytest.approx(0.5, rel=1e-5)
    assert get_norm(untouched.to_numpy_ndarrays()) == pytest.approx(10.0)
    # through the whole round: node 202 skips the mod (forged), and only it is rejected
    steps = {201: 0.001, 202: 0.05, 203: 0.05, 204: 0.05}
    forged = Replies(steps)

    def skip_mod(node: int, request: Message, reply: Message) -> Message:
        if node == 202 and not reply.has_error():
            reply.content["arrays"] = ArrayRecord(
                {k: torch.as_tensor(v.numpy() + 0.05) for k, v in request.content["arrays"].items()}
            )
        return reply

    cfg = FedConfig.from_dict(
        {
            "clients": 4,
            "min-clients": 4,
            "dp": "client",
            "method": "supervised",
            "dp-noise-multiplier": 1e-6,
            "dp-clip-norm": 1.0,
        }
    )
    strategy = strategy_for(cfg)
    strategy.setup(ArrayRecord({}), "0" * 64, {}, 60.0, max_update_norm=cfg.max_update_norm)
    wrapped, _ = dp.wrap(strategy, cfg)
    student = student_for(["NORM", "MI"], "I", TINY_STUDENT)
    wrapped.start(
        grid=LocalGrid(forged.app, NODES, tmp_path, tamper=skip_mod),
        initial_arrays=ArrayRecord(student.state_dict()),
        num_rounds=1,
        timeout=60,
        train_config=round_config(cfg, "0" * 64, student.cfg.to_dict()),
    )
    status = {r["node_id"]: (r["status"], r["reason"] or "") for r in strategy.reports}
    assert [n for n, (s, _) in status.items() if s != "ok"] == ["202"]
    assert "exceeds the limit" in status["202"][1]


# ---------------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "keys",
    [
        {"dp": "dp-sgd", "dp-epsilon": 4.0, "method": "kd"},
        {"dp": "client", "dp-noise-multiplier": 1.0, "dp-clip-norm": 5.0, "method": "supervised"},
    ],
)
def test_epsilon_is_recorded_per_round_in_the_registry(keys: dict, synth_data, tiny_teacher, tmp_path: Path) -> None:
    cfg = FedConfig.from_dict(
        {
            "data": str(synth_data.root),
            "teacher": str(tiny_teacher),
            "clients": 2,
            "rounds": 2,
            "local-epochs": 1,
            "batch-size": 16,
            "labelled-fraction": 0.5,
            "device": "cpu",
            **keys,
        }
    )
    grid = LocalGrid(app, [301, 302], tmp_path / "nodes")

    shown = run_federation(grid, cfg, ServerOptions(run_dir=tmp_path / "runs"))

    spent = [r["train_metrics"]["epsilon"] for r in shown["rounds"]]
    assert shown["run"]["status"] == "completed" and len(spent) == 2
    assert 0 < spent[0] < spent[1]
    assert all(r["train_metrics"]["delta"] == 1e-5 for r in shown["rounds"])
    if cfg.dp == "dp-sgd":
        assert spent[1] == pytest.approx(4.0, abs=0.02)  # the target, after the planned rounds
        for rep in shown["rounds"][1]["client_reports"]:  # no loss or local score leaves a DP-SGD node
            assert set(rep["metrics"]) >= {"dp-epsilon", "num-examples"} and "total" not in rep["metrics"]
    else:
        assert spent[1] == pytest.approx(ClientLevelDP(5.0, 1.0, 1e-5, 1.0, 2).epsilon(2))
