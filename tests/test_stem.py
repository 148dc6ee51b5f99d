"""``net.stem_kernel``: a k-tap full convolution as the stem. The cropped network against the masked
one, the exported network against both, the cost estimate against the FLOP counter, and the stem
against ``F.conv`` with its rows masked."""

import pytest
import torch
import torch.nn.functional as F

from dnarch.config import ConfigError, NetConfig
from dnarch.cost import model_cost
from dnarch.export import ArchSpec, harden
from dnarch.models import build_model
from tests.conftest import shrunk_model


def test_the_stem_is_a_same_padded_convolution_norm_and_relu_masked() -> None:
    m = shrunk_model((10, 10), 0, stem_kernel=5)
    x = torch.randn(2, 2, 10, 10)
    c = m.residual_mask.hard_count()
    mask = m.residual_mask.values()[:c]
    n = m.stem_norm
    assert n is not None and n.running_mean is not None and n.running_var is not None
    with torch.no_grad():
        h = F.conv2d(x, m.stem.weight[:c], m.stem.bias[:c], padding=2)
        h = F.batch_norm(h, n.running_mean[:c], n.running_var[:c], n.weight[:c], n.bias[:c])
        torch.testing.assert_close(m._stem(x, c, mask), torch.relu(h) * mask[:, None, None])


def test_the_stem_cost_counts_its_taps() -> None:
    """The maximal cost grows by (k^ndim - 1) x C_in x C x P_0 MACs, as many weights and the
    norm's 2C parameters."""
    a = build_model(NetConfig(width=8, hidden=16, blocks=2), 3, 10, (12, 12))
    b = build_model(NetConfig(width=8, hidden=16, blocks=2, stem_kernel=3), 3, 10, (12, 12))
    extra = 8 * 3 * 8 * 12 * 12
    assert float(model_cost(b, "max").macs) - float(model_cost(a, "max").macs) == extra
    assert float(model_cost(b, "max").params) - float(model_cost(a, "max").params) == 8 * 3 * 8 + 16


def test_old_architecture_files_load_with_a_pointwise_stem() -> None:
    spec = harden(shrunk_model((20,), 0))
    text = spec.to_json().replace('  "stem_kernel": 1,\n', "").replace(',\n  "stem_kernel": 1', "")
    assert "stem_kernel" not in text
    assert ArchSpec.from_json(text).stem_kernel == 1


def test_stem_kernel_config_errors_are_one_line() -> None:
    for bad in (0, 2, -3):
        with pytest.raises(ConfigError, match="net.stem_kernel must be odd and positive"):
            NetConfig(stem_kernel=bad)


def test_the_budget_can_anneal_from_the_starting_network() -> None:
    """``budget.anneal_from='start'``: the target starts at the cost of the network as built (here
    below the maximal one: kernels start short), and never below the budget."""
    from dnarch.config import BudgetConfig
    from dnarch.train.objective import Objective

    cfg = NetConfig(width=8, hidden=16, blocks=2, init_kernel_cutoff=0.1)
    m = build_model(cfg, 1, 10, (16, 16))
    start = float(model_cost(m, "hard").macs)
    top = float(model_cost(m, "max").macs)
    assert start < 0.5 * top
    budget = float(round(0.6 * start))  # an absolute budget under the start
    for frm, want in (("max", top), ("start", start), ("auto", start)):
        obj = Objective(m, BudgetConfig(budget=budget, anneal_from=frm))
        assert obj.schedule is not None and obj.schedule.target(0.0) == pytest.approx(want)
        assert obj.schedule.target(1.0) == pytest.approx(budget)
    high = Objective(m, BudgetConfig(budget=0.9, anneal_from="start"))
    assert high.schedule is not None and high.schedule.target(0.0) == pytest.approx(0.9 * top)
    full = build_model(NetConfig(width=8, hidden=16, blocks=2), 1, 10, (16, 16))
    auto = Objective(full, BudgetConfig(budget=0.5))  # kernels start at the whole input: 'max'
    assert auto.schedule is not None and auto.schedule.target(0.0) == pytest.approx(
        float(model_cost(full, "max").macs)
    )
    with pytest.raises(ConfigError, match="budget.anneal_from must be auto, max or start"):
        BudgetConfig(anneal_from="min")


@pytest.mark.parametrize("name", ["image-stages", "seq-stages"])
def test_the_stages_presets_build_and_run_on_small_and_usual_inputs(name) -> None:
    """Kernels that start short meet the kernel floor of small inputs (one sample of the longest
    axis): they start at the floor instead."""
    from dnarch.functional.masks import max_kernel_size
    from dnarch.models import PRESETS

    shapes = [(8, 8), (28, 28)] if name == "image-stages" else [(5,), (40,)]
    for shape in shapes:
        m = build_model(PRESETS[name], 1, 10, shape)
        for p in m.hard_plan():  # 3 taps, or the whole map where a halved one is shorter
            want = tuple(min(3, max_kernel_size(n)) for n in p.resolution_out)
            assert p.kernel == want
        with torch.no_grad():
            assert m(torch.randn(2, 1, *shape)).shape == (2, 10)


def test_preset_net_follows_the_input() -> None:
    """The stages presets: one block per stage of the plain CNN, kernels starting at 3 taps on the
    longest axis whatever its length; other presets unchanged."""
    from dnarch.models import PRESETS, preset_net
    from dnarch.models.plain_cnn import stage_count

    for name, shape in [("seq-stages", (40,)), ("seq-stages", (784,)), ("image-stages", (28, 28)),
                        ("image-stages", (64, 48)), ("image-stages", (8, 8))]:  # fmt: skip
        cfg = preset_net(name, shape)
        assert cfg.blocks == stage_count(shape)
        m = build_model(cfg, 1, 10, shape)
        assert [max(p.kernel) for p in m.hard_plan()][0] == 3
    assert preset_net("seq-stages", (40,)) == dataclasses_replace(PRESETS["seq-stages"], blocks=4)
    # long sequences start their continuous kernels at zero; MNIST-1D's 40 samples and images do not
    assert preset_net("seq-stages", (784,)).init_kernel_gain == 0.0
    assert preset_net("seq-stages", (40,)).init_kernel_gain == 1.0
    assert preset_net("image-stages", (28, 28)).init_kernel_gain == 1.0
    assert preset_net("image", (28, 28)) == PRESETS["image"]


def dataclasses_replace(cfg, **kw):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_old_run_configs_keep_the_maximal_anneal_start() -> None:
    from dnarch.config import upgrade_saved

    saved = {"net": {"width": 8}, "budget": {"budget": 0.5}}
    assert upgrade_saved(saved)["budget"]["anneal_from"] == "max"
    assert "anneal_from" not in saved["budget"]  # the saved dict is left as it was


def test_a_nan_cutoff_keeps_the_floor() -> None:
    from dnarch.functional import masks as fm

    assert fm.step_count(float("nan"), 10, 0.1, floor=1) == 1
