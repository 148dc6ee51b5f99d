"""The benchmarks' one run schema, store, table and plot.

A **run** is one training of one method on one dataset at one budget with one seed, saved as a dict:

- ``dataset``, ``method``, ``budget`` (a fraction of the maximal network's MACs, or an absolute MAC
  count above 1), ``seed``, ``epochs``, ``task`` (``classify``, ``segment``, ``regress``);
- ``score`` and ``score_name``: the task's test score of the final (exported or fixed) network:
  ``acc`` and ``miou`` as fractions, ``psnr`` in dB (``dnarch.train.metrics.SCORES``);
- ``macs`` and ``params``: counted on the final module (``torch.utils.flop_counter``, ``numel``);
- ``cpu_seconds`` and ``wall_seconds`` of the run;
- ``commit`` and ``commands``: the code and the command lines that made it; ``source``: the file
  stem it was first saved in;
- and whatever the method adds (``max_macs``, ``train_macs``, ``architecture``, ...).

A results file ``<name>.json`` holds ``{"meta": {...}, "runs": [...]}`` (``save_runs``); its table
``<name>.md`` and plot ``<name>.png`` are written from the runs alone (``write_table``,
``write_plot``), methods in the order and with the labels of the script's registry (``Method``).
Files written before the schema named the score ``accuracy``; ``normalise`` reads them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # noqa: F401  (see below)

from dnarch.train.metrics import SCORES

# Every torch optimiser imports torch._dynamo when the first one is built (about 1 CPU s): imported
# here, before any clock starts, so that the first method a benchmark times does not pay for it.

# the keys every run has (``check_run``)
RUN_KEYS = (
    "dataset", "method", "budget", "seed", "epochs", "task", "score", "score_name", "macs",
    "params", "cpu_seconds", "wall_seconds",
)  # fmt: skip


@dataclass(frozen=True)
class Method:
    """A registered method: its label in tables and plots (``dense_label`` for per-position tasks,
    if it differs) and its plot marker."""

    label: str
    style: str = ":."
    dense_label: str | None = None

    def label_for(self, task: str) -> str:
        return self.dense_label if self.dense_label and task != "classify" else self.label


Registry = Mapping[str, Method]  # method name -> Method, in the tables' order


def _method(registry: Registry, name: str) -> Method:
    """A method the registry does not hold (e.g. a block family) shows under its own name."""
    return registry.get(name, Method(name))


def _order(registry: Registry, rows: list[dict[str, Any]]) -> list[str]:
    """The methods of ``rows``: the registry's first, in its order, then the others as they come."""
    seen = list(dict.fromkeys(r["method"] for r in rows))
    return [m for m in registry if m in seen] + [m for m in seen if m not in registry]


def budget_text(budget: float) -> str:
    """A fraction of the maximal network as a percentage; an absolute MAC count as it is."""
    return f"{budget:.0%}" if budget <= 1 else f"{budget:,.0f} MACs"


