"""Property tests (hypothesis) for the masks, the Fourier crop/pad and cropped-vs-masked equality."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dnarch.functional import fourier
from dnarch.functional import masks as fm
from tests.conftest import shrunk_model

lengths = st.integers(min_value=1, max_value=64)


@given(length=lengths, cutoff=st.floats(min_value=0.0, max_value=1.5))
def test_hard_kernel_size_is_odd_and_fits(length: int, cutoff: float) -> None:
    k = fm.hard_kernel_size(cutoff, length)
    assert k % 2 == 1 and 1 <= k <= length
    assert k >= min(3, fm.max_kernel_size(length))
    # every tap inside the crop lies within the cut-off, unless the floor of 3 taps keeps it
    if k > 3:
        assert (k // 2) * 2.0 / length <= cutoff + 1e-6


@given(length=lengths, data=st.data())
@settings(max_examples=60, deadline=None)
def test_crop_then_pad_is_the_masked_signal(length: int, data: st.DataObject) -> None:
    keep = data.draw(st.integers(min_value=0, max_value=length // 2))
    x = torch.randn(1, 2, length, dtype=torch.float64)
    small = fourier.lowpass_crop(x, (keep,))
    assert small.shape[-1] == fourier.output_length(length, keep) <= length
    spec = torch.fft.rfft(x, norm="forward")
    spec[..., keep + 1 :] = 0
    ref = torch.fft.irfft(spec, n=length, norm="forward")
    if small.shape[-1] < length:  # cropped: padding back recovers the masked signal
        assert torch.allclose(fourier.fourier_upsample(small, (length,)), ref, atol=1e-10)
    else:  # nothing to crop
        assert torch.allclose(small, x, atol=1e-10)


@given(
    n=st.integers(min_value=1, max_value=128),
    mu=st.floats(min_value=-0.5, max_value=1.5),
    span=st.floats(min_value=0.5, max_value=5.0),
)
def test_step_mask_count_matches_closed_form(n: int, mu: float, span: float) -> None:
    tau = fm.step_tau(span, n, 0.1)
    u = torch.arange(n, dtype=torch.float64) / n
    values = fm.sigmoid_step(u, torch.tensor(mu, dtype=torch.float64), tau)
    count = fm.hard_count(values, 0.1)
    cut = mu + torch.log(torch.tensor(9.0, dtype=torch.float64)).item() / tau
    # an entry exactly at the cut-off may round either way
    lo = sum(1 for i in range(n) if i / n <= cut - 1e-9)
    hi = sum(1 for i in range(n) if i / n <= cut + 1e-9)
    assert max(lo, 1) <= count <= max(hi, 1)


@given(
    seed=st.integers(min_value=0, max_value=10_000), length=st.integers(min_value=5, max_value=48)
)
@settings(max_examples=12, deadline=None)
def test_cropped_equals_masked_over_random_sizes(seed: int, length: int) -> None:
    m = shrunk_model((length,), seed, blocks=3)
    x = torch.randn(2, 2, length)
    with torch.no_grad():
        a, b = m(x, crop=True), m(x, crop=False)
    assert ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) < 1e-5
