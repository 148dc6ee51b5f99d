"""``net.branch_norm``: a BatchNorm at the end of each block's branch, before the residual sum (as a
ResNet block ends). The cropped network against the masked one, the exported network (the norm
folded into the last 1x1 layer) against both, the cost against the FLOP counter, the norm's
training output against its closed form, and the default left as it was."""

import pytest
import torch

from dnarch.config import NetConfig
from dnarch.models import build_model
from tests.conftest import check_crop_export_and_cost, shrunk_model


@pytest.mark.parametrize("task", ["classify", "segment"])
@pytest.mark.parametrize(
    ("shape", "net"),
    [
        ((40,), dict(widen=4.0, stem_kernel=3, direct_kernel=3, downsample="strided")),
        ((12, 9), dict(widen=2.0, stem_kernel=3, direct_kernel=3)),
        ((30,), dict(axes=("kernel", "width", "resolution", "depth", "groups"))),
        ((24,), dict(stage_blocks=2, stage_widths=True, downsample="strided", widen=2.0)),
        ((40,), dict(widen=4.0, stem_kernel=3, direct_kernel=3, downsample="strided-mix")),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_branch_norm_crop_export_and_cost(shape, net, seed, task) -> None:
    m = shrunk_model(shape, seed, task=task, branch_norm=True, **net)
    assert all(b.branch_norm is not None for b in m.blocks)
    check_crop_export_and_cost(m, torch.randn(5, 2, *shape))


def test_the_branch_output_is_normalised_in_training() -> None:
    # with every mask at one, a block's output minus its input is the norm's output: per channel
    # the batch mean is its shift and the batch standard deviation its scale
    cfg = NetConfig(
        width=6, hidden=8, blocks=1, learn_resolution=False, dropout=0.0, branch_norm=True,
        learn_width=False, learn_kernel=False, learn_depth=False,
    )  # fmt: skip
    m = build_model(cfg, 1, 3, (32,)).train()
    block = m.blocks[0]
    with torch.no_grad():
        block.branch_norm.weight.copy_(torch.linspace(0.5, 2.0, 6))
        block.branch_norm.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    x = torch.randn(64, 6, 32)
    spec = m.hard_plan()[0]
    m_res, grid = torch.ones(6), m.grids((32,))[1]
    out = block(x, m_res, torch.ones(()), spec, grid)
    branch = (out - x).transpose(0, 1).reshape(6, -1)
    assert torch.allclose(branch.mean(1), block.branch_norm.bias, atol=1e-4)
    # (short of it by the norm's eps against the branch's small variance at the start)
    assert torch.allclose(branch.std(1, unbiased=False), block.branch_norm.weight, rtol=1e-2)


def test_branch_norm_is_off_by_default_and_leaves_the_state_as_it_was() -> None:
    assert NetConfig().branch_norm is False
    m = build_model(NetConfig(width=4, hidden=4, blocks=2), 1, 2, (16,))
    assert all(b.branch_norm is None for b in m.blocks)
    assert not any("branch_norm" in k for k in m.state_dict())


def test_branch_norm_parameters_learn() -> None:
    cfg = NetConfig(width=6, hidden=8, blocks=2, learn_resolution=False, branch_norm=True)
    m = build_model(cfg, 1, 3, (20,)).train()
    m(torch.randn(8, 1, 20)).sum().backward()
    for b in m.blocks:
        assert b.branch_norm.weight.grad is not None and b.branch_norm.weight.grad.abs().sum() > 0


def test_the_sequence_preset_ends_its_branches_in_a_norm() -> None:
    # measured on seq-stages (METHOD-NOTES, "A norm at the end of the branch"); not on images
    from dnarch.models.presets import preset_net

    assert preset_net("seq-stages", (40,)).branch_norm
    assert preset_net("seq-stages", (784,)).branch_norm
    assert not preset_net("image-stages", (28, 28)).branch_norm
