"""Presets: sensible maximal networks for sequences, for small images, and for 1D and 2D dense tasks."""

from __future__ import annotations

from dnarch.config import NetConfig

PRESETS: dict[str, NetConfig] = {
    # MNIST-1D-sized sequences (length ~40..1000)
    "seq": NetConfig(width=32, hidden=64, blocks=6),
    # 1D per-position tasks (the auto choice): "seq" with a directly learned 3-tap centre in every
    # depthwise kernel. Measured on mnist1d-steps and mnist1d-denoise (README, Dense prediction).
    "seq-dense": NetConfig(width=32, hidden=64, blocks=6, direct_kernel=3),
    # small images (8x8..32x32): fewer blocks, lower SIREN frequency for the 2D kernel
    "image": NetConfig(width=32, hidden=64, blocks=4, omega0=20.0),
    # 2D segmentation (the auto choice): "image" on a fixed pyramid (each block halves the cut-off)
    # whose widths grow as the resolution falls (up to 4x), and a directly learned 3x3 centre in
    # every depthwise kernel; kernels, widths and depth are learned, the resolution is not.
    # Measured on fashion-scenes at 10 and 30 epochs (README, Dense prediction).
    "image-pyramid": NetConfig(
        width=32,
        hidden=64,
        blocks=4,
        omega0=20.0,
        widen=4.0,
        init_resolution=0.5,
        learn_resolution=False,
        direct_kernel=3,
    ),  # fmt: skip
}


def preset_for(ndim: int, task: str = "classify") -> str:
    """Name of the preset for data with ``ndim`` spatial axes and ``task``: for 1D, ``seq`` to
    classify and ``seq-dense`` per position; for 2D, ``image-pyramid`` to segment (where it beats
    ``image``: README, Dense prediction) and ``image`` otherwise. Each choice is the one measured
    best where it was measured; the others keep METHOD.md's network."""
    if ndim == 1:
        return "seq" if task == "classify" else "seq-dense"
    return "image-pyramid" if task == "segment" else "image"
