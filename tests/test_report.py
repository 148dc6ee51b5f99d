"""The run report: written by every CLI run, every figure present, tables filled; and, where Chromium
is installed, every image really loads in a browser."""

import shutil
import subprocess

import pytest

from dnarch.cli import main
from dnarch.report import FIGURES, PER_POSITION, write_report

# a classification run has every figure but the per-position ones
SHOWN = {k: v for k, v in FIGURES.items() if k not in PER_POSITION}

FLAGS = ["--epochs", "2", "--net.blocks=2", "--net.width=4", "--net.hidden=4", "--net.kernel_hidden=4",
         "--data.limit_train=64", "--data.limit_test=32", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module", params=["mnist1d", "digits"], ids=["1d", "2d"])
def run_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "run"
    assert main(["train", "--data", request.param, *FLAGS, "--out", str(folder)]) == 0
    return folder


@pytest.mark.slow
def test_train_writes_the_report_with_every_figure(run_dir) -> None:
    page = (run_dir / "report" / "index.html").read_text()
    for name, title in SHOWN.items():
        assert (run_dir / "report" / f"{name}.png").stat().st_size > 5000, name
        assert title in page and f'alt="{name}"' in page
    assert page.count("data:image/png;base64,") == len(SHOWN)
    assert all(FIGURES[name] not in page for name in PER_POSITION)
    assert "<td>kept</td>" in page and "MACs per sample" in page


def test_report_command_rewrites_it_and_rejects_non_runs(run_dir, tmp_path, capsys) -> None:
    (run_dir / "report" / "index.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert str(run_dir / "report" / "index.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is it a finished dnarch run folder" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_every_image_loads_in_headless_chromium(run_dir) -> None:
    page = write_report(run_dir)
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert f'data-check="images={len(SHOWN)} loaded=true tables_filled=true"' in dom


def test_soft_sizes_are_drawn_clipped_at_the_maximal_network() -> None:
    from dnarch.report import plots

    rows = [
        {
            "epoch": str(e),
            "b0_kept": "1",
            "b0_kernel": "39",
            "b0_hidden": "64",
            "b0_res_out": "40",
            "soft_block0_kernel_axis0": str(45 + e),
            "soft_block0_hidden": "60",
            "soft_block0_resolution_axis0": "50",
            "soft_block0_depth": "1.0",
        }  # fmt: skip
        for e in range(1, 4)
    ]
    maximal = {"kernel": [39.0], "res_out": [40.0], "hidden": [64.0], "depth": [1.0]}
    fig = plots.architecture_over_training(rows, 1, maximal)
    for ax in fig.axes:
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        title = ax.get_title()
        if title.startswith("kernel"):
            assert max(ys) == 39.0  # the soft kernel (46-48 taps) drawn at the maximal 39
        if title.startswith("resolution"):
            assert max(ys) == 40.0
    assert fig.axes[0].title.get_fontsize() >= 10
