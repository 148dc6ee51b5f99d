"""The one training loop: AdamW with separate groups, warm-up + cosine, evaluation, events.

It knows of the model only ``arch_parameters()``, ``weight_parameters()`` and
``resolution_parameters()`` (the optimiser's groups), its ``task`` and ``num_classes`` (for the
metrics) and whether it is a ``DNArchNet`` (which has a cost, and phases by default). It knows
nothing of files (checkpoints and metrics are callbacks, on rank 0) and does none of DNArch's
phases itself: searching, the freeze and the budget fit are ``phases.Events`` handlers
(``phases.ArchitecturePhases``, on every rank). The device and random state live in ``runtime``,
the optimiser's schedule in ``schedule``, the batches in ``loader``.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from dnarch.config import TrainConfig
from dnarch.cost import model_cost
from dnarch.data import DataBundle
from dnarch.functional.channels import corner, holds, larger
from dnarch.functional.conv import Verdicts
from dnarch.models import DNArchNet
from dnarch.nn.sync_norm import syncing
from dnarch.train import distributed
from dnarch.train.loader import batch_loader
from dnarch.train.metrics import evaluate_task, target_peak
from dnarch.train.phases import ArchitecturePhases, Events
from dnarch.train.runtime import (
    finite_gradients,
    pick_device,
    rng_states,
    set_rng_states,
    stop_on_signals,
    to_cpu,
)
from dnarch.train.schedule import adamw, freeze_epoch, param_groups, resolution_scale, warmup_cosine

if TYPE_CHECKING:  # a fixed network and its objective train through the same loop
    from dnarch.train.objective import FixedNet


@dataclass
class TrainState:
    """What callbacks see, and everything a checkpoint needs to continue the run bit for bit.

    ``epoch``: epochs completed; ``step``: batches done in the epoch under way (0 between epochs);
    ``sums``: that epoch's running metric sums; ``row``: the last finished epoch's metrics;
    ``history``: every finished epoch's row.
    """

    model: DNArchNet | FixedNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    faults: int = 0  # NaN/inf steps met so far (the first is survived, the second ends the run)
    snapshot: Callable[[], dict[str, Any]] = dict  # the trainer's state_dict, for checkpoints


class NumericalError(ArithmeticError):
    """Training met a second NaN or inf loss or gradient. One line meant for the user."""


class TrainingInterrupted(Exception):
    """Training stopped on a user's request (Ctrl-C or SIGTERM) at a step boundary, after the
    callbacks' ``on_interrupt`` (the checkpoint) ran."""


class Loss(Protocol):
    """What the loop asks of an objective: ``Objective`` (task loss and budget penalty) for a
    ``DNArchNet``, ``train.fixed.TaskObjective`` (the task loss) for a fixed network."""

    metric: str

    def __call__(
        self, model: Any, logits: Tensor, y: Tensor, progress: float, cost: Tensor | None = None
    ) -> dict[str, Tensor | float]: ...


class Callback(Protocol):
    """``on_epoch_end`` after every epoch; ``on_interrupt`` (optional) when the user stops the run."""

    def on_epoch_end(self, state: TrainState) -> None: ...


class LossAndCost(nn.Module):
    """The model's output and its straight-through cost in one forward: DistributedDataParallel then
    sees, in one graph, every parameter the objective depends on (masks enter through both)."""

    def __init__(self, model: DNArchNet | FixedNet, metric: str) -> None:
        super().__init__()
        self.model, self.metric = model, metric

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, *S) -> (the model's output, the cost as a 0-d tensor; 0 for a fixed network)."""
        if not isinstance(self.model, DNArchNet):
            return self.model(x), torch.zeros((), device=x.device)
        plan = self.model.hard_plan()  # one plan a step: the cost and the forward read it
        cost = model_cost(self.model, "straight_through", plan).get(self.metric)
        return self.model(x, plan=plan), torch.as_tensor(cost)


def fit_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Moments saved larger than their parameter (a run saved before blocks on a fixed pyramid
    kept only their reachable channels, ``DNArchBlock.fit_allocation_``): keep the leading
    corner, as the model's loading does. Moments of any other shape raise ``ValueError`` (the
    fused AdamW would read past them)."""
    for p, state in optimizer.state.items():
        for k, v in state.items():
            if not isinstance(v, torch.Tensor) or not isinstance(p, torch.Tensor) or v.dim() == 0:
                continue
            if not holds(v, p):
                raise ValueError(
                    f"its optimiser state holds {k} of shape {tuple(v.shape)} for a parameter of "
                    f"shape {tuple(p.shape)}"
                )
            if larger(v, p):
                state[k] = corner(v, p.shape).clone()


def _fits(saved: dict[str, Any], params: list[list[Tensor]]) -> bool:
    """Whether ``saved`` (an optimiser's ``state_dict()``) lists moments that fit ``params`` (per
    group, in order): the same counts, each moment its parameter's shape or larger (a corner)."""
    groups = saved.get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(ps) for ps in params]:
        return False
    for g, ps in zip(groups, params, strict=True):
        for index, p in zip(g["params"], ps, strict=True):
            moment = saved.get("state", {}).get(index, {}).get("exp_avg")
            if isinstance(moment, Tensor) and not holds(moment, p):
                return False
    return True


