"""The DNArch residual block (METHOD.md):

    x -> resolution R_l (or a strided filter that halves it) -> norm -> depthwise CK conv (kernel mask K_l) -> GELU
      -> pointwise C -> W_l (width mask M_l) -> GELU -> pointwise W_l -> C -> dropout
      -> times depth value D_l, added to the (resampled) residual stream.

With ``halve_mix`` (``NetConfig.downsample`` 'strided-mix') the halving also adds a full strided
convolution of the incoming stream to the (widened) stream the block reads (``mix``; the model adds
it, since it needs the block's residual width mask).

With ``branch_norm`` a BatchNorm follows the last pointwise layer (ResNet's norm at the end of its
residual branch); the residual and depth masks then scale its affine parameters.

With learned grouping (``group_bits > 0``) each pointwise weight is multiplied by its DGConv
relationship matrix (``functional.groups.relation``, gates from a ``GroupMask``).

The residual width mask ``m_C`` multiplies the norm's output and the block's output, so that cropped
residual channels are exactly zero everywhere and cropping them changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnarch.functional.channels import conv1x1, corner, larger, leading, pointwise_mlp
from dnarch.functional.conv import Verdicts, conv_nd, halve, halving_filter
from dnarch.functional.dropout import Dropout
from dnarch.functional.groups import choose_mixing, grouped_pointwise, relation
from dnarch.nn.ckconv import DepthwiseCKConv
from dnarch.nn.masks import GroupMask, SigmoidStepMask, state_key
from dnarch.nn.resolution import FourierResolution
from dnarch.nn.sync_norm import sync_batch_norm, sync_group
from dnarch.plan import BlockSpec


@dataclass(frozen=True)
class BlockSettings:
    """Plain typed arguments of one block (built by the model builder, never from a config object)."""

    ndim: int
    width: int
    hidden: int
    base: tuple[int, ...]
    kernel_hidden: int
    kernel_layers: int
    omega0: float
    init_cutoff: float
    threshold: float
    width_span: float
    resolution_span: float
    dropout: float
    backend: str
    learn_resolution: bool
    group_bits: int = 0
    group_span: float = 1.5
    widen: float = 1.0  # widths allocated: ceil(width * widen), ceil(hidden * widen)
    init_resolution: float = 1.0  # the resolution mask's initial cut-off (1: full resolution)
    direct_kernel: int = 0  # size of the depthwise kernel's directly learned central term (0: none)
    halve: bool = False  # halve each axis at the block's input by a learned strided filter
    halve_mix: bool = False  # and add a full strided convolution to it (``NetConfig.downsample``)
    kernel_gain: float = 1.0  # the kernel net's initial output scale (``KernelNet``)
    kernel_ceiling: float = 1.0  # the largest relative extent of the kernel (1: the whole map)
    branch_norm: bool = False  # a BatchNorm on the branch's output, before the residual sum


def allocated(n: int, widen: float) -> int:
    """Channels to allocate for a width of ``n`` that may be stretched up to ``widen`` times."""
    return max(n, math.ceil(n * widen - 1e-9))


def batch_norm(
    x: Tensor, norm: nn.BatchNorm1d, c: int, training: bool, scale: Tensor | None = None
) -> Tensor:
    """BatchNorm over the first ``c`` of ``norm``'s channels (parameters and running stats sliced),
    its output times ``scale`` (c,) per channel if given (folded into the affine parameters).

    x: (B, c, *S). Cropped channels keep their running statistics untouched. Inside
    ``sync_norm.syncing``, training statistics span every data-parallel rank.
    """
    assert norm.running_mean is not None and norm.running_var is not None
    momentum = norm.momentum if norm.momentum is not None else 0.1
    weight, bias = leading(norm.weight, c), leading(norm.bias, c)
    if scale is not None:
        weight, bias = weight * scale, bias * scale
    mean, var = leading(norm.running_mean, c), leading(norm.running_var, c)
    synced, group = sync_group()
    if training and synced:  # data-parallel training: statistics over every rank's batch
        args = (mean, var, weight, bias)
        return sync_batch_norm(x, *args, momentum, norm.eps, group)
    return F.batch_norm(x, mean, var, weight, bias, training, momentum, norm.eps)


def pointwise(
    x: Tensor,
    lin: nn.Linear,
    rows: int,
    cols: int,
    groups: GroupMask | None = None,
    row_scale: Tensor | None = None,
    col_scale: Tensor | None = None,
) -> Tensor:
    """1x1 convolution with the top-left (rows, cols) corner of ``lin``, times its grouping relation
    when ``groups`` is given. ``col_scale`` (cols,) scales its input channels and ``row_scale``
    (rows,) its output channels, folded into the weight and bias (a per-channel mask costs no pass
    over the activations). x: (B, cols, *S) -> (B, rows, *S)."""
    return conv1x1(x, *layer_weights(lin, rows, cols, groups, row_scale, col_scale))


def layer_weights(
    lin: nn.Linear,
    rows: int,
    cols: int,
    groups: GroupMask | None,
    row_scale: Tensor | None,
    col_scale: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """A 1x1 layer's weight (rows, cols) and bias (rows,): the top-left corner of ``lin``, times its
    grouping relation when ``groups`` is given, its inputs scaled by ``col_scale`` and its outputs
    by ``row_scale`` (either None: unscaled)."""
    w = scaled_weight(lin, rows, cols, groups, row_scale, col_scale)
    b = leading(lin.bias, rows)
    return w, b if row_scale is None else b * row_scale


def scaled_weight(
    lin: nn.Linear,
    rows: int,
    cols: int,
    groups: GroupMask | None,
    row_scale: Tensor | None,
    col_scale: Tensor | None,
) -> Tensor:
    """``layer_weights``' weight alone (rows, cols), for a layer whose bias is left out."""
    w = leading(lin.weight, rows, cols)
    if groups is not None:
        w = w * relation(rows, cols, groups.factors())
    if col_scale is not None:
        w = w * col_scale
    return w if row_scale is None else w * row_scale[:, None]


