"""The channel-axis helpers: 1x1 layers by both of their products against the convolution, and
``leading`` slices; the two 1x1 layers and GELU between them as one function."""

import pytest
import torch
import torch.nn.functional as F

from dnarch.functional.channels import FEW_POSITIONS, conv1x1, leading, mlp_fuses, pointwise_mlp


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


def test_conv1x1_on_few_positions_under_bfloat16_autocast() -> None:
    x = torch.randn(3, 4, 5, requires_grad=True)
    w = torch.randn(6, 4, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv1x1(x, w, b)
    assert out.dtype == torch.bfloat16
    ref = F.conv1d(x, w[:, :, None], b)
    assert torch.allclose(out.float(), ref, atol=0.1, rtol=0.05)
    out.float().sum().backward()
    assert x.grad is not None and w.grad is not None and b.grad is not None
    assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == (torch.float32,) * 3


def _reference_mlp(x, w1, b1, w2, b2):
    """1x1 convolution, GELU, 1x1 convolution, by ``F.convNd``."""
    conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
    ones = [1] * (x.dim() - 2)
    h = F.gelu(conv(x, w1.reshape(*w1.shape, *ones), b1))
    return conv(h, w2.reshape(*w2.shape, *ones), b2)


@pytest.mark.parametrize(
    "spatial", [(5,), (FEW_POSITIONS - 1,), (FEW_POSITIONS,), (7, 7), (2, 3, 4)]
)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("fold", [False, True])  # GELU on the input and a residual sum
def test_pointwise_mlp_equals_its_layers_forward_and_backward(spatial, bias, fold) -> None:
    x = torch.randn(3, 4, *spatial, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    b1 = torch.randn(7, dtype=torch.float64, requires_grad=True) if bias else None
    b2 = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    res = torch.randn(3, 5, *spatial, dtype=torch.float64, requires_grad=True) if fold else None
    # one function below FEW_POSITIONS, the layers apart from it
    assert mlp_fuses(x) == (torch.Size(spatial).numel() < FEW_POSITIONS)
    grad = torch.randn(3, 5, *spatial, dtype=torch.float64)
    ours = pointwise_mlp(x, w1, b1, w2, b2, act_in=fold, residual=res)
    ref = _reference_mlp(F.gelu(x) if fold else x, w1, b1, w2, b2)
    ref = ref if res is None else res + ref
    assert ours.shape == ref.shape and ours.is_contiguous()
    assert torch.allclose(ours, ref, atol=1e-12)
    inputs = tuple(t for t in (x, w1, b1, w2, b2, res) if t is not None)
    got = torch.autograd.grad(ours, inputs, grad)
    want = torch.autograd.grad(ref, inputs, grad)
    for g, r in zip(got, want, strict=True):
        assert torch.allclose(g, r, atol=1e-12)
    assert got[0].is_contiguous()
    with torch.no_grad():  # without gradients: the forward pass alone, the same values
        out = pointwise_mlp(x, w1, b1, w2, b2, act_in=fold, residual=res)
        assert out.is_contiguous() and torch.allclose(out, ref, atol=1e-12)
        assert torch.equal(out, ours.detach())


def test_pointwise_mlp_passes_gradcheck_with_some_inputs_fixed() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b1 = torch.randn(5, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pointwise_mlp, (x, w1, b1, w2, b2))
    # a frozen first layer and input (only some gradients asked for)
    assert torch.autograd.gradcheck(
        lambda w2, b2: pointwise_mlp(x.detach(), w1.detach(), None, w2, b2), (w2, b2)
    )
    assert torch.autograd.gradcheck(lambda x: pointwise_mlp(x, w1, b1, w2, None), (x,))
    res = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w1, res: pointwise_mlp(x, w1, b1, w2, b2, act_in=True, residual=res),
        (x, w1, res),
    )


def test_pointwise_mlp_under_bfloat16_autocast() -> None:
    x = torch.randn(3, 4, 5, requires_grad=True)
    w1, b1 = torch.randn(6, 4, requires_grad=True), torch.randn(6, requires_grad=True)
    w2, b2 = torch.randn(4, 6, requires_grad=True), torch.randn(4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pointwise_mlp(x, w1, b1, w2, b2)
    assert out.dtype == torch.bfloat16
    ref = _reference_mlp(x, w1, b1, w2, b2)
    assert torch.allclose(out.float(), ref, atol=0.2, rtol=0.05)
    out.float().sum().backward()
    grads = [t.grad for t in (x, w1, b1, w2, b2)]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    # GELU on the input and a float32 residual: the sum in float32, every gradient in its dtype
    res = torch.randn(3, 4, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pointwise_mlp(x, w1, b1, w2, b2, act_in=True, residual=res)
    assert out.dtype == torch.float32
    ref = res + _reference_mlp(F.gelu(x), w1, b1, w2, b2)
    assert torch.allclose(out, ref, atol=0.2, rtol=0.05)
    x.grad = None
    want = torch.autograd.grad(ref.sum(), x)[0]
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and res.grad is not None
    assert torch.allclose(x.grad, want, atol=0.2, rtol=0.05)


@pytest.mark.parametrize(
    ("shape", "widen", "downsample"),
    [((40,), 1.0, "fourier"), ((24,), 2.0, "strided"), ((6, 7), 1.0, "fourier")],
)
def test_a_training_step_is_the_same_with_the_layers_fused_or_apart(
    shape, widen, downsample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a masked network (masks folded into the 1x1 weights, cropped widths) and in its exported
    network, the fused 1x1 layers give the loss and every gradient of the layers run apart."""
    import dnarch.functional.channels as channels
    from dnarch.export import build_static, export_state, harden
    from tests.conftest import shrunk_model

    model = shrunk_model(shape, seed=3, widen=widen, downsample=downsample).train()
    spec = harden(model)
    static = build_static(spec, {k: v.detach() for k, v in export_state(model, spec).items()})
    x = torch.randn(4, 2, *shape)
    for net in (model, static.train()):
        results = []
        for fused in (True, False):
            calls: list[int] = []
            apply = channels._PositionsMLP.apply

            def counted(*a, calls=calls, apply=apply):
                calls.append(1)
                return apply(*a)

            monkeypatch.setattr(channels._PositionsMLP, "apply", counted)
            if not fused:
                monkeypatch.setattr(channels, "mlp_fuses", lambda x: False)
            torch.manual_seed(0)
            net.zero_grad()
            loss = net(x).square().mean()
            loss.backward()
            assert bool(calls) == fused  # every block of these small maps runs fused
            grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
            results.append((loss.detach(), grads))
            monkeypatch.undo()
        (loss_f, grads_f), (loss_a, grads_a) = results
        assert torch.allclose(loss_f, loss_a, atol=1e-6) and len(grads_f) == len(grads_a)
        assert all(torch.allclose(f, a, atol=1e-5) for f, a in zip(grads_f, grads_a, strict=True))


def test_a_hooked_exported_block_runs_its_layers_apart() -> None:
    """Forward hooks on a block's 1x1 layers (``eval_batch`` sizes evaluation batches by them)
    see each layer's output: the block then runs them apart, with the same result."""
    from dnarch.export import build_static, export_state, harden
    from dnarch.export.static import StaticBlock
    from tests.conftest import shrunk_model

    model = shrunk_model((24,), seed=3, downsample="strided").eval()
    spec = harden(model)
    static = build_static(spec, {k: v.detach() for k, v in export_state(model, spec).items()})
    static.eval()
    x = torch.randn(4, 2, 24)
    block = next(m for m in static.modules() if isinstance(m, StaticBlock))
    seen: list[tuple[int, ...]] = []
    with torch.no_grad():
        fused = static(x)
        handle = block.pw1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
        apart = static(x)
        handle.remove()
    assert seen and seen[0][1] == block.pw1.out_channels
    assert torch.allclose(fused, apart, atol=1e-6)
