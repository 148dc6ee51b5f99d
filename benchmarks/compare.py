"""Issue 4's benchmark: DNArch against the alternatives a user would pick, side by side in one run.

For every dataset, seed and budget (a fraction of the maximal network's MACs) it trains:
- dnarch      DNArch, all four axes learned, at the budget;
- fixedres    DNArch with the resolution axis fixed (kernel, width and depth learned);
- fastres     DNArch with the resolution cut-offs learning at the other masks' rate
              (``train.resolution_lr_scale=1``; by default the rate is set by the run's length,
              ``train.resolution_travel``);
- anneal      DNArch with annealed gates (``train.anneal_gates``): widths, depth and resolution
              decisions sharpen to exact 0/1 by the time the architecture freezes;
- groups      DNArch that also learns the group count of every pointwise layer (``net.learn_groups``);
- kernel, width, resolution, depth
              ablations: that axis learned alone, at the budget (it may not be able to reach it);
- scratch     the architecture the dnarch run of that budget and seed learned, freshly initialised and
              trained as plain is (runs that dnarch run if it is not in the file);
- plain       a ResNet-style CNN of 3x3 convolutions with stride-2 stages, as wide as the budget allows;
- prune       prune-then-finetune with Torch-Pruning: the frozen maximal network pruned to the budget,
              then fine-tuned; its compute includes training the maximal network;
- frozen      the maximal network with its architecture frozen (once per dataset and seed, at 100%).

Per-position datasets (segmentation, per-step labelling, regression: ``data.task``) run the same way
with the dense head, and ``plain`` becomes a U-Net-style CNN of 3x3 convolutions at the budget
(``dnarch.models.plain_unet``); prune-then-finetune is not run for them.

The maximal network is the preset the CLI picks (``--preset auto``: by the data's axes and task;
``image-pyramid`` for 2D segmentation since session 10, ``image`` before; since 2026-12-01
``image-pyramid`` holds ``direct_kernel=3`` and 1D per-position data gets ``seq-dense``, ``seq``
with it, so runs recorded before then with ``--net direct_kernel=3`` are these presets' runs),
changed by ``--net``.

Every score (accuracy; mean IoU for segmentation; PSNR for regression) is the exported (or plain)
network's on the test set; MACs and parameters are counted
by ``torch.utils.flop_counter`` and ``numel`` on the real final module. Compute is the process CPU time
(robust to other jobs on the machine), the wall time, and the nominal training MACs (3 x forward MACs
per sample seen, from each epoch's cost; FFT and kernel-network overheads not included).

    python benchmarks/compare.py --quick                     # smoke run: minutes
    python benchmarks/compare.py --seeds 0 1 2 --epochs 20 --limit-train 10000   # hours
    python benchmarks/compare.py ... --resume                # continue an interrupted run

Results are saved after every single run (``<out>/<name>.json``), so an interrupted benchmark loses at
most one run, and ``--resume`` skips what is done. The table (``<name>.md``) and the accuracy-vs-MACs plot
(``<name>.png``) are rewritten after every run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

import dnarch
from dnarch.baselines import AXES, ablation_net, frozen_net
from dnarch.baselines.prune import prune_then_finetune
from dnarch.config import (
    BudgetConfig,
    ConfigError,
    DataConfig,
    NetConfig,
    RunConfig,
    TrainConfig,
    with_overrides,
)
from dnarch.data import DataBundle
from dnarch.export.spec import ArchSpec
from dnarch.export.static import StaticNet
from dnarch.export.summary import count
from dnarch.flops import counted_macs
from dnarch.models import PRESETS, preset_for, preset_net
from dnarch.models.plain_cnn import plain_cnn_for_budget
from dnarch.models.plain_unet import plain_unet_for_budget
from dnarch.provenance import git_commit
from dnarch.train.fixed import train_fixed
from dnarch.train.metrics import SCORES
from dnarch.train.objective import Objective

METHODS = (
    "dnarch", "fixedres", "fastres", "anneal", "groups", *AXES, "scratch", "plain", "prune", "frozen",
)  # fmt: skip
LABELS = {
    "dnarch": "DNArch (all axes)",
    "fixedres": "DNArch, resolution fixed",
    "fastres": "DNArch, resolution at full rate",
    "anneal": "DNArch, annealed gates",
    "groups": "DNArch, learned grouping",
    "kernel": "kernel only",
    "width": "width only",
    "resolution": "resolution only",
    "depth": "depth only",
    "scratch": "DNArch's network, from scratch",
    "plain": "plain 3x3 CNN",
    "prune": "prune-then-finetune",
    "frozen": "maximal, frozen",
}


class Clock:
    """Process CPU seconds and wall seconds of a block of work."""

    def __enter__(self) -> Clock:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0


def per_dataset(values: list[str], dataset: str, flag: str) -> int:
    """``--flag 20 fashion-mnist=10``: the value for ``dataset`` (a bare number is the default)."""
    found = None
    for v in values:
        name, sep, number = v.rpartition("=")
        if not number.isdigit():
            raise SystemExit(f"compare.py: error: --{flag} takes N or DATASET=N, got {v!r}")
        if (sep and name == dataset) or (not sep and found is None):
            found = int(number)
    if found is None:
        raise SystemExit(f"compare.py: error: --{flag} gives no value for {dataset}")
    return found


def run_dnarch(
    data: DataBundle,
    net: Any,
    budget: float | None,
    epochs: int,
    args: argparse.Namespace,
    seed: int,
    train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    floor = None
    if budget is not None:
        model = dnarch.build_model(
            net, data.in_channels, data.num_classes, data.input_shape, data.task
        )
        metric = getattr(args, "budget_changes", {}).get("metric", "macs")
        probe = Objective(model, BudgetConfig(budget=None, metric=metric))
        floor = probe.floor_cost / probe.max_cost
        if budget < floor:  # an ablation whose one axis cannot reach the budget: its best effort
            budget = min(1.0, 1.05 * floor)
    cfg = RunConfig(
        net=net,
        budget=BudgetConfig(**{**getattr(args, "budget_changes", {}), "budget": budget}),
        train=TrainConfig(
            epochs=epochs, seed=seed, device=args.device, **{**args.train_changes, **(train or {})}
        ),
        data=DataConfig(name=data.name),
    )
    with Clock() as clock:
        result = dnarch.run(cfg, data=data, progress=args.progress)
    macs, params = count(result.static)
    n = len(data.x_train)
    train_macs = 3 * n * sum(float(h["cost"]) for h in result.history)
    return {
        "accuracy": result.summary["static_test_score"],  # the task's score (accuracy for classify)
        "macs": macs,
        "params": params,
        "cpu_seconds": clock.cpu,
        "wall_seconds": clock.wall,
        "train_macs": train_macs,
        "max_macs": result.summary["max_macs_counted"],
        "architecture": json.loads(result.spec.to_json()),
        "budget_used": budget,
        "floor": floor,
        "_static": result.static,
    }


def run_plain(
    data: DataBundle, target: float, epochs: int, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    torch.manual_seed(seed)
    with Clock() as clock:
        make = plain_unet_for_budget if data.dense else plain_cnn_for_budget
        net = make(data.in_channels, data.num_classes, data.input_shape, target)
        history = train_fixed(
            net, data, epochs, seed=seed, device=args.device, warmup_epochs=2,
            progress=args.progress, desc="plain",
        )  # fmt: skip
    net.cpu()
    macs = counted_macs(net, data.in_channels, data.input_shape)
    return {
        "accuracy": history[-1][f"test_{SCORES[data.task][0]}"],
        "macs": macs,
        "params": sum(p.numel() for p in net.parameters()),
        "cpu_seconds": clock.cpu,
        "wall_seconds": clock.wall,
        "train_macs": 3 * len(data.x_train) * epochs * macs,
        "width": net.width,
    }


def run_scratch(
    data: DataBundle, architecture: dict[str, Any], epochs: int, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """The architecture a DNArch run learned, freshly initialised and trained as the plain CNN is
    (same recipe, same epochs): what the search's network is worth without its search, and what
    training it costs."""
    torch.manual_seed(seed)
    with Clock() as clock:
        net = StaticNet(ArchSpec.from_json(json.dumps(architecture)))
        history = train_fixed(
            net, data, epochs, seed=seed, device=args.device, warmup_epochs=2,
            progress=args.progress, desc="scratch",
        )  # fmt: skip
    net.cpu()
    macs, params = count(net)
    return {
        "accuracy": history[-1][f"test_{SCORES[data.task][0]}"],
        "macs": macs,
        "params": params,
        "cpu_seconds": clock.cpu,
        "wall_seconds": clock.wall,
        "train_macs": 3 * len(data.x_train) * epochs * macs,
    }


def run_prune(
    data: DataBundle,
    frozen: dict[str, Any],
    target: float,
    epochs: int,
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    with Clock() as clock:
        r = prune_then_finetune(
            frozen["_static"], data, target, epochs, seed=seed, device=args.device,
            progress=args.progress,
        )  # fmt: skip
    return {
        "accuracy": r.test_accuracy,
        "accuracy_after_prune": r.accuracy_after_prune,
        "prune_seconds": r.prune_seconds,
        "finetune_seconds": r.finetune_seconds,
        "macs": r.macs,
        "params": r.params,
        # the whole pipeline: training the maximal network, pruning, fine-tuning
        "cpu_seconds": frozen["cpu_seconds"] + clock.cpu,
        "wall_seconds": frozen["wall_seconds"] + clock.wall,
        "train_macs": frozen["train_macs"] + 3 * len(data.x_train) * epochs * r.macs,
    }


def load(args: argparse.Namespace, name: str) -> DataBundle:
    data = dnarch.load_data(name)
    return data.limited(
        per_dataset(args.limit_train, name, "limit-train"),
        per_dataset(args.limit_test, name, "limit-test"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--datasets", nargs="+", default=["mnist1d", "fashion-mnist", "fashion-mnist-seq"]
    )
    ap.add_argument("--budgets", nargs="+", type=float, default=[1.0, 0.5, 0.25, 0.1])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument(
        "--epochs", nargs="+", default=["20"],
        help="epochs of every training run: N, and/or DATASET=N for one dataset",
    )  # fmt: skip
    ap.add_argument(
        "--finetune-epochs", nargs="+", default=None,
        help="prune's fine-tuning epochs, N and/or DATASET=N (default: half the epochs)",
    )  # fmt: skip
    ap.add_argument(
        "--limit-train", nargs="+", default=["0"],
        help="first N training samples (0 = all): N and/or DATASET=N",
    )  # fmt: skip
    ap.add_argument(
        "--limit-test", nargs="+", default=["0"], help="as --limit-train, for the test set"
    )
    ap.add_argument(
        "--preset", default="auto", choices=["auto", *PRESETS],
        help="maximal network of every dataset (auto: by its axes and task, as the CLI picks)",
    )  # fmt: skip
    ap.add_argument(
        "--net", nargs="+", default=[], metavar="KEY=VALUE",
        help="change the preset maximal network of every dataset, e.g. width=64 hidden=128 (or, "
        "as the CLI writes it, --net.width=64 --net.hidden=128; --train.KEY=VALUE and "
        "--budget.KEY=VALUE likewise)",
    )  # fmt: skip
    ap.add_argument(
        "--train", nargs="+", default=[], metavar="KEY=VALUE",
        help="change the training settings of every DNArch run, e.g. resolution_travel=0.3",
    )  # fmt: skip
    ap.add_argument(
        "--budget-config", nargs="+", default=[], metavar="KEY=VALUE",
        help="change the budget settings of every DNArch run, e.g. anneal_from=start",
    )  # fmt: skip
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 epochs, 256/256 samples, 25%%, seed 0")
    ap.add_argument("--resume", action="store_true", help="skip runs already in the JSON file")
    ap.add_argument("--progress", action="store_true", help="progress bars for every run")
    ap.add_argument(
        "--merge", nargs="*", default=[],
        help="JSON files of other compare.py runs to take into this table (their commands are listed)",
    )  # fmt: skip
    ap.add_argument(
        "--table-only", action="store_true",
        help="train nothing: rewrite the table and plot from the saved (and --merge) runs of --methods",
    )  # fmt: skip
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default=None, help="file stem (default compare, compare-quick)")
    args, extra = ap.parse_known_args()
    dotted_overrides(ap, args, extra)
    args.train_changes = train_changes(args.train)
    args.budget_changes = budget_changes(args.budget_config)
    if args.quick:
        args.epochs, args.limit_train, args.limit_test = ["2"], ["256"], ["256"]
        args.budgets, args.seeds = [0.25], [0]
    if any(not 0 < b <= 1 for b in args.budgets):
        ap.error("budgets are fractions of the maximal MACs in (0, 1]")
    torch.set_num_threads(args.threads)
    name = args.name or ("compare-quick" if args.quick else "compare")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw_path = out / f"{name}.json"
    command = ("python benchmarks/compare.py " + " ".join(sys.argv[1:])).strip()
    commit = git_commit()  # recorded with every run this invocation trains
    # the saved runs taken over: this file's (--resume), then each --merge file's (runs made by other
    # invocations, e.g. in parallel); where two hold the same run, the first wins
    sources = [raw_path] if args.resume and raw_path.exists() else []
    merged = [*sources, *map(Path, args.merge)]
    if (
        args.table_only
        and raw_path.exists()
        and raw_path.resolve() not in {p.resolve() for p in merged}
    ):
        merged.append(raw_path)  # rewriting a table never drops the runs its own file holds
    rows = taken_over(merged)
    if args.table_only:  # the table shows the --methods named (all by default)
        rows = [r for r in rows if r["method"] in args.methods]
    done = {(r["dataset"], r["method"], r["budget"], r["seed"]) for r in rows}

    def save() -> None:
        made_by = [c for r in rows for c in r.get("commands", [])]  # of the rows shown, in order
        # a table-only file trained nothing: its epochs are its runs', not the flag's default
        epochs = (
            [str(e) for e in sorted({int(r["epochs"]) for r in rows})]
            if args.table_only
            else args.epochs
        )
        meta = {
            "command": command, "epochs": epochs,
            "commands": list(dict.fromkeys([*made_by, command])),
            # the code of the runs shown (runs saved before commits were recorded have none)
            "commits": list(dict.fromkeys(r["commit"] for r in rows if r.get("commit"))),
            "finetune_epochs": args.finetune_epochs or "half the epochs",
            "limit_train": args.limit_train, "limit_test": args.limit_test,
            "n_train": {d: len(b.x_train) for d, b in datasets.items()},
            "n_test": {d: len(b.x_test) for d, b in datasets.items()},
            "machine": platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
        }  # fmt: skip
        tmp = raw_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"meta": meta, "runs": rows}, indent=1))
        os.replace(tmp, raw_path)
        write_table(out / f"{name}.md", rows, meta)
        write_plot(out / f"{name}.png", rows)

    def record(
        dataset: str,
        method: str,
        budget: float,
        seed: int,
        epochs: int,
        fn: Callable[..., dict],
        *fn_args: Any,
    ) -> dict:
        key = (dataset, method, budget, seed)
        if key in done:
            return next(
                r for r in rows if (r["dataset"], r["method"], r["budget"], r["seed"]) == key
            )
        result = fn(*fn_args)
        row = {
            "dataset": dataset,
            "method": method,
            "budget": budget,
            "seed": seed,
            "epochs": epochs,
            "task": datasets[dataset].task,
            "commands": [command],
            "source": name,
            "commit": commit,
        }
        row.update({k: v for k, v in result.items() if not k.startswith("_")})
        rows.append(row)
        done.add(key)
        save()
        print(
            f"{dataset:<18} {method:<10} budget {budget:>4.0%} seed {seed}: "
            f"{SCORES[row['task']][1]} {score_text(row['task'], row['accuracy'])} at {row['macs']:,} "
            f"MACs, {row['cpu_seconds']:.0f} s CPU",
            flush=True,
        )
        return {**row, **{k: v for k, v in result.items() if k.startswith("_")}}

    def run_one_seed(
        dataset: str, data: DataBundle, base: Any, epochs: int, ft: int, seed: int
    ) -> None:
        frozen: dict[str, Any] | None = None
        prune_todo = (
            "prune" in args.methods
            and not data.dense
            and any((dataset, "prune", b, seed) not in done for b in args.budgets if b < 1)
        )
        if "frozen" in args.methods or prune_todo:
            key = (dataset, "frozen", 1.0, seed)
            if key in done and prune_todo:  # pruning needs the trained network itself
                done.discard(key)
                rows[:] = [
                    r for r in rows if (r["dataset"], r["method"], r["budget"], r["seed"]) != key
                ]
            frozen = record(
                dataset, "frozen", 1.0, seed, epochs,
                run_dnarch, data, frozen_net(base), None, epochs, args, seed,
            )  # fmt: skip
        max_macs = frozen["max_macs"] if frozen else maximal_macs(data, base)
        # the DNArch variants: method -> (network config, training options), run in this order
        # (built only when asked for: some do not combine with a --net setting, e.g. widen)
        variants: dict[str, Callable[[], tuple[Any, dict[str, Any]]]] = {
            "dnarch": lambda: (base, {}),
            "fixedres": lambda: (replace(base, learn_resolution=False), {}),
            "fastres": lambda: (base, {"resolution_lr_scale": 1.0}),
            "anneal": lambda: (base, {"anneal_gates": True}),
            "groups": lambda: (replace(base, learn_groups=True), {}),
            **{axis: partial(lambda a: (ablation_net(base, a), {}), axis) for axis in AXES},
        }
        for budget in args.budgets:
            for method, make in variants.items():
                if method in args.methods:
                    net, train = make()
                    record(
                        dataset, method, budget, seed, epochs,
                        run_dnarch, data, net, budget, epochs, args, seed, train,
                    )  # fmt: skip
            if "scratch" in args.methods:  # needs the DNArch run of this budget and seed
                learned = record(
                    dataset, "dnarch", budget, seed, epochs,
                    run_dnarch, data, base, budget, epochs, args, seed,
                )  # fmt: skip
                record(
                    dataset, "scratch", budget, seed, epochs,
                    run_scratch, data, learned["architecture"], epochs, args, seed,
                )  # fmt: skip
            if "plain" in args.methods:
                record(
                    dataset, "plain", budget, seed, epochs,
                    run_plain, data, budget * max_macs, epochs, args, seed,
                )  # fmt: skip
            if "prune" in args.methods and frozen is not None and budget < 1 and not data.dense:
                record(
                    dataset, "prune", budget, seed, ft,
                    run_prune, data, frozen, budget * max_macs, ft, args, seed,
                )  # fmt: skip

    datasets = {name: load(args, name) for name in args.datasets}  # all up front: meta is complete
    for seed in (
        [] if args.table_only else args.seeds
    ):  # seed-major: an interrupted run holds whole seeds of every dataset
        for dataset in args.datasets:
            data = datasets[dataset]
            base = maximal_net(data, args.net, args.preset)
            epochs = per_dataset(args.epochs, dataset, "epochs")
            ft = (
                per_dataset(args.finetune_epochs, dataset, "finetune-epochs")
                if args.finetune_epochs
                else max(1, epochs // 2)
            )
            run_one_seed(dataset, data, base, epochs, ft, seed)
    save()
    print((out / f"{name}.md").read_text())


def taken_over(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs of saved compare.py JSON files, the first file's run kept where several hold the same
    (dataset, method, budget, seed). Each run carries the commands that made it: its own, or, in files
    written before runs recorded theirs, every command of its file."""
    rows: list[dict[str, Any]] = []
    keys: set[tuple[Any, ...]] = set()
    for path in paths:
        part = json.loads(path.read_text())
        file_commands = part["meta"].get("commands", [part["meta"]["command"]])
        for r in part["runs"]:
            key = (r["dataset"], r["method"], r["budget"], r["seed"])
            if key not in keys:
                keys.add(key)
                rows.append(
                    {
                        **r,
                        "commands": r.get("commands", file_commands),
                        "source": r.get("source", path.stem),
                    }
                )
    return rows


