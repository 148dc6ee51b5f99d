"""``net.stage_widths``: a residual width mask per stage. The contract (cropped = masked, exported =
cropped, cost = FLOP counter) on networks whose stream really narrows and widens between stages,
the straight-through cost against the hard one, gradients that reach every stage's mask, and a
default that leaves the network as it was (no new parameters, the same state keys)."""

import dataclasses

import pytest
import torch

from dnarch.config import ConfigError, NetConfig
from dnarch.cost import model_cost
from dnarch.export import harden
from dnarch.models import build_model
from dnarch.train.callbacks import arch_columns, soft_sizes
from tests.conftest import check_crop_export_and_cost, shrunk_model, stream_narrows

PYRAMIDS = [("fourier", 1), ("fourier", 2), ("strided", 1), ("strided", 2)]


def _widths(m) -> list[int]:
    """The stem's width, then every kept block's."""
    return [m.residual_mask.hard_count()] + [p.width for p in m.hard_plan() if p.kept]


@pytest.mark.parametrize("task", ["classify", "segment"])
@pytest.mark.parametrize("shape", [(40,), (12, 9)])
@pytest.mark.parametrize(("downsample", "stage_blocks"), PYRAMIDS)
def test_a_stream_that_narrows_keeps_the_contract(shape, task, downsample, stage_blocks) -> None:
    narrowed = 0
    for seed in range(12):
        m = shrunk_model(
            shape, seed, task=task, widen=2.0, downsample=downsample,
            stage_blocks=stage_blocks, stage_widths=True,
        )  # fmt: skip
        if not stream_narrows(m):
            continue  # only networks whose stream narrows somewhere
        narrowed += 1
        m.eval()
        check_crop_export_and_cost(m, torch.randn(3, 2, *shape))
        st = model_cost(m, "straight_through")
        assert float(st.macs.detach()) == pytest.approx(float(model_cost(m, "hard").macs))
        if narrowed == 2:
            break
    assert narrowed == 2, "no seed gave a stream that narrows: the test checks nothing"


def test_each_stage_has_its_own_mask_and_gradient() -> None:
    cfg = NetConfig(width=8, hidden=8, blocks=4, widen=2.0, learn_resolution=False,
                    downsample="strided", stage_widths=True, dropout=0.0)  # fmt: skip
    m = build_model(cfg, 1, 3, (32,))
    assert len(m.residual_masks()) == 4  # one per stage (one block a stage), the stem's first
    assert all(b.mu.requires_grad for b in m.residual_masks())
    assert len({id(m.block_residual_mask(i)) for i in range(4)}) == 4
    with torch.no_grad():
        m.residual_masks()[1].mu.fill_(0.3)  # stage 1 narrow; the others at their ceiling
    w = _widths(m)
    assert w[2] < w[1] and w[3] > w[2], w  # block 1 narrows the stream, block 2 widens it again
    loss = m(torch.randn(4, 1, 32)).square().mean() + model_cost(m, "straight_through").macs * 1e-9
    loss.backward()
    for mask in m.residual_masks():
        assert mask.mu.grad is not None and mask.mu.grad.abs() > 0
    # the run's records carry each block's width
    assert arch_columns(m)["b1_width"] == w[2]
    assert soft_sizes(m)["block1/width"] < soft_sizes(m)["block0/width"]


def test_off_by_default_and_the_network_is_unchanged() -> None:
    cfg = NetConfig(width=8, hidden=8, blocks=4, widen=2.0, learn_resolution=False,
                    downsample="strided", dropout=0.0, backend="direct")  # fmt: skip
    torch.manual_seed(0)
    old = build_model(cfg, 1, 3, (32,))
    torch.manual_seed(0)
    on = build_model(dataclasses.replace(cfg, stage_widths=True), 1, 3, (32,))
    assert not old.stage_widths and len(old.residual_masks()) == 1
    extra = set(on.state_dict()) - set(old.state_dict())
    assert extra and all(k.startswith("stage_residual.") for k in extra)
    # every mask at the same cut-off: the same network, the same output
    on.load_state_dict({**on.state_dict(), **old.state_dict()})
    x = torch.randn(2, 1, 32)
    old.eval(), on.eval()
    with torch.no_grad():
        assert torch.equal(old(x), on(x))
    assert harden(old) == harden(on)


def test_refused_with_learned_groups() -> None:
    with pytest.raises(ConfigError, match="stage_widths"):
        NetConfig(stage_widths=True, learn_groups=True)
