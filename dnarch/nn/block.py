"""The DNArch residual block (METHOD.md):

    x -> resolution R_l -> norm -> depthwise CK conv (kernel mask K_l) -> GELU
      -> pointwise C -> W_l (width mask M_l) -> GELU -> pointwise W_l -> C -> dropout
      -> times depth value D_l, added to the (resampled) residual stream.

The residual width mask ``m_C`` multiplies the norm's output and the block's output, so that cropped
residual channels are exactly zero everywhere and cropping them changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from dnarch.nn.ckconv import DepthwiseCKConv
from dnarch.nn.masks import SigmoidStepMask
from dnarch.nn.resolution import FourierResolution
from dnarch.nn.sync_norm import sync_batch_norm, sync_group


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


def batch_norm(x: Tensor, norm: nn.BatchNorm1d, c: int, training: bool) -> Tensor:
    """BatchNorm over the first ``c`` of ``norm``'s channels (parameters and running stats sliced).

    x: (B, c, *S). Cropped channels keep their running statistics untouched. Inside
    ``sync_norm.syncing``, training statistics span every data-parallel rank.
    """
    assert norm.running_mean is not None and norm.running_var is not None
    momentum = norm.momentum if norm.momentum is not None else 0.1
    synced, group = sync_group()
    if training and synced:  # data-parallel training: statistics over every rank's batch
        args = (norm.running_mean[:c], norm.running_var[:c], norm.weight[:c], norm.bias[:c])
        return sync_batch_norm(x, *args, momentum, norm.eps, group)
    return F.batch_norm(
        x,
        norm.running_mean[:c],
        norm.running_var[:c],
        norm.weight[:c],
        norm.bias[:c],
        training,
        momentum,
        norm.eps,
    )


def pointwise(x: Tensor, lin: nn.Linear, rows: int, cols: int) -> Tensor:
    """1x1 convolution with the top-left (rows, cols) corner of ``lin``. x: (B, cols, *S) -> (B, rows, *S)."""
    w = lin.weight[:rows, :cols].reshape(rows, cols, *([1] * (x.ndim - 2)))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
    return conv(x, w, lin.bias[:rows])


def channel_scale(x: Tensor, m: Tensor) -> Tensor:
    """x: (B, c, *S) times m: (c,) per channel."""
    return x * m.reshape(1, -1, *([1] * (x.ndim - 2)))


class DNArchBlock(nn.Module):
    """One residual block with its resolution, kernel and hidden-width masks."""

    def __init__(self, s: BlockSettings) -> None:
        super().__init__()
        self.resolution = (
            FourierResolution(s.base, s.resolution_span, s.threshold)
            if s.learn_resolution
            else None
        )
        self.norm = nn.BatchNorm1d(s.width)  # used through F.batch_norm: any spatial rank
        self.conv = DepthwiseCKConv(
            s.ndim, s.width, s.base, s.kernel_hidden, s.kernel_layers, s.omega0,
            s.init_cutoff, s.threshold, s.backend,
        )  # fmt: skip
        self.width_mask = SigmoidStepMask(s.hidden, s.width_span, s.threshold)
        self.pw1 = nn.Linear(s.width, s.hidden)
        self.pw2 = nn.Linear(s.hidden, s.width)
        self.dropout = nn.Dropout(s.dropout)

    def resample(self, x: Tensor, cap: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Apply R_l. Returns the resampled x and the cap for the next block."""
        if self.resolution is None:
            return x, cap
        return self.resolution(x, cap)

    def forward(
        self,
        x: Tensor,
        m_res: Tensor,
        depth: Tensor,
        cap: Tensor | None,
        crop: bool = True,
        resample: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, c, *S) residual stream (c = kept residual channels, or all when not cropping);
        m_res: (c,) thresholded residual width mask; depth: scalar D_l; cap: previous effective mu.

        ``resample=False`` skips R_l (the reference path of a removed block, whose depth value is 0).

        Returns the new residual stream (B, c, *S') and this block's effective resolution mu.
        """
        if resample:
            x, cap = self.resample(x, cap)
        c = x.shape[1]
        h = channel_scale(batch_norm(x, self.norm, c, self.training), m_res)
        h = self.conv(h, full=not crop)  # (B, c, *S')
        if not crop:
            # reference path: a cropped residual channel must stay zero despite the conv bias
            h = channel_scale(h, (m_res > 0).to(h.dtype))
        h = F.gelu(h)
        m_w = self.width_mask.values()
        w = self.width_mask.hard_count() if crop else m_w.numel()
        h = channel_scale(F.gelu(pointwise(h, self.pw1, w, c)), m_w[:w])  # (B, w, *S')
        h = self.dropout(pointwise(h, self.pw2, c, w))  # (B, c, *S')
        return x + channel_scale(h, m_res * depth), cap

    def soft_hidden(self) -> Tensor:
        return self.width_mask.soft_count()

    def project_(self) -> None:
        self.conv.mask.project_()
        self.width_mask.project_()
        if self.resolution is not None:
            self.resolution.mask.project_()
