"""The objectives: task loss plus the budget penalty on the straight-through cost (``Objective``,
a DNArch run); the task loss alone (``TaskObjective``) for any network as a ``FixedNet``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dnarch.config import BudgetConfig, ConfigError
from dnarch.cost import BudgetSchedule, budget_penalty, floor_copy, model_cost
from dnarch.models import DNArchNet
from dnarch.train.metrics import task_loss


def resolve_budget(cfg: BudgetConfig, max_cost: float) -> float | None:
    """Absolute budget: a fraction (<= 1) of ``max_cost`` or the number itself; None if off."""
    if cfg.budget is None:
        return None
    return cfg.budget * max_cost if cfg.budget <= 1 else float(cfg.budget)


class Objective:
    """``{"task", "cost", "penalty", "total", "target"}`` for a batch. Knows nothing of the loop."""

    def __init__(self, model: DNArchNet, cfg: BudgetConfig, target: float | None = None) -> None:
        """``target``: the absolute budget, in place of the one ``cfg`` gives (a resumed run keeps
        the one it started with, whole or not)."""
        self.metric, self.weight, self.mode = cfg.metric, cfg.weight, cfg.mode
        self.max_cost = float(model_cost(model, "max").get(cfg.metric))
        budget = resolve_budget(cfg, self.max_cost) if target is None else target
        self.budget = budget
        self.floor_cost = float(model_cost(floor_copy(model, cfg.metric), "hard").get(cfg.metric))
        unit = "MACs" if cfg.metric == "macs" else "parameters"
        if budget is not None and budget > self.max_cost * (1 + 1e-9):
            raise ConfigError(
                f"budget {budget:,.0f} {unit} is above the maximal network's {self.max_cost:,.0f}: "
                "nothing to learn; give a smaller budget or --budget none"
            )
        if budget is not None and not model.arch_parameters():
            raise ConfigError(
                f"a budget of {budget:,.0f} {unit} needs a learned axis: with every net.learn_* "
                "false nothing can move towards it; learn more axes or give --budget none"
            )
        if budget is not None and budget < self.floor_cost:
            raise ConfigError(
                f"budget {budget:,.0f} {unit} is below the smallest network the learned axes can "
                f"reach ({self.floor_cost:,.0f}, {100 * self.floor_cost / self.max_cost:.1f}% of the "
                "maximal); raise the budget or learn more axes"
            )
        # the target falls (or rises) from here to the budget: the model as built, before training
        start = cfg.anneal_from
        if start == "auto":
            start = "start" if model.kernels_start_small else "max"
        self.start_cost = (
            self.max_cost if start == "max" else float(model_cost(model, "hard").get(cfg.metric))
        )
        self.schedule = (
            BudgetSchedule(budget, self.start_cost, cfg.anneal, cfg.anneal_fraction)
            if budget is not None
            else None
        )

    def __call__(
        self,
        model: DNArchNet,
        logits: Tensor,
        y: Tensor,
        progress: float,
        cost: Tensor | None = None,
    ) -> dict[str, Tensor | float]:
        """logits: the model's output, (B, K) or (B, K, *S); y: its targets (``task_loss``);
        progress in [0, 1] of training; cost: the model's straight-through cost if already computed
        (in the metric's unit), else it is computed here."""
        task = task_loss(model.task, logits, y)
        if cost is None:
            cost = torch.as_tensor(model_cost(model, "straight_through").get(self.metric))
        if self.schedule is None:
            return {
                "task": task,
                "cost": cost,
                "penalty": 0.0,
                "total": task,
                "target": float("nan"),
            }
        target = self.schedule.target(progress)
        penalty = budget_penalty(cost, target, self.weight, self.mode)
        return {
            "task": task,
            "cost": cost,
            "penalty": penalty,
            "total": task + penalty,
            "target": target,
        }

    def fit_budget_(
        self,
        model: DNArchNet,
        groups: Sequence[tuple[Sequence[nn.Parameter], float]],
        band: float = 0.02,
        max_steps: int = 5000,
    ) -> int:
        """Fit the cropped network's cost into ``[(1 - band) budget, budget]`` by sign steps on the cost
        alone (no data); returns the number of steps taken (0 if it already fits).

        Called once, when the architecture freezes. The two-sided penalty holds the cost *around* the
        target, and a short run (few steps after the target reaches the budget, with a decayed
        learning rate) can freeze a few percent off it, above or below. Every mask parameter moves by
        its group's step against (to shrink) or along (to grow) the sign of its cost gradient, as Adam's
        first steps would, so each axis gives or takes its share; ``project_arch_`` keeps the floors
        and ceilings. Growing stops at the last step that stays within the budget.
        groups: (parameters, step size) pairs.
        """
        if self.budget is None:
            return 0
        params = [p for ps, _ in groups for p in ps]
        steps_of = [step for ps, step in groups for _ in ps]
        if not params:
            return 0
        taken = 0
        if self._hard_cost(model) > self.budget:
            taken += self._sign_steps(model, params, steps_of, False, band, max_steps)
        if self._hard_cost(model) < (1 - band) * self.budget:  # also after a shrink that fell far
            taken += self._sign_steps(model, params, steps_of, True, band, max_steps)
        return taken

    def _sign_steps(
        self,
        model: DNArchNet,
        params: list[nn.Parameter],
        steps_of: list[float],
        grow: bool,
        band: float,
        max_steps: int,
    ) -> int:
        """Shrink until the cost is at or under the budget (every parameter steps at once), or grow
        towards it: each parameter in turn steps up while the cost stays within the budget, and stops
        at the step that would cross it (one discrete size can cost more than the 2% band, so a
        parameter that cannot grow leaves the room to the others). Returns the steps kept."""
        assert self.budget is not None
        blocked: set[int] = set()
        for steps in range(max_steps):
            before = [p.detach().clone() for p in params]
            st = model_cost(model, "straight_through").get(self.metric)
            grads = torch.autograd.grad(st, params, allow_unused=True)
            movable = [
                i
                for i, g in enumerate(grads)
                if g is not None and bool(g.ne(0).any()) and i not in blocked
            ]
            if grow:
                movable = movable[steps % len(movable) :][:1] if movable else []
            with torch.no_grad():
                for i in movable:
                    step = steps_of[i] if grow else -steps_of[i]
                    params[i].add_(step * torch.sign(grads[i]))  # type: ignore[arg-type]
            model.project_arch_()
            cost = self._hard_cost(model)
            moved = [i for i in movable if not torch.equal(params[i], before[i])]
            if grow and cost > self.budget:  # that step crosses the budget: take it back
                with torch.no_grad():
                    for i in movable:
                        params[i].copy_(before[i])
                blocked.update(movable)
                moved = movable
            if grow:
                blocked.update(set(movable) - set(moved))  # at its ceiling
                if (1 - band) * self.budget <= cost <= self.budget:
                    return steps + 1
                if len(blocked) == len(params):
                    return steps
                continue
            if not moved:
                return steps  # every learned axis is at its floor
            if cost <= self.budget:
                return steps + 1
        return max_steps

    def _hard_cost(self, model: DNArchNet) -> float:
        return float(model_cost(model, "hard").get(self.metric))


class FixedNet(nn.Module):
    """Any network as the ``Trainer`` trains it: every trainable parameter is a weight, there are no
    architecture parameters; it trains with no phase (``train.phases``).

    Args:
        net: x (B, C, *S) -> (B, K), or (B, K, *S) for a per-position task.
        task: 'classify', 'segment' or 'regress' (``metrics.task_loss``).
        num_classes: K (output channels for regression).
    """

    def __init__(self, net: nn.Module, task: str, num_classes: int) -> None:
        super().__init__()
        self.net, self.task, self.num_classes = net, task, num_classes
        self.verdicts = getattr(net, "verdicts", None)  # an exported network's backend verdicts

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def arch_parameters(self) -> list[nn.Parameter]:
        return []

    def resolution_parameters(self) -> list[nn.Parameter]:
        return []


class TaskObjective:
    """The task loss alone, with ``Objective``'s interface (no budget)."""

    metric = "macs"
    budget: float | None = None

    def __call__(
        self,
        model: FixedNet,
        logits: Tensor,
        y: Tensor,
        progress: float,
        cost: Tensor | None = None,
    ) -> dict[str, Tensor | float]:
        """logits (B, K) or (B, K, *S); y as ``task_loss`` wants."""
        task = task_loss(model.task, logits, y)
        zero = task.detach() * 0 if cost is None else cost
        return {"task": task, "cost": zero, "penalty": 0.0, "total": task, "target": math.nan}
