"""A trained network as files a device runs, each checked against the checkpoint, and its latency there.

ONNX (through torch's exporter) and TorchScript (by tracing); ``liteheart-server export`` writes them with a
model card (``server/export.py``) and ``simulations/benchmark_latency.py`` times them. Kept apart from the
model definitions (``liteheart_core/models/nets.py``), which import only torch.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads inside the functions: `liteheart-server --help` must not wait for it
    from torch import Tensor, nn

    from liteheart_core.models import Net

ONNX_OPSET = 18


class Format(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


class ExportError(RuntimeError):
    """The exporter is missing or the exported model does not reproduce the checkpoint."""


def export_onnx(net: Net, length: int, path: Path) -> dict:
    """ONNX (opset :data:`ONNX_OPSET`, dynamic batch axis) through torch's ``torch.export``-based exporter.

    Raises
    ------
    ExportError
        ``onnx``/``onnxscript`` are not installed, or the file fails ONNX's checker.
    """
    import torch

    try:
        import onnx
        import onnxscript  # noqa: F401  # the exporter needs it; importing it here gives the clear message
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the onnx and onnxscript packages ({exc}): pip install onnx onnxscript"
        ) from None
    # batch 2 in the example: torch.export specialises a dimension of size 1 to a constant
    example = torch.zeros(2, net.n_leads, length)
    batch = torch.export.Dim("batch", min=1, max=65536)
    chatty = logging.getLogger("torch.onnx")
    level = chatty.level
    chatty.setLevel(logging.ERROR)  # it lists every torchvision op it skips
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net.eval(),
                (example,),
                str(path),
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=["ecg"],
                output_names=["logits"],
                dynamic_shapes={"x": {0: batch}},
                external_data=False,
                verbose=False,
            )
    finally:
        chatty.setLevel(level)
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported {path.name} fails ONNX's checker: {exc}") from None
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "exporter": f"torch.onnx.export (dynamo) from torch {torch.__version__}",
        "opset": int(opset),
        "onnx": onnx.__version__,
        "input": "ecg",
        "output": "logits",
        "dynamic_axes": {"ecg": [0], "logits": [0]},
    }


def export_torchscript_file(net: Net, length: int, path: Path) -> dict:
    """TorchScript by tracing (``export_torchscript``, which checks the reloaded module against eager)."""
    import torch

    export_torchscript(net, path, torch.zeros(1, net.n_leads, length))
    return {
        "exporter": f"torch.jit.trace from torch {torch.__version__}",
        "input": "x [batch, leads, length]",
        "output": "logits [batch, classes]",
    }


def verify(fmt: Format, path: Path, net: Net, x: np.ndarray) -> dict:
    """Largest |exported - PyTorch| logit over ``x``; ONNX runs in onnxruntime when it is installed."""
    import torch

    with torch.no_grad():
        reference = net.eval()(torch.as_tensor(x)).numpy()
    if fmt == Format.onnx:
        try:
            import onnxruntime as ort
        except ImportError:
            return {"checked": False, "reason": "onnxruntime is not installed"}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"ecg": x.astype(np.float32)})[0]
        runtime = f"onnxruntime {ort.__version__}"
    else:
        with torch.no_grad():
            got = torch.jit.load(str(path)).eval()(torch.as_tensor(x)).numpy()
        runtime = f"torch.jit {torch.__version__}"
    diff = float(np.max(np.abs(got - reference)))
    if not diff <= 1e-4:
        raise ExportError(f"{path.name} differs from the checkpoint by {diff:.3g} on {len(x)} records (> 1e-4)")
    return {"checked": True, "runtime": runtime, "records": int(len(x)), "max_abs_logit_diff": diff}


def measure_latency(
    model: nn.Module, n_leads: int, length: int, threads: int = 1, repeats: int = 200
) -> dict[str, float]:
    """Wall-clock latency of one forward pass on a single window (batch 1).

    The model is run in eval mode under ``torch.inference_mode``; its training flag and
    ``torch``'s intra-op thread count are restored afterwards.

    Returns
    -------
    dict
        ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms`` per window, plus ``threads``,
        ``length``, ``repeats``.
    """
    import torch

    for name, value, low in (
        ("n_leads", n_leads, 1),
        ("length", length, 1),
        ("threads", threads, 1),
        ("repeats", repeats, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"measure_latency: {name} must be an int >= {low}, got {value!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn(1, n_leads, length, device=device)
    old_threads = torch.get_num_threads()
    # Frozen TorchScript modules have no training flag; they are already inference-only.
    was_training = bool(getattr(model, "training", False))
    times: list[float] = []
    try:
        torch.set_num_threads(threads)
        if was_training:
            model.eval()
        with torch.inference_mode():
            for _ in range(min(20, repeats)):  # warm-up: allocator and kernel selection
                model(x)
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old_threads)
        if was_training:
            model.train()
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "threads": float(threads),
        "length": float(length),
        "repeats": float(repeats),
    }


def export_torchscript(model: Net, path: Path, example: Tensor, atol: float = 1e-5) -> Path:
    """Trace ``model.forward`` in eval mode, save it, reload it and check it matches eager.

    The reloaded module is compared with the eager model on ``example`` and on a window
    of a different length, so a trace that froze a shape would be caught here rather than
    on the device.

    Raises
    ------
    ValueError
        If ``example`` is not ``[B, model.n_leads, T]`` with ``T >= 2``.
    RuntimeError
        If the reloaded module's logits differ from the eager ones by more than ``atol``.
    """
    import torch

    if example.dim() != 3 or example.shape[1] != model.n_leads or example.shape[2] < 2:
        raise ValueError(f"example must be [B, {model.n_leads}, T] with T >= 2, got {tuple(example.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # GroupNorm's train-mode size check reads a shape as a bool; it only guards an
            # error path, and the two-length check below catches any real shape freezing.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example)
            traced.save(str(path))
            loaded = torch.jit.load(str(path))
            other = example[..., : max(1, example.shape[-1] // 2 + 1)].contiguous()
            for probe in (example, other):
                diff = (loaded(probe) - model(probe)).abs().max().item()
                if diff > atol:
                    raise RuntimeError(
                        f"TorchScript export {path} differs from eager by {diff:.3g} > {atol} "
                        f"on input {tuple(probe.shape)}"
                    )
    finally:
        model.train(was_training)
    return path