def upgrade_optimizer_state(
    model: DNArchNet | FixedNet, optimizer: torch.optim.Optimizer, saved: dict[str, Any]
) -> dict[str, Any]:
    """``saved`` (an optimiser's ``state_dict()``) in the layout of ``optimizer``: a run saved
    while each block held its own kernel net lists those parameters one per block, in
    ``DNArchNet.legacy_parameter_names`` order; their moments are stacked in block order as the
    model's loading stacks the weights (``KernelNets``). A block that had no state then (removed
    from the start, so never updated) gets zero moments, and the stack the largest step count.
    The layout is told by the moments' shapes, not only their counts (with one block both layouts
    hold as many tensors). Any other state is returned as it is."""
    current = [list(g["params"]) for g in optimizer.param_groups]
    if not isinstance(model, DNArchNet) or _fits(saved, current):
        return saved
    names = {id(p): n for n, p in model.named_parameters()}
    legacy = model.legacy_parameter_names()
    stacked = "kernel_nets."

    def legacy_group(ps: list[Tensor]) -> list[str]:
        members = {names[id(p)] for p in ps}
        kernels = {n[len(stacked) :] for n in members if n.startswith(stacked)}
        return [
            n
            for n in legacy
            if n in members or (".kernel_net." in n and n.split(".kernel_net.")[1] in kernels)
        ]

    groups = saved.get("param_groups", [])
    old_groups = [legacy_group(ps) for ps in current]
    if [len(g) for g in old_groups] != [len(g["params"]) for g in groups]:
        return saved  # not that layout: loading reports the mismatch
    by_name = {
        name: saved["state"].get(index, {})
        for g, old in zip(groups, old_groups, strict=True)
        for name, index in zip(old, g["params"], strict=True)
    }
    state: dict[int, dict[str, Any]] = {}
    new_groups, index = [], 0
    for ps, saved_group in zip(current, groups, strict=True):
        members = []
        for p in ps:
            name = names[id(p)]
            if name.startswith(stacked):
                rest = name[len(stacked) :]
                blocks = range(len(model.blocks))
                parts = [by_name[f"blocks.{i}.conv.kernel_net.{rest}"] for i in blocks]
                known = [q for q in parts if q]
                if known:
                    row = p[0]
                    state[index] = {
                        k: max((q[k] for q in known), key=float)
                        if k == "step"
                        else torch.stack([q[k] if q else torch.zeros_like(row) for q in parts])
                        for k in known[0]
                    }
            elif by_name[name]:
                state[index] = by_name[name]
            members.append(index)
            index += 1
        new_groups.append({**saved_group, "params": members})
    return {"state": state, "param_groups": new_groups}


