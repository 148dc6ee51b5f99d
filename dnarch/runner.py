"""One training run into a folder: data, model, objective, trainer, artefacts, export and summary.

The run folder holds: ``config.json`` (resolved), ``metrics.csv``, ``checkpoint.pt`` (every epoch),
``architecture.json`` + ``model.pt`` (the exported plain network, loadable by ``load_static``) and
``summary.json`` (maximal vs learned cost, test accuracy), ``tensorboard/`` (event files) and
``report/index.html`` (the run report, with its PNGs).
"""

from __future__ import annotations

import io
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnarch.config import (
    BudgetConfig,
    ConfigError,
    RunConfig,
    describe_gates,
    from_dict,
    to_dict,
    upgrade_saved,
)
from dnarch.cost import model_cost
from dnarch.data import DataBundle, load_data
from dnarch.export import ArchSpec, StaticNet, build_static, export_state, harden, save_static
from dnarch.export.summary import before_after, before_after_table
from dnarch.models import DNArchNet, build_model
from dnarch.report import EXAMPLES, maximal_sizes
from dnarch.train import distributed
from dnarch.train.callbacks import (
    Checkpointer,
    CheckpointError,
    CSVLogger,
    atomic_write_bytes,
    comparable,
    load_checkpoint,
    same_config,
)
from dnarch.train.folder import RunLock, check_out_dir, clear_run, is_run
from dnarch.train.metrics import SCORES, evaluate_task, score_lines, target_peak
from dnarch.train.objective import Objective
from dnarch.train.runtime import seed_everything
from dnarch.train.trainer import Trainer


@dataclass
class RunResult:
    """What a run produced. ``static`` is the exported plain network (eval mode, on CPU)."""

    model: DNArchNet
    spec: ArchSpec
    static: StaticNet
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path | None
    maximal: ArchSpec  # the maximal network (``DNArchNet.ceiling_copy``), hardened

    @property
    def test_accuracy(self) -> float:
        """Test accuracy (per sample, or per position for segmentation); not for regression."""
        if "test_accuracy" not in self.summary:
            raise AttributeError(f"a {self.summary['task']} run has no accuracy; see test_score")
        return float(self.summary["test_accuracy"])

    @property
    def test_score(self) -> float:
        """The task's score on the test set: accuracy, mean IoU or PSNR (dB); see ``summary['score']``."""
        return float(self.summary["test_score"])


def prepare_out_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Create the run folder for a new run, or refuse it (``folder.check_out_dir``): a folder that
    is not a run and not empty always; one holding a run, finished or not, unless ``overwrite``."""
    return check_out_dir(out, overwrite)


def check_budget(cfg: RunConfig, data: DataBundle) -> None:
    """Raise ``ConfigError`` if ``cfg``'s budget cannot be met on ``data`` (cheap: no training)."""
    model = build_model(cfg.net, data.in_channels, data.num_classes, data.input_shape, data.task)
    Objective(model, cfg.budget)


def resume_config(run_dir: str | Path) -> RunConfig:
    """The config of the run in ``run_dir``, to continue it; refuses a folder with nothing to resume."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder; --resume takes a run folder")
    if (path / "summary.json").exists():
        raise ValueError(
            f"{path} holds a finished run; there is nothing to resume (dnarch report {path} "
            "rewrites a missing report)"
        )
    for name in ("config.json", "checkpoint.pt"):
        if not (path / name).is_file():
            raise ValueError(f"{path} has no {name}; is it a dnarch run folder that ran an epoch?")
    try:
        saved = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path / 'config.json'}: {err}") from err
    if not isinstance(saved, dict):
        raise ValueError(f"{path / 'config.json'} does not hold a config")
    saved = upgrade_saved(saved)
    saved.pop("resolved", None)
    return from_dict(RunConfig, saved)  # type: ignore[no-any-return]


def run(
    cfg: RunConfig,
    data: DataBundle | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train DNArch as ``cfg`` says on ``data`` (default: ``cfg.data``), writing into ``out_dir`` if given.

    ``resume``: continue the run in ``out_dir`` from its checkpoint (``cfg`` must be its config, see
    ``resume_config``); the result equals an uninterrupted run's. ``overwrite``: a new run may replace
    the run in ``out_dir`` (its files are removed first); otherwise a folder holding a run is refused,
    as is any non-empty folder that is not a run. The folder is locked while the run writes it. A user's stop (Ctrl-C, SIGTERM)
    raises ``TrainingInterrupted`` after the checkpoint is written.

    Under torchrun (``distributed.init_from_env`` called first) every rank calls this; they train
    data-parallel, and rank 0 alone writes the folder. Every rank returns the same result.
    """
    world = distributed.current()
    if resume and out_dir is None:
        raise ValueError("resume needs the run folder (out_dir)")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    if data is None:
        data = load_data(cfg.data.name, cfg.data.root or None, cfg.data.task)
    data = data.limited(cfg.data.limit_train, cfg.data.limit_test)
    if cfg.data.task not in ("auto", data.task):
        raise ConfigError(f"data.task is {cfg.data.task} but the data are a {data.task} task")
    model = build_model(cfg.net, data.in_channels, data.num_classes, data.input_shape, data.task)
    target = _saved_target(Path(out_dir), cfg.budget) if resume and out_dir is not None else None
    objective = Objective(model, cfg.budget, target)  # checks the budget: before any folder is made
    with ExitStack() as stack:
        path = None if out_dir is None else Path(out_dir)

        def claim() -> None:  # rank 0 checks and locks the folder; every rank hears its verdict
            assert path is not None
            if not resume:
                check_out_dir(path, overwrite)
            stack.enter_context(RunLock(path))
            if not resume:  # again under the lock: another run may have written it meanwhile
                check_out_dir(path, overwrite)
                if is_run(path):  # replaced: --overwrite, or a run that saved no epoch
                    clear_run(path)

        if path is not None:
            distributed.on_main(claim, world)
        return _run(cfg, data, model, objective, path, world, progress, resume)


