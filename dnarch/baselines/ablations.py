"""Ablations as configs: the maximal network with every axis frozen, or with one axis learned alone."""

from __future__ import annotations

from dataclasses import replace

from dnarch.config import AXES, NetConfig


def frozen_net(net: NetConfig) -> NetConfig:
    """``net`` with no axis learned, at its maximal network (``DNArchNet.ceiling_copy``), trained as
    a fixed architecture: every kernel at its ceiling (``NetConfig.kernel_ceiling``; 1: its whole
    map), every width and block kept, a learned resolution at full resolution and a fixed pyramid
    as it is."""
    return replace(
        net,
        init_resolution=1.0 if net.learn_resolution else net.init_resolution,
        init_kernel_cutoff=net.kernel_ceiling,
        learn_kernel=False,
        learn_width=False,
        learn_resolution=False,
        learn_depth=False,
        learn_groups=False,
    )


def ablation_net(net: NetConfig, axis: str) -> NetConfig:
    """``net`` learning only ``axis`` (one of ``AXES``), from where ``net`` starts it; the others
    stay at their maximum (grouping off)."""
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; choose one of {', '.join(AXES)}")
    flags: dict[str, object] = {f"learn_{axis}": True}
    if axis == "kernel":
        flags["init_kernel_cutoff"] = net.init_kernel_cutoff
    if axis == "resolution":
        flags["init_resolution"] = net.init_resolution
    return replace(frozen_net(net), **flags)  # type: ignore[arg-type]