# the CLI's override syntax: --net.width=64, or --net.width 64 (the value the next argument)
DOTTED = re.compile(r"--(net|train|budget)\.(\w+)(?:=(.*))?")


def dotted_overrides(
    ap: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]
) -> None:
    """The CLI's own override syntax, ``--net.width=64`` (or ``--net.width 64``), for ``net``,
    ``train`` and ``budget`` keys: added to ``args.net`` / ``args.train`` / ``args.budget_config``
    (which also take ``--net width=64``). Any other unknown argument is an error."""
    lists = {"net": args.net, "train": args.train, "budget": args.budget_config}
    tokens = list(extra)
    while tokens:
        token = tokens.pop(0)
        m = DOTTED.fullmatch(token)
        if m is None:
            ap.error(f"unrecognized arguments: {token}")
        value = m.group(3)
        if value is None:
            if not tokens or tokens[0].startswith("--"):
                ap.error(f"{token} needs a value")
            value = tokens.pop(0)
        lists[m.group(1)].append(f"{m.group(2)}={value}")


def changed(section: str, changes: list[str], base: RunConfig | None = None) -> RunConfig:
    """``base`` (default ``RunConfig()``) with ``--net`` / ``--train`` ``KEY=VALUE`` changes to
    ``section``, typed and checked; a bad one exits with one line."""
    pairs = [c.partition("=") for c in changes]
    if any(not sep for _, sep, _ in pairs):
        raise SystemExit(f"compare.py: error: --{section} takes KEY=VALUE, got {changes}")
    try:
        return with_overrides(base or RunConfig(), {f"{section}.{k}": v for k, _, v in pairs})
    except ConfigError as err:
        raise SystemExit(f"compare.py: error: --{section}: {err}") from None