def check_run(run: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the schema's keys that ``run`` lacks."""
    missing = [k for k in RUN_KEYS if k not in run]
    if missing:
        raise ValueError(f"a run lacks {', '.join(missing)}: {dict(run)}")


def normalise(run: Mapping[str, Any]) -> dict[str, Any]:
    """``run`` in the schema: a run saved before it (score under ``accuracy``, no ``score_name``)
    gets its score's key and name; a run in the schema is returned as it is."""
    out = dict(run)
    if "score" not in out and "accuracy" in out:
        out["score"] = out.pop("accuracy")
    out.setdefault("task", "classify")
    out.setdefault("score_name", SCORES[out["task"]][0])
    return out


def save_runs(path: Path, meta: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Write ``{"meta": meta, "runs": runs}`` to ``path`` atomically (a killed benchmark leaves the
    last good file), every run checked against the schema first."""
    for r in runs:
        check_run(r)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    os.replace(tmp, path)


def file_meta(
    command: str,
    rows: list[dict[str, Any]],
    samples: dict[str, tuple[int, int]],
    threads: int,
) -> dict[str, Any]:
    """A results file's ``meta`` for the ``rows`` it holds now: this ``command`` after the commands
    that made them, the commits of their code (runs saved before commits were recorded have none),
    each dataset's training and test ``samples``, the machine, ``threads`` and the torch version
    (what ``write_table`` prints above the table)."""
    return {
        "command": command,
        "commands": list(dict.fromkeys([*(c for r in rows for c in r["commands"]), command])),
        "commits": list(dict.fromkeys(r["commit"] for r in rows if r.get("commit"))),
        "n_train": {d: n for d, (n, _) in samples.items()},
        "n_test": {d: n for d, (_, n) in samples.items()},
        "machine": platform.machine(), "threads": threads, "torch": torch.__version__,
    }  # fmt: skip


class Clock:
    """Process CPU seconds and wall seconds of a block of work."""

    def __enter__(self) -> Clock:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0


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


# the CLI's override syntax: --net.width=64, or --net.width 64 (the value the next argument)
DOTTED = re.compile(r"--(net|train|budget)\.(\w+)(?:=(.*))?")


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


def taken_over(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs of saved results files (``save_runs``), in the schema (``normalise``), the first
    file's run kept where several hold the same (dataset, method, budget, seed). Each run carries the
    commands that made it: its own, or, in files written before runs recorded theirs, every command
    of its file. Raises ``ValueError`` if a run lacks a key of the schema."""
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
    out = [normalise(r) for r in rows]
    for r in out:  # before anything trains: a bad file stops the benchmark, not its next save
        check_run(r)
    return out


def _task_of(rows: list[dict[str, Any]], dataset: str) -> str:
    return next((r.get("task", "classify") for r in rows if r["dataset"] == dataset), "classify")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict[str, Any]], registry: Registry) -> list[dict[str, Any]]:
    """One entry per (dataset, method, budget): means and standard deviations over seeds."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"], r["budget"]), []).append(r)
    out = []
    for (dataset, method, budget), rs in groups.items():
        acc, acc_sd = _mean_sd([score_scale(r) * r["score"] for r in rs])
        out.append({
            "dataset": dataset, "method": method, "budget": budget, "n": len(rs),
            "score": acc, "score_sd": acc_sd,
            "macs": statistics.mean(r["macs"] for r in rs),
            "params": statistics.mean(r["params"] for r in rs),
            "cpu_seconds": statistics.mean(r["cpu_seconds"] for r in rs),
            "wall_seconds": statistics.mean(r["wall_seconds"] for r in rs),
            "train_macs": statistics.mean(r.get("train_macs", math.nan) for r in rs),
            "capped": any((r.get("budget_used") or 0) > r["budget"] for r in rs),
            "sources": list(dict.fromkeys(r["source"] for r in rs if "source" in r)),
        })  # fmt: skip
    order = {m: i for i, m in enumerate(_order(registry, rows))}
    out.sort(key=lambda s: (s["dataset"], -s["budget"], order[s["method"]]))
    return out


def write_table(
    path: Path, rows: list[dict[str, Any]], meta: dict[str, Any], registry: Registry
) -> None:
    """The markdown table of ``rows`` (per dataset: one line per budget and method, mean ± std over
    seeds) under the commands and commit that made them (``meta``), and ``glance``'s summary."""
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
        f"{meta['machine']}, {meta['threads']} thread{'' if meta['threads'] == 1 else 's'}, "
        f"torch {meta['torch']}"
        + (f"; runs made at commit {', '.join(meta['commits'])}." if meta.get("commits") else "."),
        "",
        "Score (test accuracy; mean IoU for segmentation; PSNR for regression): mean ± std over seeds "
        "(n = seeds). MACs and parameters: counted on the final "
        "exported module. CPU s: process CPU time to the final network"
        + (
            " (prune includes training the maximal network)"
            if any(r["method"] == "prune" for r in rows)
            else ""
        )
        + ". Training MACs: nominal, 3 x forward MACs per sample seen."
        + (
            " (†): the one learned axis cannot reach this budget; the run aimed 5% above the "
            "smallest network it can reach."
            if any((r.get("budget_used") or 0) > r["budget"] for r in rows)
            else ""
        )
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
            + (f"; maximal network {max_macs[dataset]:,} MACs." if dataset in max_macs else ".")
            + net_note([r for r in rows if r["dataset"] == dataset]),
            "",
            f"| budget | method | n | {SCORE_HEADERS[_task_of(rows, dataset)]} | MACs (% of maximal) "
            "| parameters | CPU s | wall s | training MACs |" + (" runs from |" if merged else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if merged else ""),
        ]
        for s in summarise([r for r in rows if r["dataset"] == dataset], registry):
            share = (
                f" ({100 * s['macs'] / max_macs[dataset]:.1f}%)" if max_macs.get(dataset) else ""
            )
            lines.append(
                f"| {budget_text(s['budget'])} | "
                f"{_method(registry, s['method']).label_for(_task_of(rows, dataset))}"
                f"{' (†)' if s['capped'] else ''} | {s['n']} | "
                f"{s['score']:.2f} ± {s['score_sd']:.2f} | {s['macs']:,.0f}{share} | "
                f"{s['params']:,.0f} | {s['cpu_seconds']:,.0f} | {s['wall_seconds']:,.0f} | "
                f"{s['train_macs']:.3g} |" + (f" {', '.join(s['sources'])} |" if merged else "")
            )
    lines += glance(rows, max_macs, registry)
    path.write_text("\n".join(lines) + "\n")


