"""``net.direct_kernel``: a directly learned central term added to every depthwise kernel. The kernel
against its closed form (kernel net part plus the centred term), the cropped network against the
masked one, the exported network against both, and the cost estimate against the FLOP counter."""

import dataclasses

import pytest
import torch

from dnarch.config import ConfigError, NetConfig
from dnarch.cost import model_cost
from dnarch.export import harden
from dnarch.models import build_model
from dnarch.nn.ckconv import DepthwiseCKConv, centred
from tests.conftest import check_crop_export_and_cost, shrunk_model

SHAPES = [(40,), (33,), (12, 9), (10, 10)]


def _conv(ndim: int, direct: int, cutoff: float = 0.3) -> DepthwiseCKConv:
    torch.manual_seed(0)
    return DepthwiseCKConv(ndim, 6, (16,) * ndim, 8, 3, 20.0, cutoff, 0.1, "direct", direct)


def test_centred_pads_or_crops_symmetrically() -> None:
    small = torch.arange(18.0).reshape(2, 3, 3)
    padded = centred(small, (5, 7))
    assert padded.shape == (2, 5, 7)
    assert torch.equal(padded[:, 1:4, 2:5], small) and padded.abs().sum() == small.abs().sum()
    assert torch.equal(centred(small, (1, 3)), small[:, 1:2, :])
    assert torch.equal(centred(small, (3, 3)), small)


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("direct", [3, 5])
def test_kernel_is_the_kernel_net_part_plus_the_centred_term(ndim, direct) -> None:
    """On the hard-size grid and on the full grid (zero beyond the hard size), the term adds to the
    central min(hard size, direct) taps per axis and nowhere else."""
    conv = _conv(ndim, direct)
    for lengths in [(16,) * ndim, (7,) * ndim, (2,) * ndim]:
        hard = conv.mask.hard_sizes(lengths)
        for full in (False, True):
            with_term = conv.kernel(lengths, 4, full).detach()
            term, conv.direct = conv.direct, None
            without = conv.kernel(lengths, 4, full).detach()
            conv.direct = term
            assert term is not None
            diff, grid = with_term - without, without.shape[1:]
            inner: tuple[slice, ...] = (slice(None),)
            for k, g in zip(hard, grid, strict=True):
                n = min(k, direct)
                inner += (slice((g - n) // 2, (g - n) // 2 + n),)
            lo = [(direct - min(k, direct)) // 2 for k in hard]
            own = (slice(0, 4),) + tuple(
                slice(a, a + min(k, direct)) for a, k in zip(lo, hard, strict=True)
            )
            torch.testing.assert_close(diff[inner], term.detach()[own])
            diff[inner] = 0
            assert (diff == 0).all()  # and nowhere else


def test_the_term_leaves_the_kernel_masks_gradient_alive() -> None:
    conv = _conv(2, 3, cutoff=0.07)  # at the 3-tap floor
    assert conv.kernel((16, 16), 6).shape == (6, 3, 3)
    x = torch.randn(2, 6, 16, 16)
    conv(x).square().sum().backward()
    assert conv.mask.sigma.grad is not None and (conv.mask.sigma.grad != 0).all()
    assert conv.direct is not None and conv.direct.grad is not None


@pytest.mark.parametrize("task", ["classify", "segment"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_direct_kernel_network_crop_export_and_cost(shape, seed, task) -> None:
    m = shrunk_model(shape, seed, task=task, widen=1.0 + seed, direct_kernel=5)
    check_crop_export_and_cost(m, torch.randn(5, 2, *shape))


def test_the_test_models_really_have_kernels_smaller_than_the_term() -> None:
    """The checks above must cover kernels that crop the 5-tap term as well as ones that hold it."""
    small = large = False
    for shape in SHAPES:
        for seed in range(2):
            for b in harden(shrunk_model(shape, seed, direct_kernel=5)).blocks:
                if b.kept:
                    small |= min(b.kernel) < 5
                    large |= min(b.kernel) >= 5
    assert small and large


def test_the_term_changes_no_cost_and_no_architecture() -> None:
    torch.manual_seed(0)
    a = build_model(NetConfig(width=8, hidden=16, blocks=3), 1, 10, (12, 12))
    torch.manual_seed(0)
    b = build_model(NetConfig(width=8, hidden=16, blocks=3, direct_kernel=3), 1, 10, (12, 12))
    for mode in ("max", "hard"):
        assert float(model_cost(a, mode).macs) == float(model_cost(b, mode).macs)
    assert harden(a).to_json() == harden(b).to_json()
    conv = b.blocks[0].conv
    assert conv.direct is not None and conv.direct.shape == (8, 3, 3)
    assert any(p is conv.direct for p in b.weight_parameters())
    assert all(p is not conv.direct for p in b.arch_parameters())


def test_direct_kernel_config_errors_are_one_line() -> None:
    for bad in (-1, 2, 4):
        with pytest.raises(ConfigError, match="net.direct_kernel must be 0 or odd"):
            NetConfig(direct_kernel=bad)


def test_the_seq_dense_preset_is_seq_with_the_measured_term() -> None:
    """README's 1D dense results were made with the seq preset and --net direct_kernel=3."""
    from dataclasses import replace

    from dnarch.models import PRESETS

    assert PRESETS["seq-dense"] == replace(PRESETS["seq"], direct_kernel=3)


@pytest.mark.parametrize("ndim", [1, 2])
def test_a_kernel_net_started_at_zero_gives_the_direct_term_and_learns(ndim) -> None:
    """``net.init_kernel_gain=0``: at the start the kernel is exactly its centred direct term, even
    over a whole map; the kernel net's last layer gets a gradient, so the long part can grow."""
    torch.manual_seed(0)
    conv = DepthwiseCKConv(ndim, 6, (16,) * ndim, 8, 3, 20.0, 1.0, 0.1, "direct", 3, gain=0.0)
    assert conv.mask.hard_sizes((16,) * ndim) == (15,) * ndim  # the whole map
    w = conv.kernel((16,) * ndim, 6)
    assert torch.equal(w, centred(conv.direct, (15,) * ndim))
    x = torch.randn(2, 6, *(16,) * ndim)
    conv(x).square().sum().backward()
    assert conv.kernel_net.out.weight.grad is not None
    assert conv.kernel_net.out.weight.grad.abs().sum() > 0
    # the default keeps SIREN's unit-variance kernel values
    one = DepthwiseCKConv(ndim, 6, (16,) * ndim, 8, 3, 20.0, 1.0, 0.1, "direct", 3)
    assert one.kernel_net.out.weight.abs().max() > 0.1


def test_the_kernel_gain_changes_no_cost_and_no_architecture() -> None:
    cfg = NetConfig(width=8, hidden=8, blocks=2, direct_kernel=3, dropout=0.0)
    zero = build_model(dataclasses.replace(cfg, init_kernel_gain=0.0), 1, 3, (24,))
    one = build_model(cfg, 1, 3, (24,))
    assert harden(zero) == harden(one)
    assert float(model_cost(zero, "hard").macs) == float(model_cost(one, "hard").macs)
    assert zero.kernel_nets.out.weight.abs().max() == 0  # every block's (stacked)
    with pytest.raises(ConfigError, match="init_kernel_gain"):
        NetConfig(init_kernel_gain=-1.0)
