"""A small trainer: AdamW with separate groups, warm-up + cosine, evaluation, events to callbacks.

It knows of the model only ``arch_parameters()``, ``weight_parameters()``, ``project_arch_()`` and its
``task`` and ``num_classes`` (for the metrics), and nothing of files: checkpoints and metrics are
callbacks. When the architecture freezes it asks the objective to fit it to the budget.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, TensorDataset
from tqdm.auto import tqdm

from dnarch.config import TrainConfig
from dnarch.cost import model_cost
from dnarch.data import DataBundle
from dnarch.functional.conv import Verdicts
from dnarch.models import DNArchNet
from dnarch.nn.sync_norm import syncing
from dnarch.train import distributed
from dnarch.train.metrics import evaluate_task, target_peak

if TYPE_CHECKING:  # a fixed network and its objective train through the same loop
    from dnarch.train.fixed import FixedNet


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (for 'auto'; under torchrun, this rank's ``LOCAL_RANK`` GPU), else CPU; or
    the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", distributed.current().local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"train.device={name!r} but no such CUDA device is available; use auto or cpu"
        )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def _to_cpu(obj: Any) -> Any:
    """A copy of nested dicts/lists with every tensor on the CPU (checkpoints load anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


@contextmanager
def _stop_on_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """While training: the first Ctrl-C or SIGTERM asks for a clean stop at the next step boundary;
    a second Ctrl-C interrupts at once. Signal handlers can only be set in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    asked: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if asked and signum == signal.SIGINT:
            raise KeyboardInterrupt
        asked.append(signum)
        request_stop()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def rng_states() -> dict[str, Any]:
    """Every random generator the run may draw from (torch CPU and CUDA, numpy, Python)."""
    np_state: Any = np.random.get_state()  # ('MT19937', keys, pos, has_gauss, cached_gaussian)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` returned."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    key = n["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class Loss(Protocol):
    """What the loop asks of an objective: ``Objective`` (task loss and budget penalty) for a
    ``DNArchNet``, ``train.fixed.TaskObjective`` (the task loss) for a fixed network."""

    metric: str

    def __call__(
        self, model: Any, logits: Tensor, y: Tensor, progress: float, cost: Tensor | None = None
    ) -> dict[str, Tensor | float]: ...

    def fit_budget_(
        self, model: Any, groups: Sequence[tuple[Sequence[nn.Parameter], float]]
    ) -> int:
        """Fit the architecture into the budget at the freeze; returns the steps taken."""
        ...


class Callback(Protocol):
    """``on_epoch_end`` after every epoch; ``on_interrupt`` (optional) when the user stops the run."""

    def on_epoch_end(self, state: TrainState) -> None: ...


def param_groups(
    model: DNArchNet | FixedNet, cfg: TrainConfig, resolution_scale: float
) -> list[dict[str, Any]]:
    """Weights with decay (matrices), weights without (biases, norms), and mask parameters at arch_lr
    without decay; the resolution cut-offs at ``arch_lr * resolution_scale`` (see
    ``resolution_scale``). Groups are found through the model's API, never by names."""
    weights = model.weight_parameters()
    resolution = model.resolution_parameters()
    ids = {id(p) for p in resolution}
    arch = [p for p in model.arch_parameters() if id(p) not in ids]
    decay = [p for p in weights if p.ndim >= 2]
    no_decay = [p for p in weights if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "weights"},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0, "name": "weights_no_decay"},
    ]
    if arch:
        groups.append({"params": arch, "lr": cfg.arch_lr, "weight_decay": 0.0, "name": "arch"})
    if resolution:
        lr = cfg.arch_lr * resolution_scale
        groups.append({"params": resolution, "lr": lr, "weight_decay": 0.0, "name": "resolution"})
    return groups


