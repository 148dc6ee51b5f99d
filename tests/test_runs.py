"""benchmarks/runs.py: the benchmarks' one run schema and writer. Runs saved before the schema read
back in it; a run without the schema's keys is refused before anything is written; compare's methods,
block families and U-Net variants all tabulate through the one writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import blocks, runs
from benchmarks.compare import METHODS

ROOT = Path(__file__).resolve().parents[1]


def run(method: str, score: float, seed: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": "mnist1d", "method": method, "budget": 0.25, "seed": seed, "epochs": 20,
        "task": "classify", "score": score, "score_name": "acc", "macs": 1000, "params": 10,
        "cpu_seconds": 2.0, "wall_seconds": 3.0, "train_macs": 1e9, **extra,
    }  # fmt: skip


META = {
    "command": "cmd",
    "machine": "x86_64",
    "threads": 1,
    "torch": "2",
    "n_train": {},
    "n_test": {},
}


def test_a_run_saved_before_the_schema_reads_back_in_it() -> None:
    old = {"dataset": "fashion-scenes", "method": "plain", "task": "segment", "accuracy": 0.4}
    new = runs.normalise(old)
    assert new["score"] == 0.4 and new["score_name"] == "miou" and "accuracy" not in new
    assert runs.normalise(run("dnarch", 0.9)) == run("dnarch", 0.9)  # in the schema: unchanged
    assert runs.normalise({"method": "x", "accuracy": 0.5})["task"] == "classify"


def test_a_run_lacking_the_schemas_keys_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    bad = run("dnarch", 0.9)
    del bad["macs"], bad["seed"]
    with pytest.raises(ValueError, match="lacks seed, macs"):
        runs.save_runs(path, META, [run("plain", 0.8), bad])
    assert not path.exists()
    runs.save_runs(path, META, [run("plain", 0.8)])
    assert json.loads(path.read_text())["runs"] == [run("plain", 0.8)]
    assert not path.with_suffix(".json.tmp").exists()


def test_one_writer_for_registered_methods_and_for_any_other_name(tmp_path: Path) -> None:
    rows = [
        run("plain", 0.80, 0), run("plain", 0.90, 1), run("dnarch", 0.70, 0),
        # a block family at an absolute budget, off it by more than 5%
        run("sep:3:2:1", 0.60, 0, budget=1200.0),
    ]  # fmt: skip
    runs.write_table(tmp_path / "t.md", rows, META, METHODS)
    md = (tmp_path / "t.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| 25% |")]
    # the registry's order and labels: DNArch before the plain CNN, whatever the rows' order
    assert lines[0].startswith("| 25% | DNArch (all axes) | 1 | 70.00 ± 0.00 |")
    assert lines[1].startswith("| 25% | plain 3x3 CNN | 2 | 85.00 ± 7.07 |")
    assert "| 1,200 MACs | sep:3:2:1 | 1 | 60.00 ± 0.00 |" in md
    assert "| 1,200 MACs |  |  | 60.00 (1,000 MACs) |" in md  # at a glance


def test_blocks_resumes_a_file_of_the_old_format_into_the_schema() -> None:
    old = [{"family": "plain", "data": "mnist1d", "seed": 0, "accuracy": 0.98, "macs": 290,
            "params": 30, "width": 12, "cpu_seconds": 1.0, "wall_seconds": 1.0, "epochs": 20}]  # fmt: skip
    (new,) = blocks.legacy_runs(old, 321.0, 4000)
    runs.check_run(new)
    assert (new["method"], new["dataset"], new["score"], new["budget"]) == (
        "plain",
        "mnist1d",
        0.98,
        321.0,
    )
    assert new["train_macs"] == 3 * 4000 * 20 * 290


@pytest.mark.parametrize("script", ["compare", "blocks", "probe_dense_family", "speed"])
def test_every_script_runs_as_a_file_and_as_a_module(script: str) -> None:
    """The recorded commands say ``python benchmarks/<script>.py``; ``-m benchmarks.<script>``
    works too."""
    for how in ([str(ROOT / "benchmarks" / f"{script}.py")], ["-m", f"benchmarks.{script}"]):
        done = subprocess.run(
            [sys.executable, *how, "--help"], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
