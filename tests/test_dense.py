"""The dense head (per-position outputs): shapes, gradients, the exported network against the masked
one, and the cost estimate against the FLOP counter, with and without learned downsampling."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dnarch.config import NetConfig
from dnarch.cost import budget_penalty, model_cost
from dnarch.export import ArchSpec, build_static, export_state, harden
from dnarch.functional import fourier
from dnarch.models import build_model
from tests.conftest import shrunk_model

SHAPES = [(40,), (33,), (12, 9), (10, 10)]


def _counted_macs(static: torch.nn.Module, spec: ArchSpec) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        static(torch.randn(1, spec.in_channels, *spec.input_shape))
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("task", ["segment", "regress"])
@pytest.mark.parametrize("shape", [(40,), (10, 12)])
def test_dense_output_shape_and_every_parameter_gets_a_gradient(task, shape) -> None:
    torch.manual_seed(0)
    cfg = NetConfig(width=8, hidden=8, blocks=3, kernel_hidden=8)
    m = build_model(cfg, 2, 4, shape, task)
    out = m(torch.randn(6, 2, *shape))
    assert out.shape == (6, 4, *shape)
    cost = model_cost(m, "straight_through").macs
    (out.square().mean() + budget_penalty(cost, 0.5 * float(cost.detach()), 1.0)).backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    for p in m.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_exported_dense_network_equals_the_masked_one(shape, seed, skip) -> None:
    m = shrunk_model(shape, seed, task="segment", skip=skip)
    spec = harden(m)
    static = build_static(spec, export_state(m, spec))
    x = torch.randn(5, 2, *shape)
    with torch.no_grad():
        a, b = m(x), static(x)
    assert a.shape == b.shape == (5, 5, *shape)
    assert ((a - b).abs().max() / a.abs().max()) < 1e-4


def test_dense_models_really_downsample_and_upsample() -> None:
    """The equality above must cover networks whose head upsamples, on every axis."""
    upsampled = set()
    for shape in SHAPES:
        for seed in range(4):
            m = shrunk_model(shape, seed, task="segment")
            spec = harden(m)
            upsampled |= {
                i for i, (h, n) in enumerate(zip(spec.head_in, shape, strict=True)) if h < n
            }
    assert upsampled == {0, 1}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_cost_estimate_equals_the_flop_counter(shape, seed) -> None:
    m = shrunk_model(shape, seed, task="segment")
    spec = harden(m)
    static = build_static(spec, export_state(m, spec))
    hard = model_cost(m, "hard")
    assert float(hard.macs) == _counted_macs(static, spec)
    assert int(hard.params) == sum(p.numel() for p in static.parameters())
    st = model_cost(m, "straight_through")
    assert float(st.macs.detach()) == pytest.approx(float(hard.macs))


def test_dense_maximal_cost_by_hand() -> None:
    m = build_model(NetConfig(width=8, hidden=16, blocks=2), 1, 3, (40,), "segment")
    # stem, 2 x (dw 39 taps + 2 pointwise), head: 1x1 conv at every position, no upsampling
    want = 40 * 8 + 2 * (40 * 8 * 39 + 2 * 40 * 8 * 16) + 40 * 8 * 3
    assert float(model_cost(m, "max").macs) == want


def test_upsample_matrix_is_fourier_zero_padding() -> None:
    for n, size in [(5, 12), (7, 7), (9, 40), (3, 8)]:
        x = torch.randn(4, 3, n, dtype=torch.float64)
        u = fourier.upsample_matrix(n, size, dtype=torch.float64)
        assert torch.allclose(x @ u.T, fourier.fourier_upsample(x, (size,)), atol=1e-12)
        # a crop back to n undoes it exactly (n odd: every kept bin has its conjugate partner)
        if n % 2 == 1 and size > n:
            assert torch.allclose(fourier.lowpass_crop(x @ u.T, ((n - 1) // 2,)), x, atol=1e-10)


def test_dense_spec_round_trips_through_json() -> None:
    spec = harden(shrunk_model((12, 9), 1, task="segment", skip=False))
    back = ArchSpec.from_json(spec.to_json())
    assert back == spec and back.dense and not back.dense_skip
