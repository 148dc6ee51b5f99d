"""benchmarks/compare.py's table-only merge: which saved run a table shows, which commands and files it
says made it, and the at-a-glance table (README tables are regenerated this way, so a wrong "Made by"
misleads the reader)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import compare, runs

ROOT = Path(__file__).resolve().parents[1]


def run_row(method: str, accuracy: float, **extra: Any) -> dict[str, Any]:
    """One saved MNIST-1D run at 25%, seed 0, with the fields the table reads."""
    return {
        "dataset": "mnist1d", "method": method, "budget": 0.25, "seed": 0, "epochs": 20,
        "task": "classify", "accuracy": accuracy, "macs": 320_000, "max_macs": 1_284_160,
        "params": 9_000, "cpu_seconds": 60.0, "wall_seconds": 70.0, "train_macs": 1e11, **extra,
    }  # fmt: skip


def plain_row(accuracy: float) -> dict[str, Any]:
    """A saved run of the plain CNN: it does not record the maximal network's MACs."""
    row = run_row("plain", accuracy)
    del row["max_macs"]
    return row


def saved(path: Path, commands: list[str], runs: list[dict[str, Any]]) -> str:
    meta = {"command": commands[-1], "commands": commands, "epochs": ["20"], "machine": "x86_64"}
    path.write_text(json.dumps({"meta": meta, "runs": runs}))
    return str(path)


def table(
    tmp_path: Path, methods: list[str], files: list[str], budgets: tuple[str, ...] = ()
) -> tuple[dict[str, Any], str]:
    argv = ["--datasets", "mnist1d", "--threads", "1", "--table-only", "--methods", *methods]
    argv += ["--budgets", *budgets] if budgets else []
    argv += ["--merge", *files, "--out", str(tmp_path / "out"), "--name", "t"]
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), *argv],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    out = tmp_path / "out"
    return json.loads((out / "t.json").read_text()), (out / "t.md").read_text()


def test_merge_keeps_the_first_files_run_and_lists_only_the_commands_of_runs_shown(
    tmp_path: Path,
) -> None:
    a = saved(
        tmp_path / "a.json",
        ["cmd-A"],
        # as saved runs of the plain CNN are, the first one records no maximal MACs
        [plain_row(0.98), run_row("dnarch", 0.9), run_row("depth", 0.8, macs=214_000)],
    )
    b = saved(
        tmp_path / "b.json",
        ["cmd-B1", "cmd-B2"],  # a resumed run: every command of the file made its runs
        [run_row("dnarch", 0.1), run_row("prune", 0.94)],
    )
    # a run of its own that a.json supersedes: its command made nothing the table shows
    c = saved(tmp_path / "c.json", ["cmd-C"], [run_row("dnarch", 0.2, commands=["cmd-C"])])
    raw, md = table(tmp_path, ["dnarch", "depth", "plain", "prune"], [a, b, c])
    # runs saved before the schema (score under "accuracy") come back in it
    score = {r["method"]: r["score"] for r in raw["runs"]}
    assert score == {"dnarch": 0.9, "plain": 0.98, "depth": 0.8, "prune": 0.94}
    assert all(r["score_name"] == "acc" and "accuracy" not in r for r in raw["runs"])
    listed = raw["meta"]["commands"]
    assert listed[:3] == ["cmd-A", "cmd-B1", "cmd-B2"] and "--table-only" in listed[3]
    assert len(listed) == 4 and "`cmd-C`" not in md and "- `cmd-B2`" in md
    rows = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| 25% |")}
    # each row names the saved file its runs came from
    assert rows["DNArch (all axes)"].startswith("| 25% | DNArch (all axes) | 1 | 90.00")
    assert rows["DNArch (all axes)"].endswith("| a |")
    assert rows["prune-then-finetune"].endswith("| b |")
    # at a glance: one row per budget, one column per method, the MACs where off the budget by > 5%
    glance = "| mnist1d | DNArch (all axes) | depth only | plain 3x3 CNN | prune-then-finetune |"
    assert glance in md and "| 25% | 90.00 | 80.00 (17%) | 98.00 | 94.00 |" in md


