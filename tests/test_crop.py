"""Dynamic cropping: the cropped network equals the uncropped masked network (eval mode)."""

import pytest
import torch

from dnarch.functional import fourier
from dnarch.nn.resolution import FourierResolution
from tests.conftest import shrunk_model

AXES = [
    ("kernel",),
    ("width",),
    ("depth",),
    ("resolution",),
    ("kernel", "width", "resolution", "depth"),
]


@pytest.mark.parametrize("shape", [(40,), (33,), (12, 9), (10, 10)])
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("seed", [0, 1])
def test_cropped_equals_masked(shape, axes, seed) -> None:
    m = shrunk_model(shape, seed, axes=axes)
    x = torch.randn(4, 2, *shape)
    with torch.no_grad():
        cropped, masked = m(x, crop=True), m(x, crop=False)
    rel = (cropped - masked).abs().max() / masked.abs().max()
    assert rel < 1e-5, float(rel)


def test_the_test_models_really_are_cropped() -> None:
    m = shrunk_model((40,), 0)
    plan = m.hard_plan()
    assert m.residual_mask.hard_count() < 12
    assert not all(p.kept for p in plan)
    assert any(p.kernel[0] < 39 for p in plan) and any(p.hidden < 10 for p in plan)
    assert any(p.resolution_out != p.resolution_in for p in plan if p.kept)


@pytest.mark.parametrize("shape", [(40,), (41,), (12, 9)])
def test_resolution_crop_is_a_band_limited_crop_with_the_masks_gradient(shape) -> None:
    """The resolution axis at the layer level. Cropping the spectrum and zero-padding it back gives the
    low-passed full-resolution signal: the kept band passes unchanged. The mask enters straight-through,
    so for a linear read-out each axis's gradient equals that of multiplying the spectrum by that axis's
    mask. (In the
    network, running below the cut-off *is* the learned downsampling, so the layer is where the cropped
    and uncropped forms can be compared.)"""
    layer = FourierResolution(shape, span=2.5, threshold=0.1).double()
    with torch.no_grad():
        layer.mask.mu.fill_(0.45)
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    y, mu = layer(x, None)
    assert y.shape[2:] != x.shape[2:]
    dims = tuple(range(2, x.ndim))
    spec = torch.fft.rfftn(x, dim=dims, norm="forward")
    _, keep = layer.plan(shape, None)
    band = None
    for axis, n in enumerate(shape):
        inside = (fourier.bin_indices(n, last=axis == len(shape) - 1).abs() <= keep[axis]).double()
        band = inside if band is None else band[..., None] * inside
    ref = torch.fft.irfftn(spec * band, s=shape, dim=dims, norm="forward")
    back = fourier.fourier_upsample(y, shape)
    assert torch.allclose(back, ref, atol=1e-10)
    g = torch.randn_like(back)
    (grad_st,) = torch.autograd.grad((back * g).sum(), layer.mask.mu)
    assert grad_st.abs().min() > 0
    for a in range(len(shape)):  # axis a's cut-off gets the gradient of multiplying by its own mask
        soft = None
        for axis, n in enumerate(shape):
            inside = (
                fourier.bin_indices(n, last=axis == len(shape) - 1).abs() <= keep[axis]
            ).double()
            vals = layer.mask.axis_values(mu, axis, n) * inside if axis == a else inside
            soft = vals if soft is None else soft[..., None] * vals
        soft_out = torch.fft.irfftn(spec * soft, s=shape, dim=dims, norm="forward")
        (grad_soft,) = torch.autograd.grad((soft_out * g).sum(), layer.mask.mu)
        assert torch.allclose(grad_st[a], grad_soft[a], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("shape", [(40,), (12, 9)])
@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_nets_batched_over_blocks_equal_each_blocks_own(shape, seed) -> None:
    """The kept blocks' kernel networks, run as one batched product on their padded positions, give
    each block's own kernel net on its own grid, and the same gradients."""
    m = shrunk_model(shape, seed, widen=2.0)
    plan = [p for p in m.hard_plan() if p.kept]
    assert len(plan) >= 2 and len({p.kernel for p in plan}) > 1  # grids of different sizes
    values = m.kernel_values(m.hard_plan())
    assert sorted(values) == [p.index for p in plan]
    blocks = m.block_list()
    weights = list(m.kernel_nets.parameters())
    own = []
    for p in plan:
        conv = blocks[p.index].conv
        assert conv.kernel_net is None and conv.shared is not None  # the model's stacked nets
        own.append(conv.shared(conv.positions(p.kernel, p.resolution_out), p.width))
        assert values[p.index].shape == own[-1].shape
        assert torch.allclose(values[p.index], own[-1], atol=1e-5, rtol=1e-5)
    probes = [torch.randn_like(v) for v in own]
    got = torch.autograd.grad(
        sum((values[p.index] * r).sum() for p, r in zip(plan, probes, strict=True)), weights,
        allow_unused=True,
    )  # fmt: skip
    want = torch.autograd.grad(
        sum((v * r).sum() for v, r in zip(own, probes, strict=True)), weights, allow_unused=True
    )
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            assert torch.allclose(g, w, atol=1e-4, rtol=1e-4)
    pos = torch.zeros(len(plan), 5, len(shape))
    out = m.kernel_nets(pos, [p.index for p in plan])
    assert out.shape == (len(plan), 5, m.kernel_nets.out.weight.shape[1])
