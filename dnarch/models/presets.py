"""Presets: sensible maximal networks for sequences, for small images, and for 1D and 2D dense tasks."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import replace

from dnarch.config import NetConfig

# MNIST-1D-sized sequences (length ~40..1000)
_SEQ = NetConfig(width=32, hidden=64, blocks=6)
# small images (8x8..32x32): fewer blocks, lower SIREN frequency for the 2D kernel
_IMAGE = NetConfig(width=32, hidden=64, blocks=4, omega0=20.0)

# The plain CNN's layout as the search's starting point (benchmarks/blocks.py found that DNArch's
# block on it matches the plain CNN at equal MACs): a 3x3 conv-BN-ReLU stem, one block per stage on
# a fixed pyramid that halves each axis per block, widths growing up to 4x where it does, and
# kernels that start at 3 taps (the direct 3-tap term and the kernel net) and may grow; widths and
# kernels are learned. The pyramid halves by a band-limited Fourier crop on images (28 -> 15 -> 7
# px) and by a learned strided filter on sequences (40 -> 20 -> 10 -> 5; net.downsample): each the
# better where measured (METHOD-NOTES, "How a fixed pyramid halves"). Not the depth: with one
# block per stage the depth mask removes the last stages (at 10% on Fashion 2D it did in two of
# three seeds, 74.3% against 80.8% without it: METHOD-NOTES), until depth is learned per stage
# (net.stage_blocks).
_STAGES = dict(
    stem_kernel=3, init_kernel_cutoff=0.07, widen=4.0, learn_resolution=False, direct_kernel=3,
    learn_depth=False,
)  # fmt: skip

PRESETS: dict[str, NetConfig] = {
    "seq": _SEQ,
    # 1D per-position tasks (the auto choice): "seq" with a directly learned 3-tap centre in every
    # depthwise kernel. Measured on mnist1d-steps and mnist1d-denoise (README, Dense prediction).
    "seq-dense": replace(_SEQ, direct_kernel=3),
    "image": _IMAGE,
    # 2D regression (the auto choice): "image" with a directly learned 3x3 centre in every
    # depthwise kernel; measured on fashion-denoise against "image" and "image-pyramid"
    # (METHOD-NOTES, "A directly learned centre")
    "image-dense": replace(_IMAGE, direct_kernel=3),
    # 2D segmentation (the auto choice): "image" on a fixed pyramid (each block halves the cut-off)
    # whose widths grow as the resolution falls (up to 4x), and a directly learned 3x3 centre in
    # every depthwise kernel; kernels and widths are learned, the resolution and the depth are not
    # (at 16M MACs the depth mask removed the coarsest block in every run, 5-7.5 points below
    # keeping it: METHOD-NOTES, "Depth on the pyramid"). Measured on fashion-scenes at 10 and 30
    # epochs (README, Dense prediction).
    "image-pyramid": replace(
        _IMAGE,
        widen=4.0,
        init_resolution=0.5,
        learn_resolution=False,
        direct_kernel=3,
        learn_depth=False,
    ),
    # small images (28-32 px): three stages (METHOD-NOTES, "Which block family"); no norm at the
    # end of the branch: on 10,000 Fashion images it gained nothing at 13% more CPU time, and the
    # frozen network lost a point on 1,000 (METHOD-NOTES, "A norm at the end of the branch")
    "image-stages": replace(
        _IMAGE,
        width=64,
        hidden=128,
        blocks=3,
        init_resolution=0.445,
        resolution_span=1.0,
        **_STAGES,  # type: ignore[arg-type]
    ),
    # sequences: four stages
    # no dropout: on sequences it cost 1.4-2.1 points in the 1,000-sample regime and nothing on
    # MNIST-1D or on 10,000 sequences (METHOD-NOTES, "Dropout on the sequence preset"); the
    # continuous kernel starts at zero on long inputs (``preset_net``); a kernel spans at most a
    # quarter of its map (METHOD-NOTES, "The kernel's ceiling"); each block's branch ends in a
    # norm, as a ResNet block's does (METHOD-NOTES, "A norm at the end of the branch")
    "seq-stages": replace(
        _SEQ,
        width=24,
        hidden=48,
        blocks=4,
        downsample="strided",
        dropout=0.0,
        kernel_ceiling=0.25,
        branch_norm=True,
        **_STAGES,  # type: ignore[arg-type]
    ),
}


STAGED = ("image-stages", "seq-stages")  # presets whose depth follows the input (``preset_net``)
# ``seq-stages`` on inputs longer than this starts its continuous kernels at zero
# (``NetConfig.init_kernel_gain`` 0): 2.4-3 points better on sequences of 784, 0.2-0.6 worse on
# MNIST-1D's 40 samples (METHOD-NOTES, "The continuous kernel starts at zero")
LONG_SEQUENCE = 64


def preset_net(
    name: str, input_shape: Sequence[int], overrides: Mapping[str, object] | None = None
) -> NetConfig:
    """The preset ``name`` for data of ``input_shape``: the ``*-stages`` presets get one block per
    stage of the plain CNN for that input (``plain_cnn.stage_count``: halvings until the smallest
    axis would fall below 5 samples; 28 px: 3, 40 samples: 4, 784: 8) and kernels that start at 3
    taps whatever the input's length (``seq-stages`` on inputs longer than ``LONG_SEQUENCE``:
    continuous kernels that start at zero); the others as they are. ``overrides``: the run's dotted
    config overrides ('net.stage_blocks' sets the blocks per stage here, unless 'net.blocks' is
    given; the caller applies them all afterwards)."""
    cfg = PRESETS[name]
    if name not in STAGED:
        return cfg
    from dnarch.models.plain_cnn import stage_count

    shape = tuple(int(n) for n in input_shape)
    # kernels start at 3 taps on the longest axis: the cut-off is relative to the input's extent
    # (3 / N lies between the 3- and 5-tap cut-offs 2 / N and 4 / N)
    cutoff = min(cfg.init_kernel_cutoff, 3.0 / max(shape))
    per_stage = cfg.stage_blocks
    given = (overrides or {}).get("net.stage_blocks")
    if given is not None and "net.blocks" not in (overrides or {}):
        # a bad value is refused, with its own message, where the override is applied
        with contextlib.suppress(ValueError):
            per_stage = max(1, int(str(given)))
    gain = 0.0 if name == "seq-stages" and max(shape) > LONG_SEQUENCE else cfg.init_kernel_gain
    return replace(
        cfg, blocks=stage_count(shape) * per_stage, init_kernel_cutoff=cutoff, init_kernel_gain=gain
    )


def preset_for(ndim: int, task: str = "classify") -> str:
    """Name of the preset for data with ``ndim`` spatial axes and ``task``: to classify,
    ``seq-stages`` (1D) and ``image-stages`` (2D and 3D), which match or beat the plain CNN at equal
    MACs where ``seq`` and ``image`` lost to it by 2-17 points (README, Results); per position,
    ``seq-dense`` for 1D, ``image-pyramid`` to segment 2D (where it beats ``image``: README, Dense
    prediction) and ``image-dense`` to regress 2D (where it beats ``image`` and ``image-pyramid``:
    docs/results.md). Each choice is the one measured best where it was measured."""
    if task == "classify":
        return "seq-stages" if ndim == 1 else "image-stages"
    if ndim == 1:
        return "seq-dense"
    return "image-pyramid" if task == "segment" else "image-dense"
