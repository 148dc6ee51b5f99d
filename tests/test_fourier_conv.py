"""Fourier crop/pad and the two depthwise conv backends against references."""

import pytest
import torch
import torch.nn.functional as F

from dnarch.functional import conv as fconv
from dnarch.functional import fourier


def _masked_full(x: torch.Tensor, keep: tuple[int, ...]) -> torch.Tensor:
    """Reference: zero every bin above ``keep`` and invert at the full size."""
    dims = tuple(range(2, x.ndim))
    spec = torch.fft.rfftn(x, dim=dims, norm="forward")
    m = torch.ones(spec.shape[2:], dtype=torch.bool)
    for axis, (n, k) in enumerate(zip(x.shape[2:], keep, strict=True)):
        idx = fourier.bin_indices(n, last=axis == x.ndim - 3).abs() <= k
        shape = [1] * m.ndim
        shape[axis] = -1
        m = m & idx.reshape(shape)
    return torch.fft.irfftn(spec * m, s=x.shape[2:], dim=dims, norm="forward")


@pytest.mark.parametrize(
    "shape,keep",
    [((40,), (7,)), ((41,), (20,)), ((40,), (19,)), ((12, 9), (3, 2)), ((7, 8), (1, 3))],
)
def test_crop_then_upsample_equals_masked_full_resolution(shape, keep) -> None:
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    small = fourier.lowpass_crop(x, keep)
    assert small.shape[2:] == tuple(
        fourier.output_length(n, k) for n, k in zip(shape, keep, strict=True)
    )
    back = fourier.fourier_upsample(small, shape)
    assert torch.allclose(back, _masked_full(x, keep), atol=1e-12)


