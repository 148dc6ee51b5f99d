"""``net.downsample='strided'``: a fixed pyramid that halves each axis through a learned 3-tap filter
at stride 2. The cropped network against the masked one, the exported network against both, the cost
estimate against the FLOP counter, the filter against its closed form."""

import pytest
import torch
import torch.nn.functional as F

from dnarch.config import ConfigError, NetConfig
from dnarch.export import ArchSpec, harden
from dnarch.functional.conv import halve, halving_filter
from dnarch.models import build_model
from tests.conftest import check_crop_export_and_cost, shrunk_model


@pytest.mark.parametrize("task", ["classify", "segment"])
@pytest.mark.parametrize("shape", [(40,), (12, 9), (7, 6, 5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_strided_network_crop_export_and_cost(shape, seed, task) -> None:
    m = shrunk_model(
        shape, seed, task=task, widen=1.0 + seed, stem_kernel=3, direct_kernel=3,
        downsample="strided",
    )  # fmt: skip
    spec = check_crop_export_and_cost(m, torch.randn(5, 2, *shape))
    kept = spec.kept_blocks
    assert len(kept) >= 2 and all(b.strided == (b.index >= seed % 2) for b in kept)
    for b in kept:  # every halving block: ceil(n / 2) samples per axis
        want = tuple((n + 1) // 2 for n in b.resolution_in) if b.strided else b.resolution_in
        assert b.resolution_out == want


def test_the_maximal_and_exported_counts_of_a_strided_network() -> None:
    # the maximal network keeps the strided pyramid, every kernel over its map, stretched widths
    from dnarch.export.summary import before_after

    m = shrunk_model((40,), 1, downsample="strided")
    numbers = before_after(m)
    assert numbers["macs_counted"] == numbers["macs_estimate"]
    assert numbers["max_macs_counted"] == numbers["max_macs_estimate"]
    assert numbers["max_params_counted"] == numbers["max_params_estimate"]
    halving = [b.halve_filter is not None for b in m.blocks]  # every block kept at the ceiling
    assert [p.strided for p in m.ceiling_copy().hard_plan()] == halving


def test_the_halving_filter_at_stride_two_in_closed_form() -> None:
    x = torch.randn(2, 3, 9)
    out = halve(x, halving_filter(1, 3))
    padded = F.pad(x, (1, 1))
    taps = torch.tensor([1.0, 6.0, 1.0]) / 8
    want = torch.stack([padded[..., 2 * j : 2 * j + 3] @ taps for j in range(5)], -1)
    assert out.shape == (2, 3, 5) and torch.allclose(out, want, atol=1e-6)
    # 2-D: the outer product of the 1-D filter, (c, 3, 3) summing to 1 per channel
    k2 = halving_filter(2, 4)
    assert k2.shape == (4, 3, 3) and torch.allclose(k2.sum((1, 2)), torch.ones(4))
    assert torch.allclose(k2[0], taps[:, None] * taps[None, :])
    assert halve(torch.randn(1, 4, 28, 27), k2).shape == (1, 4, 14, 14)


def test_a_strided_pyramid_halves_long_inputs_without_resampling_matrices() -> None:
    # no resolution masks: an axis of 100,000 samples is allowed (a Fourier pyramid refuses it)
    cfg = NetConfig(width=4, hidden=4, blocks=3, learn_resolution=False, downsample="strided")
    m = build_model(cfg, 1, 2, (100_000,))
    plan = m.hard_plan()
    assert [p.resolution_out for p in plan] == [(100_000,), (50_000,), (25_000,)]
    assert all(b.resolution is None for b in m.blocks)


def test_old_architecture_files_load_without_strided() -> None:
    spec = harden(shrunk_model((20,), 0))
    text = (
        spec.to_json()
        .replace(',\n      "strided": false', "")
        .replace(',\n      "mixed": false', "")
    )
    assert "strided" not in text and "mixed" not in text
    assert not any(b.strided or b.mixed for b in ArchSpec.from_json(text).blocks)


def test_strided_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="net.downsample must be fourier, strided or strided-mix"):
        NetConfig(downsample="pool")
    with pytest.raises(ConfigError, match="needs net.learn_resolution=false"):
        NetConfig(downsample="strided")
    with pytest.raises(ConfigError, match="net.downsample=strided-mix is a fixed pyramid"):
        NetConfig(downsample="strided-mix")
    with pytest.raises(ConfigError, match="needs net.learn_resolution=false"):
        NetConfig(downsample="strided", learn_resolution=False, init_resolution=0.5)


def test_a_network_first_run_under_inference_mode_still_trains() -> None:
    # the per-size caches (kernel positions, mask grids, resampling matrices) are made outside
    # inference mode, so autograd may save them later
    for cfg in (
        NetConfig(width=8, hidden=8, blocks=3, learn_resolution=False),
        NetConfig(width=8, hidden=8, blocks=3, learn_resolution=False, init_resolution=0.5),
        NetConfig(width=8, hidden=8, blocks=3, learn_resolution=False, downsample="strided"),
    ):
        m = build_model(cfg, 1, 3, (40,), "segment")
        x = torch.randn(2, 1, 40)
        with torch.inference_mode():
            m.eval()(x)
        m.train()(x).sum().backward()


def test_fixed_resampling_keeps_float32_under_autocast() -> None:
    from dnarch.functional import fourier

    x = torch.randn(2, 3, 40)
    mats = [fourier.resample_matrix(40, 10)]
    with torch.autocast("cpu", torch.bfloat16):
        out = fourier.apply_matrices(x, mats)
    assert out.dtype == torch.float32
    assert torch.allclose(out, fourier.lowpass_crop(x, (10,)), atol=1e-5)


# net.downsample='strided-mix': each halving also adds a full 3-tap-per-axis strided convolution
@pytest.mark.parametrize("task", ["classify", "segment"])
@pytest.mark.parametrize("shape", [(40,), (12, 9)])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_mixing_halving_crop_export_and_cost(shape, seed, task) -> None:
    m = shrunk_model(
        shape, seed, task=task, widen=1.0 + 2 * seed, stem_kernel=3, direct_kernel=3,
        downsample="strided-mix",
    )  # fmt: skip
    spec = check_crop_export_and_cost(m, torch.randn(5, 2, *shape))
    kept = spec.kept_blocks
    assert any(b.mixed for b in kept) and all(b.mixed == b.strided for b in kept)


def test_a_mixing_halving_in_closed_form() -> None:
    # out[o, j] = m[o] * sum over inputs i and taps t of w[o, i, t] * x[i, 2j + t - 1] (zero padding)
    m = shrunk_model((9,), 1, widen=2.0, downsample="strided-mix")
    block = next(b for b in m.blocks if b.halve_mix is not None)
    x, m_res = torch.randn(2, 3, 9), torch.rand(5)
    out = block.mix(x, m_res)
    w, padded = block.halve_mix[:5, :3], F.pad(x, (1, 1))
    want = (
        torch.stack(
            [torch.einsum("oit,bit->bo", w, padded[..., 2 * j : 2 * j + 3]) for j in range(5)], -1
        )
        * m_res[:, None]
    )
    assert out.shape == (2, 5, 5) and torch.allclose(out, want, atol=1e-5)


def test_a_mixing_halving_starts_as_the_strided_network() -> None:
    # the full convolution starts at zero and draws no random numbers: the same seed builds the
    # same network as 'strided', whose outputs and gradients it repeats until it learns
    def build(down: str):
        torch.manual_seed(0)
        cfg = NetConfig(
            width=6, hidden=8, blocks=3, learn_resolution=False, downsample=down, widen=2.0,
            dropout=0.0,
        )  # fmt: skip
        return build_model(cfg, 1, 3, (24,))

    plain, mixing = build("strided"), build("strided-mix")
    assert all(torch.equal(b.halve_mix, torch.zeros_like(b.halve_mix)) for b in mixing.blocks[1:])
    x = torch.randn(4, 1, 24)
    assert torch.equal(plain(x), mixing(x))
    mixing(x).sum().backward()
    assert any(float(b.halve_mix.grad.abs().sum()) > 0 for b in mixing.blocks[1:])
    assert mixing.blocks[0].halve_mix is None  # block 0 runs at the input's resolution


def test_the_mixing_convolution_counts_in_the_maximal_network() -> None:
    from dnarch.export.summary import before_after

    m = shrunk_model((40,), 1, widen=4.0, downsample="strided-mix")
    numbers = before_after(m)
    assert numbers["max_macs_counted"] == numbers["max_macs_estimate"]
    assert numbers["max_params_counted"] == numbers["max_params_estimate"]
    plain = shrunk_model((40,), 1, widen=4.0, downsample="strided")
    top = m.ceiling_copy()
    ceiling = [p for p in top.hard_plan() if p.mixed]
    widths = [top.residual_mask.hard_count()] + [p.width for p in top.hard_plan()]
    extra = sum(
        3 * widths[p.index] * p.width * p.resolution_out[0] for p in ceiling
    )  # 3 taps, c_in x c_out, at the halved positions
    assert numbers["max_macs_counted"] - before_after(plain)["max_macs_counted"] == extra


@pytest.mark.parametrize("shape", [(40,), (16, 12)])
def test_a_mixing_halving_on_a_stream_that_narrows(shape) -> None:
    # a stage narrower than the one before (net.stage_widths): the convolution reads the whole
    # incoming stream and writes the block's fewer channels
    for seed in range(40):
        m = shrunk_model(
            shape, seed, widen=2.0, stage_widths=True, stage_blocks=2, downsample="strided-mix"
        )
        spec = harden(m)
        widths = [spec.residual_width] + [b.width for b in spec.kept_blocks]
        steps = zip(spec.kept_blocks, widths, widths[1:], strict=False)  # (block, in, out)
        if any(b.mixed and w < v for b, v, w in steps):
            break
    else:
        raise AssertionError("no seed narrows at a mixing halving")
    check_crop_export_and_cost(m, torch.randn(4, 2, *shape))
