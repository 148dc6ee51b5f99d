"""Export formats for the static network: a state dict + ArchSpec JSON, ``torch.export`` (.pt2) and
ONNX (checked by running it in onnxruntime against PyTorch's output).

None of them holds pickled code: the state dict loads with ``torch.load(..., weights_only=True)``, the
.pt2 file with ``torch.export.load`` and the ONNX file in any ONNX runtime.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from dnarch.export.spec import ArchSpec
from dnarch.export.static import ExportError, StaticNet, load_static
from dnarch.files import atomic_path

FORMATS = ("state", "pt2", "onnx")


def _example(spec: ArchSpec, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, spec.in_channels, *spec.input_shape)


def _dynamic_batch() -> dict[str, dict[int, torch.export.Dim]]:
    return {"x": {0: torch.export.Dim("batch", min=1)}}


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """The named logger (and its children) shows errors only, inside the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def to_pt2(net: StaticNet, path: Path) -> Path:
    """``torch.export`` program with a dynamic batch axis, saved as .pt2."""
    program = torch.export.export(
        net.eval(), (_example(net.spec),), dynamic_shapes=_dynamic_batch()
    )
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)
    return path


def to_onnx(net: StaticNet, path: Path, tolerance: float = 1e-4) -> Path:
    """ONNX with a dynamic batch axis; refuses to write a file whose onnxruntime output differs from
    PyTorch's by more than ``tolerance`` (relative to the largest logit)."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ExportError(
            "ONNX export needs the 'export' extra: pip install 'dnarch[export]'"
        ) from err
    with atomic_path(path) as tmp:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
            _quiet_logger("torch.onnx"),
        ):  # the exporter narrates its steps on stdout, and logs the torchvision ops it skips
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net.eval(), (_example(net.spec),), str(tmp), dynamo=True,
                dynamic_shapes=_dynamic_batch(), external_data=False,
            )  # fmt: skip
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        x = _example(net.spec, batch=5)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = net(x).numpy()
        diff = float(abs(got - want).max() / max(abs(want).max(), 1e-12))
        if diff > tolerance:  # the temporary file is removed: nothing is written
            raise ExportError(f"ONNX output differs from PyTorch's by {diff:.2e} (> {tolerance:g})")
    return path


def export_run(run_dir: str | os.PathLike[str], fmt: str, out: str | None = None) -> Path:
    """Export the static network saved in ``run_dir`` (architecture.json + model.pt) as ``fmt``.

    'state' returns ``run_dir`` itself (already that format); 'pt2' writes ``model.pt2`` and 'onnx'
    writes ``model.onnx`` there, or at ``out``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ExportError(f"run folder {str(folder)!r} does not exist")
    net = load_static(folder)
    if fmt == "state":
        return folder
    path = Path(out) if out else folder / f"model.{fmt}"
    if not path.parent.is_dir():
        raise ExportError(f"output folder {str(path.parent)!r} does not exist")
    return to_pt2(net, path) if fmt == "pt2" else to_onnx(net, path)