def adamw(groups: list[dict[str, Any]], device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups``, fused into one kernel where PyTorch has it (CPU and CUDA): a DNArch
    network has about a hundred small parameter tensors, and the per-tensor loop of the default
    implementation takes 5x as long on them (``benchmarks/speed.py``). Same update, same
    determinism."""
    return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda"))


def freeze_epoch(cfg: TrainConfig) -> int:
    """The first epoch with the architecture frozen (``cfg.epochs``: never frozen). A run of two
    epochs or more with a freeze fraction freezes at least its last epoch."""
    frozen = int(round(cfg.freeze_arch_fraction * cfg.epochs))
    if cfg.freeze_arch_fraction > 0 and cfg.epochs >= 2:
        frozen = max(1, frozen)
    return cfg.epochs - frozen


def resolution_scale(cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The resolution cut-offs' learning rate as a fraction of ``arch_lr``: ``resolution_lr_scale``
    if set; else the one whose learning rate, summed over the architecture-learning steps of this
    schedule (warm-up and cosine included), is ``resolution_travel``, at most 1. MNIST-1D's default
    run (62 steps per epoch, 20 epochs) gets 0.1; a run with 8x fewer steps gets 8x the rate."""
    if cfg.resolution_lr_scale is not None:
        return cfg.resolution_lr_scale
    total = cfg.epochs * steps_per_epoch
    f = warmup_cosine(total, cfg.warmup_epochs * steps_per_epoch)
    arch_steps = freeze_epoch(cfg) * steps_per_epoch
    reach = cfg.arch_lr * sum(f(step) for step in range(arch_steps))
    return min(1.0, cfg.resolution_travel / reach) if reach > 0 else 1.0


def warmup_cosine(total: int, warmup: int) -> Any:
    """LR multiplier: linear warm-up for ``warmup`` steps, then cosine to zero at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


class RankBatches(Sampler[list[int]]):
    """This rank's slice of every global batch: a contiguous ``1/size`` of it (sizes differ by at most
    one sample when the batch does not divide). A world of one takes whole batches, in the order that
    ``DataLoader(shuffle=True, generator=...)`` draws them."""

    def __init__(self, batches: BatchSampler, rank: int = 0, size: int = 1) -> None:
        self.batches, self.rank, self.size = batches, rank, size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            n = len(batch)
            yield batch[self.rank * n // self.size : (self.rank + 1) * n // self.size]

    def __len__(self) -> int:
        return len(self.batches)


def batch_loader(
    data: TensorDataset,
    batch_size: int,
    generator: torch.Generator,
    world: distributed.World,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """Shuffled batches of ``data`` for this rank: its ``RankBatches`` slice of every global batch of
    ``batch_size`` (whole batches only, unless there is just one). The order is the one
    ``DataLoader(data, batch_size, shuffle=True, generator=generator)`` draws, on every rank; each
    batch is one tensor gather (the sampler yields index lists), in ``workers`` processes if > 0."""
    n = len(data)
    batches = BatchSampler(
        RandomSampler(range(n), generator=generator), batch_size, drop_last=n > batch_size
    )
    return DataLoader(
        data,
        sampler=RankBatches(batches, world.rank, world.size),
        batch_size=None,
        generator=generator,  # the loader draws its worker seed from it, as a shuffling one does
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )


def finite_gradients(parameters: Iterable[Tensor]) -> bool:
    """Whether every gradient of ``parameters`` is finite (those without one are skipped): one fused
    check over all of them, as ``torch.amp.GradScaler`` makes (unscaling by 1 leaves the gradients
    as they were), 5x cheaper than a reduction per tensor on a CPU step of MNIST-1D's network."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    found = torch.zeros((), device=grads[0].device)
    try:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones_like(found))
    except (NotImplementedError, RuntimeError):  # a device or dtype without the fused check
        return bool(torch.isfinite(torch.stack([g.abs().amax().float() for g in grads])).all())
    return not bool(found)


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
        cost = model_cost(self.model, "straight_through").get(self.metric)
        return self.model(x), torch.as_tensor(cost)


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
    ) -> None:
        self.model, self.objective, self.data, self.cfg = model, objective, data, cfg
        self.world = distributed.current()
        if len(data.x_train) < self.world.size:
            raise ValueError(
                f"{len(data.x_train)} training samples cannot feed {self.world.size} ranks"
            )
        self.callbacks = list(callbacks) if self.world.main else []
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
        self.arch_group = list(model.arch_parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, cfg.warmup_epochs * self.steps_per_epoch)
        )
        self.freeze_epoch = freeze_epoch(cfg)
        self.state = TrainState(model, self.optimizer, self.scheduler, snapshot=self.state_dict)
        # the data-order generator as it stood when the epoch under way began
        self.epoch_order = self.generator.get_state()
        self._stop_requested = False
        self.desc = desc  # the progress bar's label
        # the model's backend verdicts, saved with the checkpoint (a fixed network's net may have one)
        self.verdicts: Verdicts = getattr(model, "verdicts", None) or Verdicts()
        self.peak = target_peak(data.y_test) if model.task == "regress" else 1.0

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue this run (tensors on the CPU; loads with ``weights_only=True``)."""
        st = self.state
        return {
            "model": _to_cpu(self.model.state_dict()),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
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
        self.optimizer.load_state_dict(blob["optimizer"])
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
        with _stop_on_signals(self.request_stop):
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
                if self.freeze_epoch >= self.cfg.epochs:
                    self._finalise_at_the_end()
            finally:
                torch.use_deterministic_algorithms(deterministic)
                bar.close()
                for p in self.arch_group:  # frozen for the last epochs only; stays learnable
                    p.requires_grad_(True)
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
        fit_steps = 0
        if epoch == self.freeze_epoch and st.step == 0:
            fit_steps = self._finalise_architecture()
        for p in self.arch_group:
            # the architecture is final: masks stop learning and skip their gradient-only work
            p.requires_grad_(not frozen)
        step_module = self._wrap(frozen)
        resume_at = st.step
        if resume_at:
            # mid-epoch resume: the same data order, fast-forwarded past the batches already done
            rng = torch.get_rng_state()
            self.generator.set_state(self.epoch_order)
        else:
            self.epoch_order = self.generator.get_state()
            st.sums = {"task": 0.0, "penalty": 0.0, "correct": 0.0, "n": 0.0, "positions": 0.0}
            st.sums["budget_fit_steps"] = float(fit_steps)  # kept in checkpoints, like the sums
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
            if self.cfg.anneal_gates and not frozen:
                model.anneal_gates_(
                    min(1.0, progress * self.cfg.epochs / max(self.freeze_epoch, 1))
                )
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
                if self.cfg.alternate and not frozen:
                    self._alternate(epoch * self.steps_per_epoch + step)
                self.optimizer.step()
            self.scheduler.step()
            model.project_arch_()
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

    def _alternate(self, global_step: int) -> None:
        """Decoupled updates: even steps move the weights only, odd steps the mask parameters only
        (a parameter without a gradient is left alone by AdamW, moments included)."""
        arch = {id(p) for p in self.arch_group}
        weights_turn = global_step % 2 == 0
        for p in self.model.parameters():
            if (id(p) in arch) == weights_turn:
                p.grad = None

    def _finalise_architecture(self) -> int:
        """At the freeze, before the first frozen step: fit the architecture into the budget and,
        with annealed gates, make every decision binary. Returns the budget fit's steps."""
        steps = self.objective.fit_budget_(self.model, self._fit_groups())
        if self.cfg.anneal_gates:
            self.model.snap_gates_()
        return steps

    def _finalise_at_the_end(self) -> None:
        """No frozen phase (``train.freeze_arch_fraction=0`` or one epoch): the architecture is fit
        into the budget (and annealed gates snap) after the last step, so the exported network still
        meets the budget; its weights were not trained after the fit, which the user is told."""
        steps = self._finalise_architecture()
        if steps and self.world.main:
            tqdm.write(
                f"dnarch: the architecture never froze (train.freeze_arch_fraction="
                f"{self.cfg.freeze_arch_fraction:g}, {self.cfg.epochs} epoch(s)), so it was fit into "
                f"the budget after the last step ({steps} steps), with no training after the fit",
                file=sys.stderr,
            )

    def _fit_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """Mask parameter groups with the step ``Objective.fit_budget_`` takes: 1e-3 (in mask units,
        about a sixteenth of a channel at 64), scaled for the resolution cut-offs as in training."""
        scale = {"arch": 1.0, "resolution": self.resolution_scale}
        return [
            (list(g["params"]), 1e-3 * scale[g["name"]])
            for g in self.optimizer.param_groups
            if g["name"] in scale
        ]

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