def train_changes(changes: list[str]) -> dict[str, Any]:
    """``--train KEY=VALUE`` changes as typed values (a variant's own settings override them)."""
    train = changed("train", changes).train
    return {k: getattr(train, k) for k, _, _ in (c.partition("=") for c in changes)}


def budget_changes(changes: list[str]) -> dict[str, Any]:
    """``--budget-config KEY=VALUE`` changes as typed values (the budget itself is the run's:
    ``--budgets``)."""
    if any(c.partition("=")[0] == "budget" for c in changes):
        raise SystemExit("compare.py: error: --budget-config sets no budget; give --budgets")
    budget = changed("budget", changes).budget
    return {k: getattr(budget, k) for k, _, _ in (c.partition("=") for c in changes)}


def maximal_net(data: DataBundle, changes: list[str], preset: str = "auto") -> NetConfig:
    """The ``preset`` maximal network for ``data`` (``auto``: as the CLI picks it), with ``--net
    KEY=VALUE`` changes."""
    if preset == "auto":
        preset = preset_for(len(data.input_shape), data.task)
    given = {f"net.{k}": v for k, _, v in (c.partition("=") for c in changes)}
    net = preset_net(preset, data.input_shape, given)  # stage_blocks multiplies the stages
    return changed("net", changes, RunConfig(net=net)).net


