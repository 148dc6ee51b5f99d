"""Training-step and inference time of the masked network, of its export and of a plain CNN of the
same MACs, on MNIST-1D (length 40), Fashion-MNIST (28x28) and Fashion-MNIST as sequences of 784.

On one fixed batch of training data, at each thread count (one process), it times the masked network at
its maximal architecture (fresh, masks open) and at the architecture a real 25%-budget run learned, that
run's exported network, and ``plain_cnn_for_budget`` at the maximal and at the learned counted MACs. A
training step is forward + backward + AdamW step in train mode: the trainer's step for the masked
network (cost, budget penalty, ``project_arch_``), cross-entropy for the others. Every learning rate is
0, so the optimiser does all its work but no network changes. Inference: one forward, eval, no grad.
After 2 warm-up steps, each of --repeats rounds times a step of every network of a same-MACs group,
alternating which goes first; medians of wall and process CPU time are reported. The learned runs are
trained first (--learn-threads) with the auto preset into
runs/speed/<dataset>-<preset>-<settings hash>-e<E>-n<N>, and reloaded from there later.

    python benchmarks/speed.py                              # all three datasets, 1 and 2 threads
    python benchmarks/speed.py --quick --datasets mnist1d   # smoke run: maximal networks only
    python benchmarks/speed.py --run mnist1d=runs/<dir>     # a finished run's learned network

Writes <out>/speed.md (headed by the command that made it), <out>/speed.json (every repeat's timings)
and <out>/speed-profile.md (top 10 operators of each network's training step at 1 thread).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import ProfilerActivity

import dnarch
from dnarch.config import BudgetConfig, DataConfig, RunConfig, TrainConfig, from_dict, upgrade_saved
from dnarch.data import DataError
from dnarch.flops import counted_macs
from dnarch.models import preset_for, preset_net
from dnarch.models.plain_cnn import plain_cnn_for_budget
from dnarch.provenance import git_commit
from dnarch.train.callbacks import load_checkpoint
from dnarch.train.objective import Objective
from dnarch.train.schedule import adamw, param_groups
from dnarch.train.trainer import LossAndCost

LEARN = {"mnist1d": (20, 0), "fashion-mnist": (10, 1000), "fashion-mnist-seq": (10, 1000)}
"""Per dataset, the learned run's epochs and its training (and test) samples, 0 = all."""
KINDS = ("step_wall", "step_cpu", "infer_wall", "infer_cpu")


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2."""
    print(f"speed.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


@dataclass
class Case:
    """One network on the fixed batch: its training step and its inference pass, and their timings
    (seconds, one per repeat) by thread count."""

    key: str
    label: str
    net: nn.Module
    macs: int
    step: Callable[[], None]
    x: Tensor
    times: dict[int, dict[str, list[float]]] = field(default_factory=dict)

    def train_step(self) -> None:
        """One training step, in train mode."""
        self.net.train()
        self.step()

    def infer(self) -> None:
        """One forward pass, in eval mode without grad."""
        self.net.eval()
        self.forward()

    def forward(self) -> None:
        """One forward pass without grad, in the mode the network is in."""
        with torch.no_grad():
            self.net(self.x)


def masked_case(
    key: str, label: str, model: Any, budget: BudgetConfig, learned: bool, x: Tensor, y: Tensor
) -> Case:
    """The trainer's step on the masked ``model``: its objective, cost and parameter groups; at the
    start of training (the maximal network) or at its end (progress 1: the target is the budget)."""
    progress = 1.0 if learned else 0.0
    objective = Objective(model, budget)
    loss_and_cost = LossAndCost(model, objective.metric)
    # the resolution scale only sets a learning rate, and every one is 0 here
    groups = param_groups(model, TrainConfig(), 1.0)
    opt = adamw([{**g, "lr": 0.0} for g in groups], x.device)

    def step() -> None:
        logits, cost = loss_and_cost(x)
        out = objective(model, logits, y, progress, cost=cost)
        opt.zero_grad(set_to_none=True)
        total = out["total"]
        assert isinstance(total, Tensor)
        total.backward()
        opt.step()
        model.project_arch_()

    macs = int(dnarch.model_cost(model, "hard" if learned else "max").macs)
    return Case(key, label, model, macs, step, x)


def module_case(key: str, label: str, net: nn.Module, x: Tensor, y: Tensor) -> Case:
    """Cross-entropy, backward and an AdamW step (at learning rate 0; fused, as every dnarch
    training loop) on a plain module."""
    opt = adamw([{"params": list(net.parameters()), "lr": 0.0}], x.device)

    def step() -> None:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    macs = counted_macs(net, int(x.shape[1]), tuple(x.shape[2:]))
    return Case(key, label, net, macs, step, x)


def plain_case(key: str, macs: int, classes: int, x: Tensor, y: Tensor) -> Case:
    """The widest plain CNN within ``macs`` counted MACs per sample."""
    net = plain_cnn_for_budget(int(x.shape[1]), classes, tuple(x.shape[2:]), macs)
    return module_case(key, f"plain CNN (width {net.width})", net, x, y)


def learn(dataset: str, ndim: int, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The learned run's folder (trained now unless cached or given) and how it came."""
    if dataset in args.run:
        return args.run[dataset], {"source": "given"}
    epochs, limit = LEARN[dataset]
    epochs = args.learn_epochs if args.learn_epochs is not None else epochs
    limit = args.learn_limit if args.learn_limit is not None else limit
    preset = preset_for(ndim, "classify")
    net = preset_net(preset, dnarch.load_data(dataset).input_shape)
    # the folder names the network's settings, so a preset that changes under its name retrains
    digest = hashlib.sha1(json.dumps(dataclasses.asdict(net), sort_keys=True).encode()).hexdigest()
    folder = Path("runs/speed") / f"{dataset}-{preset}-{digest[:8]}-e{epochs}-n{limit}"
    if (folder / "summary.json").is_file():
        return folder, {"source": "cached"}
    cfg = RunConfig(
        net=net,
        budget=BudgetConfig(budget=0.25),
        train=TrainConfig(epochs=epochs, seed=0),
        data=DataConfig(name=dataset, limit_train=limit, limit_test=limit),
    )
    torch.set_num_threads(args.learn_threads)
    print(f"training the learned {dataset} run into {folder} ...", flush=True)
    start = time.perf_counter()
    dnarch.run(cfg, out_dir=folder, progress=True)
    seconds = time.perf_counter() - start
    return folder, {"source": "trained", "wall_seconds": seconds, "threads": args.learn_threads}


