"""``net.stage_blocks``: blocks in stages of a strided pyramid, the depth learned per stage with the
first block of each stage always kept. The cropped network against the masked one, the exported
network against both, the cost estimate against the FLOP counter."""

import pytest
import torch

from dnarch.config import ConfigError, NetConfig
from dnarch.cost import floor_copy, model_cost
from dnarch.export import harden
from dnarch.models import build_model
from tests.conftest import shrunk_model


def _net(**kw) -> NetConfig:
    base = dict(width=8, hidden=8, blocks=6, stage_blocks=3, learn_resolution=False)
    return NetConfig(downsample="strided", **{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("downsample", ["strided", "fourier"])
@pytest.mark.parametrize("task", ["classify", "segment"])
@pytest.mark.parametrize("shape", [(40,), (12, 9)])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stage_depth_crop_export_and_cost(shape, seed, task, downsample) -> None:
    m = shrunk_model(
        shape, seed, task=task, widen=1.0 + seed % 2, stem_kernel=3, direct_kernel=3,
        downsample=downsample, stage_blocks=2,
    )  # fmt: skip
    spec = harden(m)  # the contract: tests/test_contract.py
    kept = m.depth_kept()
    assert kept[0] and kept[2]  # the first block of each stage
    assert [b.index for b in spec.kept_blocks] == [i for i, k in enumerate(kept) if k]
    # the first block of each stage halves, from stage resolution_from (seed % 2) on
    halves = [i % 2 == 0 and i // 2 >= seed % 2 for i in range(4)]
    assert [b.resolution_out != b.resolution_in for b in spec.blocks] == halves
    assert [b.strided for b in spec.blocks] == [h and downsample == "strided" for h in halves]


def test_only_the_first_block_of_each_stage_halves() -> None:
    m = build_model(_net(), 1, 4, (40,))
    plan = m.hard_plan()
    assert [p.resolution_out for p in plan] == [(40,)] * 3 + [(20,)] * 3
    assert [p.strided for p in plan] == [False, False, False, True, False, False]
    m0 = build_model(_net(resolution_from=0), 1, 4, (40,))
    assert [p.resolution_out[0] for p in m0.hard_plan()] == [20, 20, 20, 10, 10, 10]


def test_the_floor_keeps_one_block_a_stage_and_an_inner_block_can_go() -> None:
    m = build_model(_net(), 1, 4, (40,))
    assert len(m.depth_masks()) == 2 and m.depth_kept() == [True] * 6
    assert floor_copy(m).depth_kept() == [True, False, False, True, False, False]
    with torch.no_grad():  # the first stage keeps 1 block, the second all 3: an inner removal
        m.depth_mask.to_floor_()
    assert m.depth_kept() == [True, False, False, True, True, True]
    assert torch.equal(m.depth_values() > 0, torch.tensor(m.depth_kept()))
    before = float(model_cost(m, "hard").macs)
    assert before < float(model_cost(build_model(_net(), 1, 4, (40,)), "hard").macs)
    x = torch.randn(3, 1, 40)
    m.eval()
    with torch.no_grad():
        assert torch.allclose(m(x), m(x, crop=False), atol=1e-5)


def test_every_depth_mask_is_learnable_and_projected() -> None:
    m = build_model(_net(), 1, 4, (40,))
    ids = {id(p) for p in m.arch_parameters()}
    assert all(id(d.mu) in ids for d in m.depth_masks())
    frozen = build_model(_net(learn_depth=False), 1, 4, (40,))
    assert not any(
        id(d.mu) in {id(p) for p in frozen.arch_parameters()} for d in frozen.depth_masks()
    )


def test_stage_blocks_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="net.stage_blocks must be >= 1 and divide net.blocks=6"):
        _net(stage_blocks=4)
    with pytest.raises(ConfigError, match="needs a fixed pyramid: net.learn_resolution=false"):
        NetConfig(blocks=4, stage_blocks=2)


def test_stage_blocks_from_the_command_line_multiply_the_presets_stages() -> None:
    from dnarch.models import preset_net

    cfg = preset_net("seq-stages", (40,), {"net.stage_blocks": "2"})
    assert (cfg.blocks, cfg.stage_blocks) == (8, 1)  # the override itself is applied afterwards
    assert preset_net("image-stages", (28, 28), {"net.stage_blocks": "3"}).blocks == 9
    assert preset_net("seq-stages", (40,), {"net.stage_blocks": "2", "net.blocks": "6"}).blocks == 4
