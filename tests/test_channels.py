"""The channel-axis helpers: 1x1 layers by both of their products against the convolution, and
``leading`` slices."""

import math

import pytest
import torch
import torch.nn.functional as F

from dnarch.functional.channels import (
    FEW_POSITIONS,
    TIMED_POSITIONS,
    choose_product,
    conv1x1,
    leading,
)
from dnarch.functional.conv import Verdicts


@pytest.mark.parametrize(
    "spatial",
    [(5,), (FEW_POSITIONS - 1,), (FEW_POSITIONS,), (100,), (7, 7), (8, 8), (2, 3, 4)],
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv1x1_equals_the_convolution_forward_and_backward(spatial, bias) -> None:
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(spatial)]
    x = torch.randn(3, 4, *spatial, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if bias else None
    grad = torch.randn(3, 6, *spatial, dtype=torch.float64)
    ours = conv1x1(x, w, b)
    ref = conv(x, w.reshape(6, 4, *([1] * len(spatial))), b)
    assert ours.shape == ref.shape and ours.is_contiguous()
    assert torch.allclose(ours, ref, atol=1e-12)
    inputs = (x, w) if b is None else (x, w, b)
    got = torch.autograd.grad(ours, inputs, grad)
    want = torch.autograd.grad(ref, inputs, grad)
    for g, r in zip(got, want, strict=True):
        assert torch.allclose(g, r, atol=1e-12)
    # the layers below get a gradient in the ordinary layout, not a transposed one
    assert got[0].is_contiguous()


def test_conv1x1_on_few_positions_passes_gradcheck() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv1x1, (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: conv1x1(x, w, None), (x, w))


def test_leading_is_the_slice_and_the_tensor_itself_when_whole() -> None:
    t = torch.arange(12.0).reshape(3, 4)
    assert leading(t, 3, 4) is t
    assert leading(t, 5) is t
    assert leading(t, None) is t
    assert leading(t, None, 4) is t
    assert torch.equal(leading(t, 2), t[:2])
    assert torch.equal(leading(t, 2, 3), t[:2, :3])
    assert torch.equal(leading(t, None, 1), t[:, :1])


@pytest.mark.parametrize("spatial", [(5,), (7, 7), (300,)])
def test_conv1x1_with_verdicts_keeps_one_timed_choice_and_the_same_function(spatial) -> None:
    verdicts = Verdicts()
    x = torch.randn(4, 6, *spatial, requires_grad=True)
    w = torch.randn(5, 6, requires_grad=True)
    out = conv1x1(x, w, None, verdicts)
    ref = conv1x1(x, w, None)
    assert torch.allclose(out, ref, atol=1e-5)
    # a product was chosen for the shape class (timed where it has few positions), and kept
    positions = math.prod(spatial)
    kept = [v for k, v in verdicts.cache.items() if k[3][0] == "product"]
    assert kept == ([] if positions > TIMED_POSITIONS else [kept[0]])
    assert all(v in ("positions", "batched") for v in kept)
    conv1x1(x, w, None, verdicts)
    assert len(verdicts.cache) == len(kept)


def test_choose_product_under_deterministic_algorithms_is_the_rule() -> None:
    verdicts = Verdicts()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        few = torch.randn(2, 3, FEW_POSITIONS - 1)
        many = torch.randn(2, 3, FEW_POSITIONS)
        w = torch.randn(4, 3)
        assert choose_product(few, w, verdicts) == "positions"
        assert choose_product(many, w, verdicts) == "batched"
    finally:
        torch.use_deterministic_algorithms(previous)
