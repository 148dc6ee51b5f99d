"""The contract every network the CLI can build keeps, over the feature matrix: the cropped network
equals the masked one (1e-5), the exported network equals the cropped one (1e-4), the hard cost
equals the FLOP counter's MACs and the exported parameter count exactly, and the spec round-trips
through JSON (``conftest.check_crop_export_and_cost``).

Matrix: 1D / 2D x classify / segment (and regress, which shares the dense head) x the four pyramids (a learned Fourier resolution,
a fixed Fourier pyramid in stages of two blocks with the depth learned per stage, a strided one,
strided in stages) x widths that stretch where the resolution falls (widen 1 or 2; and 2 with
net.widen_power=1 on the learned and strided pyramids), with the
directly learned kernel term and the k-tap stem alternating across cases; and, where the config
allows them (widen 1), learned grouping and annealed gates (mid-anneal, and snapped binary); and
a residual width per stage (widen 2, and widen 1 with annealed gates), each stage's at its own
cut-off, so the stream narrows and widens between stages. And the strided pyramids whose halvings
also mix channels (net.downsample=strided-mix, alone and in stages): widen 2, grouping, and a
residual width per stage (with and without annealed gates).
Feature-specific behaviour lives in each feature's own test file.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.conftest import check_crop_export_and_cost, shrunk_model

SHAPES = [(40,), (12, 9)]
TASKS = ["classify", "segment"]  # regression shares the dense head: a few cases below
PYRAMIDS = {  # name -> (downsample, stage_blocks)
    "learned": ("fourier", 1),
    "fourier-stages": ("fourier", 2),
    "strided": ("strided", 1),
    "strided-stages": ("strided", 2),
    "strided-mix": ("strided-mix", 1),
    "strided-mix-stages": ("strided-mix", 2),
}

CASES = [  # the case's index seeds its masks and picks its direct kernel and stem
    pytest.param(
        case,
        shape,
        task,
        pyramid,
        widen,
        extra,
        id=f"{len(shape)}d-{task}-{pyramid}-w{widen}-{extra}",
    )  # fmt: skip
    for case, (shape, task, pyramid, (widen, extra)) in enumerate(
        [
            *itertools.product(
                SHAPES,
                TASKS,
                list(PYRAMIDS)[:4],
                [
                    (1.0, "plain"),
                    (2.0, "plain"),
                    (1.0, "groups"),
                    (1.0, "gates"),
                    (2.0, "stage-widths"),
                    (1.0, "stage-widths-gates"),
                ],  # fmt: skip
            ),
            *itertools.product(SHAPES, ["regress"], ["learned", "strided"], [(2.0, "plain")]),
            # widths that double where a sequence halves (net.widen_power=1)
            *itertools.product(SHAPES, TASKS, ["learned", "strided"], [(2.0, "power1")]),
            # halvings that also mix channels by a full strided convolution (strided-mix)
            *itertools.product(
                SHAPES,
                TASKS,
                ["strided-mix", "strided-mix-stages"],
                [
                    (2.0, "plain"),
                    (1.0, "groups"),
                    (2.0, "stage-widths"),
                    (1.0, "stage-widths-gates"),
                ],
            ),
        ]
    )
]


@pytest.fixture(autouse=True)
def _untimed_backends():
    """Backends chosen by operation count, not timing: each case builds new networks, and timing
    every one's shapes would cost seconds a case (the FFT still runs where it does fewer
    operations)."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


@pytest.mark.parametrize(("case", "shape", "task", "pyramid", "widen", "extra"), CASES)
def test_every_buildable_network_keeps_the_contract(
    case, shape, task, pyramid, widen, extra
) -> None:
    downsample, stage_blocks = PYRAMIDS[pyramid]
    axes = ("kernel", "width", "resolution", "depth") + (("groups",) if extra == "groups" else ())
    m = shrunk_model(
        shape, seed=case, task=task, axes=axes, widen=widen, downsample=downsample,
        stage_blocks=stage_blocks, direct_kernel=3 * (case % 2), stem_kernel=1 + 2 * (case // 2 % 2),
        classes=1 if task == "regress" else 5, stage_widths=extra.startswith("stage-widths"),
        widen_power=1.0 if extra == "power1" else 0.5,
    )  # fmt: skip
    x = torch.randn(5, 2, *shape)
    if extra.endswith("gates"):
        m.anneal_gates_(0.6)  # partly sharpened
        check_crop_export_and_cost(m, x)
        m.snap_gates_()  # binary: the cropped network is unchanged
    check_crop_export_and_cost(m, x)