def load_run(folder: Path, dataset: str) -> tuple[Any, nn.Module, RunConfig, dict[str, Any]]:
    """(masked model, exported network, config, summary) of a finished run folder on ``dataset``."""
    saved = upgrade_saved(json.loads((folder / "config.json").read_text()))
    r = saved.pop("resolved")
    cfg: RunConfig = from_dict(RunConfig, saved)
    if cfg.data.name != dataset:
        fail(f"{folder} is a run on {cfg.data.name}, not on {dataset}")
    dims = (r["in_channels"], r["num_classes"], r["input_shape"], r["task"])
    model = dnarch.build_model(cfg.net, *dims)
    try:
        model.load_state_dict(load_checkpoint(folder / "checkpoint.pt")["trainer"]["model"])
    except RuntimeError as err:
        fail(f"{folder} does not load into today's model ({str(err).splitlines()[0]}); delete it")
    summary = json.loads((folder / "summary.json").read_text())
    if int(dnarch.model_cost(model, "hard").macs) != summary["macs"]:
        print(f"speed.py: warning: {folder}'s MACs differ from its summary.json", file=sys.stderr)
    return model, dnarch.load_static(folder), cfg, summary


def batch(dataset: str, n: int) -> tuple[Tensor, Tensor, int]:
    """The first ``n`` training samples of ``dataset`` (x, y) and its class count."""
    try:
        data = dnarch.load_data(dataset)
    except DataError as err:
        fail(str(err))
    return data.x_train[:n].clone(), data.y_train[:n].clone(), data.num_classes


