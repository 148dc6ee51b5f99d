"""A plain network of standard layers for an ArchSpec, and the folded weights that make it equal the
masked network. Loading it needs only PyTorch and this file's ``StaticNet`` (no masks, no kernel net).

Folding (all exact in eval mode):
- residual width mask m_C: into the stem's rows, the norms' affine parameters and pw2's rows;
- depth value D_l: into pw2's rows; hidden width mask M_l: into pw2's columns;
- kernel mask and the Riemann gain: into the depthwise kernel, sampled once on the block's grid;
- resolution: a band-limited crop (the kept band passes unchanged), one fixed matrix per axis;
- the dense head's return to the input resolution: spectral zero-padding, one fixed matrix per axis;
- a block wider than the stream before it (``NetConfig.widen``): zero channels appended to the stream;
  narrower (``NetConfig.stage_widths``): the stream's first channels;
- learned grouping: the grouping relation into the pointwise weights, which become grouped convolutions
  (``functional.groups``): the residual channels are stored in bit-reversed order, where every layer's
  groups are contiguous; a group count that does not divide the channels pads each group with a zero
  channel (``in_index`` / ``out_index``, fixed gathers), the hidden channels are laid out per group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from dnarch.export.spec import ArchSpec, BlockSpec
from dnarch.files import atomic_path, atomic_write_text
from dnarch.functional import fourier
from dnarch.functional.channels import conv1x1, fit_channels, mlp_fuses, pointwise_mlp
from dnarch.functional.conv import CONV, NORM, Verdicts, depthwise_conv
from dnarch.functional.groups import (
    bit_reversed_order,
    group_slots,
    pack_grouped,
    relation,
    take_slots,
)


def _watched() -> bool:
    """Whether a tool is watching the forward pass: a graph for another runtime (``torch.export``,
    ONNX, TorchScript) or a dispatch mode (``FlopCounterMode``). It must see the plain convolution a
    layer stands for, not the faster equivalent that layer runs by."""
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or _get_current_dispatch_mode() is not None
    )


def _depthwise_forward(conv: Any, x: Tensor) -> Tensor:
    backend = "direct" if conv.backend == "auto" and _watched() else conv.backend
    return depthwise_conv(x, conv.weight.squeeze(1), conv.bias, backend, conv.verdicts)


def _pointwise_forward(conv: Any, x: Tensor) -> Tensor:
    if conv.backend != "auto" or conv.groups != 1 or _watched():
        return conv._conv_forward(x, conv.weight, conv.bias)
    return conv1x1(x, conv.weight.flatten(1), conv.bias)


class DepthwiseConv1d(nn.Conv1d):
    """A depthwise 'same' ``nn.Conv1d`` (same parameters and state keys) that runs by the faster
    backend for its shapes (``functional.conv.depthwise_conv``): PyTorch's direct kernel for short
    kernels, an FFT for long ones (a learned network on sequences of 784 trains 6x and infers 8x
    faster so; ``benchmarks/results/speed.md``). ``backend``: "auto", "direct" or "fft". Traced (``torch.export``, ONNX, TorchScript)
    or under a dispatch mode (``FlopCounterMode``), "auto" runs direct.
    x: (B, C, L) -> (B, C, L)."""

    backend = "auto"
    verdicts: Verdicts | None = None  # the network's store of backend verdicts (``StaticNet``)

    def forward(self, x: Tensor) -> Tensor:
        return _depthwise_forward(self, x)


class DepthwiseConv2d(nn.Conv2d):
    """``DepthwiseConv1d`` for maps. x: (B, C, H, W) -> (B, C, H, W)."""

    backend = "auto"
    verdicts: Verdicts | None = None  # the network's store of backend verdicts (``StaticNet``)

    def forward(self, x: Tensor) -> Tensor:
        return _depthwise_forward(self, x)


class DepthwiseConv3d(nn.Conv3d):
    """``DepthwiseConv1d`` for volumes. x: (B, C, D, H, W) -> (B, C, D, H, W)."""

    backend = "auto"
    verdicts: Verdicts | None = None  # the network's store of backend verdicts (``StaticNet``)

    def forward(self, x: Tensor) -> Tensor:
        return _depthwise_forward(self, x)


class PointwiseConv1d(nn.Conv1d):
    """A 1x1 ``nn.Conv1d`` (same parameters and state keys) that runs, ungrouped, as one batched
    matrix product (``functional.channels.conv1x1``, as the masked network's 1x1 layers do): the
    learned networks of speed.md train 9-12% faster so on a CPU (faster at large maps, slower at
    the last few positions; METHOD-NOTES, Speed). Traced or under a dispatch mode, and with
    ``backend`` "direct", it is the plain convolution. x: (B, C_in, L) -> (B, C_out, L)."""

    backend = "auto"

    def forward(self, x: Tensor) -> Tensor:
        return _pointwise_forward(self, x)


class PointwiseConv2d(nn.Conv2d):
    """``PointwiseConv1d`` for maps. x: (B, C_in, H, W) -> (B, C_out, H, W)."""

    backend = "auto"

    def forward(self, x: Tensor) -> Tensor:
        return _pointwise_forward(self, x)


class PointwiseConv3d(nn.Conv3d):
    """``PointwiseConv1d`` for volumes. x: (B, C_in, D, H, W) -> (B, C_out, D, H, W)."""

    backend = "auto"

    def forward(self, x: Tensor) -> Tensor:
        return _pointwise_forward(self, x)


_DEPTHWISE_TYPES = (DepthwiseConv1d, DepthwiseConv2d, DepthwiseConv3d)
_DEPTHWISE: dict[int, type[nn.Module]] = dict(enumerate(_DEPTHWISE_TYPES, start=1))
_POINTWISE_TYPES = (PointwiseConv1d, PointwiseConv2d, PointwiseConv3d)
_POINTWISE: dict[int, type[nn.Conv1d | nn.Conv2d | nn.Conv3d]] = dict(
    enumerate(_POINTWISE_TYPES, start=1)
)


@contextmanager
def conv_backend(net: nn.Module, backend: str) -> Iterator[None]:
    """Inside the block every exported depthwise and 1x1 conv of ``net`` runs by ``backend``:
    "direct" where a tool must see real convolutions and is not a tracer or a dispatch mode (which
    "auto" already runs direct under): Torch-Pruning's graph tracing."""
    convs = [m for m in net.modules() if isinstance(m, _DEPTHWISE_TYPES + _POINTWISE_TYPES)]
    before = [m.backend for m in convs]
    for m in convs:
        m.backend = backend
    try:
        yield
    finally:
        for m, b in zip(convs, before, strict=True):
            m.backend = b


class Resample(nn.Module):
    """Fixed band-limited resampling, one matrix per spatial axis (last axis first).

    x: (B, C, *S_in) -> (B, C, *S_out); matrix i is (S_out_i, S_in_i): ``fourier.resample_matrix``
    keeping ``keep_bins[i]`` to downsample (a block), ``fourier.upsample_matrix`` to upsample (the
    dense head, ``keep_bins`` None); the identity on an axis that keeps its size. Built here, not only
    loaded, so that a freshly built network (an architecture trained from scratch) resamples as the
    exported one does. ``channels``: C where known (Torch-Pruning, which prunes the module's channels
    as one with its input's and lowers the count, needs it: ``baselines.prune``).
    """

    def __init__(
        self,
        sizes_in: tuple[int, ...],
        sizes_out: tuple[int, ...],
        keep_bins: tuple[int, ...] | None = None,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        self.ndim, self.channels = len(sizes_in), channels
        for i, (n, m) in enumerate(zip(sizes_in, sizes_out, strict=True)):
            if n == m:
                matrix = torch.eye(m, n)
            elif keep_bins is None:
                matrix = fourier.upsample_matrix(n, m)
            else:
                matrix = fourier.resample_matrix(n, keep_bins[i])
            if matrix.shape != (m, n):
                raise ValueError(
                    f"axis {i}: resampling {n} -> {m} built a {tuple(matrix.shape)} matrix"
                )
            self.register_buffer(f"matrix{i}", matrix)

    def forward(self, x: Tensor) -> Tensor:
        matrices = [getattr(self, f"matrix{i}") for i in range(self.ndim)]
        # an axis that keeps its size has the identity: left out
        return fourier.apply_matrices(
            x, [a if a.shape[0] != a.shape[1] else None for a in matrices]
        )


class BlockLayout:
    """Channel slots of a block's pointwise layers (``functional.groups.group_slots``).

    order: the original residual channel at each position of the stream. in_slots / out_slots: the
    stream positions in pw1's input and pw2's output slots; hidden: the original hidden channel in
    each hidden slot (-1: a zero channel).
    """

    def __init__(self, spec: BlockSpec, order: list[int]) -> None:
        g1, g2 = spec.groups
        self.in_slots = group_slots(order, g1)
        self.out_slots = group_slots(order, g2)
        self.hidden = group_slots(list(range(spec.hidden)), max(g1, g2))

    def in_index(self, width: int) -> Tensor | None:
        """Gather of pw1's input from the stream plus a zero channel (index ``width``), or None."""
        if self.in_slots == list(range(width)):
            return None
        return torch.tensor([p if p >= 0 else width for p in self.in_slots])

    def out_index(self, width: int) -> Tensor | None:
        """Gather of the stream from pw2's output slots, or None when they are the stream."""
        if self.out_slots == list(range(width)):
            return None
        return torch.tensor([self.out_slots.index(p) for p in range(width)])


def residual_order(spec: ArchSpec, width: int | None = None) -> list[int]:
    """The original residual channel at each position of the exported stream (of ``width``
    channels; default the stem's)."""
    return bit_reversed_order(spec.residual_width if width is None else width, spec.group_bits)


class ZeroChannels(nn.Module):
    """x: (B, c, *S) -> (B, n, *S) zeros: the channels a stream that widens appends. A module
    computed from its input, not a constant, so that Torch-Pruning traces the concatenation and
    knows how many channels each side brings (the prune baseline, ``baselines.prune``, which
    lowers ``n`` as it prunes them)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :1].mul(0).expand(-1, self.n, *x.shape[2:])


class StaticBlock(nn.Module):
    """Resample -> zero channels appended up to the block's width (when it is wider than the stream;
    when narrower, the stream's first channels), plus a full strided convolution of the incoming
    stream where the halving mixes channels (``NetConfig.downsample`` 'strided-mix') -> norm ->
    depthwise conv -> GELU -> 1x1 -> GELU -> 1x1, added to the residual. With learned grouping the
    1x1 convolutions are grouped, with fixed gathers where groups are padded."""

    in_index: Tensor | None
    out_index: Tensor | None

    def __init__(
        self, spec: BlockSpec, width: int, ndim: int, order: list[int], width_in: int | None = None
    ) -> None:
        super().__init__()
        # channels appended to the stream (zeros) or, < 0, dropped from its end: counts, not a
        # width, so that a pruner that slices the stream's channels (benchmarks' prune baseline)
        # leaves the block consistent
        grow = width - (width if width_in is None else width_in)
        self.zeros = ZeroChannels(grow) if grow > 0 else None
        self.extra = min(grow, 0)
        conv = CONV[ndim]
        c_in = width - grow
        self.resample: nn.Module | None = None
        if spec.strided:  # each incoming channel filtered at stride 2 (``NetConfig.downsample``)
            self.resample = conv(c_in, c_in, 3, stride=2, padding=1, groups=c_in, bias=False)
        elif spec.resolution_out != spec.resolution_in:
            self.resample = Resample(
                spec.resolution_in, spec.resolution_out, spec.keep_bins, channels=c_in
            )
        # the halving's full convolution ('strided-mix'), added to the halved stream
        self.mix = conv(c_in, width, 3, stride=2, padding=1, bias=False) if spec.mixed else None
        self.norm = NORM[ndim](width)
        pad = tuple(k // 2 for k in spec.kernel)
        self.conv = _DEPTHWISE[ndim](width, width, spec.kernel, padding=pad, groups=width)
        lay, (g1, g2) = BlockLayout(spec, order), spec.groups
        self.pw1 = _POINTWISE[ndim](len(lay.in_slots), len(lay.hidden), 1, groups=g1)
        self.pw2 = _POINTWISE[ndim](len(lay.hidden), len(lay.out_slots), 1, groups=g2)
        self.register_buffer("in_index", lay.in_index(width), persistent=False)
        self.register_buffer("out_index", lay.out_index(width), persistent=False)
        self.act = nn.GELU()

    def _fused(self, h: Tensor) -> bool:
        """Whether the 1x1 layers run fused (``functional.channels.pointwise_mlp``): both ungrouped
        with the "auto" backend, ``mlp_fuses``, nobody watching (``_watched``), and no forward hook
        on either layer (``train.metrics.eval_batch`` reads every layer's output by hooks)."""
        pw1, pw2 = self.pw1, self.pw2
        plain = pw1.groups == pw2.groups == 1 and pw1.backend == pw2.backend == "auto"  # type: ignore[union-attr]
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in (pw1, pw2))
        return plain and not hooked and mlp_fuses(h) and not _watched()

    def _weights(self) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """(w1, b1, w2, b2) of the 1x1 layers as matrices, for ``pointwise_mlp``."""
        pw1, pw2 = self.pw1, self.pw2
        return pw1.weight.flatten(1), pw1.bias, pw2.weight.flatten(1), pw2.bias

    def forward(self, x: Tensor) -> Tensor:
        before = x
        if self.resample is not None:
            x = self.resample(x)
        if self.zeros is not None:
            x = torch.cat([x, self.zeros(x)], 1)
        elif self.extra:  # narrower: the first channels
            x = fit_channels(x, x.shape[1] + self.extra)
        if self.mix is not None:
            x = x + self.mix(before)
        h = self.conv(self.norm(x))
        ungrouped = self.in_index is None and self.out_index is None
        hooked = self.act._forward_hooks or self.act._forward_pre_hooks
        if ungrouped and not hooked and self._fused(h):
            # GELU, the two 1x1 layers and the residual sum as one function on few positions
            return pointwise_mlp(h, *self._weights(), act_in=True, residual=x)
        h = self.act(h)
        if self.in_index is not None:  # pad each group to the largest with a zero channel
            h = torch.cat([h, torch.zeros_like(h[:, :1])], 1).index_select(1, self.in_index)
        fused = self._fused(h)  # the two 1x1 layers and GELU as one function on few positions
        h = pointwise_mlp(h, *self._weights()) if fused else self.pw2(self.act(self.pw1(h)))
        if self.out_index is not None:
            h = h.index_select(1, self.out_index)
        return x + h


class StaticNet(nn.Module):
    """The exported network. x: (B, in_channels, *input_shape) (or (B, *input_shape) for one input
    channel) -> logits (B, num_classes), or for a
    per-position task (B, num_classes, *input_shape): norm, upsampling back to the input resolution,
    the stem's output added (``spec.dense_skip``), a 1x1 convolution."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        c, nd = spec.residual_width, spec.ndim
        k = spec.stem_kernel
        self.stem = (CONV if k > 1 else _POINTWISE)[nd](spec.in_channels, c, k, padding=k // 2)
        # a k-tap stem is followed by a norm and ReLU (``NetConfig.stem_kernel``)
        self.stem_norm = NORM[nd](c) if k > 1 else None
        widths = [c] + [spec.block_width(b) for b in spec.kept_blocks]
        self.blocks = nn.ModuleList(
            StaticBlock(b, w, nd, residual_order(spec, w), w_in)
            for b, w, w_in in zip(spec.kept_blocks, widths[1:], widths[:-1], strict=True)
        )
        self.head_norm = NORM[nd](spec.head_width)
        self.upsample = (
            Resample(spec.head_in, spec.input_shape)
            if spec.dense and spec.head_in != spec.input_shape
            else None
        )
        c = spec.head_width
        self.head: nn.Module = (
            _POINTWISE[nd](c, spec.num_classes, 1) if spec.dense else nn.Linear(c, spec.num_classes)
        )
        # the timed backend choices of its depthwise convolutions, one store for the network
        self.verdicts = Verdicts()
        for m in self.modules():
            if isinstance(m, _DEPTHWISE_TYPES):
                m.verdicts = self.verdicts

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == self.spec.ndim + 1 and self.spec.in_channels == 1:
            x = x.unsqueeze(1)  # (B, *S), as ``dnarch.fit`` takes one-channel data: (B, 1, *S)
        h0 = h = self.stem(x)
        if self.stem_norm is not None:
            h0 = h = torch.relu(self.stem_norm(h))
        for block in self.blocks:
            h = block(h)
        h = self.head_norm(h)
        if not self.spec.dense:
            return self.head(h.flatten(2).mean(-1))
        if self.upsample is not None:
            h = self.upsample(h)
        if self.spec.dense_skip:
            h = h + fit_channels(h0, h.shape[1])  # the stem's output, at the head's width
        return self.head(h)


@torch.no_grad()
def export_state(model: Any, spec: ArchSpec) -> dict[str, Tensor]:
    """Folded weights of ``model`` (a DNArchNet) for ``StaticNet(spec)``; ``spec`` from ``harden``."""
    c, nd = spec.residual_width, spec.ndim
    ones = [1] * nd
    order = residual_order(spec)  # every residual-channel axis below is put in this order
    m_c = model.residual_mask.values()[:c]
    # the pointwise stem's rows carry the mask; a k-tap stem's norm does (ReLU commutes with m >= 0)
    rows = m_c if model.stem_norm is None else torch.ones_like(m_c)
    weight = model.stem.weight[:c] * rows.reshape(-1, *([1] * (model.stem.weight.ndim - 1)))
    state: dict[str, Tensor] = {
        "stem.weight": weight[order].reshape(c, spec.in_channels, *([spec.stem_kernel] * nd)),
        "stem.bias": (model.stem.bias[:c] * rows)[order],
    }
    if model.stem_norm is not None:
        _norm_state(state, "stem_norm", model.stem_norm, order, m_c)
    depth = model.depth_values()
    cap = None
    c_in = c  # the stream's width entering each block
    for j, b in enumerate(spec.kept_blocks):
        block, pre = model.blocks[b.index], f"blocks.{j}."
        c = spec.block_width(b)
        grid_c, grid_w = model.grids(b.resolution_out)
        mask = model.block_residual_mask(b.index)
        m_c = mask.values(grid_c, model.alloc)[:c]
        assert mask.hard_count(grid_c) == c, "spec does not match the model's masks"
        order = residual_order(spec, c)
        if block.resolution is not None:
            mu, keep = block.resolution.plan(b.resolution_in, cap)
            assert keep == b.keep_bins, "spec does not match the model's current masks"
            cap = mu
        if b.strided:
            order_in = residual_order(spec, c_in)
            f = block.halve_filter[:c_in][order_in]
            state[pre + "resample.weight"] = f.unsqueeze(1)  # (c_in, 1, *3^nd)
            if b.mixed:  # as ``DNArchBlock.mix`` runs it: (c, c_in, *3^nd)
                state[pre + "mix.weight"] = block.mix_weight(c_in, m_c)[order][:, order_in]
        elif b.resolution_out != b.resolution_in:
            for i in range(nd):
                state[pre + f"resample.matrix{i}"] = fourier.resample_matrix(
                    b.resolution_in[i], b.keep_bins[i]
                )
        _norm_state(state, pre + "norm", block.norm, order, m_c)
        state[pre + "conv.weight"] = block.conv.kernel(b.resolution_out, c)[order].unsqueeze(1)
        state[pre + "conv.bias"] = block.conv.bias[:c][order]
        w, lay, (g1, g2) = b.hidden, BlockLayout(b, order), b.groups
        pw1 = block.pw1.weight[:w, :c]
        if block.pw1_groups is not None:
            pw1 = pw1 * relation(w, c, block.pw1_groups.factors())
        pw1 = pack_grouped(pw1[:, order], lay.hidden, lay.in_slots, g1)
        state[pre + "pw1.weight"] = pw1.reshape(*pw1.shape, *ones)
        state[pre + "pw1.bias"] = take_slots(block.pw1.bias[:w], lay.hidden)
        rows, shift = _branch_output(block, c, m_c * depth[b.index])
        m_w = block.width_mask.values(grid_w)[:w]
        pw2 = block.pw2.weight[:c, :w] * rows[:, None] * m_w[None, :]
        if block.pw2_groups is not None:
            pw2 = pw2 * relation(c, w, block.pw2_groups.factors())
        pw2 = pack_grouped(pw2[order], lay.out_slots, lay.hidden, g2)
        state[pre + "pw2.weight"] = pw2.reshape(*pw2.shape, *ones)
        bias = block.pw2.bias[:c] * rows + shift
        state[pre + "pw2.bias"] = take_slots(bias[order], lay.out_slots)
        c_in = c
    _norm_state(state, "head_norm", model.head_norm, order, m_c)  # the last kept block's width
    head = model.head.weight[:, :c][:, order]
    state["head.weight"] = head.reshape(*head.shape, *ones) if spec.dense else head.clone()
    state["head.bias"] = model.head.bias.clone()
    if spec.dense and spec.head_in != spec.input_shape:
        for i, (n, m) in enumerate(zip(spec.head_in, spec.input_shape, strict=True)):
            state[f"upsample.matrix{i}"] = fourier.upsample_matrix(n, m)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _branch_output(block: Any, c: int, scale: Tensor) -> tuple[Tensor, Tensor]:
    """A block's last 1x1 layer's output scale and shift, (c,) each, that fold in what follows
    it: ``scale`` (the residual and depth masks), and the branch's norm in eval mode where the
    block has one (``NetConfig.branch_norm``)."""
    norm = block.branch_norm
    if norm is None:
        return scale, torch.zeros_like(scale)
    inv = norm.weight[:c] / torch.sqrt(norm.running_var[:c] + norm.eps)
    return inv * scale, (norm.bias[:c] - norm.running_mean[:c] * inv) * scale


def _norm_state(
    state: dict[str, Tensor], pre: str, norm: nn.BatchNorm1d, order: list[int], m: Tensor
) -> None:
    """The first ``len(order)`` channels of ``norm``, affine folded with ``m``, in ``order``."""
    assert norm.running_mean is not None and norm.running_var is not None
    c = len(order)
    state[pre + ".weight"] = (norm.weight[:c] * m)[order]
    state[pre + ".bias"] = (norm.bias[:c] * m)[order]
    state[pre + ".running_mean"] = norm.running_mean[:c][order]
    state[pre + ".running_var"] = norm.running_var[:c][order]
    state[pre + ".num_batches_tracked"] = norm.num_batches_tracked.clone()  # type: ignore[union-attr]


def build_static(spec: ArchSpec, state: dict[str, Tensor]) -> StaticNet:
    """A plain ``StaticNet`` for ``spec`` carrying ``state`` (strict: every tensor must match)."""
    net = StaticNet(spec)
    net.load_state_dict(state, strict=True)
    return net.eval()


class ExportError(ValueError):
    """A static model file that cannot be loaded. One line meant for the user."""


def save_static(folder: str | os.PathLike[str], spec: ArchSpec, state: dict[str, Tensor]) -> Path:
    """Write ``architecture.json`` and ``model.pt`` (a plain state dict) into ``folder``, atomically."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "architecture.json", spec.to_json())
    with atomic_path(out / "model.pt") as tmp:
        torch.save(state, tmp)
    return out


def load_static(folder: str | os.PathLike[str]) -> StaticNet:
    """Load a model written by ``save_static`` with ``torch.load(weights_only=True)``."""
    out = Path(folder)
    try:
        spec = ArchSpec.from_json((out / "architecture.json").read_text())
    except FileNotFoundError as err:
        raise ExportError(
            f"{out} has no architecture.json; is it an exported model folder?"
        ) from err
    except OSError as err:
        raise ExportError(
            f"cannot read {out / 'architecture.json'}: {err.strerror or err}"
        ) from err
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # JSON errors are ValueErrors
        raise ExportError(
            f"{out / 'architecture.json'} is not a valid architecture: {err}"
        ) from err
    try:
        state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ExportError(f"{out} has no model.pt") from err
    except Exception as err:
        raise ExportError(f"cannot read {out / 'model.pt'}: {str(err).splitlines()[0]}") from err
    try:
        return build_static(spec, state)
    except RuntimeError as err:
        raise ExportError(f"{out / 'model.pt'} does not match its architecture.json") from err
