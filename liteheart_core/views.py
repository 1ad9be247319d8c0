"""The view bank: consistent teaching for LiteHeart v2 at the cost of vanilla KD.

"Function matching" (Beyer et al., 2022) asks the teacher and the student to see the
*same* augmented input: the student then learns the teacher's function around each
record, not one soft label per record. Running the 12-lead teacher on every batch would
cost ~10x a student step on a CPU, so the bank draws ``n_views`` augmented views of
every training record once, runs the frozen teacher on them once, and keeps what the
student's steps need:

- ``x``: the student's input for each view -- the student's lead(s) of the very
  12-lead tensor the teacher saw (float16);
- ``logits``: the teacher's logits on that view;
- ``embed``: the teacher's globally pooled last-stage features, reduced by PCA to
  ``embed_dim`` whitened components (the class content of the representation, with no
  trainable teacher-side adapter);
- ``waves`` / ``present``: the teacher's class evidence averaged over the P, QRS and T
  samples of the view (region-aware targets; absent for mixed views, whose beats do
  not line up);
- ``mixed``: whether a view is a mixup of two records (those carry no label).

Views ``[0, n_plain)`` are weak augmentations (gain, white noise, circular shift; the
region codes are shifted with the signal), the others are mixups of two records
followed by the same weak augmentation. The generator is seeded by ``seed`` alone, so
every student trained against one teacher sees the same bank whatever its own seed.

Memory: ``n_views * N * (leads * T * 2 + C * 4 + embed_dim * 2)`` bytes, about 27 MB
for 8 views of PTB-XL's 1,570 training windows.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from liteheart_core.losses.augment import amplitude_scale, gaussian_noise
from liteheart_core.losses.crd import memory_infonce
from liteheart_core.losses.region import pool_region_evidence


@dataclass
class ViewBank:
    """Teacher targets on ``n_views`` fixed views of every record (see the module docstring)."""

    x: Tensor  # [V, N, leads, T] float16, the student's input
    logits: Tensor  # [V, N, C] float32
    embed: Tensor  # [V, N, D] float16, whitened PCA components of the teacher's pooled features
    waves: Tensor  # [V, N, C, 3] float32, teacher evidence pooled over P, QRS, T
    present: Tensor  # [V, N, 3] bool, which waves the view holds (False for mixed views)
    codes: Tensor | None  # [V, N, T] int8 region codes of plain views (shifted with the signal)
    mixed: Tensor  # [V] bool

    @property
    def n_views(self) -> int:
        return self.x.shape[0]

    @property
    def plain_views(self) -> int:
        return int((~self.mixed).sum())

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for t in (self.x, self.logits, self.embed, self.waves, self.present, self.mixed)
        ) + (self.codes.numel() if self.codes is not None else 0)

    def to(self, device: torch.device) -> ViewBank:
        return ViewBank(
            self.x.to(device),
            self.logits.to(device),
            self.embed.to(device),
            self.waves.to(device),
            self.present.to(device),
            None if self.codes is None else self.codes.to(device),
            self.mixed.to(device),
        )


def _shift(x: Tensor, codes: Tensor | None, gen: torch.Generator, max_shift: int) -> tuple[Tensor, Tensor | None]:
    """Circular shift of each record by one random amount, applied to its codes too."""
    batch, _, length = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (batch, 1), generator=gen, device=gen.device).to(x.device)
    source = (torch.arange(length, device=x.device) - shift) % length
    x = x.gather(2, source.unsqueeze(1).expand_as(x))
    if codes is not None:
        codes = codes.gather(1, source)
    return x, codes


def weak_view(x: Tensor, codes: Tensor | None, gen: torch.Generator, fs: float) -> tuple[Tensor, Tensor | None]:
    """The weak augmentation of :func:`~liteheart_core.losses.augment.weak_augment`, codes kept aligned."""
    x = amplitude_scale(x, gen, 0.9, 1.1)
    x = gaussian_noise(x, gen, std=0.03)
    return _shift(x, codes, gen, round(0.05 * fs))


def pca_basis(feats: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, top-``dim`` principal directions and their standard deviations of ``feats`` [M, D]."""
    mean = feats.mean(0)
    centred = feats - mean
    dim = min(dim, centred.shape[0] - 1, centred.shape[1])
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    std = s[:dim] / max(1.0, (centred.shape[0] - 1) ** 0.5)
    return mean, v[:dim].T.contiguous(), std.clamp_min(1e-6)


