"""Annealed gates (issue 9): the sigmoid masks sharpen to exact 0/1 decisions, without changing the
network they crop; and decoupled (alternating) weight and architecture updates."""

from __future__ import annotations

import pytest
import torch

from dnarch.config import BudgetConfig, NetConfig, TrainConfig
from dnarch.data import load_data
from dnarch.export import build_static, export_state, harden
from dnarch.models import build_model
from dnarch.models.dnarchnet import DNArchNet
from dnarch.nn.masks import LowpassMask, SigmoidStepMask
from dnarch.train.objective import Objective
from dnarch.train.trainer import Trainer


def _gate_values(m: DNArchNet) -> list[torch.Tensor]:
    """Every gate's values as the network uses them: step masks over their entries, low-pass masks
    (capped) over the rFFT bins of each kept block's input."""
    out = []
    for g in m.gates():
        if isinstance(g, SigmoidStepMask):
            out.append(g.raw().detach())
    cap = None
    for p, b in zip(m.hard_plan(), m.blocks, strict=True):
        res = b.resolution  # type: ignore[union-attr]
        if res is None or not p.kept:
            continue
        mu = res.mask.effective_mu(cap)
        for axis, n in enumerate(p.resolution_in):
            out.append(res.mask.axis_values(mu, axis, n).detach())
        cap = mu
    return out


