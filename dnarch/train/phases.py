"""The phases of a DNArch run, as events of the training loop (``Trainer``).

A run searches, then freezes: while the architecture is searched the masks learn beside the weights
(with ``train.anneal_gates`` the gates sharpen as the search goes on; with ``train.alternate`` the
weights and the masks take turns); at the freeze the architecture is fit into the budget (and annealed
gates snap to 0/1) and the masks stop learning; the weights train on, on the final network. A run
that never freezes is fit into the budget after its last step. After every optimiser step the masks
are projected back inside their bounds.

The loop does none of this itself: it raises ``Events`` to every phase it was given on every rank
(they change what is trained, so each rank must run them), and ``on_epoch_end`` to callbacks on
rank 0 (they write files); it knows only the epoch the architecture freezes at (to rebuild
DistributedDataParallel then and to mark the epoch's row). A fixed network (``train.fixed``) trains
with no phase at all.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import torch

    from dnarch.config import TrainConfig
    from dnarch.train.distributed import World


class Loop(Protocol):
    """What a phase reads of the training loop (``trainer.Trainer``; a protocol, so that this module
    need not import the loop that imports it)."""

    @property
    def cfg(self) -> TrainConfig: ...

    @property
    def model(self) -> nn.Module: ...

    @property
    def objective(self) -> Any: ...

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    @property
    def world(self) -> World: ...

    @property
    def freeze_epoch(self) -> int:
        """The epoch the architecture freezes at (``schedule.freeze_epoch``)."""
        ...

    @property
    def resolution_scale(self) -> float: ...


def _masks(trainer: Loop) -> list[nn.Parameter]:
    """Every mask parameter, learning or frozen: the optimiser's mask groups (the model's
    ``arch_parameters()`` lists only those that learn)."""
    return [
        p for g in trainer.optimizer.param_groups if g["name"] in _MASK_GROUPS for p in g["params"]
    ]


_MASK_GROUPS = ("arch", "resolution")  # ``schedule.param_groups``' names


class Events:
    """The loop's events, each a no-op here: a phase overrides those it acts on.

    ``on_epoch_start`` runs before the epoch's first step (also when a run resumes in the middle of
    an epoch: ``resumed`` is then True) and returns numbers to keep in that epoch's sums (ignored on
    a resume: the sums come from the checkpoint);
    ``on_step_start`` before the forward pass; ``on_before_optimizer_step`` after the backward pass
    of a step with finite gradients; ``on_step_end`` after the optimiser and scheduler steps (skipped
    ones included); ``on_fit_end`` after the last epoch (True: it changed the model, so the last
    epoch's evaluation no longer holds); ``on_fit_exit`` whenever ``fit`` returns or
    raises."""

    def on_epoch_start(self, trainer: Loop, epoch: int, resumed: bool) -> dict[str, float]:
        return {}

    def on_step_start(self, trainer: Loop, epoch: int, progress: float) -> None:
        pass

    def on_before_optimizer_step(self, trainer: Loop, epoch: int, global_step: int) -> None:
        pass

    def on_step_end(self, trainer: Loop) -> None:
        pass

    def on_fit_end(self, trainer: Loop) -> bool:
        return False

    def on_fit_exit(self, trainer: Loop) -> None:
        pass


class Searched(Protocol):
    """What the phases ask of a searched model (``DNArchNet``)."""

    def anneal_gates_(self, fraction: float) -> None: ...

    def snap_gates_(self) -> None: ...

    def project_arch_(self) -> None: ...


class BudgetFit(Protocol):
    """What the phases ask of the objective (``train.objective.Objective``)."""

    def fit_budget_(
        self, model: Any, groups: Sequence[tuple[Sequence[nn.Parameter], float]]
    ) -> int:
        """Fit the architecture into the budget; returns the steps taken."""
        ...


class ArchitecturePhases(Events):
    """Search, freeze and fit of a DNArch run (module docstring), by the trainer's settings
    (``trainer.cfg``): the architecture freezes at ``trainer.freeze_epoch``
    (``schedule.freeze_epoch``), the epoch from which the loop also counts it frozen."""

    def frozen(self, trainer: Loop, epoch: int) -> bool:
        return epoch >= trainer.freeze_epoch

    def on_epoch_start(self, trainer: Loop, epoch: int, resumed: bool) -> dict[str, float]:
        """At the freeze (before its first step, not again on a resume): the budget fit; the masks
        learn in every epoch before it and in none after."""
        fit_steps = 0
        if epoch == trainer.freeze_epoch and not resumed:
            fit_steps = self._finalise(trainer)
        frozen = self.frozen(trainer, epoch)
        for p in _masks(trainer):
            # the architecture is final: masks stop learning and skip their gradient-only work
            p.requires_grad_(not frozen)
        return {"budget_fit_steps": float(fit_steps)}

    def on_step_start(self, trainer: Loop, epoch: int, progress: float) -> None:
        """Annealed gates sharpen with the search's progress, fully sharp at the freeze."""
        if trainer.cfg.anneal_gates and not self.frozen(trainer, epoch):
            model: Searched = trainer.model  # type: ignore[assignment]
            model.anneal_gates_(
                min(1.0, progress * trainer.cfg.epochs / max(trainer.freeze_epoch, 1))
            )

    def on_before_optimizer_step(self, trainer: Loop, epoch: int, global_step: int) -> None:
        """Decoupled updates (``train.alternate``) while searching: even steps move the weights
        only, odd steps the mask parameters only (a parameter without a gradient is left alone by
        AdamW, moments included)."""
        if not trainer.cfg.alternate or self.frozen(trainer, epoch):
            return
        arch = {id(p) for p in _masks(trainer)}
        weights_turn = global_step % 2 == 0
        for p in trainer.model.parameters():
            if (id(p) in arch) == weights_turn:
                p.grad = None

    def on_step_end(self, trainer: Loop) -> None:
        model: Searched = trainer.model  # type: ignore[assignment]
        model.project_arch_()

    def on_fit_end(self, trainer: Loop) -> bool:
        """No frozen phase (``train.freeze_arch_fraction=0`` or one epoch): the architecture is fit
        into the budget (and annealed gates snap) after the last step, so the exported network still
        meets the budget; its weights were not trained after the fit, which the user is told.
        True where it did so (the model changed after the last epoch's evaluation)."""
        if trainer.freeze_epoch < trainer.cfg.epochs:
            return False
        steps = self._finalise(trainer)
        if steps and trainer.world.main:
            tqdm.write(
                f"dnarch: the architecture never froze (train.freeze_arch_fraction="
                f"{trainer.cfg.freeze_arch_fraction:g}, {trainer.cfg.epochs} epoch(s)), so it was "
                f"fit into the budget after the last step ({steps} steps), with no training after "
                "the fit",
                file=sys.stderr,
            )
        return True

    def on_fit_exit(self, trainer: Loop) -> None:
        """Frozen for the last epochs only: the masks stay learnable for whatever comes next."""
        for p in _masks(trainer):
            p.requires_grad_(True)

    def _finalise(self, trainer: Loop) -> int:
        """Fit the architecture into the budget and, with annealed gates, make every decision
        binary. Returns the budget fit's steps."""
        objective: BudgetFit = trainer.objective  # type: ignore[assignment]
        steps = objective.fit_budget_(trainer.model, self._fit_groups(trainer))
        if trainer.cfg.anneal_gates:
            model: Searched = trainer.model  # type: ignore[assignment]
            model.snap_gates_()
        return steps

    def _fit_groups(self, trainer: Loop) -> list[tuple[list[nn.Parameter], float]]:
        """Mask parameter groups with the step ``Objective.fit_budget_`` takes: 1e-3 (in mask units,
        about a sixteenth of a channel at 64), scaled for the resolution cut-offs as in training."""
        scale = {"arch": 1.0, "resolution": trainer.resolution_scale}
        return [
            (list(g["params"]), 1e-3 * scale[g["name"]])
            for g in trainer.optimizer.param_groups
            if g["name"] in scale
        ]