def glance(rows: list[dict[str, Any]], max_macs: dict[str, int], registry: Registry) -> list[str]:
    """Markdown lines: per dataset, the mean score of every method (columns) at every budget (rows),
    with the MACs reached where they are more than 5% off the budget ((†): it could not reach it).
    max_macs: the maximal network's MACs per dataset (runs of the plain CNN do not record it)."""
    lines = [
        "",
        "**At a glance**: mean score over seeds; in brackets the MACs reached (% of maximal) where "
        "more than 5% off the budget.",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        stats = summarise([r for r in rows if r["dataset"] == dataset], registry)
        methods = _order(registry, [r for r in rows if r["dataset"] == dataset])
        task = _task_of(rows, dataset)
        names = " | ".join(_method(registry, m).label_for(task) for m in methods)
        lines += ["", f"| {dataset} | {names} |", "|---" * (len(methods) + 1) + "|"]
        for budget in sorted({s["budget"] for s in stats}, reverse=True):
            at = {s["method"]: s for s in stats if s["budget"] == budget}
            cells = []
            for m in methods:
                if m not in at:
                    cells.append("")
                    continue
                if budget > 1:  # an absolute budget: the MACs reached where off it
                    off = abs(at[m]["macs"] / budget - 1) > 0.05
                    mark = f" ({at[m]['macs']:,.0f} MACs)" if off else ""
                else:
                    share = at[m]["macs"] / max_macs[dataset] if dataset in max_macs else budget
                    off = abs(share / budget - 1) > 0.05
                    mark = f" ({'† ' if at[m]['capped'] else ''}{100 * share:.0f}%)" if off else ""
                cells.append(f"{at[m]['score']:.2f}{mark}")
            lines.append(f"| {budget_text(budget)} | " + " | ".join(cells) + " |")
    return lines


def write_plot(path: Path, rows: list[dict[str, Any]], registry: Registry) -> None:
    """Accuracy vs counted MACs, one panel per dataset, one series per method (mean ± std)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        stats = summarise([r for r in rows if r["dataset"] == dataset], registry)
        for method in _order(registry, [r for r in rows if r["dataset"] == dataset]):
            pts = sorted((s["macs"], s["score"], s["score_sd"]) for s in stats
                         if s["method"] == method)  # fmt: skip
            if not pts:
                continue
            x, y, e = zip(*pts, strict=True)
            style = _method(registry, method).style
            ax.errorbar(x, y, yerr=e, fmt=style, label=_method(registry, method).label_for(_task_of(rows, dataset)), capsize=2,
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
