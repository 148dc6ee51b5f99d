"""The blocks' kernel nets stored stacked (``KernelNets``): the same functions as the per-block
``KernelNet``s they are made from, the same weight decay, and runs saved per block still load and
resume."""

from __future__ import annotations

import pytest
import torch

from dnarch.config import NetConfig, TrainConfig
from dnarch.models import DNArchNet, build_model
from dnarch.nn.kernelnet import KernelNet, KernelNets
from dnarch.train.schedule import adamw, param_groups
from dnarch.train.trainer import fit_optimizer_state, upgrade_optimizer_state


@pytest.mark.parametrize("ndim", [1, 2])
def test_stacked_kernel_nets_compute_each_nets_function_bit_for_bit(ndim) -> None:
    torch.manual_seed(0)
    nets = [KernelNet(ndim, 12, 16, 3, 20.0) for _ in range(4)]
    stacked = KernelNets(nets)
    assert len(stacked) == 4 and stacked.out.weight.shape == (4, 12, 16)
    pos = torch.rand(4, 7, ndim) * 2 - 1
    with torch.no_grad():
        every = stacked(pos)  # (L, P, C)
        some = stacked(pos[[1, 3]], [1, 3])
        for i, net in enumerate(nets):
            assert torch.equal(stacked.one(i, pos[i], 5), net(pos[i], 5))
            torch.testing.assert_close(every[i], net(pos[i]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(some, every[[1, 3]], rtol=0, atol=0)
    # copies: training the stacked nets leaves the per-block ones alone
    before = nets[0].out.weight.clone()
    with torch.no_grad():
        stacked.out.weight.add_(1.0)
    assert torch.equal(nets[0].out.weight, before)


def _cfg(blocks: int = 3) -> NetConfig:
    return NetConfig(width=8, hidden=12, blocks=blocks, direct_kernel=3, dropout=0.0)


def _per_block(monkeypatch: pytest.MonkeyPatch, blocks: int = 3) -> DNArchNet:
    """The network as dnarch built it while each block held its own kernel net."""
    with monkeypatch.context() as mp:
        mp.setattr(DNArchNet, "_stack_kernel_nets", lambda self: None)
        torch.manual_seed(0)
        model = build_model(_cfg(blocks), 1, 4, (40,))
    model.vector_parameters = list  # type: ignore[method-assign]  # no stacked biases then
    return model


def test_a_model_holds_one_stack_and_its_biases_take_no_weight_decay() -> None:
    m = build_model(_cfg(), 1, 4, (40,))
    assert all(b.conv.kernel_net is None for b in m.block_list())
    assert not any(".kernel_net." in k for k in m.state_dict())
    groups = {g["name"]: {id(p) for p in g["params"]} for g in param_groups(m, TrainConfig(), 1.0)}
    for lin in m.kernel_nets.layers():
        assert id(lin.weight) in groups["weights"]
        assert id(lin.bias) in groups["weights_no_decay"]


@pytest.mark.parametrize(
    ("blocks", "removed"),
    [(3, None), (3, 2), (1, None)],  # one block: both layouts hold as many tensors
)
def test_a_run_saved_per_block_loads_and_its_optimizer_resumes(
    monkeypatch, blocks, removed
) -> None:
    old = _per_block(monkeypatch, blocks)
    cfg = TrainConfig()
    opt = adamw(param_groups(old, cfg, 1.0), torch.device("cpu"))
    for _ in range(2):  # moments that differ per parameter
        for name, p in old.named_parameters():
            unused = removed is not None and name.startswith(f"blocks.{removed}.conv.kernel_net")
            p.grad = torch.randn_like(p) if p.requires_grad and not unused else None
        opt.step()
    saved_model, saved_opt = old.state_dict(), opt.state_dict()

    new = build_model(_cfg(blocks), 1, 4, (40,))
    new.load_state_dict(saved_model)  # strict: every key
    for i, b in enumerate(old.block_list()):
        net = b.conv.kernel_net
        assert net is not None
        assert torch.equal(new.kernel_nets.out.weight[i], net.out.weight)
        lengths = (40,)
        torch.testing.assert_close(
            new.block_list()[i].conv.kernel(lengths, 8), b.conv.kernel(lengths, 8), rtol=0, atol=0
        )
    resumed = adamw(param_groups(new, cfg, 1.0), torch.device("cpu"))
    resumed.load_state_dict(upgrade_optimizer_state(new, resumed, saved_opt))
    fit_optimizer_state(resumed)  # every moment fits its parameter
    old_params = dict(old.named_parameters())
    for name, p in new.named_parameters():
        if not p.requires_grad:  # a bias fixed at zero: not in the optimiser
            continue
        state = resumed.state[p]
        if name.startswith("kernel_nets."):
            rest = name.removeprefix("kernel_nets.")
            parts = [
                opt.state.get(old_params[f"blocks.{i}.conv.kernel_net.{rest}"], {})
                for i in range(blocks)
            ]
            want = [q["exp_avg_sq"] if q else torch.zeros_like(p[0]) for q in parts]
            assert torch.equal(state["exp_avg_sq"], torch.stack(want))
            assert float(state["step"]) == 2
        else:
            assert torch.equal(state["exp_avg"], opt.state[old_params[name]]["exp_avg"])
    for p in new.parameters():
        p.grad = torch.randn_like(p) if p.requires_grad else None
    resumed.step()  # the moments fit their parameters
    # a state of this layout passes through unchanged
    assert upgrade_optimizer_state(new, resumed, resumed.state_dict())["state"]


def test_moments_that_fit_no_parameter_are_refused() -> None:
    """The fused AdamW reads a moment as its parameter's shape: a state of another layout must stop
    the resume with an error, not reach the optimiser."""
    m = build_model(_cfg(), 1, 4, (40,))
    opt = adamw(param_groups(m, TrainConfig(), 1.0), torch.device("cpu"))
    for p in m.parameters():
        p.grad = torch.randn_like(p) if p.requires_grad else None
    opt.step()
    saved = opt.state_dict()
    first = saved["param_groups"][0]["params"][0]
    saved["state"][first]["exp_avg"] = torch.zeros(2, 2)
    resumed = adamw(param_groups(m, TrainConfig(), 1.0), torch.device("cpu"))
    resumed.load_state_dict(upgrade_optimizer_state(m, resumed, saved))
    with pytest.raises(ValueError, match="shape"):
        fit_optimizer_state(resumed)
