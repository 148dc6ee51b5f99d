"""The maximal network is the largest this architecture holds: the ceiling copy, as cropped.

Every mask setting the search can reach (mask parameters anywhere inside their projected bounds)
costs at most the maximal network's MACs, and its parameters too unless a learned resolution
widens the blocks as it falls; the maximal network's estimate equals the
FLOP counter on its export; where the resolution is learned it is the full-resolution network, and
on a fixed pyramid it keeps the pyramid with its stretched widths.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dnarch.cost import model_cost
from dnarch.export import build_static, export_state, harden
from dnarch.functional import masks as fm
from dnarch.models import build_model, preset_net
from tests.conftest import shrunk_model

CASES = [
    # (shape, downsample, stage_blocks, widen, axes)
    ((24,), "fourier", 1, 1.0, ("kernel", "width", "resolution", "depth")),
    ((24,), "fourier", 1, 1.0, ("kernel", "width", "resolution", "depth", "groups")),
    ((24,), "fourier", 1, 3.0, ("kernel", "width", "resolution", "depth")),
    ((24,), "strided", 1, 4.0, ("kernel", "width", "depth")),
    ((24,), "strided", 2, 4.0, ("kernel", "width", "depth")),
    ((24,), "strided-mix", 1, 4.0, ("kernel", "width", "depth")),
    ((12, 10), "fourier", 2, 4.0, ("kernel", "width", "depth")),
    ((12, 10), "fourier", 1, 2.0, ("kernel", "width", "resolution", "depth")),
]


def _random_state(m: torch.nn.Module, g: torch.Generator) -> None:
    """Every learned mask parameter anywhere inside its projected bounds."""
    with torch.no_grad():
        for p in m.arch_parameters():
            p.mul_(torch.rand(p.shape, generator=g) * 3)
        m.project_arch_()


@pytest.mark.parametrize("shape, down, stages, widen, axes", CASES)
def test_no_reachable_network_costs_more_than_the_maximal(
    shape: tuple[int, ...], down: str, stages: int, widen: float, axes: tuple[str, ...]
) -> None:
    m = shrunk_model(shape, 0, axes=axes, downsample=down, stage_blocks=stages, widen=widen)
    top = model_cost(m, "max")
    ceiling = model_cost(m.ceiling_copy(), "hard")
    assert float(top.macs) == float(ceiling.macs) and float(top.params) == float(ceiling.params)
    g = torch.Generator().manual_seed(1)
    for _ in range(25):
        _random_state(m, g)
        hard = model_cost(m, "hard")
        assert float(hard.macs) <= float(top.macs)
        if widen == 1 or "resolution" not in axes:
            # (a learned resolution that falls widens the blocks: more parameters, fewer MACs)
            assert float(hard.params) <= float(top.params)


@pytest.mark.parametrize("shape, down, stages, widen, axes", CASES)
def test_maximal_estimate_equals_the_flop_counter(
    shape: tuple[int, ...], down: str, stages: int, widen: float, axes: tuple[str, ...]
) -> None:
    m = shrunk_model(shape, 2, axes=axes, downsample=down, stage_blocks=stages, widen=widen)
    big = m.ceiling_copy()
    spec = harden(big)
    static = build_static(spec, export_state(big, spec))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        static(torch.randn(1, spec.in_channels, *spec.input_shape))
    assert counter.get_total_flops() / 2 == float(model_cost(m, "max").macs)
    assert sum(p.numel() for p in static.parameters()) == float(model_cost(m, "max").params)


def test_learned_resolution_maximal_is_the_full_resolution_network() -> None:
    """Every block at the input's resolution, every kernel spanning it, the configured widths."""
    m = shrunk_model((24,), 0, widen=3.0)
    for p in m.ceiling_copy().hard_plan():
        assert p.resolution_out == (24,) and p.kernel == (fm.max_kernel_size(24),)
        assert p.width == 12 and p.hidden == 10 and p.kept


def test_fixed_pyramid_maximal_keeps_the_pyramid_and_its_stretched_widths() -> None:
    """MNIST-1D's seq-stages: blocks at 40, 20, 10, 5 samples, widths up to 4x, kernels over a
    quarter of each map (``net.kernel_ceiling``)."""
    m = build_model(preset_net("seq-stages", (40,)), 1, 10, (40,))
    plan = m.ceiling_copy().hard_plan()
    assert [p.resolution_out for p in plan] == [(40,), (20,), (10,), (5,)]
    assert [p.kernel for p in plan] == [(11,), (5,), (3,), (3,)]
    assert [p.kernel for p in plan] == [(fm.hard_kernel_size(0.25, n),) for n in (40, 20, 10, 5)]
    # 24 and 48 channels times min(4, sqrt(40 / n)), rounded down
    assert [p.width for p in plan] == [24, 33, 48, 67]
    assert [p.hidden for p in plan] == [48, 67, 96, 135]
    assert float(model_cost(m, "max").macs) >= float(model_cost(m, "hard").macs)


def test_the_report_s_ceiling_per_panel_is_the_largest_block_of_the_maximal_network() -> None:
    from dnarch.export import harden
    from dnarch.report import maximal_sizes

    m = build_model(preset_net("seq-stages", (40,)), 1, 10, (40,))
    sizes = maximal_sizes(harden(m.ceiling_copy()))
    assert sizes == {"kernel": [11.0], "res_out": [40.0], "hidden": [135.0], "depth": [1.0]}


@pytest.mark.parametrize("down, stages", [("strided", 1), ("fourier", 2)])
def test_kernel_ceiling_bounds_every_kernel_and_the_maximal_network(down: str, stages: int) -> None:
    """With ``net.kernel_ceiling`` = 0.25 the maximal network's kernels span a quarter of their
    maps (``hard_kernel_size(0.25, n)``), no reachable kernel is longer, and the maximal network's
    estimate still equals the FLOP counter on its export."""
    kw = {"axes": ("kernel", "width", "depth"), "downsample": down, "stage_blocks": stages}
    m = shrunk_model((40,), 2, widen=2.0, kernel_ceiling=0.25, **kw)  # type: ignore[arg-type]
    whole = shrunk_model((40,), 2, widen=2.0, **kw)  # type: ignore[arg-type]
    big = m.ceiling_copy()
    plan = big.hard_plan()
    for p in plan:
        assert p.kernel == (fm.hard_kernel_size(0.25, p.resolution_out[0]),)
    assert plan[0].kernel[0] < fm.max_kernel_size(plan[0].resolution_out[0])
    assert float(model_cost(m, "max").macs) < float(model_cost(whole, "max").macs)
    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        _random_state(m, g)
        for p, top in zip(m.hard_plan(), big.hard_plan(), strict=True):
            assert p.kernel[0] <= top.kernel[0]
    spec = harden(big)
    static = build_static(spec, export_state(big, spec))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        static(torch.randn(1, spec.in_channels, *spec.input_shape))
    assert counter.get_total_flops() / 2 == float(model_cost(m, "max").macs)
