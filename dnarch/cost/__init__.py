"""Differentiable cost estimate of the network the masks describe, and the budget penalty."""

from dnarch.cost.budget import BudgetSchedule, budget_penalty
from dnarch.cost.estimate import Cost, estimate_cost, floor_copy, model_cost

__all__ = ["BudgetSchedule", "Cost", "budget_penalty", "estimate_cost", "floor_copy", "model_cost"]
