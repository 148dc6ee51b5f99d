"""Presets: sensible maximal networks for sequences and for small images."""

from __future__ import annotations

from dnarch.config import NetConfig

PRESETS: dict[str, NetConfig] = {
    # MNIST-1D-sized sequences (length ~40..1000)
    "seq": NetConfig(width=32, hidden=64, blocks=6),
    # small images (8x8..32x32): fewer blocks, lower SIREN frequency for the 2D kernel
    "image": NetConfig(width=32, hidden=64, blocks=4, omega0=20.0),
}


def preset_for(ndim: int) -> str:
    """Name of the preset for data with ``ndim`` spatial axes."""
    return "seq" if ndim == 1 else "image"