def test_table_only_shows_the_methods_named_and_only_their_commands(tmp_path: Path) -> None:
    a = saved(tmp_path / "a.json", ["cmd-A"], [run_row("dnarch", 0.9)])
    b = saved(tmp_path / "b.json", ["cmd-B"], [run_row("prune", 0.94)])
    raw, md = table(tmp_path, ["dnarch"], [a, b])
    assert [r["method"] for r in raw["runs"]] == ["dnarch"]
    assert "cmd-B" not in md and "| prune-then-finetune |" not in md
    # the table it writes records each run's commands, so merging it again keeps them
    assert raw["runs"][0]["commands"] == ["cmd-A"] and raw["runs"][0]["source"] == "a"
    # one file behind every row: no column for it
    assert "runs from" not in md


def test_table_only_shows_the_datasets_and_budgets_named_and_the_frozen_network(
    tmp_path: Path,
) -> None:
    a = saved(
        tmp_path / "a.json",
        ["cmd-A"],
        [
            run_row("plain", 0.9),
            run_row("plain", 0.95, budget=1.0),
            run_row("frozen", 0.9, budget=1.0),
            run_row("plain", 0.8, budget=1.0, dataset="fashion-mnist-seq"),
        ],
    )
    raw, md = table(tmp_path, ["plain", "frozen"], [a], budgets=("1.0",))
    assert sorted((r["method"], r["budget"]) for r in raw["runs"]) == [
        ("frozen", 1.0),
        ("plain", 1.0),
    ]
    assert "| 25% |" not in md
    # the frozen maximal network is shown at its 100% when only other budgets are named
    raw, _ = table(tmp_path, ["plain", "frozen"], [a], budgets=("0.25",))
    assert sorted((r["method"], r["budget"]) for r in raw["runs"]) == [
        ("frozen", 1.0),
        ("plain", 0.25),
    ]


def test_a_table_only_file_records_its_runs_epochs_not_the_flags_default(tmp_path: Path) -> None:
    a = saved(tmp_path / "a.json", ["cmd-A"], [run_row("dnarch", 0.9, epochs=30)])
    b = saved(tmp_path / "b.json", ["cmd-B"], [run_row("prune", 0.94, epochs=5)])
    raw, _ = table(tmp_path, ["dnarch", "prune"], [a, b])
    assert raw["meta"]["epochs"] == ["5", "30"]  # in order; --epochs defaults to 20


def test_compare_net_and_train_settings_are_typed_and_bad_ones_are_one_line() -> None:
    assert compare.train_changes(["resolution_travel=0.3", "freeze_arch_fraction=0.2"]) == {
        "resolution_travel": 0.3,
        "freeze_arch_fraction": 0.2,
    }
    for bad in (["resolution_travel"], ["resolution_travel=-1"], ["no_such_key=1"]):
        try:
            compare.train_changes(bad)
        except SystemExit as err:
            assert str(err).startswith("compare.py: error: --train")
        else:
            raise AssertionError(f"{bad} was accepted")


def test_compare_takes_the_clis_dotted_overrides_too() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    for flag in ("--net", "--train", "--budget-config"):
        ap.add_argument(flag, nargs="+", default=[])
    args, extra = ap.parse_known_args(
        ["--net", "hidden=16", "--net.width=8", "--train.lr", "1e-3", "--budget.anneal_from=start"]
    )
    compare.dotted_overrides(ap, args, extra)
    assert args.net == ["hidden=16", "width=8"] and args.train == ["lr=1e-3"]
    assert args.budget_config == ["anneal_from=start"]
    made = "python benchmarks/compare.py --net.widen=4 --train.lr 1e-3 --epochs 10"
    note = runs.net_note([run_row("dnarch", 0.5, commands=[made])])
    assert "`--net.widen=4 --train.lr=1e-3`" in note and "--epochs" not in note


def test_a_table_names_the_net_changes_its_runs_were_made_with() -> None:
    made = "python benchmarks/compare.py --net widen=4 learn_resolution=false --epochs 10"
    note = runs.net_note([run_row("dnarch", 0.5, commands=[made]), run_row("frozen", 0.4)])
    assert "`--net widen=4 learn_resolution=false`" in note and "--epochs" not in note
    assert runs.net_note([run_row("dnarch", 0.5, commands=["python compare.py"])]) == ""


def test_rewriting_a_table_keeps_the_runs_of_its_own_file(tmp_path: Path) -> None:
    """A table-only rewrite under an existing name used to drop that file's own runs."""
    a = saved(tmp_path / "a.json", ["cmd-A"], [run_row("depth", 0.8, seed=1)])
    (tmp_path / "out").mkdir()
    saved(tmp_path / "out" / "t.json", ["cmd-T"], [run_row("depth", 0.7, commands=["cmd-T"])])
    raw, md = table(tmp_path, ["depth"], [a])
    assert sorted(r["seed"] for r in raw["runs"]) == [0, 1] and "`cmd-T`" in md


