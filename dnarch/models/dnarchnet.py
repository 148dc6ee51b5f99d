"""DNArchNet: stem, L_max DNArch blocks and a head, with all four masks.

The head classifies the whole input (norm, global mean, linear) or, for per-position tasks, brings the
features back to the input resolution by Fourier zero-padding, adds the stem's output (optional skip)
and applies a pointwise classifier or regressor (METHOD.md, Dense prediction).

Cropping is on by default (``crop=True``): channels, kernel taps and skipped blocks are sliced away
and the spectrum is cut. ``crop=False`` runs the maximal tensors multiplied by the thresholded masks,
the reference that the cropped network must equal. Resolution is cut in both modes: running a block
below its cut-off *is* the learned downsampling (see ``tests/test_crop.py`` for its layer-level check).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnarch.config import AXES, STRIDED, NetConfig
from dnarch.functional import fourier
from dnarch.functional import masks as fm
from dnarch.functional.channels import fit_channels, leading, pad_channels
from dnarch.functional.conv import CONV, Verdicts, conv_nd
from dnarch.functional.memo import made_once
from dnarch.nn.block import (
    BlockSettings,
    DNArchBlock,
    allocated,
    batch_norm,
    channel_scale,
    pointwise,
)
from dnarch.nn.kernelnet import KernelNet, KernelNets
from dnarch.nn.masks import LowpassMask, SigmoidStepMask
from dnarch.plan import BlockSpec
from dnarch.tasks import TASKS


@dataclass
class ArchSizes:
    """Sizes of the network the masks describe, soft (differentiable) or hard (cropped), as tensors
    with one row per block (L blocks).

    residual: residual width C (the stem's), scalar; depth (L,): D_l (mask value soft, 0/1 hard);
    kernel (L, ndim): taps per axis; hidden (L,): W_l; resolution (L, ndim): samples per axis the
    block runs at; width (L,): its residual width C_l (C unless ``NetConfig.widen`` stretches it);
    resampled: which axes the hard network downsamples at block l by a Fourier crop, a fixed
    matrix per axis in the export (a discrete fact, shared by soft and hard sizes); halved: whether
    block l halves instead by its strided filter; mixed: whether that halving also runs a full
    strided convolution (``NetConfig.downsample`` 'strided-mix'); groups (L, 2): group counts of
    the block's two pointwise layers (1 without learned grouping); head_width: the residual width
    the head reads (the last kept block's).
    """

    residual: Tensor
    depth: Tensor
    kernel: Tensor
    hidden: Tensor
    resolution: Tensor
    resampled: list[tuple[bool, ...]]  # per block and axis: does a Fourier crop downsample here
    halved: list[bool]  # per block: does it halve by its strided filter (not a Fourier crop)
    mixed: list[bool]  # per block: does its halving add a full strided convolution
    head_in: Tensor  # (ndim,) the resolution the head sees: the last kept block's output
    head_upsampled: tuple[bool, ...]  # per axis: does the (hard) dense head upsample it
    groups: Tensor
    width: Tensor
    head_width: Tensor
    grouped: bool = False  # are group counts learned (else every layer has one group)


# the longest axis whose resolution is learned: the exported network resamples an axis of n samples
# with a fixed (n_out, n) matrix, 1 GiB at n = 16,384 (``export.static.Resample``)
MAX_RESAMPLED_LENGTH = 16384
_Ratio = TypeVar("_Ratio", float, Tensor)  # ``_grow``: a number or a tensor, returned as it came


class DNArchNet(nn.Module):
    """The maximal CCNN-style network with DNArch masks. Input (B, in_channels, *input_shape).

    Args:
        cfg: network settings; in_channels, num_classes, input_shape: from the data.
        task: 'classify' (logits (B, num_classes)), or 'segment' / 'regress' (an output per position,
            (B, num_classes, *input_shape); for 'regress' num_classes is the output channels).
    """

    def __init__(
        self,
        cfg: NetConfig,
        in_channels: int,
        num_classes: int,
        input_shape: Sequence[int],
        task: str = "classify",
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose classify, segment or regress")
        if len(input_shape) not in (1, 2, 3):
            raise ValueError(
                f"input must have 1, 2 or 3 spatial axes, got shape {tuple(input_shape)}"
            )
        if min(input_shape) < 1 or in_channels < 1 or num_classes < (1 if task == "regress" else 2):
            raise ValueError(
                f"need spatial sizes >= 1, in_channels >= 1 and num_classes >= 2 (1 output for "
                f"regression); got {tuple(input_shape)}, {in_channels}, {num_classes}"
            )
        self.task = task
        # what the rest of the package reads of the settings; the config itself is not kept, so
        # nothing reaches through the model into it (``NetConfig`` describes each)
        self.width, self.hidden, self.widen = cfg.width, cfg.hidden, cfg.widen
        self.widen_power = cfg.widen_power
        self.max_blocks, self.group_bits = cfg.blocks, cfg.group_bits
        self.learn_groups = cfg.learn_groups
        self.learned_axes: frozenset[str] = frozenset(
            axis for axis in AXES if getattr(cfg, f"learn_{axis}")
        )
        # do the kernels start below their ceiling (the budget's target then starts at the network
        # as built: ``budget.anneal_from=auto``)
        self.kernels_start_small = cfg.init_kernel_cutoff < cfg.kernel_ceiling
        self.dense = task != "classify"
        self.dense_skip = self.dense and cfg.dense_skip
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_shape = tuple(int(s) for s in input_shape)
        self.ndim = len(self.input_shape)
        settings = BlockSettings(
            ndim=self.ndim, width=cfg.width, hidden=cfg.hidden, base=self.input_shape,
            kernel_hidden=cfg.kernel_hidden, kernel_layers=cfg.kernel_layers, omega0=cfg.omega0,
            init_cutoff=cfg.init_kernel_cutoff, threshold=cfg.threshold, width_span=cfg.width_span,
            resolution_span=cfg.resolution_span, dropout=cfg.dropout, backend=cfg.backend,
            learn_resolution=cfg.learn_resolution, group_bits=cfg.group_bits,
            group_span=cfg.group_span, widen=cfg.widen, direct_kernel=cfg.direct_kernel,
            kernel_gain=cfg.init_kernel_gain, kernel_ceiling=cfg.kernel_ceiling,
            branch_norm=cfg.branch_norm,
        )  # fmt: skip
        self.alloc = allocated(cfg.width, cfg.widen)  # residual channels of the widest block
        # the stem: pointwise (METHOD.md), or a full k^ndim convolution (``NetConfig.stem_kernel``)
        self.stem_kernel = cfg.stem_kernel
        self.stem: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d = (
            nn.Linear(in_channels, cfg.width)
            if cfg.stem_kernel == 1
            else CONV[self.ndim](in_channels, cfg.width, cfg.stem_kernel)
        )
        self.stem_norm = nn.BatchNorm1d(cfg.width) if cfg.stem_kernel > 1 else None
        # the residual width: one mask for every block (METHOD.md), or with ``NetConfig.stage_widths``
        # one per stage, the first one also the stem's (``residual_masks``)
        self.residual_mask = SigmoidStepMask(cfg.width, cfg.width_span, cfg.threshold)
        self.stage_blocks = cfg.stage_blocks
        self.stage_residual = nn.ModuleList(
            SigmoidStepMask(cfg.width, cfg.width_span, cfg.threshold)
            for _ in range(cfg.blocks // cfg.stage_blocks - 1 if cfg.stage_widths else 0)
        )
        # depth: one step mask over every block (METHOD.md), or with ``NetConfig.stage_blocks`` > 1
        # one per stage over its blocks, the first of each always kept (``depth_masks``)
        n = cfg.stage_blocks
        self.depth_mask = SigmoidStepMask(n if n > 1 else cfg.blocks, cfg.depth_span, cfg.threshold)
        self.stage_depth = nn.ModuleList(
            SigmoidStepMask(n, cfg.depth_span, cfg.threshold)
            for _ in range(cfg.blocks // n - 1 if n > 1 else 0)
        )
        self.blocks = nn.ModuleList(
            DNArchBlock(
                dataclasses.replace(
                    settings,
                    # a resolution mask where it is learned, or fixed where a pyramid starts
                    learn_resolution=i // cfg.stage_blocks >= cfg.resolution_from
                    and (cfg.learn_resolution or cfg.init_resolution < 1),
                    # per stage (``NetConfig.stage_blocks``): a stage's blocks share one cut-off,
                    # so only its first block crops
                    init_resolution=cfg.init_resolution
                    ** max(i // cfg.stage_blocks - cfg.resolution_from + 1, 0),
                    # the first block of each stage from resolution_from on halves
                    halve=cfg.downsample in STRIDED
                    and i // cfg.stage_blocks >= cfg.resolution_from
                    and i % cfg.stage_blocks == 0,
                    halve_mix=cfg.downsample == "strided-mix",
                )
            )
            for i in range(cfg.blocks)
        )
        # the timed backend choices of every layer, one store per model (``functional.conv.Verdicts``)
        self.verdicts = Verdicts()
        for b in self.block_list():
            b.conv.verdicts = self.verdicts
        n = max(self.input_shape)
        if n > MAX_RESAMPLED_LENGTH and any(b.resolution is not None for b in self.block_list()):
            raise ValueError(
                f"an input axis of {n:,} samples is too long to learn where to downsample: the "
                f"exported network resamples with a fixed matrix of up to {n:,} x {n:,} floats "
                f"({4 * n * n / 2**30:.0f} GiB); set --net.learn_resolution=false"
                + (" --net.init_resolution=1 (or --preset seq)" if cfg.init_resolution < 1 else "")
                + f" (axes of up to {MAX_RESAMPLED_LENGTH:,} samples can learn it)"
            )
        self._upsampling: dict[Hashable, list[Tensor | None]] = {}  # per ``_upsample``
        self._kernel_positions: dict[Hashable, Tensor] = {}  # per ``kernel_values``
        # soft sizes and width stretch of a fixed pyramid, per device (``arch_sizes``)
        self._fixed_resolution: dict[Hashable, tuple[Tensor, Tensor | float]] = {}
        # the hard cost and its slopes for the last plan (``cost.estimate.linearised_cost``)
        self.cost_slopes: tuple[Hashable, Any] | None = None
        self.head_norm = nn.BatchNorm1d(self.alloc)
        self.head = nn.Linear(self.alloc, num_classes)
        for p in self._axis_parameters(True, False, False, False, False):
            p.requires_grad_(cfg.learn_kernel)
        for p in self._axis_parameters(False, True, False, False, False):
            p.requires_grad_(cfg.learn_width)
        for p in self._axis_parameters(False, False, True, False, False):
            p.requires_grad_(cfg.learn_resolution)
        for m in self.depth_masks():
            m.mu.requires_grad_(cfg.learn_depth)
        # Biases whose every consumer is a BatchNorm (per-channel shifts it removes) have a zero
        # gradient, and Adam would turn its rounding noise into full-size steps that move the
        # running means: fixed at zero. The block's output bias feeds only the residual stream
        # (dropout's rescaling of a constant is noise, never signal); the stem's, unless the dense
        # head adds the stem output to its features.
        dead: list[Tensor] = [b.pw2.bias for b in self.block_list()]
        if not self.dense_skip or self.stem_norm is not None:  # a norm follows a k-tap stem
            assert self.stem.bias is not None
            dead.append(self.stem.bias)
        with torch.no_grad():
            for bias in dead:
                bias.zero_().requires_grad_(False)
        if not cfg.learn_resolution:
            # a fixed pyramid: each block's widest is its stretch with every block kept (a removed
            # block leaves the ones after it at a higher resolution, so narrower), and the widest
            # stream that enters it the block's before it (the stem's: cfg.width)
            width_in = cfg.width
            for b, spec in zip(self.block_list(), self.ceiling_copy().hard_plan(), strict=True):
                width, hidden = self.grids(spec.resolution_out)
                b.fit_allocation_(width, hidden, width_in)
                width_in = width
        self._stack_kernel_nets()

    def _stack_kernel_nets(self) -> None:
        """Move the blocks' kernel nets into one ``KernelNets`` (``self.kernel_nets``), their
        values unchanged; each block's conv runs its entry from then on (``share``)."""
        nets = [b.conv.kernel_net for b in self.block_list()]
        self.kernel_nets = KernelNets([n for n in nets if isinstance(n, KernelNet)])
        for i, b in enumerate(self.block_list()):
            b.conv.share(self.kernel_nets, i)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """A run saved while each block held its own kernel net (``blocks.i.conv.kernel_net.*``)
        loads: its blocks' tensors stacked in block order are ``kernel_nets.*``."""
        head = f"{prefix}blocks.0.conv.kernel_net."
        for name in [k[len(head) :] for k in state_dict if k.startswith(head)]:
            per_block = [
                f"{prefix}blocks.{i}.conv.kernel_net.{name}" for i in range(len(self.blocks))
            ]
            key = f"{prefix}kernel_nets.{name}"
            if key not in state_dict and all(k in state_dict for k in per_block):
                state_dict[key] = torch.stack([state_dict.pop(k) for k in per_block])
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def legacy_parameter_names(self) -> list[str]:
        """The names of ``parameters()`` in the order a model of the same settings had them while
        each block held its own kernel net (runs saved then: their optimiser states list parameters
        in this order, ``train.trainer.upgrade_optimizer_state``): the stacked kernel nets' entries
        ``blocks.i.conv.kernel_net.*`` where each block's conv held them, ``kernel_nets.*`` left out."""
        names: list[str] = []
        layer = [n for n, _ in self.kernel_nets.named_parameters()]

        def walk(module: nn.Module, prefix: str) -> None:
            names.extend(prefix + n for n, p in module._parameters.items() if p is not None)
            for n, child in module._modules.items():
                if child is None and n == "kernel_net" and getattr(module, "shared", None):
                    names.extend(f"{prefix}kernel_net.{k}" for k in layer)
                elif child is not None and child is not self.kernel_nets:
                    walk(child, f"{prefix}{n}.")

        walk(self, "")
        return names

    def vector_parameters(self) -> list[nn.Parameter]:
        """Parameters that hold one vector per block, (L, n), rather than a matrix: the stacked
        kernel nets' biases (no weight decay, as any bias)."""
        return self.kernel_nets.vectors()

    # ---- architecture parameters, found by structure -------------------------------------------
    def _axis_parameters(
        self, kernel: bool, width: bool, resolution: bool, depth: bool, groups: bool
    ) -> list[nn.Parameter]:
        out: list[nn.Parameter] = []
        if width:
            out += [m.mu for m in self.residual_masks()]
        if depth:
            out += [m.mu for m in self.depth_masks()]
        for b in self.blocks:
            assert isinstance(b, DNArchBlock)
            if kernel:
                out.append(b.conv.mask.sigma)
            if width:
                out.append(b.width_mask.mu)
            if resolution and b.resolution is not None:
                out.append(b.resolution.mask.mu)
            if groups:
                out += [g.mu for g in b.group_masks()]
        return out

    def arch_parameters(self) -> list[nn.Parameter]:
        """The learnable mask parameters (those of frozen axes excluded)."""
        every = self._axis_parameters(True, True, True, True, True)
        return [p for p in every if p.requires_grad]

    def resolution_parameters(self) -> list[nn.Parameter]:
        """The learnable resolution cut-offs (a subset of ``arch_parameters``)."""
        every = self._axis_parameters(False, False, True, False, False)
        return [p for p in every if p.requires_grad]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter."""
        arch = {id(p) for p in self._axis_parameters(True, True, True, True, True)}
        return [p for p in self.parameters() if id(p) not in arch and p.requires_grad]

    @torch.no_grad()
    def ceiling_copy(self) -> DNArchNet:
        """A copy with every mask at its ceiling: the largest network this architecture holds, the
        "maximal network" that budget fractions and reports refer to. Every kernel spans its ceiling
        (``NetConfig.kernel_ceiling`` of its map; 1: the whole map), every width mask keeps every
        entry of its (stretched) grid, every block is kept and ungrouped, whether or not the axis
        is learned; a learned resolution is full, while a fixed pyramid (a fixed Fourier crop or a
        strided halving) stays as it is, so the widths stretch where it falls. No network the
        search can reach costs more MACs; with a learned resolution and ``widen`` > 1 one can hold
        more parameters (the blocks widen as the resolution falls)."""
        big = copy.deepcopy(self)
        masks: list[Any] = [*big.residual_masks(), *big.depth_masks()]
        for b in big.block_list():
            masks += [b.conv.mask, b.width_mask, *b.group_masks()]
            if "resolution" in self.learned_axes and b.resolution is not None:
                masks.append(b.resolution.mask)
        for m in masks:
            m.to_ceiling_()
        return big

    def gates(self) -> list[SigmoidStepMask | LowpassMask]:
        """The sigmoid masks (residual width, depth, each block's hidden width, resolution and
        groupings): the decisions annealed gates make binary. The kernel's Gaussian mask is not one."""
        out: list[SigmoidStepMask | LowpassMask] = [*self.residual_masks(), *self.depth_masks()]
        for b in self.block_list():
            out += [b.width_mask, *b.group_masks()]
            if b.resolution is not None:
                out.append(b.resolution.mask)
        return out

    @torch.no_grad()
    def anneal_gates_(self, fraction: float) -> None:
        """Every gate's sharpness at ``fraction`` (0: plain DNArch masks, 1: binary) of its schedule."""
        for g in self.gates():
            g.anneal_(fraction)

    @torch.no_grad()
    def snap_gates_(self) -> None:
        """Make every gate binary without changing the cropped network: each gate's centre moves
        midway between its last kept entry and the next, and its sharpness becomes binary, so every
        mask value is 0 or 1 to within exp(-20) (kept values are exactly 1 in float32)."""
        plan = self.hard_plan()
        for r in self.residual_masks():
            r.snap_()
        for m in self.depth_masks():
            m.snap_()
        for b, p in zip(self.block_list(), plan, strict=True):
            b.width_mask.snap_()
            for g in b.group_masks():
                g.snap_()
            if b.resolution is not None:
                b.resolution.mask.snap_(p.keep_bins)

    @torch.no_grad()
    def project_arch_(self) -> None:
        """Keep mask parameters inside their floors and ceilings; call after each optimiser step."""
        for r in self.residual_masks():
            r.project_()
        for m in self.depth_masks():
            m.project_()
        for b in self.block_list():
            b.project_()

    @property
    def stage_widths(self) -> bool:
        """Is the residual width learned per stage (``NetConfig.stage_widths``)?"""
        return len(self.stage_residual) > 0

    @property
    def widths_vary(self) -> bool:
        """May blocks differ in residual width (``NetConfig.widen`` > 1 or ``stage_widths``)?"""
        return self.widen != 1 or self.stage_widths

    def residual_masks(self) -> list[SigmoidStepMask]:
        """The residual width masks: one shared by every block, or one per stage (the first the
        stem's)."""
        return [self.residual_mask, *self.stage_residual]  # type: ignore[list-item]

    def block_residual_mask(self, index: int) -> SigmoidStepMask:
        """The residual width mask of block ``index`` (its stage's)."""
        if not self.stage_residual:
            return self.residual_mask
        return self.residual_masks()[index // self.stage_blocks]

    def depth_masks(self) -> list[SigmoidStepMask]:
        """The depth masks, each over a run of consecutive blocks: one over all of them, or one per
        stage (``NetConfig.stage_blocks``)."""
        return [self.depth_mask, *self.stage_depth]  # type: ignore[list-item]

    def depth_values(self) -> Tensor:
        """Every block's thresholded depth value D_l (0 where removed). (L,)."""
        return torch.cat([m.values() for m in self.depth_masks()])

    def depth_kept(self) -> list[bool]:
        """Which blocks the cropped network keeps. (L,)."""
        return [j < m.hard_count() for m in self.depth_masks() for j in range(m.n)]

    def block_list(self) -> list[DNArchBlock]:
        """The blocks, typed (``self.blocks`` is an ``nn.ModuleList``). (L,)."""
        return [b for b in self.blocks if isinstance(b, DNArchBlock)]

    # ---- forward -------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, crop: bool = True, plan: Sequence[BlockSpec] | None = None
    ) -> Tensor:
        """x: (B, in_channels, *input_shape) -> logits (B, num_classes), or (B, num_classes,
        *input_shape) for a per-position task.

        ``plan``: this step's ``hard_plan()``, if the caller has it already (``LossAndCost`` makes
        it once a step for the cost and the forward). The network runs what it says: which blocks
        it keeps, each block's residual and hidden width, kernel size and kept Fourier bins; the
        masks give the values."""
        if tuple(x.shape[2:]) != self.input_shape or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        plan = self.hard_plan() if plan is None else plan
        m_res, kept = self.residual_mask.values_and_count()  # (C,)
        c = kept if crop else m_res.numel()
        m_res = leading(m_res, c)
        h = self._stem(x, c, m_res)  # (B, c, *S0)
        h0 = h
        depth = self.depth_values()
        cap: Tensor | None = None
        # each residual mask's values per grid, made once
        residual: dict[tuple[int, int], Tensor] = {}
        head_c, head_m = c, m_res  # the last kept block's width and mask: the head's
        values = self.kernel_values(plan) if crop else {}
        for block, spec in zip(self.block_list(), plan, strict=True):
            if not spec.kept and crop:
                continue
            before = h  # the stream entering the block (a mixing halving reads it: ``mix``)
            if spec.kept:  # (the reference path runs a removed block without resampling)
                h, cap = block.resample(h, cap, spec.keep_bins)
            grid_c, grid_w = self.grids(h.shape[2:])
            mask = self.block_residual_mask(spec.index)
            key = (id(mask), grid_c)
            if key not in residual:  # zero beyond the plan's width
                residual[key] = mask.values(grid_c, self.alloc)
            c = spec.width if crop else block.width
            m_res = leading(residual[key], c)
            # the stream at the block's width: new residual channels start at zero; a narrower
            # stage (``stage_widths``) drops the last ones (the reference path: zeroes them)
            if crop:
                h = fit_channels(h, c)
            else:
                h = pad_channels(h, c)
                if self.stage_widths and spec.kept:
                    h = channel_scale(h, (m_res > 0).to(h.dtype))
            if spec.mixed:  # the halving's full convolution, added (``NetConfig.downsample``)
                h = h + block.mix(before, m_res)
            h = block(h, m_res, depth[spec.index], spec, grid_w, crop, values.get(spec.index))
            if spec.kept:
                head_c, head_m = c, m_res
        c, m_res = head_c, head_m
        if not crop:  # removed blocks after the last kept one (zero beyond its width) ran wider
            h = fit_channels(h, c)
        h = batch_norm(h, self.head_norm, c, self.training, m_res)
        if not self.dense:
            pooled = h.flatten(2).mean(-1)  # (B, c)
            return F.linear(pooled, leading(self.head.weight, None, c), self.head.bias)
        if crop:
            return self._dense_head(h, fit_channels(h0, c))
        h0 = pad_channels(h0, c)
        if self.stage_widths:
            h0 = channel_scale(h0, (m_res > 0).to(h0.dtype))
        return self._dense_head(h, h0)

    def kernel_values(self, plan: Sequence[BlockSpec]) -> dict[int, Tensor]:
        """Each kept block's kernel net on its kernel grid at its resolution, (P_l, c_l) by block
        index, from one batched evaluation of the stacked kernel nets (``KernelNets``); empty with
        fewer than two kept blocks (each block then runs its own entry, ``KernelNets.one``)."""
        kept = [(b, p) for b, p in zip(self.block_list(), plan, strict=True) if p.kept]
        if len(kept) < 2:
            return {}
        grids = tuple((p.kernel, p.resolution_out) for _, p in kept)
        dev, dtype = self.head.weight.device, self.head.weight.dtype
        pos = made_once(
            self._kernel_positions,
            (grids, dev, dtype),
            lambda: _padded_stack(
                [b.conv.positions(*g) for (b, _), g in zip(kept, grids, strict=True)]
            ),
        )  # (L, P_max, ndim)
        index = None if len(kept) == len(self.blocks) else [p.index for _, p in kept]
        out = self.kernel_nets(pos, index)  # (L, P_max, C)
        return {p.index: out[i, : math.prod(p.kernel), : p.width] for i, (_, p) in enumerate(kept)}

    def _stem(self, x: Tensor, c: int, m_res: Tensor) -> Tensor:
        """The stem's first ``c`` output channels, each times its residual mask value m_res (c,):
        folded into the weight of the pointwise stem, into the norm's affine parameters of the
        k-tap one (ReLU commutes with a scale >= 0). x: (B, in_channels, *S0) -> (B, c, *S0)."""
        if isinstance(self.stem, nn.Linear):
            return pointwise(x, self.stem, c, self.in_channels, row_scale=m_res)
        assert self.stem.bias is not None and self.stem_norm is not None
        h = conv_nd(x, leading(self.stem.weight, c), leading(self.stem.bias, c))
        return F.relu(batch_norm(h, self.stem_norm, c, self.training, m_res))

    def stretch(self, lengths: Sequence[int]) -> float:
        """How much a block that runs at ``lengths`` samples per axis widens: min(widen,
        (P_0 / P) ** widen_power) for P of the input's P_0 positions (1 at full resolution)."""
        if self.widen == 1:
            return 1.0
        ratio = math.prod(self.input_shape) / math.prod(int(n) for n in lengths)
        return min(self.widen, _grow(ratio, self.widen_power))

    def grids(self, lengths: Sequence[int]) -> tuple[int, int]:
        """Entries of the residual and hidden width masks' grids for a block at ``lengths``: the
        maximal widths C and W, stretched (``stretch``)."""
        s = self.stretch(lengths)
        return _grid(self.width, s), _grid(self.hidden, s)

    def _dense_head(self, h: Tensor, h0: Tensor) -> Tensor:
        """h: (B, c, *S_L) normed features; h0: (B, c, *S0) the stem's output -> (B, K, *S0)."""
        if tuple(h.shape[2:]) != self.input_shape:
            h = self._upsample(h)  # (B, c, *S0), band-limited
        if self.dense_skip:
            h = h + h0
        return pointwise(h, self.head, self.num_classes, h.shape[1])  # (B, K, *S0)

    def _upsample(self, h: Tensor) -> Tensor:
        """Band-limited upsampling to the input resolution, h (B, c, *S) -> (B, c, *S0): one small
        matrix per axis (``fourier.upsample_matrix``, made once per size) where the input's axes are
        short, else by FFT (``fourier.fourier_upsample``); the same linear map either way."""
        sizes = tuple(h.shape[2:])
        if max(self.input_shape) > fourier.MATRIX_MAX_LENGTH:
            return fourier.fourier_upsample(h, self.input_shape)
        h = fourier.fft_input(h)
        matrices = made_once(
            self._upsampling,
            (sizes, h.device, h.dtype),
            lambda: [
                None if n == m else fourier.upsample_matrix(n, m, h.dtype).to(h.device)
                for n, m in zip(sizes, self.input_shape, strict=True)
            ],
        )
        return fourier.apply_matrices(h, matrices)

    # ---- sizes ---------------------------------------------------------------------------------
    def hard_plan(self) -> list[BlockSpec]:
        """Per block: kept, resolution in/out, kernel size, hidden width and the pointwise layers'
        group counts of the cropped network. (L,)."""
        lengths = self.input_shape
        kept_blocks = self.depth_kept()
        cap: Tensor | None = None
        plan: list[BlockSpec] = []
        for index, b in enumerate(self.block_list()):
            kept = kept_blocks[index]
            out, keep = lengths, tuple(n // 2 for n in lengths)
            if kept and b.halve_filter is not None:
                out = tuple((n + 1) // 2 for n in lengths)
            elif kept and b.resolution is not None:
                mu, keep = b.resolution.plan(lengths, cap)
                cap = mu
                out = tuple(fourier.output_length(n, k) for n, k in zip(lengths, keep, strict=True))
            grid_c, grid_w = self.grids(out if kept else lengths)
            plan.append(
                BlockSpec(
                    index=index,
                    kept=kept,
                    resolution_in=tuple(lengths),
                    resolution_out=tuple(out),
                    kernel=b.conv.mask.hard_sizes(out),
                    hidden=b.width_mask.hard_count(grid_w),
                    keep_bins=tuple(keep),
                    groups=b.hard_groups(),
                    width=self.block_residual_mask(index).hard_count(grid_c),
                    strided=kept and b.halve_filter is not None,
                    mixed=kept and b.halve_mix is not None,
                )
            )
            if kept:
                lengths = out
        return plan

    def arch_sizes(self, hard: bool, plan: Sequence[BlockSpec] | None = None) -> ArchSizes:
        """Soft (differentiable) or hard (as cropped) sizes; see ``ArchSizes``. ``plan``: this model's
        ``hard_plan()``, if the caller has it already. Every per-block size is one tensor over the
        blocks, computed for all of them at once (the cost is evaluated at every training step)."""
        dev = self.depth_mask.mu.device
        plan = self.hard_plan() if plan is None else plan  # pass it in to compute it once per step
        blocks = self.block_list()
        if hard:

            def t(v: Any) -> Tensor:
                return torch.tensor(v, dtype=torch.float32, device=dev)

            return ArchSizes(
                residual=t(self.residual_mask.hard_count()),
                depth=t([float(p.kept) for p in plan]),
                kernel=t([p.kernel for p in plan]),
                hidden=t([p.hidden for p in plan]),
                resolution=t([p.resolution_out for p in plan]),
                resampled=_resampled(plan),
                halved=[bool(p.strided) for p in plan],
                mixed=[bool(p.mixed) for p in plan],
                head_in=t(plan[-1].resolution_out),  # removed blocks pass their input on
                head_upsampled=self._head_upsampled(plan),
                groups=t([p.groups for p in plan]),
                width=t([p.width for p in plan]),
                head_width=t(plan[_last_kept(plan)].width),
                grouped=self.learn_groups,
            )
        if any(b.resolution is not None for b in blocks):
            res, stretch = self._soft_resolution(dev)
        else:  # a fixed pyramid: the same constants every step, made once
            res, stretch = made_once(
                self._fixed_resolution, dev, lambda: self._soft_resolution(dev)
            )
        residual = self.residual_mask.soft_count()
        sigma = torch.stack([b.conv.mask.sigma for b in blocks])  # (L, ndim)
        kernel = torch.clamp(sigma * blocks[0].conv.mask.scale_value * res + 1.0, min=3.0)
        if self.learn_groups:
            groups = torch.stack([b.soft_groups() for b in blocks])
        else:
            groups = torch.ones(len(blocks), 2, device=dev)
        last = _last_kept(plan)
        if self.stage_widths:  # each block at its stage's width: (S,) -> (L,)
            per_block = _soft_counts(self.residual_masks()).repeat_interleave(self.stage_blocks)
        else:
            per_block = residual.expand(len(blocks))
        width = per_block * stretch if self.widen != 1 else per_block
        return ArchSizes(
            residual=residual,
            depth=torch.cat([m.raw() for m in self.depth_masks()]),
            kernel=kernel,
            hidden=_soft_counts([b.width_mask for b in blocks]) * stretch,
            resolution=res,
            resampled=_resampled(plan),
            halved=[bool(p.strided) for p in plan],
            mixed=[bool(p.mixed) for p in plan],
            head_in=res[last],  # the last kept block's (soft) output size
            head_upsampled=self._head_upsampled(plan),
            groups=groups,
            width=width,
            head_width=width[last],
            grouped=self.learn_groups,
        )

    def _soft_resolution(self, dev: torch.device) -> tuple[Tensor, Tensor | float]:
        """Each block's soft output size per axis (L, ndim), each capped by the one before, and the
        stretch of its widths (L,), differentiable in the resolution (``NetConfig.widen``; 1.0
        without widening)."""
        lengths = torch.tensor(self.input_shape, dtype=torch.float32, device=dev)
        resolution, cap = [], None
        for b in self.block_list():
            if b.halve_filter is not None:
                lengths = torch.ceil(lengths / 2)
            elif b.resolution is not None:
                mu = b.resolution.mask.effective_mu(cap)
                lengths = b.resolution.mask.soft_sizes(mu, lengths)
                cap = mu
            resolution.append(lengths)
        res = torch.stack(resolution)  # (L, ndim)
        if self.widen == 1:
            return res, 1.0
        p0 = float(math.prod(self.input_shape))
        return res, _grow(p0 / res.prod(1), self.widen_power).clamp(max=self.widen)

    def max_sizes(self) -> ArchSizes:
        """Sizes of the maximal network: ``ceiling_copy``'s, as cropped."""
        return self.ceiling_copy().arch_sizes(hard=True)

    def _head_upsampled(self, plan: Sequence[BlockSpec]) -> tuple[bool, ...]:
        return tuple(o != n for o, n in zip(plan[-1].resolution_out, self.input_shape, strict=True))


def _soft_counts(masks: list[SigmoidStepMask]) -> Tensor:
    """Each mask's ``soft_count``, as one tensor (len(masks),): one sigmoid over all of them when they
    share their size and steepness and none is annealed (every block's hidden-width mask)."""
    first = masks[0]
    if any(m.sharp or m.n != first.n or m.tau != first.tau for m in masks):
        return torch.stack([m.soft_count() for m in masks])
    mu = torch.stack([m.mu for m in masks])  # (L,)
    u = torch.arange(first.n, device=mu.device, dtype=mu.dtype) / first.n
    return fm.sigmoid_step(u, mu[:, None], first.tau_value).sum(1)


def _padded_stack(rows: list[Tensor]) -> Tensor:
    """Tensors (P_i, d) stacked into (len(rows), max P_i, d), zero rows appended to the shorter."""
    longest = max(r.shape[0] for r in rows)
    return torch.stack([F.pad(r, (0, 0, 0, longest - r.shape[0])) for r in rows])


def _last_kept(plan: Sequence[BlockSpec]) -> int:
    """Index of the last block the plan keeps (the first block is always kept)."""
    return max(i for i, p in enumerate(plan) if p.kept)


def _grow(ratio: _Ratio, power: float) -> _Ratio:
    """``ratio ** power`` (a number, or a tensor of any shape): with ``power`` 0.5 the square root
    itself, correctly rounded and with its own gradient, bit for bit as before ``widen_power``."""
    if power != 0.5:
        return ratio**power
    return ratio.sqrt() if isinstance(ratio, Tensor) else math.sqrt(ratio)


def _grid(n: int, stretch: float) -> int:
    """Entries of a width mask of ``n`` entries stretched ``stretch`` >= 1 times."""
    return max(n, math.floor(n * stretch + 1e-6))


def _resampled(plan: Sequence[BlockSpec]) -> list[tuple[bool, ...]]:
    """Per block and axis: does a Fourier crop downsample it (a strided filter is not one)."""
    return [
        tuple(
            o != i and not p.strided for o, i in zip(p.resolution_out, p.resolution_in, strict=True)
        )
        for p in plan
    ]


def build_model(
    cfg: NetConfig,
    in_channels: int,
    num_classes: int,
    input_shape: Sequence[int],
    task: str = "classify",
) -> DNArchNet:
    """The one builder from config to model. task: 'classify', 'segment' or 'regress'."""
    return DNArchNet(cfg, in_channels, num_classes, input_shape, task)