def teacher_view(xb: Tensor, n_in: int, teacher_leads: list[int] | None) -> Tensor:
    """What a teacher that reads ``n_in`` leads is shown of the batch ``xb`` ``[B, L, T]``.

    ``xb`` itself (``teacher_leads`` None); its ``teacher_leads`` alone, the others zeroed; or, when
    ``xb`` holds fewer leads than the teacher reads (a wearable's lead I for a 12-lead teacher
    trained with lead dropout), ``xb``'s leads placed at ``teacher_leads`` among zeros.
    """
    if xb.shape[1] == n_in:
        if teacher_leads is None:
            return xb
        shown = torch.zeros(n_in, dtype=torch.bool, device=xb.device)
        shown[teacher_leads] = True
        return xb * shown.view(1, -1, 1)
    if teacher_leads is None or len(teacher_leads) != xb.shape[1]:
        raise ValueError(
            f"the teacher reads {n_in} leads and the records hold {xb.shape[1]}: say where they go "
            f"(teacher_leads), got {teacher_leads}"
        )
    full = xb.new_zeros(xb.shape[0], n_in, xb.shape[-1])
    full[:, teacher_leads] = xb
    return full


@torch.no_grad()
def build_view_bank(
    teacher,
    x: Tensor,
    codes: Tensor | None,
    leads: list[int],
    *,
    n_views: int = 8,
    mix_views: int = 2,
    mix_alpha: float = 0.4,
    embed_dim: int = 64,
    seed: int = 0,
    fs: float = 100.0,
    device: torch.device | str = "cpu",
    batch: int = 128,
    augment: bool = True,
    teacher_leads: list[int] | None = None,
) -> ViewBank:
    """Run the frozen 12-lead teacher once on ``n_views`` views of every record.

    Parameters
    ----------
    teacher : Net
        The frozen teacher (eval mode is set here).
    x : Tensor
        Training records ``[N, 12, T]``.
    codes : Tensor or None
        Region codes ``[N, T]`` (0 background, 1 P, 2 QRS, 3 T, -1 padding); None gives no region targets.
    leads : list of int
        The student's leads (indices into the 12).
    n_views, mix_views : int
        Views per record, and how many of them are mixups (``mix_views < n_views``: at least one plain view).
    mix_alpha : float
        Mixup weight ~ Beta(alpha, alpha), folded to >= 0.5 so the view's own record dominates.
    embed_dim : int
        Whitened PCA components kept of the teacher's pooled features.
    seed : int
        Seeds the views (not the student): one bank serves every student of a teacher.
    augment : bool
        False keeps plain views clean (the teacher's targets on the record itself: the
        inconsistent-teaching ablation, where only the student's input is augmented).
    teacher_leads : list of int, optional
        Leads the teacher is shown (the others zeroed): the student's own leads ask a teacher
        trained with lead dropout what those leads carry. None: all twelve. Records that hold
        fewer leads than the teacher reads (a wearable's lead I) are placed at these leads.

    Raises
    ------
    ValueError
        On a bad view count, an empty set or codes of the wrong shape.
    """
    if n_views < 1 or not 0 <= mix_views < n_views:
        raise ValueError(f"need n_views >= 1 and 0 <= mix_views < n_views, got {n_views} and {mix_views}")
    if len(x) < 2:
        raise ValueError(f"a view bank needs at least 2 records, got {len(x)}")
    if codes is not None and codes.shape != (x.shape[0], x.shape[-1]):
        raise ValueError(f"region codes must be [N, T] = {(x.shape[0], x.shape[-1])}, got {tuple(codes.shape)}")
    device = torch.device(device)
    teacher = teacher.to(device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    beta = torch.distributions.Beta(torch.tensor(float(mix_alpha)), torch.tensor(float(mix_alpha)))
    n, length = x.shape[0], x.shape[-1]
    classes = teacher.fc.out_features
    xs, logits, pooled, waves, present, view_codes = [], [], [], [], [], []
    mixed = torch.tensor([v >= n_views - mix_views for v in range(n_views)])
    for v in range(n_views):
        partner = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + v))
        lam = torch.maximum(lam_raw := beta.sample((n,)), 1 - lam_raw) if mixed[v] else torch.ones(n)
        vx, vl, vp, vw, vpr, vc = [], [], [], [], [], []
        for i in range(0, n, batch):
            sl = slice(i, min(n, i + batch))
            xb = x[sl].to(device, torch.float32)
            cb = codes[sl].to(device, torch.long) if codes is not None else None
            if mixed[v]:
                lb = lam[sl].to(device).view(-1, 1, 1)
                xb = lb * xb + (1 - lb) * x[partner[sl]].to(device, torch.float32)
                cb = None
            if augment or mixed[v]:
                xb, cb = weak_view(xb, cb, gen, fs)
            out, feats = teacher.forward_features(teacher_view(xb, teacher.n_leads, teacher_leads))
            last = feats[-1].float()
            vx.append(xb[:, leads].to(torch.float16).cpu())
            vl.append(out.float().cpu())
            vp.append(last.mean(-1).cpu())
            if cb is not None:
                w, pr = pool_region_evidence(teacher.class_evidence(last), cb)
                vw.append(w.cpu())
                vpr.append(pr.cpu())
                vc.append(cb.to(torch.int8).cpu())
            else:
                vw.append(torch.zeros(xb.shape[0], classes, 3))
                vpr.append(torch.zeros(xb.shape[0], 3, dtype=torch.bool))
                vc.append(torch.full((xb.shape[0], length), -1, dtype=torch.int8))
        xs.append(torch.cat(vx))
        logits.append(torch.cat(vl))
        pooled.append(torch.cat(vp))
        waves.append(torch.cat(vw))
        present.append(torch.cat(vpr))
        view_codes.append(torch.cat(vc))
    pooled_all = torch.stack(pooled)  # [V, N, D]
    mean, basis, std = pca_basis(pooled_all[~mixed].reshape(-1, pooled_all.shape[-1]), embed_dim)
    embed = ((pooled_all - mean) @ basis) / std
    return ViewBank(
        x=torch.stack(xs),
        logits=torch.stack(logits),
        embed=embed.to(torch.float16),
        waves=torch.stack(waves),
        present=torch.stack(present),
        codes=torch.stack(view_codes) if codes is not None else None,
        mixed=mixed,
    )