def test_the_net_note_names_train_changes_too() -> None:
    made = (
        "python benchmarks/compare.py --train resolution_travel=0.15 --methods dnarch --net widen=4"
    )
    note = runs.net_note([run_row("dnarch", 0.5, commands=[made])])
    assert "`--net widen=4 --train resolution_travel=0.15`" in note


def test_the_net_note_names_the_preset_and_maximal_net_follows_it() -> None:
    from dnarch.data import from_arrays
    from dnarch.models import PRESETS

    made = "python benchmarks/compare.py --preset image --datasets fashion-scenes --net widen=2"
    note = runs.net_note([run_row("dnarch", 0.5, commands=[made])])
    assert "`--preset image --net widen=2`" in note
    x, y = np.zeros((2, 1, 8, 8), np.float32), np.arange(128).reshape(2, 8, 8) % 3
    scenes = from_arrays(x, y, x, y, task="segment")
    assert compare.maximal_net(scenes, []) == PRESETS["image-pyramid"]  # auto, as the CLI
    assert compare.maximal_net(scenes, ["widen=2"], "image").widen == 2.0
    assert compare.maximal_net(scenes, [], "image") == PRESETS["image"]


def test_scratch_retrains_the_learned_architecture_from_a_fresh_start() -> None:
    """The 'scratch' baseline builds the learned network anew from its architecture (the same counted
    MACs and parameters as the exported one) and trains it."""
    import argparse

    import numpy as np

    import dnarch
    from dnarch.config import NetConfig

    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    x = rng.normal(size=(64, 1, 16)).astype(np.float32) + y[:, None, None]
    data = dnarch.from_arrays(x, y, x, y, name="toy")
    args = argparse.Namespace(device="cpu", progress=False, train_changes={})
    net = NetConfig(blocks=2, width=4, hidden=4, kernel_hidden=4)
    learned = compare.run_dnarch(data, net, 0.5, 2, args, seed=0)
    scratch = compare.run_scratch(data, learned["architecture"], 2, args, seed=0)
    assert (scratch["macs"], scratch["params"]) == (learned["macs"], learned["params"])
    assert 0.0 <= scratch["score"] <= 1.0 and scratch["cpu_seconds"] > 0


def test_a_table_names_the_commits_of_its_runs(tmp_path: Path) -> None:
    a = saved(tmp_path / "a.json", ["cmd-A"], [run_row("dnarch", 0.9, commit="abc1234")])
    b = saved(tmp_path / "b.json", ["cmd-B"], [run_row("prune", 0.94, commit="def5678+dirty")])
    c = saved(tmp_path / "c.json", ["cmd-C"], [run_row("frozen", 0.8)])  # saved before commits
    raw, md = table(tmp_path, ["dnarch", "prune", "frozen"], [a, b, c])
    assert raw["meta"]["commits"] == ["abc1234", "def5678+dirty"]
    assert "runs made at commit abc1234, def5678+dirty." in md


def test_the_commit_of_this_checkout() -> None:
    from dnarch.provenance import git_commit

    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert git_commit().split("+")[0] == (head or "unknown")


def test_a_table_only_rewrite_must_give_the_runs_sample_counts(tmp_path: Path) -> None:
    """A rewrite without the runs' --limit-train once titled 1,000-sample runs "60,000 training"."""
    path = tmp_path / "a.json"
    saved(path, ["cmd-A"], [run_row("dnarch", 0.9)])
    part = json.loads(path.read_text())
    part["meta"].update(n_train={"mnist1d": 1000}, n_test={"mnist1d": 500})
    path.write_text(json.dumps(part))
    argv = ["--datasets", "mnist1d", "--threads", "1", "--table-only", "--merge", str(path)]
    argv += ["--out", str(tmp_path / "out"), "--name", "t"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), *argv],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode != 0 and not (tmp_path / "out" / "t.md").exists()
    assert "1,000 training / 500 test samples, the flags give 4,000 / 1,000" in done.stderr
    argv += ["--limit-train", "1000", "--limit-test", "500"]
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), *argv],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    assert (
        "**mnist1d**: 1,000 training / 500 test samples" in (tmp_path / "out" / "t.md").read_text()
    )