@pytest.mark.parametrize("shape", [(40,), (41,), (1,), (2,), (8, 6), (5, 1)])
def test_crop_keeping_everything_is_identity(shape) -> None:
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    keep = tuple(n // 2 for n in shape)
    assert torch.allclose(fourier.lowpass_crop(x, keep), x, atol=1e-12)


def test_crop_preserves_constants_and_mean() -> None:
    x = torch.full((1, 2, 30), 3.5, dtype=torch.float64)
    assert torch.allclose(
        fourier.lowpass_crop(x, (4,)), torch.full((1, 2, 9), 3.5, dtype=torch.float64)
    )
    y = torch.randn(1, 2, 30, dtype=torch.float64)
    assert torch.allclose(fourier.lowpass_crop(y, (4,)).mean(-1), y.mean(-1))


@pytest.mark.parametrize(
    "shape,kernel",
    [((40,), (39,)), ((40,), (3,)), ((1,), (1,)), ((12, 9), (11, 3)), ((5, 7), (5, 7))],
)
def test_backends_agree_with_conv(shape, kernel) -> None:
    c = 3
    x = torch.randn(2, c, *shape, dtype=torch.float64)
    w = torch.randn(c, *kernel, dtype=torch.float64)
    b = torch.randn(c, dtype=torch.float64)
    conv = F.conv1d if len(shape) == 1 else F.conv2d
    ref = conv(x, w.unsqueeze(1), b, padding=[k // 2 for k in kernel], groups=c)
    for backend in ("direct", "fft", "auto"):
        out = fconv.depthwise_conv(x, w, b, backend)
        assert torch.allclose(out, ref, atol=1e-10), backend


def test_conv_rejects_even_or_oversized_kernels() -> None:
    x = torch.randn(1, 2, 5)
    with pytest.raises(ValueError):
        fconv.depthwise_direct(x, torch.randn(2, 4))
    with pytest.raises(ValueError):
        fconv.depthwise_fft(x, torch.randn(2, 7))
    with pytest.raises(ValueError):
        fconv.depthwise_conv(x, torch.randn(2, 3), backend="winograd")


def test_auto_backend_picks_the_measured_faster_one(monkeypatch) -> None:
    x, w = torch.randn(2, 4, 30), torch.randn(4, 15)
    for fast in ("direct", "fft"):
        v = fconv.Verdicts()
        calls = []

        def fake_time(fn, device, repeats=3, fast=fast, calls=calls):
            calls.append(fn)
            return 1.0 if (len(calls) == 1) == (fast == "direct") else 2.0  # direct is timed first

        monkeypatch.setattr(fconv, "_time", fake_time)
        assert fconv.choose_backend(x, w, v) == fast and len(calls) == 2
        assert fconv.choose_backend(torch.randn(7, 4, 30), w, v) == fast and len(calls) == 2  # kept
    assert fconv.choose_backend(x, torch.randn(4, 3), fconv.Verdicts()) == "direct"  # 3 taps


def test_fft_conv_is_exact_for_every_small_size() -> None:
    # the circular length S + K//2 (rounded up to a fast length) must never alias into the output
    for s in range(1, 24):
        for k in range(1, s + 1, 2):
            x = torch.randn(1, 2, s, dtype=torch.float64)
            w = torch.randn(2, k, dtype=torch.float64)
            ref = F.conv1d(x, w.unsqueeze(1), padding=k // 2, groups=2)
            assert torch.allclose(fconv.depthwise_fft(x, w), ref, atol=1e-10), (s, k)


def test_fast_length_is_the_next_3_smooth_number() -> None:
    def smooth(n: int) -> bool:
        for p in (2, 3):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 2000):
        m = fconv.fast_length(n)
        assert m >= n and smooth(m) and not any(smooth(j) for j in range(n, m)), n


def test_auto_backend_skips_timing_when_the_count_decides(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(fconv, "_time", lambda *a, **k: calls.append(1) or 1.0)
    v = fconv.Verdicts()
    assert fconv.choose_backend(torch.randn(2, 4, 1500), torch.randn(4, 1499), v) == "fft"
    assert fconv.choose_backend(torch.randn(2, 4, 28, 28), torch.randn(4, 3, 3), v) == "direct"
    assert calls == []
    # kernel sizes within a quarter octave share one verdict: one measurement for 15 and 17 taps
    x = torch.randn(2, 4, 30)
    fconv.choose_backend(x, torch.randn(4, 15), v)
    fconv.choose_backend(x, torch.randn(4, 17), v)
    assert len(calls) == 2  # direct and fft, timed once


@pytest.mark.parametrize(
    "shape,kernel",
    [
        ((40,), (39,)),
        ((40,), (3,)),
        ((1,), (1,)),
        ((12, 9), (11, 3)),
        ((5, 7), (5, 7)),
        ((6, 5, 4), (3, 5, 3)),
    ],
)
def test_fft_conv_gradients_equal_the_direct_convs(shape, kernel) -> None:
    # the FFT backend's backward pass is written out: it must give autograd's gradients
    c = 3
    x = torch.randn(2, c, *shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c, *kernel, dtype=torch.float64, requires_grad=True)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(shape)]
    ref = conv(x, w.unsqueeze(1), padding=[k // 2 for k in kernel], groups=c)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, w), g)
    got = torch.autograd.grad(fconv.depthwise_fft(x, w), (x, w), g)
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    nd = len(shape)
    small = torch.randn(1, 2, *[4] * nd, dtype=torch.float64, requires_grad=True)
    kern = torch.randn(2, *[3] * nd, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fconv.depthwise_fft, (small, kern))


@pytest.mark.parametrize(
    "shape,keep",
    [
        ((40,), (7,)), ((41,), (20,)), ((40,), (19,)), ((40,), (20,)), ((12, 9), (3, 2)),
        ((7, 8), (1, 3)), ((8, 6), (4, 3)), ((8, 6), (4, 1)), ((9, 8), (2, 4)),
        ((6, 5, 4), (1, 2, 2)), ((6, 5, 4), (3, 2, 2)),
    ],
)  # fmt: skip
def test_band_crop_equals_the_autograd_crop_in_value_and_gradients(shape, keep) -> None:
    # the straight-through crop's backward pass is written out: the input's gradient (the crop's
    # adjoint, or the identity) and the mask's gradients must be autograd's through lowpass_crop
    # multiplying the kept spectrum by factors that are 1 in value. The factors are functions of
    # |frequency|, as the resolution mask is (an uncropped axis that is not the last shares each
    # +-k pair's gradient equally, see fourier.marginal_powers)
    x = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    raw, factors = [], []
    for a, (n, k) in enumerate(zip(shape, keep, strict=True)):
        last = a == len(shape) - 1
        freq = fourier.bin_indices(n, last=last).abs()[fourier.kept_bins(n, k, last=last)]
        raw.append(torch.rand(n // 2 + 1, dtype=torch.float64, requires_grad=True))
        factors.append(raw[-1][freq])
    ones = [(f - f.detach()) + 1.0 for f in factors]
    ref = fourier.lowpass_crop(x, keep, ones)
    out = fourier.band_crop(x, keep, ones)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, [x, *raw], g, retain_graph=True)
    got = torch.autograd.grad(out, [x, *raw], g)
    for a, b in zip(want, got, strict=True):
        assert a.abs().max() > 0.1 and torch.allclose(a, b, atol=1e-12)


def test_training_times_forward_and_backward_with_its_own_verdict(monkeypatch) -> None:
    # a direct depthwise conv's backward pass is slow on a CPU: in training the choice is timed on
    # forward + backward, cached apart from the inference verdict; only 3-tap kernels skip timing
    calls = []

    def fake_time(fn, device, repeats=3):
        calls.append(fn())
        return 1.0 if len(calls) % 2 == 0 else 2.0  # the second timed (fft) wins

    monkeypatch.setattr(fconv, "_time", fake_time)
    v = fconv.Verdicts()
    x, w = torch.randn(2, 4, 30, requires_grad=True), torch.randn(4, 9, requires_grad=True)
    assert fconv.choose_backend(x, w, v) == "fft" and len(calls) == 2
    assert isinstance(calls[0], tuple) and calls[0][1].shape == w.shape  # (grad x, grad w)
    with torch.no_grad():
        assert fconv.choose_backend(x, w, v) == "direct" and len(calls) == 2  # 9 taps: no timing
    assert fconv.choose_backend(x, torch.randn(4, 3, requires_grad=True), v) == "direct"
    assert len(calls) == 2


@pytest.mark.parametrize(
    "shape,keep",
    [((40,), (7,)), ((41,), (20,)), ((12, 9), (3, 2)), ((7, 8), (1, 3)), ((6, 5, 4), (1, 2, 2))],
)
def test_crop_by_matrices_equals_the_spectral_crop_in_value_and_gradient(shape, keep) -> None:
    # a fixed crop (no learned cut-off) runs as one matrix per axis: the same linear map
    x = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    mats = [fourier.resample_matrix(n, k, torch.float64) for n, k in zip(shape, keep, strict=True)]
    ref = fourier.lowpass_crop(x, keep)
    out = fourier.apply_matrices(x, mats)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
    g = torch.randn_like(ref)
    (want,) = torch.autograd.grad(ref, x, g)
    (got,) = torch.autograd.grad(out, x, g)
    assert torch.allclose(want, got, atol=1e-12)
    # an axis given None keeps its size
    part = fourier.apply_matrices(x, [None, *mats[1:]])
    assert torch.allclose(part, fourier.lowpass_crop(x, (shape[0] // 2, *keep[1:])), atol=1e-12)


@pytest.mark.parametrize("learned", [False, True])
def test_a_fixed_resolution_resamples_as_the_learned_one(learned) -> None:
    # FourierResolution takes the matrix path when no gradient reaches its cut-off: the same
    # output as the straight-through spectral crop, and the cut-off's gradient only where learned
    from dnarch.nn.resolution import FourierResolution

    res = FourierResolution((28, 20), 1.0, 0.1, init_cutoff=0.45)
    res.mask.mu.requires_grad_(learned)
    x = torch.randn(2, 3, 28, 20, requires_grad=True)
    out, _ = res(x, None)
    mu, keep = res.plan((28, 20), None)
    assert out.shape[2:] == tuple(2 * k + 1 for k in keep) != (28, 20)
    assert torch.allclose(out, fourier.lowpass_crop(x, keep), atol=1e-5)
    out.square().sum().backward()
    assert x.grad is not None and (res.mask.mu.grad is not None) == learned


def test_a_model_keeps_its_own_backend_verdicts_and_no_module_state_changes() -> None:
    import sys

    from dnarch.models import PRESETS, build_model

    def module_state() -> dict[str, int]:
        """The size of every module-level dict, list and set of the package."""
        out = {}
        for name, mod in list(sys.modules.items()):
            if name.startswith("dnarch"):
                for key, value in vars(mod).items():
                    if isinstance(value, (dict, list, set)) and not key.startswith("__"):
                        out[f"{name}.{key}"] = len(value)
        return out

    a = build_model(PRESETS["seq"], 1, 3, (30,))
    b = build_model(PRESETS["seq"], 1, 3, (30,))
    before = module_state()
    a(torch.randn(2, 1, 30)).sum().backward()
    assert module_state() == before  # the verdicts went into the model, not into a module
    assert a.verdicts.state() and not b.verdicts.state()
    assert all(blk.conv.verdicts is a.verdicts for blk in a.block_list())