def groups_for(
    x: Tensor, y: Tensor, classes: int, cases: list[str], run: tuple[Any, ...] | None
) -> list[list[Case]]:
    """The networks in groups of the same MACs, the plain CNN last: maximal masked and plain (case
    max); learned masked, exported and plain (case learned, from ``run``)."""
    torch.manual_seed(0)
    in_ch, shape = int(x.shape[1]), tuple(x.shape[2:])
    out = []
    if "max" in cases:
        net = dnarch.build_model(preset_net(preset_for(len(shape)), shape), in_ch, classes, shape)
        a = masked_case(
            "masked_max", "masked, maximal", net, BudgetConfig(budget=0.25), False, x, y
        )
        out.append([a, plain_case("plain_max", a.macs, classes, x, y)])
    if run is not None:
        model, static, cfg, s = run
        label = f"masked, learned ({100 * s['macs'] / s['max_macs']:.0f}%)"
        b = masked_case("masked_learned", label, model, cfg.budget, True, x, y)
        c = module_case("exported", "exported", static, x, y)
        out.append([b, c, plain_case("plain_learned", b.macs, classes, x, y)])
    return out


def time_groups(groups: list[list[Case]], threads: int, repeats: int) -> None:
    """Warm-up, then ``repeats`` rounds: a training step of each network of a group, then an
    inference pass of each, the group's order reversed every other round."""
    torch.set_num_threads(threads)
    for case in (c for g in groups for c in g):
        case.times[threads] = {k: [] for k in KINDS}
        for _ in range(2):
            case.train_step()
            case.infer()
    for r in range(repeats):
        for group in groups:
            order = group if r % 2 == 0 else group[::-1]
            for kind in ("step", "infer"):
                for case in order:
                    # the mode is set outside the clock: a training loop sets it once an epoch
                    case.net.train(kind == "step")
                    wall, cpu = time.perf_counter(), time.process_time()
                    (case.step if kind == "step" else case.forward)()
                    case.times[threads][f"{kind}_wall"].append(time.perf_counter() - wall)
                    case.times[threads][f"{kind}_cpu"].append(time.process_time() - cpu)


def profile(case: Case, steps: int = 3) -> str:
    """Top 10 operators by self CPU time over ``steps`` training steps at 1 thread, as markdown."""
    torch.set_num_threads(1)
    case.train_step()
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            case.train_step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    lines = ["| operator | self CPU ms / step | % | calls / step |", "|---|---|---|---|"]
    for e in events[:10]:
        ms, pct = e.self_cpu_time_total / 1e3 / steps, 100 * e.self_cpu_time_total / total
        lines.append(f"| `{e.key}` | {ms:.2f} | {pct:.1f} | {e.count / steps:g} |")
    return "\n".join(lines)


def median_ms(case: Case, threads: int, kind: str) -> float:
    """The median of ``case``'s timings of ``kind`` at ``threads``, in milliseconds."""
    return 1e3 * statistics.median(case.times[threads][kind])


def rows(dataset: str, groups: list[list[Case]], threads: list[int]) -> list[str]:
    """Table rows: per thread count, each group's networks against its plain CNN (last)."""
    out = []
    for t in threads:
        for group in groups:
            plain = median_ms(group[-1], t, "step_wall")
            for case in group:
                step = median_ms(case, t, "step_wall")
                ratio = "—" if case is group[-1] else f"{step / plain:.2f}x"
                out.append(
                    f"| {dataset} | {t} | {case.label} | {case.macs:,} | {step:.2f} | "
                    f"{median_ms(case, t, 'step_cpu'):.2f} | {median_ms(case, t, 'infer_wall'):.2f} "
                    f"| {ratio} |"
                )
    return out


def notes(dataset: str, groups: list[list[Case]], threads: list[int], info: dict[str, Any]) -> str:
    """The learned run's accuracy, MACs and training time; masked learned against exported."""
    s, (b, c, _) = info["summary"], groups[-1]
    took = f"{s['train_seconds']:.0f} s of training"
    if info["source"] == "trained":
        took += f" ({info['wall_seconds']:.0f} s the whole run, {info['threads']} thread(s))"
    ratio = {t: [median_ms(b, t, k) / median_ms(c, t, k) for k in KINDS[::2]] for t in threads}
    vs = ", ".join(
        f"{t} thread(s) step {r[0]:.2f}x, inference {r[1]:.2f}x" for t, r in ratio.items()
    )
    return (
        f"- {dataset}: learned run `{info['folder']}` ({info['source']}): test accuracy "
        f"{100 * s['test_accuracy']:.2f}% (exported {100 * s['static_test_accuracy']:.2f}%), "
        f"{100 * s['macs'] / s['max_macs']:.1f}% of the maximal MACs, {took}. "
        f"Masked learned / exported: {vs}."
    )


