"""``net.widen``: residual and hidden widths that grow where the resolution falls. The stretch against
its closed form, the cropped network against the masked one, the exported network against both, and
the cost estimate against the FLOP counter, on networks that really widen."""

import math
from dataclasses import replace

import pytest
import torch

from dnarch.config import ConfigError, NetConfig, RunConfig, TrainConfig
from dnarch.cost import model_cost
from dnarch.export import ArchSpec, build_static, export_state, harden
from dnarch.functional.channels import corner
from dnarch.models import build_model
from tests.conftest import shrunk_model

SHAPES = [(40,), (33,), (12, 9), (10, 10)]


def test_stretch_and_grids_follow_the_closed_form() -> None:
    m = build_model(NetConfig(width=8, hidden=6, blocks=2, widen=3.0), 1, 4, (32, 32))
    assert m.stretch((32, 32)) == 1.0 and m.grids((32, 32)) == (8, 6)
    assert m.stretch((16, 16)) == pytest.approx(2.0)  # a quarter of the positions: twice as wide
    assert m.grids((16, 16)) == (16, 12)
    assert m.stretch((16, 32)) == pytest.approx(math.sqrt(2))
    assert m.grids((16, 32)) == (11, 8)  # floor(8 sqrt 2), floor(6 sqrt 2)
    assert m.stretch((4, 4)) == 3.0  # capped at widen
    assert m.alloc == 24 and m.blocks[0].pw1.weight.shape == (18, 24)
    one = build_model(NetConfig(width=8, hidden=6, blocks=2), 1, 4, (32, 32))
    assert one.stretch((4, 4)) == 1.0 and one.grids((4, 4)) == (8, 6)


def test_widen_power_one_doubles_the_widths_where_a_sequence_halves() -> None:
    cfg = NetConfig(width=8, hidden=6, blocks=2, widen=4.0, widen_power=1.0)
    m = build_model(cfg, 1, 4, (40,))
    assert m.stretch((40,)) == 1.0 and m.stretch((20,)) == 2.0 and m.stretch((10,)) == 4.0
    assert m.stretch((5,)) == 4.0  # capped at widen
    assert m.grids((20,)) == (16, 12) and m.grids((13,)) == (24, 18)  # floor(40 / 13 * 8) = 24
    square = build_model(replace(cfg, widen_power=0.5), 1, 4, (40,))
    assert square.stretch((20,)) == pytest.approx(math.sqrt(2))
    # in 2D, the power 1/2 already doubles the widths where both axes halve
    assert build_model(cfg, 1, 4, (32, 32)).stretch((16, 16)) == 4.0


def test_a_stretched_mask_keeps_its_fraction_of_the_channels() -> None:
    mask = build_model(NetConfig(width=16, widen=2.0), 1, 4, (40,)).residual_mask
    with torch.no_grad():
        mask.mu.fill_(0.5)
    base, wide = mask.hard_count(), mask.hard_count(32)
    assert wide in (2 * base - 1, 2 * base, 2 * base + 1)
    v = mask.values(32, 40)
    assert v.shape == (40,) and (v[wide:] == 0).all() and (v[:wide] >= mask.threshold).all()


