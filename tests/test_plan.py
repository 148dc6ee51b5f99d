"""One plan a step: the cost and the cropped forward read the same ``hard_plan()``."""

from dataclasses import replace
from typing import Any

import pytest
import torch

from dnarch.cost import model_cost
from dnarch.models import DNArchNet
from dnarch.nn import block as block_module
from dnarch.train.trainer import LossAndCost
from tests.conftest import shrunk_model

CASES = [
    ((40,), {}),
    ((12, 12), {}),
    ((40,), {"widen": 2.0, "direct_kernel": 3}),
    ((40,), {"downsample": "strided", "stage_blocks": 2, "widen": 2.0, "stage_widths": True}),
    ((40,), {"downsample": "strided-mix", "widen": 2.0}),
]


def _count_plans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = DNArchNet.hard_plan

    def counted(self: DNArchNet) -> Any:
        calls[0] += 1
        return original(self)

    monkeypatch.setattr(DNArchNet, "hard_plan", counted)
    return calls


@pytest.mark.parametrize(("shape", "kw"), CASES)
def test_forward_given_the_plan_equals_its_own(
    shape: tuple[int, ...], kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = shrunk_model(shape, seed=2, **kw).eval()
    x = torch.randn(3, 2, *shape)
    plan = m.hard_plan()
    calls = _count_plans(monkeypatch)
    with torch.no_grad():
        given = m(x, plan=plan)
        assert calls[0] == 0  # a given plan is read, not made again
        own = m(x)
    assert calls[0] == 1
    assert torch.equal(given, own)


@pytest.mark.parametrize(("shape", "kw"), CASES[:2])
def test_a_training_step_makes_one_plan(
    shape: tuple[int, ...], kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = shrunk_model(shape, seed=3, **kw).eval()
    x = torch.randn(3, 2, *shape)
    with torch.no_grad():
        out, cost = m(x), model_cost(m, "straight_through").macs
    calls = _count_plans(monkeypatch)
    with torch.no_grad():
        out2, cost2 = LossAndCost(m, "macs")(x)
    assert calls[0] == 1
    assert torch.equal(out, out2) and torch.equal(cost, cost2)


def test_the_forward_runs_the_plans_hidden_widths(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hidden width a block runs at is the plan's, whatever the mask says."""
    m = shrunk_model((40,), seed=4).eval()
    x = torch.randn(2, 2, 40)
    plan = m.hard_plan()
    i = next(s.index for s in plan if s.kept and s.hidden > 1)
    changed = [replace(s, hidden=s.hidden - 1) if s.index == i else s for s in plan]
    rows: list[int] = []
    original = block_module.layer_weights

    def recorded(lin: torch.nn.Linear, r: int, *a: Any, **k: Any) -> Any:
        if lin is m.block_list()[i].pw1:
            rows.append(r)
        return original(lin, r, *a, **k)

    monkeypatch.setattr(block_module, "layer_weights", recorded)
    with torch.no_grad():
        m(x, plan=changed)
        m(x, plan=plan)
    assert rows == [plan[i].hidden - 1, plan[i].hidden]