def embed_targets(bank: ViewBank) -> Tensor:
    """Unit-norm teacher embeddings ``[V, N, D]`` for contrastive distillation."""
    return F.normalize(bank.embed.float(), dim=-1)


@dataclass
class BatchView:
    """The bank's targets for one batch of (record, view) pairs, and a memory of other teacher embeddings."""

    embed: Tensor  # [B, D]
    memory: Tensor  # [M, D]
    waves: Tensor | None  # [B, C, 3]
    present: Tensor | None  # [B, 3]

    def crd(self, z_s: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        return memory_infonce(z_s, self.embed.float(), self.memory.float(), temperature)


def batch_view(
    bank: ViewBank, views: Tensor, records: Tensor, memory_views: Tensor, memory_records: Tensor
) -> BatchView:
    """Gather the targets of ``records`` under ``views`` (index tensors on the bank's device)."""
    return BatchView(
        embed=bank.embed[views, records],
        memory=bank.embed[memory_views, memory_records],
        waves=bank.waves[views, records] if bank.codes is not None else None,
        present=bank.present[views, records] if bank.codes is not None else None,
    )


def bank_key(teacher, x: Tensor, codes: Tensor | None, settings: dict) -> str:
    """Content hash of what a bank depends on: the teacher's weights, the records, their codes, the settings."""
    h = hashlib.sha256()
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in teacher.state_dict().items()}, buf)
    h.update(buf.getvalue())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    if codes is not None:
        h.update(codes.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()[:20]


def cached_view_bank(
    cache_dir: Path | None, teacher, x: Tensor, codes: Tensor | None, leads: list[int], **settings
) -> ViewBank:
    """:func:`build_view_bank`, kept in ``cache_dir`` by content hash (None: no cache).

    Written to a temporary name and renamed, so a killed run never leaves half a bank.
    """
    if cache_dir is None:
        return build_view_bank(teacher, x, codes, leads, **settings)
    settings_key = {k: v for k, v in settings.items() if k not in ("device", "batch")}
    path = Path(cache_dir) / f"viewbank-{bank_key(teacher, x, codes, {**settings_key, 'leads': leads})}.pt"
    if path.exists():
        return ViewBank(**torch.load(path, map_location="cpu"))
    bank = build_view_bank(teacher, x, codes, leads, **settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    torch.save(asdict(bank), tmp)
    os.replace(tmp, path)
    return bank