def maximal_macs(data: DataBundle, net: Any) -> int:
    """Counted MACs of the maximal network for ``data`` (no training)."""
    model = dnarch.build_model(net, data.in_channels, data.num_classes, data.input_shape, data.task)
    return count(dnarch.StaticNet(dnarch.harden(model.ceiling_copy())))[0]


def score_scale(row: dict[str, Any]) -> float:
    """Accuracy and mean IoU show as percentages; PSNR in dB as it is."""
    return 1.0 if row.get("task", "classify") == "regress" else 100.0


def score_text(task: str, value: float) -> str:
    return f"{value:.2f} dB" if task == "regress" else f"{100 * value:.2f}%"


SCORE_HEADERS = {
    "classify": "test accuracy (%)",
    "segment": "test mean IoU (%)",
    "regress": "test PSNR (dB)",
}


def net_note(rows: list[dict[str, Any]]) -> str:
    """A sentence naming the ``--preset``, ``--net`` and ``--train`` settings the rows' runs were
    made with ('' when none): a method's label says what it learns with the preset network, which
    ``--net learn_*=false`` changes."""
    found: list[str] = []
    for r in rows:
        for command in r.get("commands", []):
            words = command.split()
            settings = []
            if "--preset" in words:
                at = words.index("--preset")
                settings.append(" ".join(words[at : at + 2]))
            for flag in ("--net", "--train", "--budget-config"):
                if flag in words:
                    rest = words[words.index(flag) + 1 :]
                    changes = list(itertools.takewhile(lambda w: "=" in w, rest))
                    settings.append(" ".join([flag, *changes]))
            # the CLI's syntax: --net.width=64 (or --net.width 64)
            for i, w in enumerate(words):
                m = DOTTED.fullmatch(w)
                if m is not None and m.group(3) is not None:
                    settings.append(w)
                elif m is not None and i + 1 < len(words):
                    settings.append(f"{w}={words[i + 1]}")
            made = " ".join(settings)
            if made and made not in found:
                found.append(made)
    if not found:
        return ""
    made = "; ".join(f"`{c}`" for c in found)
    return f" Runs made with {made} (a method's label says what it learns with the preset network)."


