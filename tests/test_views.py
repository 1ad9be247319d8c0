"""The view bank of LiteHeart v2: the student sees what the teacher saw, codes move with the signal, cached by content."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from liteheart_core.models import build_net
from liteheart_core.train import METHOD_TABLE, TrainConfig, drop_leads, method_spec
from liteheart_core.views import build_view_bank, cached_view_bank

TINY_TEACHER = {
    "kind": "xresnet1d",
    "widths": (8, 16),
    "depths": (1, 1),
    "kernel_size": 5,
    "stem_width": 8,
    "norm": "batch",
    "dropout": 0.0,
    "block": "basic",
    "stem_convs": 1,
}


def _lead_i_teacher(seed: int = 0):
    """A 12-lead teacher that reads lead I only (its stem ignores leads II..V6)."""
    torch.manual_seed(seed)
    net = build_net(12, 3, TINY_TEACHER).eval()
    with torch.no_grad():
        net.stem[0][0].weight[:, 1:] = 0.0
    return net


def _records(n: int = 6, length: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, length, generator=gen)
    codes = torch.zeros(n, length, dtype=torch.long)
    for beat in range(0, length, 50):
        codes[:, beat + 5 : beat + 12] = 1
        codes[:, beat + 18 : beat + 24] = 2
        codes[:, beat + 30 : beat + 42] = 3
    x[:, 0] = torch.where(codes == 2, 10.0, 0.0)  # lead I spikes exactly on the QRS samples
    return x, codes


def test_the_student_input_is_lead_i_of_the_view_the_teacher_saw() -> None:
    # Prepare
    teacher = _lead_i_teacher()
    x, codes = _records()
    # Execute
    bank = build_view_bank(teacher, x, codes, [0], n_views=4, mix_views=1, fs=100.0)
    # Assert: the teacher's logits are reproduced from the stored student input alone
    for v in range(bank.n_views):
        padded = torch.zeros(x.shape[0], 12, x.shape[-1])
        padded[:, 0] = bank.x[v, :, 0].float()
        with torch.no_grad():
            again = teacher(padded)
        assert torch.allclose(again, bank.logits[v], atol=0.05), v
    assert bank.mixed.tolist() == [False, False, False, True]
    assert not bank.present[3].any() and bank.present[:3].all()


def test_region_codes_move_with_the_signal() -> None:
    # Prepare
    x, codes = _records()
    # Execute
    bank = build_view_bank(_lead_i_teacher(), x, codes, [0], n_views=3, mix_views=0, fs=100.0)
    # Assert: the shifted spikes still sit exactly on the shifted QRS codes, and some view did shift
    for v in range(3):
        assert torch.equal(bank.x[v, :, 0].float() > 5, bank.codes[v].long() == 2)
    assert any(not torch.equal(bank.codes[v].long(), codes) for v in range(3))


def test_an_unaugmented_bank_holds_the_clean_record_and_its_teacher_targets() -> None:
    teacher = _lead_i_teacher()
    x, codes = _records()

    bank = build_view_bank(teacher, x, codes, [0, 1], n_views=1, mix_views=0, augment=False)

    assert torch.equal(bank.x[0], x[:, :2].to(torch.float16))
    with torch.no_grad():
        assert torch.allclose(bank.logits[0], teacher(x), atol=1e-5)


def test_the_bank_is_cached_by_content(tmp_path: Path) -> None:
    # Prepare
    x, codes = _records()
    settings = {"n_views": 2, "mix_views": 1, "fs": 100.0}
    # Execute
    first = cached_view_bank(tmp_path, _lead_i_teacher(0), x, codes, [0], **settings)
    again = cached_view_bank(tmp_path, _lead_i_teacher(0), x, codes, [0], **settings)
    other = cached_view_bank(tmp_path, _lead_i_teacher(1), x, codes, [0], **settings)
    # Assert
    assert torch.equal(first.logits, again.logits) and torch.equal(first.x, again.x)
    assert not torch.equal(first.logits, other.logits)
    assert len(list(tmp_path.glob("viewbank-*.pt"))) == 2
    assert not list(tmp_path.glob("*.part"))


def test_bad_view_counts_are_refused() -> None:
    x, codes = _records()
    with pytest.raises(ValueError, match="mix_views"):
        build_view_bank(_lead_i_teacher(), x, codes, [0], n_views=2, mix_views=2)
    with pytest.raises(ValueError, match="region codes"):
        build_view_bank(_lead_i_teacher(), x, codes[:, :10], [0], n_views=2, mix_views=0)


def test_lead_dropout_never_drops_the_students_lead() -> None:
    x = torch.ones(4000, 12, 5)

    out = drop_leads(x, 0.5, [0], torch.Generator().manual_seed(0))

    dropped = out[:, :, 0] == 0
    assert not dropped[:, 0].any()
    alone = dropped[:, 1:].all(1).float().mean().item()
    full = (~dropped[:, 1:]).all(1).float().mean().item()
    assert 0.22 < alone < 0.28 and 0.47 < full < 0.53  # a quarter lead I alone, half all twelve
    assert 0.36 < dropped[:, 1:].float().mean().item() < 0.39  # 1/4 + 1/4 * 1/2
    with pytest.raises(ValueError, match="lead_dropout"):
        TrainConfig(method="kd", lead_dropout=0.5)


def test_one_method_table_answers_what_a_method_needs() -> None:
    assert not method_spec("supervised").needs_teacher and method_spec("supervised").labelled_only
    assert method_spec("liteheart-v2").uses_bank and method_spec("liteheart-v2").needs_regions
    assert not method_spec("liteheart-v2-no-region").needs_regions
    assert all(TrainConfig(method=m).spec is METHOD_TABLE[m] for m in METHOD_TABLE)
    with pytest.raises(ValueError, match="unknown method 'magic'; expected one of teacher, supervised"):
        method_spec("magic")


def test_folds_may_not_overlap() -> None:
    with pytest.raises(ValueError, match="shared: \\[8\\]"):
        TrainConfig(train_folds=(1, 2, 8), val_folds=(9,), test_folds=(8,))
