"""The objective: task loss plus the budget penalty on the straight-through cost."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dnarch.config import BudgetConfig, ConfigError
from dnarch.cost import BudgetSchedule, budget_penalty, model_cost
from dnarch.models import DNArchNet


def resolve_budget(cfg: BudgetConfig, max_cost: float) -> float | None:
    """Absolute budget: a fraction (<= 1) of ``max_cost`` or the number itself; None if off."""
    if cfg.budget is None:
        return None
    return cfg.budget * max_cost if cfg.budget <= 1 else float(cfg.budget)


class Objective:
    """``{"task", "cost", "penalty", "total", "target"}`` for a batch. Knows nothing of the loop."""

    def __init__(self, model: DNArchNet, cfg: BudgetConfig) -> None:
        self.metric, self.weight, self.mode = cfg.metric, cfg.weight, cfg.mode
        self.max_cost = float(model_cost(model, "max").get(cfg.metric))
        budget = resolve_budget(cfg, self.max_cost)
        self.budget = budget
        self.floor_cost = float(model_cost(model.floor_copy(), "hard").get(cfg.metric))
        unit = "MACs" if cfg.metric == "macs" else "parameters"
        if budget is not None and budget > self.max_cost * (1 + 1e-9):
            raise ConfigError(
                f"budget {budget:,.0f} {unit} is above the maximal network's {self.max_cost:,.0f}: "
                "nothing to learn; give a smaller budget or --budget none"
            )
        if budget is not None and budget < self.floor_cost:
            raise ConfigError(
                f"budget {budget:,.0f} {unit} is below the smallest network the learned axes can "
                f"reach ({self.floor_cost:,.0f}, {100 * self.floor_cost / self.max_cost:.1f}% of the "
                "maximal); raise the budget or learn more axes"
            )
        self.schedule = (
            BudgetSchedule(budget, self.max_cost, cfg.anneal, cfg.anneal_fraction)
            if budget is not None
            else None
        )

    def __call__(
        self, model: DNArchNet, logits: Tensor, y: Tensor, progress: float
    ) -> dict[str, Tensor | float]:
        """logits: (B, K); y: (B,); progress in [0, 1] of training."""
        task = F.cross_entropy(logits, y)
        cost = model_cost(model, "straight_through").get(self.metric)
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