def _scramble(m: DNArchNet, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in m.gates():
            gate.mu.mul_(torch.rand(gate.mu.shape, generator=g) * 0.8 + 0.1)
    m.project_arch_()


@pytest.mark.parametrize("shape", [(40,), (12, 10)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snapping_makes_every_gate_binary_and_keeps_the_cropped_network(shape, seed) -> None:
    torch.manual_seed(seed)
    m = build_model(NetConfig(width=16, hidden=16, blocks=4, kernel_hidden=8), 1, 10, shape)
    _scramble(m, seed)
    plan = m.hard_plan()
    x = torch.randn(4, 1, *shape)
    m.snap_gates_()
    m.project_arch_()  # the optimiser's projection leaves a snapped gate where it is
    assert m.hard_plan() == plan
    for v in _gate_values(m):
        assert float(torch.minimum(v, 1 - v).max()) < 1e-8
        assert bool(((v == 1) | (v < 1e-8)).all())  # kept values are exactly 1: nothing to fold
    m.eval()
    static = build_static(harden(m), export_state(m, harden(m))).eval()
    with torch.no_grad():
        torch.testing.assert_close(static(x), m(x), rtol=1e-4, atol=1e-4)


def test_annealing_runs_from_the_plain_mask_to_the_binary_sharpness() -> None:
    step, low = SigmoidStepMask(32, 2.5, 0.1), LowpassMask((40, 20), 2.5, 0.1)
    plain = step.raw().detach().clone()
    for gate in (step, low):
        gate.anneal_(0.0)
        assert torch.equal(gate.sharpness, torch.ones_like(gate.sharpness))
        gate.anneal_(1.0)
        torch.testing.assert_close(gate.sharpness, gate.binary_sharpness())
        gate.anneal_(0.5)  # geometric: the square root half-way
        torch.testing.assert_close(gate.sharpness, gate.binary_sharpness().sqrt())
    step.anneal_(0.0)
    assert torch.equal(step.raw().detach(), plain)


def test_a_state_dict_from_before_annealing_loads_with_plain_masks() -> None:
    m = build_model(NetConfig(width=8, hidden=8, blocks=2, kernel_hidden=8), 1, 10, (40,))
    old = {k: v for k, v in m.state_dict().items() if not k.endswith("sharpness")}
    fresh = build_model(NetConfig(width=8, hidden=8, blocks=2, kernel_hidden=8), 1, 10, (40,))
    for g in fresh.gates():
        g.anneal_(1.0)
    fresh.load_state_dict(old)  # strict: the missing buffers are filled with 1
    assert all(bool((g.sharpness == 1).all()) for g in fresh.gates())


@pytest.mark.slow
@pytest.mark.parametrize("freeze", [0.5, 0.0])
def test_after_an_annealed_run_every_gate_is_within_1e_3_of_0_or_1(freeze: float) -> None:
    data = load_data("mnist1d").limited(128, 64)
    m = build_model(NetConfig(width=8, hidden=8, blocks=3, backend="direct"), 1, 10, (40,))
    cfg = TrainConfig(epochs=4, batch_size=32, freeze_arch_fraction=freeze, warmup_epochs=0,
                      anneal_gates=True)  # fmt: skip
    sharpness = []

    class Record:
        def on_epoch_end(self, state) -> None:  # type: ignore[no-untyped-def]
            sharpness.append(float(m.residual_mask.sharpness))

    Trainer(m, Objective(m, BudgetConfig(budget=0.3)), data, cfg, [Record()], progress=False).fit()
    assert sharpness == sorted(sharpness) and sharpness[0] > 1  # it sharpens as training goes
    for v in _gate_values(m):
        assert float(torch.minimum(v, 1 - v).max()) < 1e-3


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_alternating_updates_move_weights_and_masks_on_alternate_steps() -> None:
    data = load_data("mnist1d").limited(128, 64)
    m = build_model(NetConfig(width=8, hidden=8, blocks=2, backend="direct"), 1, 10, (40,))
    cfg = TrainConfig(epochs=2, batch_size=32, freeze_arch_fraction=0.5, warmup_epochs=0,
                      alternate=True)  # fmt: skip
    trainer = Trainer(m, Objective(m, BudgetConfig(budget=0.3)), data, cfg, progress=False)
    arch = {id(p) for p in m.arch_parameters()}
    turns: list[tuple[bool, bool]] = []
    step = trainer.optimizer.step

    def recording_step(*a, **k):  # type: ignore[no-untyped-def]
        with_grad = [
            p for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None
        ]
        turns.append(
            (any(id(p) in arch for p in with_grad), any(id(p) not in arch for p in with_grad))
        )
        return step(*a, **k)

    trainer.optimizer.step = recording_step  # type: ignore[method-assign]
    trainer.fit()
    search, frozen = turns[:4], turns[4:]
    assert search == [(False, True), (True, False)] * 2  # weights, masks, weights, masks
    assert frozen and all(t == (False, True) for t in frozen)  # frozen: the weights every step


def test_a_sharpened_gate_keeps_the_plain_gradient() -> None:
    sharp, plain = SigmoidStepMask(16, 2.5, 0.1), SigmoidStepMask(16, 2.5, 0.1)
    with torch.no_grad():
        for m in (sharp, plain):
            m.mu.fill_(0.4)
    sharp.anneal_(1.0)
    sharp.raw().sum().backward()
    plain.raw().sum().backward()
    assert sharp.mu.grad is not None and plain.mu.grad is not None
    torch.testing.assert_close(sharp.mu.grad, plain.mu.grad)  # the budget still has a handle
    value = sharp.raw().detach()
    assert float(torch.minimum(value, 1 - value).max()) < 0.01  # while its value is sharp


@pytest.mark.parametrize("budget", [0.25, 0.1])
def test_an_annealed_run_still_meets_a_small_budget(budget: float) -> None:
    from dnarch.cost import model_cost

    data = load_data("mnist1d").limited(128, 64)
    m = build_model(NetConfig(width=8, hidden=8, blocks=3, backend="direct"), 1, 10, (40,))
    objective = Objective(m, BudgetConfig(budget=budget))
    cfg = TrainConfig(epochs=5, batch_size=32, warmup_epochs=0, anneal_gates=True)
    Trainer(m, objective, data, cfg, progress=False).fit()
    assert objective.budget is not None
    assert float(model_cost(m, "hard").macs) <= objective.budget