class Trainer:
    """Trains ``model`` on ``data`` under ``objective``; raises ``on_epoch_end`` to callbacks.

    ``state_dict()`` / ``load_state_dict()`` hold everything needed to continue a run exactly where
    it stopped, between epochs or in the middle of one: weights and masks, optimiser, scheduler, the
    data order and every RNG. A continued run equals an uninterrupted one bit for bit on CPU.

    Under ``torchrun`` (``distributed.init_from_env`` called first), each rank trains on its slice of
    every global batch of ``cfg.batch_size`` through DistributedDataParallel, with BatchNorm statistics
    and the epoch's metrics summed over ranks: the run equals one process on the whole batch. Only
    rank 0 calls the callbacks (files are written once) and shows progress.

    ``model`` is a ``DNArchNet`` under its budget ``Objective``, or any network as a ``FixedNet``
    under the task loss alone (``train.fixed``): the baselines train through this same loop.
    ``phases`` handle the loop's events on every rank (default: ``ArchitecturePhases`` for a
    ``DNArchNet``, none for a fixed network).
    """

    def __init__(
        self,
        model: DNArchNet | FixedNet,
        objective: Loss,
        data: DataBundle,
        cfg: TrainConfig,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
        desc: str = "train",
        phases: Sequence[Events] | None = None,
    ) -> None:
        self.model, self.objective, self.data, self.cfg = model, objective, data, cfg
        self.world = distributed.current()
        if len(data.x_train) < self.world.size:
            raise ValueError(
                f"{len(data.x_train)} training samples cannot feed {self.world.size} ranks"
            )
        self.callbacks = list(callbacks) if self.world.main else []
        if phases is None:
            phases = [ArchitecturePhases()] if isinstance(model, DNArchNet) else []
        self.phases = list(phases)
        self.progress = progress and self.world.main
        self.device = pick_device(cfg.device)
        self.model.to(self.device)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # the data order, and only that
        # every global batch is whole (the last partial one is dropped) unless there is only one
        self.global_batch = min(cfg.batch_size, len(data.x_train))
        self.loader = batch_loader(
            TensorDataset(data.x_train, data.y_train), cfg.batch_size, self.generator, self.world,
            cfg.workers, pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        self.steps_per_epoch = len(self.loader)
        self.loss_and_cost = LossAndCost(model, objective.metric)
        self.wrapped: nn.Module = self.loss_and_cost
        self.wrapped_frozen: bool | None = None  # the freeze state ``wrapped`` was built for
        self.autocast = cfg.precision == "bf16"
        total = cfg.epochs * self.steps_per_epoch
        self.resolution_scale = resolution_scale(cfg, self.steps_per_epoch)
        self.optimizer = adamw(param_groups(model, cfg, self.resolution_scale), self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, cfg.warmup_epochs * self.steps_per_epoch)
        )
        self.freeze_epoch = freeze_epoch(cfg)
        self.state = TrainState(model, self.optimizer, self.scheduler, snapshot=self.state_dict)
        # the data-order generator as it stood when the epoch under way began
        self.epoch_order = self.generator.get_state()
        self._stop_requested = False
        self.desc = desc  # the progress bar's label
        # the test metrics of the model as ``fit`` left it, where its last epoch evaluated them in
        # this process and nothing changed the model after (None otherwise)
        self.last_test: dict[str, float] | None = None
        # the model's backend verdicts, saved with the checkpoint (a fixed network's net may have one)
        self.verdicts: Verdicts = getattr(model, "verdicts", None) or Verdicts()
        self.peak = target_peak(data.y_test) if model.task == "regress" else 1.0

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue this run (tensors on the CPU; loads with ``weights_only=True``)."""
        st = self.state
        return {
            "model": to_cpu(self.model.state_dict()),
            "optimizer": to_cpu(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "epoch": st.epoch,
            "step": st.step,
            "sums": dict(st.sums),
            "row": dict(st.row),
            "history": [dict(r) for r in st.history],
            "faults": st.faults,
            "data_order": self.epoch_order if st.step else self.generator.get_state(),
            "rng": rng_states(),
            "backend_choices": self.verdicts.state(),
        }

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s output: the next ``fit()`` picks up at its step.
        A state that cannot be this run's (a position outside the run, a history of another
        length) raises ``ValueError`` before anything is loaded."""
        epoch, step = int(blob["epoch"]), int(blob["step"])
        at_end = epoch == self.cfg.epochs  # finished training, not yet exported: step 0 only
        if not 0 <= epoch <= self.cfg.epochs or not 0 <= step < (
            1 if at_end else self.steps_per_epoch
        ):
            raise ValueError(
                f"its position (epoch {epoch}, step {step}) lies outside this run's "
                f"{self.cfg.epochs} epochs of {self.steps_per_epoch} steps"
            )
        if len(blob["history"]) != epoch:
            raise ValueError(f"its history holds {len(blob['history'])} epochs, not {epoch}")
        self.model.load_state_dict(blob["model"])
        self.model.to(self.device)
        self.optimizer.load_state_dict(
            upgrade_optimizer_state(self.model, self.optimizer, blob["optimizer"])
        )
        fit_optimizer_state(self.optimizer)
        self.scheduler.load_state_dict(blob["scheduler"])
        st = self.state
        st.epoch, st.step, st.sums = int(blob["epoch"]), int(blob["step"]), dict(blob["sums"])
        st.row, st.history = dict(blob["row"]), [dict(r) for r in blob["history"]]
        st.faults = int(blob.get("faults", 0))
        self.generator.set_state(blob["data_order"])
        self.epoch_order = blob["data_order"]
        set_rng_states(blob["rng"])
        self.verdicts.load(blob["backend_choices"])

    def request_stop(self) -> None:
        """Ask the loop to stop after the step under way (safe from a signal handler)."""
        self._stop_requested = True

    def fit(self) -> list[dict[str, Any]]:
        """Run every remaining epoch; returns all per-epoch metric rows (earlier ones included).

        Ctrl-C or SIGTERM stops after the step under way: callbacks' ``on_interrupt`` runs (the
        checkpoint is written) and ``TrainingInterrupted`` is raised.
        """
        total = self.cfg.epochs * self.steps_per_epoch
        done = self.state.epoch * self.steps_per_epoch + self.state.step
        bar = tqdm(
            total=total, initial=done, desc=self.desc, disable=not self.progress, unit="step"
        )
        deterministic = torch.are_deterministic_algorithms_enabled()
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        with stop_on_signals(self.request_stop):
            try:
                for epoch in range(self.state.epoch, self.cfg.epochs):
                    row = self._epoch(epoch, bar)
                    st = self.state
                    st.epoch, st.step, st.sums, st.row = epoch + 1, 0, {}, row
                    st.history.append(row)
                    for cb in self.callbacks:
                        cb.on_epoch_end(st)
                    if self._stop_requested and epoch + 1 < self.cfg.epochs:
                        self._interrupt()
                changed = [ph.on_fit_end(self) for ph in self.phases]
                if any(changed):
                    self.last_test = None
            finally:
                torch.use_deterministic_algorithms(deterministic)
                bar.close()
                for ph in self.phases:
                    ph.on_fit_exit(self)
        return list(self.state.history)

    def _wrap(self, frozen: bool) -> nn.Module:
        """The module the step runs: ``LossAndCost``, in DistributedDataParallel across ranks. DDP
        reduces the parameters that required a gradient when it was built, so it is built again when
        the architecture freezes (the masks then stop taking gradients)."""
        if not self.world.active:
            return self.loss_and_cost
        if self.wrapped_frozen is not frozen:
            cuda = self.device.type == "cuda"
            self.wrapped = DistributedDataParallel(
                self.loss_and_cost,
                device_ids=[self.device.index] if cuda else None,
                # BatchNorm statistics are synchronised as they are made (and equal at the start)
                forward_sync_buffers=False,
                find_unused_parameters=True,  # removed blocks and cropped axes leave some unused
            )
            self.wrapped_frozen = frozen
        return self.wrapped

    def _epoch(self, epoch: int, bar: Any) -> dict[str, Any]:
        model, dev, st, world = self.model, self.device, self.state, self.world
        model.train()
        frozen = epoch >= self.freeze_epoch
        resume_at = st.step
        started_sums: dict[str, float] = {}
        for ph in self.phases:
            started_sums.update(ph.on_epoch_start(self, epoch, resumed=resume_at > 0))
        step_module = self._wrap(frozen)
        if resume_at:
            # mid-epoch resume: the same data order, fast-forwarded past the batches already done
            rng = torch.get_rng_state()
            self.generator.set_state(self.epoch_order)
        else:
            self.epoch_order = self.generator.get_state()
            st.sums = {"task": 0.0, "penalty": 0.0, "correct": 0.0, "n": 0.0, "positions": 0.0}
            st.sums["budget_fit_steps"] = 0.0
            st.sums.update(started_sums)  # kept in checkpoints, like the sums
        batches = iter(self.loader)
        if resume_at:
            for _ in range(resume_at):
                next(batches)
            torch.set_rng_state(rng)  # building the order drew nothing from it; keep it exact
        out: dict[str, Any] = {}
        sums = st.sums
        started, seen = time.perf_counter(), 0.0
        for step, (xb, yb) in enumerate(batches, start=resume_at):
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            progress = (epoch * self.steps_per_epoch + step) / (
                self.cfg.epochs * self.steps_per_epoch
            )
            for ph in self.phases:
                ph.on_step_start(self, epoch, progress)
            with syncing(world.bn_group), torch.autocast(dev.type, torch.bfloat16, self.autocast):
                logits, cost = step_module(xb)
                out = self.objective(model, logits, yb, progress, cost=cost)
            self.optimizer.zero_grad(set_to_none=True)
            total = out["total"]
            assert isinstance(total, torch.Tensor)
            finite = bool(torch.isfinite(total))
            if world.active:
                # this rank's share of the global batch's mean (shares differ only in a lone batch
                # that does not divide); DDP averages the gradients over ranks
                share = len(yb) * world.size / self.global_batch
                (out["task"] * share + (total - out["task"])).backward()  # type: ignore[operator]
            elif finite:
                total.backward()
            task = float(torch.as_tensor(out["task"]).detach())
            n = len(yb)
            correct = 0.0
            if model.task != "regress":  # accuracy: per sample, or per position
                correct = float((logits.detach().argmax(1) == yb).sum())
            penalty = float(torch.as_tensor(out["penalty"]).detach())
            (faulty, stop), (task_sum, penalty_sum, correct, n_sum, positions) = (
                distributed.step_consensus(
                    [not finite or not self._finite_gradients(), self._stop_requested],
                    [task * n, penalty * n, correct, float(n), float(yb.numel())],
                    world,
                )
            )
            if faulty:
                # nothing was applied: the weights are still the last good ones
                self._numerical_fault(epoch, step, total)
                self.optimizer.zero_grad(set_to_none=True)
            else:
                for ph in self.phases:
                    ph.on_before_optimizer_step(self, epoch, epoch * self.steps_per_epoch + step)
                self.optimizer.step()
            if faulty:  # the schedule moves past a skipped step on purpose: no warning for it
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
                    self.scheduler.step()
            else:
                self.scheduler.step()
            for ph in self.phases:
                ph.on_step_end(self)
            seen += n_sum
            if not faulty:  # a skipped step adds nothing to the epoch's metrics
                sums["task"] += task_sum
                sums["penalty"] += penalty_sum
                sums["correct"] += correct
                sums["n"] += n_sum
                sums["positions"] = sums.get("positions", 0.0) + positions
            st.step = step + 1
            bar.update(1)
            # shown at the bar's next refresh (every 0.1 s), not redrawn at every step
            bar.set_postfix(
                epoch=epoch + 1,
                loss=f"{task:.3f}",
                macs=f"{float(cost.detach()):.3g}",
                refresh=False,
            )
            if stop:
                self._stop_requested = True
                if st.step < self.steps_per_epoch:
                    self._interrupt()
        elapsed = time.perf_counter() - started
        distributed.check_identical(list(model.arch_parameters()), world, "architecture parameters")
        test = evaluate_task(
            model, self.data.x_test, self.data.y_test, dev, model.task, model.num_classes,
            self.peak, world=world,
        )  # fmt: skip
        self.last_test = dict(test)
        positions = max(sums.get("positions", sums["n"]), 1)
        train = {} if model.task == "regress" else {"train_acc": sums["correct"] / positions}
        return {
            "epoch": epoch + 1,
            "train_loss": sums["task"] / max(sums["n"], 1),
            "train_penalty": sums["penalty"] / max(sums["n"], 1),
            **train,
            **{f"test_{k}": v for k, v in test.items()},
            "cost": float(torch.as_tensor(out["cost"]).detach()) if out else float("nan"),
            "target": float(out["target"]) if out else float("nan"),
            "arch_frozen": frozen,
            "budget_fit_steps": int(sums.get("budget_fit_steps", 0)),
            # training throughput over every rank (evaluation excluded); wall clock, so it varies
            "samples_per_s": seen / elapsed if elapsed > 0 else float("nan"),
        }

    def _finite_gradients(self) -> bool:
        return finite_gradients(self.model.parameters())

    def _numerical_fault(self, epoch: int, step: int, total: torch.Tensor) -> None:
        """A NaN or inf loss or gradient: skip the step and halve every learning rate, once; a second
        fault ends the run (``NumericalError``) with the last epoch's checkpoint left as it was."""
        st = self.state
        st.faults += 1
        what = "loss" if not torch.isfinite(total) else "gradient"
        where = f"epoch {epoch + 1}, step {step + 1}"
        if st.faults > 1:
            raise NumericalError(
                f"non-finite {what} again at {where}; stopped. The last checkpoint (epoch "
                f"{st.epoch}) is intact; try a lower --train.lr or --train.arch_lr"
            )
        self.scheduler.base_lrs = [lr / 2 for lr in self.scheduler.base_lrs]
        tqdm.write(
            f"dnarch: non-finite {what} at {where}: step skipped, learning rates halved",
            file=sys.stderr,
        )

    def _interrupt(self) -> None:
        for cb in self.callbacks:
            hook = getattr(cb, "on_interrupt", None)
            if hook is not None:
                hook(self.state)
        raise TrainingInterrupted(
            f"stopped at epoch {self.state.epoch + 1}, step {self.state.step}"
        )