def mixing(
    x: Tensor,
    lin: nn.Linear,
    rows: int,
    cols: int,
    groups: GroupMask | None,
    crop: bool,
    verdicts: Verdicts,
    row_scale: Tensor | None = None,
    col_scale: Tensor | None = None,
) -> Tensor:
    """``pointwise``, run as a grouped convolution when cropping, the layer has hard groups, and that
    was measured faster here (``functional.groups.choose_mixing``). x: (B, cols, *S) -> (B, rows, *S)."""
    g = groups.hard_groups() if groups is not None and crop else 1
    if groups is None or g == 1:
        return pointwise(x, lin, rows, cols, groups, row_scale, col_scale)
    w, b = layer_weights(lin, rows, cols, groups, row_scale, col_scale)
    if choose_mixing(x, w, g, verdicts) == "dense":
        return conv1x1(x, w, b)
    return grouped_pointwise(x, w, b, g)


def channel_scale(x: Tensor, m: Tensor) -> Tensor:
    """x: (B, c, *S) times m: (c,) per channel."""
    return x * m.reshape(1, -1, *([1] * (x.ndim - 2)))


class DNArchBlock(nn.Module):
    """One residual block with its resolution, kernel and hidden-width masks."""

    def __init__(self, s: BlockSettings) -> None:
        super().__init__()
        self.resolution = (
            FourierResolution(s.base, s.resolution_span, s.threshold, s.init_resolution)
            if s.learn_resolution
            else None
        )
        width, hidden = allocated(s.width, s.widen), allocated(s.hidden, s.widen)
        self.norm = nn.BatchNorm1d(width)  # used through F.batch_norm: any spatial rank
        self.conv = DepthwiseCKConv(
            s.ndim, width, s.base, s.kernel_hidden, s.kernel_layers, s.omega0,
            s.init_cutoff, s.threshold, s.backend, s.direct_kernel, s.kernel_gain, s.kernel_ceiling,
        )  # fmt: skip
        self.width_mask = SigmoidStepMask(s.hidden, s.width_span, s.threshold)
        self.pw1 = nn.Linear(width, hidden)
        self.pw2 = nn.Linear(hidden, width)
        self.pw1_groups = (
            GroupMask(s.group_bits, s.group_span, s.threshold) if s.group_bits else None
        )
        self.pw2_groups = (
            GroupMask(s.group_bits, s.group_span, s.threshold) if s.group_bits else None
        )
        self.dropout = Dropout(s.dropout)
        self._zero_bias: tuple[tuple[int, ...], bool] | None = None  # ``output_bias_is_zero``
        # NetConfig.downsample='strided': each channel of the incoming stream filtered by 3 taps per
        # axis at stride 2, started at [1, 6, 1] / 8 per axis (``functional.conv.halving_filter``)
        self.halve_filter = nn.Parameter(halving_filter(s.ndim, width)) if s.halve else None
        # NetConfig.downsample='strided-mix': and a full 3-tap-per-axis convolution at stride 2 from
        # the incoming channels to the block's, (out, in, *3^ndim), started at zero (``mix``)
        self.halve_mix = (
            nn.Parameter(torch.zeros(width, width, *[3] * s.ndim))
            if s.halve and s.halve_mix
            else None
        )
        # NetConfig.branch_norm: the branch's output normalised before the residual sum
        self.branch_norm = nn.BatchNorm1d(width) if s.branch_norm else None

    def fit_allocation_(self, width: int, hidden: int, width_in: int | None = None) -> None:
        """Keep only the first ``width`` residual and ``hidden`` hidden channels of the norms, the
        1x1 layers, the conv's bias and direct term and the halving filter (and of a mixing
        halving's convolution, ``width`` rows and ``width_in`` columns: the widest stream that
        enters the block, default ``width``): a block on a fixed pyramid never runs wider than
        its stretch there (``DNArchNet``), and the rest of its allocation (``NetConfig.widen``
        times the widths) would only be sliced away at every step, its gradient zero-filled and
        its optimiser state updated. The kept values are the ones drawn at full allocation, so a
        network starts as before. The kernel net keeps every output (its
        weights are stored stacked with the other blocks', ``DNArchNet.kernel_nets``)."""

        def keep(owner: nn.Module, name: str, *sizes: int) -> None:
            t = getattr(owner, name)
            if t is None:
                return
            kept = corner(t.detach(), sizes).clone()
            if isinstance(t, nn.Parameter):
                setattr(owner, name, nn.Parameter(kept, requires_grad=t.requires_grad))
            else:  # a buffer (running statistics)
                setattr(owner, name, kept)

        for norm in (self.norm, self.branch_norm):
            if norm is None:
                continue
            for name in ("weight", "bias", "running_mean", "running_var"):
                keep(norm, name, width)
            norm.num_features = width
        keep(self.pw1, "weight", hidden, width)
        keep(self.pw1, "bias", hidden)
        keep(self.pw2, "weight", width, hidden)
        keep(self.pw2, "bias", width)
        self.pw1.in_features, self.pw1.out_features = width, hidden
        self.pw2.in_features, self.pw2.out_features = hidden, width
        keep(self.conv, "bias", width)
        keep(self.conv, "direct", width)
        keep(self, "halve_filter", width)
        keep(self, "halve_mix", width, width if width_in is None else width_in)

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
        """A run saved before ``fit_allocation_`` holds a fitted block's tensors at full
        allocation: their leading corner is the block's (the rest was never used)."""
        for name, t in [*self.named_parameters(), *self.named_buffers()]:
            saved = state_dict.get(prefix + name)
            if isinstance(saved, Tensor) and larger(saved, t):
                state_dict[prefix + name] = corner(saved, t.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @property
    def width(self) -> int:
        """Residual channels allocated: the widest this block can run at."""
        return self.norm.num_features

    @property
    def verdicts(self) -> Verdicts:
        """The backend verdicts its layers keep (its conv's: the model's one)."""
        return self.conv.verdicts

    def resample(
        self, x: Tensor, cap: Tensor | None, keep: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Apply R_l. Returns the resampled x and the cap for the next block. ``keep``: the kept
        Fourier bins per axis from the step's plan (None: the resolution mask's own)."""
        if self.halve_filter is not None:
            return halve(x, self.halve_filter), cap
        if self.resolution is None:
            return x, cap
        return self.resolution(x, cap, keep)

    def mix(self, x: Tensor, m_res: Tensor) -> Tensor:
        """The halving's full convolution (``halve_mix``): x (B, c_in, *S), the stream before the
        halving -> (B, c, *ceil(S / 2)), c = m_res.numel(), with ``mix_weight``."""
        return conv_nd(x, self.mix_weight(x.shape[1], m_res), stride=2)

    def mix_weight(self, c_in: int, m_res: Tensor) -> Tensor:
        """The mixing convolution's weight as the block runs it (and the export stores it): its
        first c = m_res.numel() rows and ``c_in`` columns, each row times its residual width mask
        value m_res (c,), so that cropped channels stay zero and the mask sees what the
        convolution brings. (c, c_in, *3^ndim)."""
        assert self.halve_mix is not None
        w = leading(self.halve_mix, m_res.numel(), c_in)
        return w * m_res.reshape(-1, *[1] * (w.ndim - 1))

    def forward(
        self,
        x: Tensor,
        m_res: Tensor,
        depth: Tensor,
        spec: BlockSpec,
        hidden_grid: int,
        crop: bool = True,
        kernel_values: Tensor | None = None,
    ) -> Tensor:
        """x: (B, c, *S) the residual stream, already resampled by the model (``resample``), with
        c = kept residual channels, or all when not cropping; m_res: (c,) thresholded residual
        width mask; depth: scalar D_l. ``spec``: the block's entry in the step's plan
        (``DNArchNet.hard_plan``), whose kernel size and hidden width the block runs at (the
        masks give the values); ``hidden_grid``: entries of the stretched hidden-width mask
        (``NetConfig.widen``); ``kernel_values``: its kernel net's output on the plan's kernel grid,
        (P, c), if the model computed every block's at once (``DNArchNet.kernel_values``). Returns
        the new residual stream (B, c, *S).
        """
        c = x.shape[1]
        # the masks multiply per channel: folded into the norm's affine and pw2's weight (exact)
        h = batch_norm(x, self.norm, c, self.training, m_res)
        h = self.conv(h, not crop, spec.kernel, kernel_values)  # (B, c, *S)
        if not crop:
            # reference path: a cropped residual channel must stay zero despite the conv bias
            h = channel_scale(h, (m_res > 0).to(h.dtype))
        if crop:  # the first w entries of the thresholded mask, sliced once
            w = spec.hidden
            m_w, kept = self.width_mask.raw(hidden_grid), self.width_mask.hard_count(hidden_grid)
            m_w = leading(m_w, w) if w <= kept else F.pad(m_w[:kept], (0, w - kept))
        else:  # zero beyond the mask's kept entries
            m_w = self.width_mask.values(hidden_grid, self.pw1.out_features)
            w = m_w.numel()
        # dropout commutes with pw2's per-channel output scale (one mask value per element); with
        # the branch's norm the residual and depth masks scale the norm's affine instead
        out_scale = m_res * depth
        norm = self.branch_norm
        scales = (out_scale if norm is None else None, m_w)  # m_w: (w,), either way
        if self.pw1_groups is None and self.pw2_groups is None:
            first = layer_weights(self.pw1, w, c, None, None, None)
            second: tuple[Tensor, Tensor | None]
            if self.output_bias_is_zero():  # no product with the scale, no gradient sum for it
                second = (scaled_weight(self.pw2, c, w, None, *scales), None)
            else:
                second = layer_weights(self.pw2, c, w, None, *scales)
            (w1, b1), (w2, b2) = first, second
            if norm is not None:
                h = pointwise_mlp(h, w1, b1, w2, b2, act_in=True)
            elif self.dropout.passes_through():  # GELU, the layers and the sum as one
                return pointwise_mlp(h, w1, b1, w2, b2, act_in=True, residual=x)
            else:
                h = pointwise_mlp(F.gelu(h), w1, b1, w2, b2)
        else:
            h = F.gelu(
                mixing(F.gelu(h), self.pw1, w, c, self.pw1_groups, crop, self.verdicts)
            )  # (B, w, *S)
            h = mixing(h, self.pw2, c, w, self.pw2_groups, crop, self.verdicts, *scales)
        if norm is not None:
            h = batch_norm(h, norm, c, self.training, out_scale)
        return x + self.dropout(h)  # (B, c, *S)

    def output_bias_is_zero(self) -> bool:
        """Whether pw2's bias is fixed at zero (``DNArchNet`` fixes the biases a BatchNorm removes:
        no gradient, all zero), read once per value of it (``masks.state_key``)."""
        bias = self.pw2.bias
        if bias.requires_grad:
            return False
        key = state_key(bias)
        if self._zero_bias is None or self._zero_bias[0] != key:
            self._zero_bias = key, not bool(bias.detach().any())
        return self._zero_bias[1]

    def soft_hidden(self) -> Tensor:
        return self.width_mask.soft_count()

    def soft_groups(self) -> Tensor:
        """Differentiable group counts of (pw1, pw2). (2,)."""
        one = torch.ones((), device=self.pw1.weight.device)
        g = [m.soft_groups() if m is not None else one for m in (self.pw1_groups, self.pw2_groups)]
        return torch.stack(g)

    def group_masks(self) -> list[GroupMask]:
        """The learned groupings of pw1 and pw2 (none when grouping is off)."""
        return [g for g in (self.pw1_groups, self.pw2_groups) if g is not None]

    def hard_groups(self) -> tuple[int, int]:
        """Groups of (pw1, pw2) in the cropped network."""
        g1, g2 = self.pw1_groups, self.pw2_groups
        return (g1.hard_groups() if g1 else 1, g2.hard_groups() if g2 else 1)

    def project_(self) -> None:
        self.conv.mask.project_()
        self.width_mask.project_()
        for g in self.group_masks():
            g.project_()
        if self.resolution is not None:
            self.resolution.mask.project_()
