"""DNArch against the alternatives a user would pick, side by side in one run.

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
(``<name>.png``) are rewritten after every run; every run is a record of ``benchmarks.runs``' schema.
"""

from __future__ import annotations

import argparse
import json
import sys
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
from dnarch.export.summary import count
from dnarch.flops import counted_macs
from dnarch.models import PRESETS, preset_for, preset_net
from dnarch.models.plain_cnn import plain_cnn_for_budget
from dnarch.models.plain_unet import plain_unet_for_budget
from dnarch.provenance import git_commit
from dnarch.train.finetune import retrain
from dnarch.train.fixed import train_fixed
from dnarch.train.metrics import SCORES
from dnarch.train.objective import Objective

if __package__ in (None, ""):  # run as ``python benchmarks/compare.py``: the repository's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runs import (  # noqa: E402
    DOTTED,
    Clock,
    Method,
    file_meta,
    save_runs,
    score_text,
    taken_over,
    write_plot,
    write_table,
)

# the methods, in the tables' order, with their labels and plot markers
METHODS: dict[str, Method] = {
    "dnarch": Method("DNArch (all axes)", "-o"),
    "fixedres": Method("DNArch, resolution fixed", "-D"),
    "fastres": Method("DNArch, resolution at full rate", "-X"),
    "anneal": Method("DNArch, annealed gates", "-v"),
    "groups": Method("DNArch, learned grouping", "-P"),
    **{axis: Method(f"{axis} only") for axis in AXES},
    "scratch": Method("DNArch's network, from scratch"),
    "plain": Method("plain 3x3 CNN", "-s", dense_label="plain U-Net (3x3)"),
    "prune": Method("prune-then-finetune", "-^"),
    "frozen": Method("maximal, frozen", "*"),
}


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
        "score": result.summary["static_test_score"],  # the task's score (accuracy for classify)
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
        "score": history[-1][f"test_{SCORES[data.task][0]}"],
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
    with Clock() as clock:  # what ``dnarch finetune --retrain`` does
        net, history = retrain(
            ArchSpec.from_json(json.dumps(architecture)), data, epochs, seed=seed,
            device=args.device, progress=args.progress,
        )  # fmt: skip
    net.cpu()
    macs, params = count(net)
    return {
        "score": history[-1][f"test_{SCORES[data.task][0]}"],
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
        "score": r.test_accuracy,
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
    if args.table_only:  # the table shows the --methods named (all by default) on the --datasets
        # and at the --budgets named; the frozen maximal network at its 100%
        shown = set(args.budgets)
        rows = [
            r
            for r in rows
            if r["method"] in args.methods
            and r["dataset"] in args.datasets
            and (r["budget"] in shown or r["method"] == "frozen")
        ]
    done = {(r["dataset"], r["method"], r["budget"], r["seed"]) for r in rows}

    def save() -> None:
        # a table-only file trained nothing: its epochs are its runs', not the flag's default
        epochs = (
            [str(e) for e in sorted({int(r["epochs"]) for r in rows})]
            if args.table_only
            else args.epochs
        )
        samples = {d: (len(b.x_train), len(b.x_test)) for d, b in datasets.items()}
        meta = {
            **file_meta(command, rows, samples, torch.get_num_threads()), "epochs": epochs,
            "finetune_epochs": args.finetune_epochs or "half the epochs",
            "limit_train": args.limit_train, "limit_test": args.limit_test,
        }  # fmt: skip
        save_runs(raw_path, meta, rows)
        write_table(out / f"{name}.md", rows, meta, METHODS)
        write_plot(out / f"{name}.png", rows, METHODS)

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
            "score_name": SCORES[datasets[dataset].task][0],
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
            f"{SCORES[row['task']][1]} {score_text(row['task'], row['score'])} at {row['macs']:,} "
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
    # a table titles each dataset with the flags' sample counts: every run it takes over must match
    check_samples(merged, {d: (len(b.x_train), len(b.x_test)) for d, b in datasets.items()})
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


def check_samples(paths: list[Path], samples: dict[str, tuple[int, int]]) -> None:
    """A table states each dataset's training and test sizes from the flags (``--limit-train``,
    ``--limit-test``): runs taken over from saved files (``--resume``, ``--merge``, a table-only
    rewrite) must have been made on those sizes (as saved in their files), or it exits with one
    line."""
    for path in paths:
        meta = json.loads(path.read_text())["meta"]
        for d, sizes in samples.items():
            made = (meta.get("n_train", {}).get(d), meta.get("n_test", {}).get(d))
            if None not in made and made != sizes:
                raise SystemExit(
                    f"compare.py: error: {path} holds {d} runs made on {made[0]:,} training / "
                    f"{made[1]:,} test samples, the flags give {sizes[0]:,} / {sizes[1]:,}: pass "
                    "the runs' --limit-train and --limit-test"
                )


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


if __name__ == "__main__":
    main()