def label(method: str, task: str) -> str:
    if method == "plain" and task != "classify":
        return "plain U-Net (3x3)"
    return LABELS[method]


def _task_of(rows: list[dict[str, Any]], dataset: str) -> str:
    return next((r.get("task", "classify") for r in rows if r["dataset"] == dataset), "classify")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (dataset, method, budget): means and standard deviations over seeds."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"], r["budget"]), []).append(r)
    out = []
    for (dataset, method, budget), rs in groups.items():
        acc, acc_sd = _mean_sd([score_scale(r) * r["accuracy"] for r in rs])
        out.append({
            "dataset": dataset, "method": method, "budget": budget, "n": len(rs),
            "accuracy": acc, "accuracy_sd": acc_sd,
            "macs": statistics.mean(r["macs"] for r in rs),
            "params": statistics.mean(r["params"] for r in rs),
            "cpu_seconds": statistics.mean(r["cpu_seconds"] for r in rs),
            "wall_seconds": statistics.mean(r["wall_seconds"] for r in rs),
            "train_macs": statistics.mean(r["train_macs"] for r in rs),
            "capped": any((r.get("budget_used") or 0) > r["budget"] for r in rs),
            "sources": list(dict.fromkeys(r["source"] for r in rs if "source" in r)),
        })  # fmt: skip
    order = {m: i for i, m in enumerate(METHODS)}
    out.sort(key=lambda s: (s["dataset"], -s["budget"], order[s["method"]]))
    return out