@pytest.mark.parametrize("power", [0.5, 1.0])
@pytest.mark.parametrize("task", ["classify", "segment"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_widened_network_crop_export_and_cost(shape, seed, task, power) -> None:
    m = shrunk_model(shape, seed, task=task, widen=2.0, widen_power=power)  # tests/test_contract.py
    st = model_cost(m, "straight_through")
    assert float(st.macs.detach()) == pytest.approx(float(model_cost(m, "hard").macs))


def test_the_test_models_really_widen() -> None:
    """The checks above must cover blocks wider than the stream before them, in 1D and 2D."""
    widened = set()
    for shape in SHAPES:
        for seed in range(4):
            spec = harden(shrunk_model(shape, seed, widen=2.0))
            if spec.head_width > spec.residual_width:
                assert spec.widens
                widened.add(len(shape))
    assert widened == {1, 2}


def test_widen_leaves_the_maximal_network_and_its_cost_as_they_were() -> None:
    cfg = NetConfig(width=8, hidden=16, blocks=3)
    wide = NetConfig(width=8, hidden=16, blocks=3, widen=4.0)
    a, b = build_model(cfg, 1, 10, (12, 12)), build_model(wide, 1, 10, (12, 12))
    assert float(model_cost(a, "max").macs) == float(model_cost(b, "max").macs)
    assert float(model_cost(a, "hard").macs) == float(model_cost(b, "hard").macs)
    assert harden(b).widths_text() == "8" and not harden(b).widens


def test_straight_through_width_cost_reaches_the_resolution() -> None:
    """The soft widths grow as the resolution falls, so the cost's gradient sees the widening."""
    m = shrunk_model((12, 9), 0, widen=2.0)
    st = model_cost(m, "straight_through").macs
    st.backward()
    mus = m.resolution_parameters()
    assert mus and all(p.grad is not None and torch.isfinite(p.grad).all() for p in mus)
    assert any(p.grad.abs().sum() > 0 for p in mus)


def test_widen_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="net.widen must be >= 1"):
        NetConfig(widen=0.5)
    with pytest.raises(ConfigError, match=r"net.widen_power must lie in \(0, 1\]"):
        NetConfig(widen_power=0)
    with pytest.raises(ConfigError, match="learn_groups"):
        NetConfig(widen=2.0, learn_groups=True)
    with pytest.raises(ConfigError, match="anneal_gates"):
        RunConfig(net=NetConfig(widen=2.0), train=TrainConfig(anneal_gates=True))


def test_a_spec_written_before_widen_reads_one_residual_width() -> None:
    spec = harden(shrunk_model((40,), 1))
    text = spec.to_json()
    import json

    d = json.loads(text)
    for b in d["blocks"]:
        del b["width"]
    old = ArchSpec.from_json(json.dumps(d))
    assert all(old.block_width(b) == spec.residual_width for b in old.blocks)
    assert old.head_width == spec.head_width


def test_init_resolution_starts_a_pyramid_and_leaves_the_maximal_network() -> None:
    cfg = NetConfig(width=8, hidden=8, blocks=4, kernel_hidden=8, init_resolution=0.5, widen=4.0)
    m = build_model(cfg, 1, 5, (32, 32), "segment").eval()
    plan = m.hard_plan()
    sizes = [p.resolution_out[0] for p in plan]
    assert sizes[0] == 32  # resolution_from = 1: block 0 at the input resolution
    assert sizes[1] < 32 and all(b < a for a, b in zip(sizes[1:], sizes[2:], strict=False))
    for p, j in zip(plan[1:], range(1, 4), strict=True):  # cut-off 0.5**j plus the step's span
        assert 32 * 0.5**j <= p.resolution_out[0] <= 32 * 0.5**j + 6
    full = build_model(
        NetConfig(width=8, hidden=8, blocks=4, kernel_hidden=8), 1, 5, (32, 32), "segment"
    )
    assert float(model_cost(m, "max").macs) == float(model_cost(full, "max").macs)
    spec = harden(m)
    assert spec.head_width > spec.residual_width  # the pyramid widens
    x = torch.randn(3, 1, 32, 32)
    static = build_static(spec, export_state(m, spec))
    with torch.no_grad():
        a, b, c = m(x), m(x, crop=False), static(x)
    assert ((a - b).abs().max() / a.abs().max()) < 1e-5
    assert ((a - c).abs().max() / a.abs().max()) < 1e-4
    with pytest.raises(ConfigError, match="init_resolution"):
        NetConfig(init_resolution=0.0)


def test_a_fixed_pyramid_keeps_its_resolution_and_frozen_net_is_the_maximal_one() -> None:
    from dnarch.baselines import frozen_net

    cfg = NetConfig(width=8, hidden=8, blocks=3, kernel_hidden=8, init_resolution=0.5)
    fixed = build_model(NetConfig(**{**cfg.__dict__, "learn_resolution": False}), 1, 5, (16,))
    assert [p.resolution_out for p in fixed.hard_plan()][1][0] < 16
    assert not fixed.resolution_parameters()
    assert all(
        not p.requires_grad
        for b in fixed.block_list()
        if b.resolution
        for p in b.resolution.parameters()
    )
    frozen = build_model(frozen_net(cfg), 1, 5, (16,))
    assert all(p.resolution_out == (16,) for p in frozen.hard_plan())


def test_the_image_pyramid_preset_is_the_measured_setting() -> None:
    """README's segmentation result was made with the image preset and these five --net changes."""
    from dataclasses import replace

    from dnarch.models import PRESETS

    measured = replace(
        PRESETS["image"],
        widen=4.0,
        init_resolution=0.5,
        learn_resolution=False,
        direct_kernel=3,
        learn_depth=False,
    )
    assert PRESETS["image-pyramid"] == measured


def test_auto_presets_by_data_kind() -> None:
    """The auto choice (CLI, API and benchmark): the measured winner where it was measured."""
    from dnarch.models import preset_for

    assert preset_for(2, "segment") == "image-pyramid"
    assert [preset_for(2, t) for t in ("classify", "regress")] == ["image-stages", "image-dense"]
    assert [preset_for(1, t) for t in ("classify", "segment", "regress")] == [
        "seq-stages",
        *["seq-dense"] * 2,
    ]


def _fixed(width: int = 8, hidden: int = 12) -> NetConfig:
    """A strided pyramid of four blocks that widens up to 4x (``seq-stages``'s layout)."""
    return NetConfig(
        width=width, hidden=hidden, blocks=4, widen=4.0, downsample="strided",
        learn_resolution=False, stem_kernel=3, direct_kernel=3, learn_depth=False, dropout=0.0,
    )  # fmt: skip


def test_a_fixed_pyramid_allocates_each_block_its_widest() -> None:
    m = build_model(_fixed(), 1, 4, (40,))
    plan = m.ceiling_copy().hard_plan()
    for b, spec in zip(m.block_list(), plan, strict=True):
        c, w = m.grids(spec.resolution_out)
        assert (spec.width, spec.hidden) == (c, w)  # the maximal network uses all of it
        assert b.width == c and b.pw1.weight.shape == (w, c) and b.pw2.weight.shape == (c, w)
        assert b.norm.running_mean.shape == (c,) and b.conv.bias.shape == (c,)
        assert b.conv.direct is not None and b.conv.direct.shape[0] == c
        assert b.halve_filter is None or b.halve_filter.shape[0] == c
    assert [b.width for b in m.block_list()] == [8, 11, 16, 22]
    # a learned resolution can stretch any block as far as ``widen``: every block keeps it all
    learned = build_model(NetConfig(width=8, hidden=12, blocks=4, widen=4.0), 1, 4, (40,))
    assert all(b.pw1.weight.shape == (48, 32) for b in learned.block_list())


def _unfitted(cfg: NetConfig, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """The same network at full allocation, as dnarch built it before ``fit_allocation_``."""
    from dnarch.nn.block import DNArchBlock

    with monkeypatch.context() as mp:
        mp.setattr(DNArchBlock, "fit_allocation_", lambda self, *sizes: None)
        torch.manual_seed(0)
        return build_model(cfg, 1, 4, (40,))


def test_fitted_blocks_start_where_the_full_allocation_does(monkeypatch) -> None:
    full = _unfitted(_fixed(), monkeypatch)
    torch.manual_seed(0)
    fitted = build_model(_fixed(), 1, 4, (40,))
    small, big = fitted.state_dict(), full.state_dict()
    assert sum(v.numel() for v in small.values()) < sum(v.numel() for v in big.values())
    for k, v in small.items():
        assert torch.equal(v, corner(big[k], v.shape)), k
    x = torch.randn(16, 1, 40)
    for train in (False, True):
        full.train(train), fitted.train(train)
        torch.testing.assert_close(fitted(x), full(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(fitted(x), fitted(x, crop=False), rtol=1e-5, atol=1e-5)


def test_a_run_saved_at_full_allocation_loads_and_its_optimizer_resumes(monkeypatch) -> None:
    from dnarch.train.schedule import adamw
    from dnarch.train.trainer import fit_optimizer_state

    full = _unfitted(_fixed(), monkeypatch)
    x, y = torch.randn(16, 1, 40), torch.randint(0, 4, (16,))
    opt = adamw([{"params": list(full.parameters()), "lr": 1e-2}], x.device)
    torch.nn.functional.cross_entropy(full(x), y).backward()
    opt.step()
    saved_model, saved_opt = full.state_dict(), opt.state_dict()

    fitted = build_model(_fixed(), 1, 4, (40,))
    fitted.load_state_dict(saved_model)  # strict: every key, each its corner
    full.eval(), fitted.eval()
    torch.testing.assert_close(fitted(x), full(x), rtol=0, atol=1e-6)
    resumed = adamw([{"params": list(fitted.parameters()), "lr": 1e-2}], x.device)
    resumed.load_state_dict(saved_opt)
    fit_optimizer_state(resumed)
    for p_fit, p_full in zip(fitted.parameters(), full.parameters(), strict=True):
        state, old = resumed.state[p_fit], opt.state[p_full]
        if not old:  # no gradient reached it (a bias fixed at zero)
            continue
        assert state["exp_avg"].shape == p_fit.shape
        assert torch.equal(state["exp_avg_sq"], corner(old["exp_avg_sq"], p_fit.shape))
    fitted.train()
    torch.nn.functional.cross_entropy(fitted(x), y).backward()
    resumed.step()  # the moments fit their parameters
