"""Each mask against its closed form; hard sizes at the edges."""

import math

import pytest
import torch

from dnarch.functional import masks as fm
from dnarch.nn.masks import GaussianKernelMask, LowpassMask, SigmoidStepMask

T = 0.1


def test_gaussian_closed_form_and_cutoff() -> None:
    pos = torch.linspace(-1, 1, 11)
    sigma = torch.tensor(0.3)
    assert torch.allclose(fm.gaussian(pos, sigma), torch.exp(-(pos**2) / (2 * 0.09)))
    cut = fm.gaussian_cutoff(sigma, T)
    assert math.isclose(float(cut), 0.3 * math.sqrt(-2 * math.log(T)), rel_tol=1e-6)
    assert math.isclose(float(fm.gaussian(cut, sigma)), T, rel_tol=1e-5)


def test_sigmoid_step_closed_form_and_cutoff() -> None:
    u = torch.linspace(0, 1, 17)
    mu = torch.tensor(0.4)
    assert torch.allclose(fm.sigmoid_step(u, mu, 20.0), 1 / (1 + torch.exp(-20.0 * (0.4 - u))))
    cut = fm.sigmoid_step_cutoff(mu, 20.0, T)
    assert math.isclose(float(fm.sigmoid_step(cut, mu, 20.0)), T, rel_tol=1e-5)


@pytest.mark.parametrize("span,n", [(2.5, 64), (1.5, 6), (3.0, 10)])
def test_step_tau_rises_over_span_entries(span: float, n: int) -> None:
    tau = fm.step_tau(span, n, T)
    mu = torch.tensor(0.5)
    lo = float(fm.sigmoid_step_cutoff(mu, tau, T))  # value T here
    hi = 0.5 - math.log((1 - T) / T) / tau  # value 1 - T here, by symmetry of the sigmoid
    assert math.isclose(float(fm.sigmoid_step(torch.tensor(hi), mu, tau)), 1 - T, rel_tol=1e-5)
    assert math.isclose((lo - hi) * n, span, rel_tol=1e-6)


def test_kernel_positions() -> None:
    pos = fm.kernel_positions(5, 10)
    assert torch.allclose(pos, torch.tensor([-0.4, -0.2, 0.0, 0.2, 0.4]))
    assert fm.kernel_positions(1, 1).tolist() == [0.0]
    with pytest.raises(ValueError):
        fm.kernel_positions(4, 10)


@pytest.mark.parametrize(
    "cutoff,length,expected",
    [
        (1.0, 40, 39),  # whole input, even length: largest odd size
        (1.0, 41, 41),
        (0.5, 40, 21),  # half = floor(0.5 * 20) = 10
        (0.5, 41, 21),  # floor(10.25) = 10
        (0.01, 40, 3),  # floor of 3 taps
        (0.01, 2, 1),  # no room for 3 taps
        (1.0, 1, 1),  # length 1
        (1.0, 2, 1),
        (1.0, 3, 3),
    ],
)
def test_hard_kernel_size_edges(cutoff: float, length: int, expected: int) -> None:
    assert fm.hard_kernel_size(cutoff, length) == expected


def test_hard_count_floor_and_threshold() -> None:
    v = torch.tensor([0.9, 0.5, 0.1, 0.09])
    assert fm.hard_count(v, T) == 3  # 0.1 >= T is kept
    assert fm.hard_count(torch.tensor([0.05, 0.01]), T) == 1  # floor
    assert fm.hard_count(torch.tensor([0.05]), T, floor=3) == 1  # floor capped by size


def test_gaussian_kernel_mask_values_and_hard_size() -> None:
    m = GaussianKernelMask(ndim=2, init_cutoff=0.5, min_cutoff=0.01, threshold=T)
    sizes = m.hard_sizes((40, 21))
    assert sizes == (21, 11)  # 2*floor(0.5*40/2)+1, 2*floor(0.5*21/2)+1
    vals = m.values(sizes, (40, 21))
    assert vals.shape == (21, 11)
    sigma = 0.5 / math.sqrt(-2 * math.log(T))
    p0 = fm.kernel_positions(21, 40)
    p1 = fm.kernel_positions(11, 21)
    expected = torch.exp(-(p0[:, None] ** 2 + p1[None, :] ** 2) / (2 * sigma**2))
    assert torch.allclose(vals, expected, atol=1e-6)
    # the crop is per axis (rectangular kernels): every kept tap is >= T along each axis
    assert vals[:, 5].min() >= T - 1e-6 and vals[10, :].min() >= T - 1e-6
    full = m.values(sizes, (40, 21), full=True)
    assert full.shape == (39, 21)
    assert torch.equal(full[9:30, 5:16], vals)
    assert torch.allclose(full.sum(), vals.sum())


def test_sigmoid_step_mask_counts() -> None:
    m = SigmoidStepMask(n=64, span=2.5, threshold=T)
    assert m.hard_count() == 64 and m.raw().min() >= 0.95 - 1e-6  # starts maximal
    with torch.no_grad():
        m.mu.fill_(0.5)
    cut = float(fm.sigmoid_step_cutoff(m.mu.detach(), m.tau, T))
    expected = sum(1 for i in range(64) if i / 64 <= cut)
    assert m.hard_count() == expected
    vals = m.values()
    assert (vals[expected:] == 0).all() and (vals[:expected] >= T).all()
    assert math.isclose(float(m.soft_count().detach()), float(m.raw().detach().sum()), rel_tol=1e-6)
    with torch.no_grad():
        m.mu.fill_(-5.0)
    m.project_()
    assert m.hard_count() == 1 and math.isclose(float(m.raw().detach()[0]), T, rel_tol=1e-4)


@pytest.mark.parametrize("length", [40, 41, 7, 2, 1])
def test_lowpass_mask_keep_matches_closed_form(length: int) -> None:
    m = LowpassMask(base=(length,), span=2.5, threshold=T)
    mu = torch.tensor([0.45])
    keep = m.hard_keep(mu, (length,))[0]
    cut = float(fm.sigmoid_step_cutoff(mu, m.tau[0], T)[0])
    bins = [k for k in range(length // 2 + 1) if k * 2 / length <= cut]
    assert keep == max(len(bins), min(2, length // 2 + 1)) - 1


def test_lowpass_cap_makes_resolution_non_increasing() -> None:
    m = LowpassMask(base=(40,), span=2.5, threshold=T)
    with torch.no_grad():
        m.mu.fill_(0.9)
    cap = torch.tensor([0.3])
    assert torch.equal(m.effective_mu(cap), cap)
    assert m.hard_keep(m.effective_mu(cap), (40,)) <= m.hard_keep(m.mu, (40,))


def test_gaussian_kernel_mask_ceiling() -> None:
    """``max_cutoff`` bounds the cut-off from above (``project_``) and is the maximal kernel."""
    m = GaussianKernelMask(ndim=1, init_cutoff=0.1, min_cutoff=0.05, threshold=T, max_cutoff=0.25)
    with torch.no_grad():
        m.sigma.mul_(20.0)
    m.project_()
    assert math.isclose(float(m.cutoff().detach()), 0.25, rel_tol=1e-6)
    assert m.hard_sizes((40,)) == (11,)  # 2 * floor(0.25 * 40 / 2) + 1, not the whole map's 39
    m.to_floor_()
    m.to_ceiling_()
    assert math.isclose(float(m.cutoff().detach()), 0.25, rel_tol=1e-6)
    with pytest.raises(ValueError, match="max_cutoff"):
        GaussianKernelMask(ndim=1, init_cutoff=0.5, min_cutoff=0.05, threshold=T, max_cutoff=0.25)