def write_table(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    max_macs = {r["dataset"]: r["max_macs"] for r in rows if "max_macs" in r}
    # a table drawn from several saved files names, per row, the files its runs came from
    merged = len({r["source"] for r in rows if "source" in r}) > 1
    lines = [
        (
            "Made by (the commands of the runs shown, then the one that wrote this table; where "
            "files held the same run, the first named in its --merge was kept):"
        )
        if len(meta.get("commands", [])) > 1
        else f"Made by: `{meta['command']}`",
        *(f"- `{c}`" for c in meta.get("commands", []) if len(meta["commands"]) > 1),
        f"{meta['machine']}, {meta['threads']} threads, torch {meta['torch']}"
        + (f"; runs made at commit {', '.join(meta['commits'])}." if meta.get("commits") else "."),
        "",
        "Score (test accuracy; mean IoU for segmentation; PSNR for regression): mean ± std over seeds "
        "(n = seeds). MACs and parameters: counted on the final "
        "exported module. CPU s: process CPU time to the final network (prune includes training the "
        "maximal network). Training MACs: nominal, 3 x forward MACs per sample seen. (†): the one "
        "learned axis cannot reach this budget; the run aimed 5% above the smallest network it can reach."
        + (
            " Runs from: the saved file (benchmarks/results/NAME.json) of each row's runs."
            if merged
            else ""
        ),
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        epochs = sorted(
            {r["epochs"] for r in rows if r["dataset"] == dataset and r["method"] != "prune"}
        )
        ft = sorted(
            {r["epochs"] for r in rows if r["dataset"] == dataset and r["method"] == "prune"}
        )
        n_train = f"{meta['n_train'][dataset]:,}" if dataset in meta["n_train"] else "?"
        n_test = f"{meta['n_test'][dataset]:,}" if dataset in meta["n_test"] else "?"
        lines += [
            "",
            f"**{dataset}**: {n_train} training / {n_test} test samples; "
            f"{'/'.join(map(str, epochs))} epochs"
            + (f" (prune: + {'/'.join(map(str, ft))} fine-tuning epochs)" if ft else "")
            + f"; maximal network {max_macs.get(dataset, 0):,} MACs."
            + net_note([r for r in rows if r["dataset"] == dataset]),
            "",
            f"| budget | method | n | {SCORE_HEADERS[_task_of(rows, dataset)]} | MACs (% of maximal) "
            "| parameters | CPU s | wall s | training MACs |" + (" runs from |" if merged else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if merged else ""),
        ]
        for s in summarise([r for r in rows if r["dataset"] == dataset]):
            share = (
                f" ({100 * s['macs'] / max_macs[dataset]:.1f}%)" if max_macs.get(dataset) else ""
            )
            lines.append(
                f"| {s['budget']:.0%} | {label(s['method'], _task_of(rows, dataset))}"
                f"{' (†)' if s['capped'] else ''} | {s['n']} | "
                f"{s['accuracy']:.2f} ± {s['accuracy_sd']:.2f} | {s['macs']:,.0f}{share} | "
                f"{s['params']:,.0f} | {s['cpu_seconds']:,.0f} | {s['wall_seconds']:,.0f} | "
                f"{s['train_macs']:.3g} |" + (f" {', '.join(s['sources'])} |" if merged else "")
            )
    lines += glance(rows, max_macs)
    path.write_text("\n".join(lines) + "\n")


def glance(rows: list[dict[str, Any]], max_macs: dict[str, int]) -> list[str]:
    """Markdown lines: per dataset, the mean score of every method (columns) at every budget (rows),
    with the MACs reached where they are more than 5% off the budget ((†): it could not reach it).
    max_macs: the maximal network's MACs per dataset (runs of the plain CNN do not record it)."""
    lines = [
        "",
        "**At a glance**: mean score over seeds; in brackets the MACs reached (% of maximal) where "
        "more than 5% off the budget.",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        stats = summarise([r for r in rows if r["dataset"] == dataset])
        methods = [m for m in METHODS if any(s["method"] == m for s in stats)]
        task = _task_of(rows, dataset)
        names = " | ".join(label(m, task) for m in methods)
        lines += ["", f"| {dataset} | {names} |", "|---" * (len(methods) + 1) + "|"]
        for budget in sorted({s["budget"] for s in stats}, reverse=True):
            at = {s["method"]: s for s in stats if s["budget"] == budget}
            cells = []
            for m in methods:
                if m not in at:
                    cells.append("")
                    continue
                share = at[m]["macs"] / max_macs[dataset] if dataset in max_macs else budget
                off = abs(share / budget - 1) > 0.05
                mark = f" ({'† ' if at[m]['capped'] else ''}{100 * share:.0f}%)" if off else ""
                cells.append(f"{at[m]['accuracy']:.2f}{mark}")
            lines.append(f"| {budget:.0%} | " + " | ".join(cells) + " |")
    return lines


def write_plot(path: Path, rows: list[dict[str, Any]]) -> None:
    """Accuracy vs counted MACs, one panel per dataset, one series per method (mean ± std)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        stats = summarise([r for r in rows if r["dataset"] == dataset])
        for method in METHODS:
            pts = sorted((s["macs"], s["accuracy"], s["accuracy_sd"]) for s in stats
                         if s["method"] == method)  # fmt: skip
            if not pts:
                continue
            x, y, e = zip(*pts, strict=True)
            style = {
                "dnarch": "-o",
                "fixedres": "-D",
                "fastres": "-X",
                "anneal": "-v",
                "groups": "-P",
                "plain": "-s",
                "prune": "-^",
                "frozen": "*",
            }.get(method, ":.")
            ax.errorbar(x, y, yerr=e, fmt=style, label=label(method, _task_of(rows, dataset)), capsize=2,
                        markersize=10 if method == "frozen" else 5)  # fmt: skip
        lo, hi = ax.get_xlim()
        if hi > 10 * lo:  # budgets a decade or more apart: a log axis
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:  # one budget: a linear axis with a few labelled ticks
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())
        ax.set_xlabel("MACs per sample (counted, exported network)")
        ax.set_ylabel(SCORE_HEADERS[_task_of(rows, dataset)])
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
