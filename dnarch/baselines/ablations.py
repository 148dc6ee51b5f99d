"""Ablations as configs: the maximal network with every axis frozen, or with one axis learned alone."""

from __future__ import annotations

from dataclasses import replace

from dnarch.config import NetConfig

AXES = ("kernel", "width", "resolution", "depth")


def frozen_net(net: NetConfig) -> NetConfig:
    """``net`` with no axis learned: the maximal network, trained as a fixed architecture."""
    return replace(
        net,
        init_resolution=1.0,
        learn_kernel=False,
        learn_width=False,
        learn_resolution=False,
        learn_depth=False,
        learn_groups=False,
    )


def ablation_net(net: NetConfig, axis: str) -> NetConfig:
    """``net`` learning only ``axis`` (one of ``AXES``); the others stay at their maximum (grouping off)."""
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; choose one of {', '.join(AXES)}")
    flags: dict[str, bool] = {f"learn_{axis}": True}
    return replace(frozen_net(net), **flags)  # type: ignore[arg-type]