def parse_args() -> argparse.Namespace:
    """The flags, checked: a bad dataset or --run folder ends the program (exit code 2)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(LEARN))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--run", action="append", default=[], help="DATASET=FOLDER: a finished run")
    ap.add_argument("--learn-epochs", type=int, help="the learned runs' epochs (default: LEARN)")
    ap.add_argument("--learn-limit", type=int, help="their training/test samples, 0 = all")
    ap.add_argument("--learn-threads", type=int, default=2)
    ap.add_argument("--cases", nargs="+", choices=["max", "learned"], default=["max", "learned"])
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument(
        "--quick", action="store_true", help="defaults --repeats 3 --threads 1 --cases max"
    )
    if ap.parse_args().quick:  # smoke-run defaults; flags given explicitly still win
        ap.set_defaults(repeats=3, threads=[1], cases=["max"], no_profile=True)
    args = ap.parse_args()
    for name in args.datasets:
        if name not in LEARN:
            fail(f"unknown dataset {name!r}: choose from {', '.join(LEARN)}")
    runs = {}
    for text in args.run:
        name, _, folder = text.partition("=")
        if name not in LEARN or not folder:
            fail(f"--run takes DATASET=FOLDER with DATASET one of {', '.join(LEARN)}, got {text!r}")
        if not (Path(folder) / "summary.json").is_file():
            fail(f"{folder} holds no summary.json: not a finished dnarch run")
        runs[name] = Path(folder)
    args.run = runs
    return args


def write(out: Path, head: str, table: list[str], below: list[str], profiles: list[str]) -> str:
    """speed.md (and speed-profile.md); returns the table's text."""
    text = "\n".join(
        [
            head,
            "",
            "| dataset | threads | network | counted MACs | train step ms (wall) | train step CPU ms "
            "| inference ms | step / plain at same MACs |",
            "|---|---|---|---|---|---|---|---|",
            *table,
            "",
            *below,
        ]
    )
    (out / "speed.md").write_text(text + "\n")
    if profiles:
        top = f"{head}\n\nTraining step, 1 thread, 3 steps profiled; top 10 by self CPU."
        (out / "speed-profile.md").write_text("\n\n".join([top, *profiles]) + "\n")
    return text


def main() -> None:
    args = parse_args()
    batches = {d: batch(d, args.batch) for d in args.datasets}  # fails early if data are missing
    learned: dict[str, dict[str, Any]] = {}
    if "learned" in args.cases:  # trained before any timing starts
        for d in args.datasets:
            folder, info = learn(d, batches[d][0].ndim - 2, args)
            learned[d] = {**info, "folder": str(folder)}
    command = shlex.join(["python", "benchmarks/speed.py", *sys.argv[1:]])
    head = (
        f"{platform.machine()}, {os.cpu_count()} processors, torch {torch.__version__}, batch "
        f"{args.batch}, {args.repeats} repeats (medians), commit {git_commit()}.\nMade by: `{command}`"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table: list[str] = []
    below: list[str] = []
    profiles: list[str] = []
    raw: list[dict[str, Any]] = []
    for d in args.datasets:
        x, y, classes = batches[d]
        run = load_run(Path(learned[d]["folder"]), d) if d in learned else None
        groups = groups_for(x, y, classes, args.cases, run)
        for t in args.threads:
            print(f"timing {d} at {t} thread(s) ...", flush=True)
            time_groups(groups, t, args.repeats)
        table += rows(d, groups, args.threads)
        if run is not None:
            learned[d]["summary"] = run[3]
            below.append(notes(d, groups, args.threads, learned[d]))
        if not args.no_profile:
            profiles += [f"### {d}: {c.label}\n\n{profile(c)}" for g in groups for c in g]
        for c in (c for g in groups for c in g):
            raw.append({"dataset": d, "network": c.key, "label": c.label, "macs": c.macs})
            raw[-1]["times"] = c.times  # seconds, one per repeat, by threads and kind
        text = write(out, head, table, below, profiles)
        meta = {"command": command, "head": head, "args": vars(args), "learned": learned}
        blob = {"meta": meta, "results": raw}
        (out / "speed.json").write_text(json.dumps(blob, indent=1, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()