def _saved_target(path: Path, budget: BudgetConfig) -> float | None:
    """The absolute budget a resumed run started with (``resolved.budget_absolute`` in its
    config.json), kept exactly (a fraction of the maximal cost need not be a whole number), though
    a newer dnarch may measure the maximal network differently. None: the config's budget."""
    try:
        saved = json.loads((path / "config.json").read_text()).get("resolved", {})
    except (OSError, ValueError, AttributeError):
        return None  # resume_config has said what is wrong with it
    target = saved.get("budget_absolute") if isinstance(saved, dict) else None
    if budget.budget is None or not isinstance(target, int | float) or target <= 1:
        return None
    return float(target)


def _reason(err: BaseException) -> str:
    """One line for why a checkpoint's contents did not load."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line or "Missing" in line), None)
    text = detail or (lines[0] if lines else "")
    return f"{type(err).__name__}: {text}" if isinstance(err, KeyError | TypeError) else text


def _run(
    cfg: RunConfig,
    data: DataBundle,
    model: DNArchNet,
    objective: Objective,
    path: Path | None,
    world: distributed.World,
    progress: bool,
    resume: bool,
) -> RunResult:
    """``run`` once its folder (if any) is claimed and locked."""
    resolved = {
        **to_dict(cfg),
        "resolved": {
            "dataset": data.name, "in_channels": data.in_channels, "num_classes": data.num_classes,
            "input_shape": list(data.input_shape), "task": data.task, "n_train": len(data.x_train),
            "n_test": len(data.x_test), "budget_absolute": objective.budget,
            "max_cost": objective.max_cost, "data_sha256": data.fingerprint(),
        },
    }  # fmt: skip
    callbacks: list[Any] = []
    if path is not None and world.main:
        if resume:
            on_disk = upgrade_saved(json.loads((path / "config.json").read_text()))
            saved = dict(on_disk.get("resolved") or {})
            # the maximal network as the run measured it at its start (a newer dnarch may measure
            # it otherwise; the run keeps its absolute budget, ``_saved_target``)
            resolved["resolved"]["max_cost"] = saved.pop("max_cost", objective.max_cost)
            # on the keys the run saved: one from before data fingerprints resumes unchecked by them
            if not same_config(saved, comparable(resolved["resolved"])):
                raise ValueError(
                    f"the data differ from those {path} was trained on (see its config.json)"
                )
        else:
            atomic_write_bytes(path / "config.json", json.dumps(resolved, indent=2).encode())
        callbacks = [
            CSVLogger(path / "metrics.csv"),  # first: the checkpoint carries its columns
            Checkpointer(path / "checkpoint.pt", resolved),
        ]
        if cfg.train.tensorboard:
            from dnarch.train.tensorboard import TensorBoardLogger

            callbacks.append(TensorBoardLogger(path / "tensorboard"))
    trainer = Trainer(model, objective, data, cfg.train, callbacks, progress=progress)
    if resume and path is not None:
        blob = load_checkpoint(path / "checkpoint.pt", resolved)
        try:  # past its checksum, but its contents must still fit this run
            trainer.load_state_dict(blob["trainer"])
        except Exception as err:
            raise CheckpointError(
                f"{path / 'checkpoint.pt'} does not fit this run: {_reason(err)}"
            ) from err
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        history = trainer.fit()
    finally:
        for cb in callbacks:
            if hasattr(cb, "close"):
                cb.close()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    model.eval()
    spec = harden(model)
    state = export_state(model, spec)
    static = build_static(spec, state)
    peak = target_peak(data.y_test) if data.task == "regress" else 1.0
    args = (data.x_test, data.y_test)
    # the last epoch evaluated this very model (no fit after it): not again
    test = trainer.last_test or evaluate_task(
        model, *args, trainer.device, data.task, data.num_classes, peak, world=world
    )
    static_test = evaluate_task(
        static, *args, torch.device("cpu"), data.task, data.num_classes, peak, world=world
    )
    learned, maximal = model_cost(model, "hard"), model_cost(model, "max")
    top = harden(model.ceiling_copy())  # the maximal network, made once for all that show it
    score = SCORES[data.task][0]
    summary = {
        "task": data.task,
        "score": score,
        "test_score": test[score],
        "static_test_score": static_test[score],
        **(
            {"test_accuracy": test["acc"], "static_test_accuracy": static_test["acc"]}
            if "acc" in test
            else {}
        ),
        "test_metrics": test,
        "static_test_metrics": static_test,
        "macs": int(learned.macs),
        "resolution_lr_scale": trainer.resolution_scale,  # the cut-offs' rate / arch_lr, as used
        "params": int(learned.params),
        "max_macs": int(maximal.macs),
        "max_params": int(maximal.params),
        "maximal_sizes": maximal_sizes(top),
        "budget": objective.budget,
        "budget_metric": cfg.budget.metric,
        "train_seconds": seconds,  # this process's training (a resumed run: since the resume)
        "train_cpu_seconds": cpu_seconds,  # its CPU time, every thread of the process
        "threads": torch.get_num_threads(),
        "epochs": cfg.train.epochs,
        "device": str(trainer.device),
        "train": {"anneal_gates": cfg.train.anneal_gates, "alternate": cfg.train.alternate},
        **before_after(model, spec, top),
    }
    if path is not None and world.main:
        save_static(path, spec, state)
        if data.task != "classify":
            save_examples(path / EXAMPLES, static, data.x_test[:4], data.y_test[:4], data.task)
        atomic_write_bytes(path / "summary.json", json.dumps(summary, indent=2).encode())
        from dnarch.report import write_report

        write_report(path)  # everything above is saved already: a failure here loses nothing
    return RunResult(model, spec, static, summary, history, path, top)


@torch.no_grad()
def save_examples(
    path: Path, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str
) -> None:
    """A few test samples of a per-position task with ``net``'s output, for the report: x (n, C, *S),
    y (n, *S) or (n, K, *S); the prediction is stored as labels (segment) or values (regress)."""
    out = net.eval()(x)
    pred = out.argmax(1) if task == "segment" else out
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x.numpy(), y=y.numpy(), pred=pred.numpy())
    atomic_write_bytes(path, buf.getvalue())


def arch_table(result: RunResult) -> str:
    """The learned architecture next to the maximal one, per block, with costs and accuracy."""
    spec, s, m = result.spec, result.summary, result.model

    def dims(v: tuple[int, ...]) -> str:
        return "x".join(map(str, v))

    top = result.maximal  # the maximal network, block by block
    grouped = spec.group_bits > 0  # a groups column: pw1/pw2 group counts
    lines = [
        "learned architecture (maximal in brackets)",
        f"{'block':>5}  {'status':<8} {'kernel':>14} {'hidden':>10}"
        + (f" {'groups':>11}" if grouped else "")
        + "  resolution in -> out",
    ]
    for b, t in zip(spec.blocks, top.blocks, strict=True):
        max_res = f"({dims(t.resolution_in)} -> {dims(t.resolution_out)})"
        if b.kept:
            kern = f"{dims(b.kernel)} ({dims(t.kernel)})"
            hid = f"{b.hidden} ({t.hidden})"
            res = f"{dims(b.resolution_in)} -> {dims(b.resolution_out)} {max_res}"
        else:
            kern, hid, res = f"- ({dims(t.kernel)})", f"- ({t.hidden})", f"- {max_res}"
        cell = f"{b.groups[0]}/{b.groups[1]} (1/1)" if b.kept else "- (1/1)"
        groups = f" {cell:>11}" if grouped else ""
        lines.append(
            f"{b.index:>5}  {'kept' if b.kept else 'removed':<8} {kern:>14} {hid:>10}{groups}  {res}"
        )
    lines += [
        f"blocks: {len(spec.kept_blocks)} ({m.max_blocks}), residual width: "
        f"{spec.widths_text()} ({top.widths_text()})",
        describe_gates(s.get("train", {})),
        f"MACs/sample: {s['macs']:,} ({s['max_macs']:,}) = {100 * s['macs'] / s['max_macs']:.1f}% "
        f"of maximal" + (f", budget {s['budget']:,.0f}" if s["budget"] is not None else ""),
        f"parameters:  {s['params']:,} ({s['max_params']:,}) = "
        f"{100 * s['params'] / s['max_params']:.1f}% of maximal",
        *score_lines(s),
    ]
    if "train_cpu_seconds" in s:
        lines.append(
            f"training time: {s['train_seconds']:.1f} s ({s['train_cpu_seconds']:.1f} CPU s, "
            f"{s['epochs']} epoch{'s' * (s['epochs'] != 1)} on {s['device']}, "
            f"{s['threads']} thread{'s' * (s['threads'] != 1)})"
        )
    if "macs_counted" in s:
        lines += ["per sample, counted by torch.utils.flop_counter on real modules:"]
        lines += [before_after_table(s)]
    return "\n".join(lines)
