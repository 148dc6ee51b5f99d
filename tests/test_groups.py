"""Learned grouping (issue 9): DGConv's Kronecker-factor relation, the grouped layer against a plain
grouped convolution for every reachable group count, the exported grouped network against the masked
one, the cost estimate against the FLOP counter, and gradients to every gate."""

from __future__ import annotations

import json
import math

import onnxruntime
import pytest
import torch
import torch.nn.functional as F

from dnarch.config import BudgetConfig, NetConfig, TrainConfig
from dnarch.cost import budget_penalty, floor_copy, model_cost
from dnarch.data import load_data
from dnarch.export import ArchSpec, build_static, export_state, harden
from dnarch.export.formats import to_onnx, to_pt2
from dnarch.export.summary import count
from dnarch.functional.groups import (
    bit_reversed_order,
    group_slots,
    grouped_pointwise,
    pack_grouped,
    relation,
)
from dnarch.models import build_model
from dnarch.models.dnarchnet import DNArchNet
from dnarch.nn.block import pointwise
from dnarch.nn.masks import GroupMask
from dnarch.train.objective import Objective
from dnarch.train.trainer import Trainer
from tests.conftest import shrunk_model

ALL_AXES = ("kernel", "width", "resolution", "depth", "groups")


def set_groups(mask: GroupMask, groups: int, seed: int = 0, binary: bool = False) -> None:
    """Put ``mask`` at ``groups`` groups, its open factors at random (often fractional) values, or
    with ``binary`` every factor exactly 0 or 1."""
    grid = torch.linspace(mask.mu_min, mask.mu_max, 2001)
    fits = []
    with torch.no_grad():
        for mu in grid:
            mask.mu.fill_(float(mu))
            if mask.hard_groups() == groups:
                fits.append(float(mu))
        assert fits, f"{groups} groups are not reachable"
        pick = torch.randint(len(fits), (), generator=torch.Generator().manual_seed(seed))
        mask.mu.fill_(fits[int(pick)])
        if binary:
            mask.snap_()
    assert mask.hard_groups() == groups


def test_relation_is_the_cropped_kronecker_product_of_dgconv_factors() -> None:
    g = torch.tensor([0.3, 0.0, 0.8])  # bit 0, 1, 2
    eye, ones = torch.eye(2), torch.ones(2, 2)
    factor = [v * ones + (1 - v) * eye for v in g]
    kron = torch.kron(torch.kron(factor[2], factor[1]), factor[0])  # highest bit outermost
    torch.testing.assert_close(relation(8, 8, g), kron)
    torch.testing.assert_close(relation(5, 7, g), kron[:5, :7])  # cropping a layer crops U
    # indices beyond 2**bits differ only in bits without a factor: the pattern repeats
    torch.testing.assert_close(relation(16, 8, g), torch.cat([kron, kron]))


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_hard_gates_give_strided_groups(bits: int) -> None:
    for k in range(bits + 1):  # the lowest k factors closed: 2**k groups, i in group i mod 2**k
        g = torch.tensor([0.0] * k + [1.0] * (bits - k))
        o, i = torch.arange(11)[:, None], torch.arange(9)[None, :]
        want = (o % 2**k == i % 2**k).float()
        torch.testing.assert_close(relation(11, 9, g), want)


def test_bit_reversed_order_makes_every_residue_class_contiguous() -> None:
    for n in (8, 12, 13, 32):
        order = bit_reversed_order(n, 3)
        assert sorted(order) == list(range(n))
        for groups in (1, 2, 4, 8):
            classes = [ch % groups for ch in order]
            runs = [c for j, c in enumerate(classes) if j == 0 or c != classes[j - 1]]
            assert len(runs) == len(set(classes))  # each class is one contiguous run
            if n % groups == 0:  # no padding: the slots are the stream itself
                assert group_slots(order, groups) == list(range(n))


@pytest.mark.parametrize("rows, cols", [(10, 12), (16, 8), (7, 5), (24, 24)])
@pytest.mark.parametrize("binary", [True, False])
def test_grouped_layer_equals_a_plain_grouped_convolution_for_every_group_count(
    rows: int, cols: int, binary: bool
) -> None:
    """With its gates hard (the closed factors exactly 0), the masked layer is a grouped 1x1
    convolution of its own weights: ``groups`` groups of strided channels, each padded to the
    largest. Open factors at fractional values (``binary=False``) only scale weights inside a group."""
    torch.manual_seed(rows * cols)
    bits = 3
    lin = torch.nn.Linear(cols, rows)
    x = torch.randn(4, cols, 6)
    for groups in (1, 2, 4, 8):
        mask = GroupMask(bits, 1.5, 0.1)
        set_groups(mask, groups, seed=groups, binary=binary)
        with torch.no_grad():
            y = pointwise(x, lin, rows, cols, mask)  # (4, rows, 6)
            dense = lin.weight * relation(rows, cols, mask.factors())
            row_slots = group_slots(list(range(rows)), groups)
            col_slots = group_slots(list(range(cols)), groups)
            w = pack_grouped(dense, row_slots, col_slots, groups)
            xin = torch.cat([x, torch.zeros_like(x[:, :1])], 1)[:, torch.tensor(col_slots)]
            bias = torch.cat([lin.bias, torch.zeros(1)])[torch.tensor(row_slots)]
            out = F.conv1d(xin, w[..., None], bias, groups=groups)
            back = out[:, [row_slots.index(r) for r in range(rows)]]
        torch.testing.assert_close(back, y, rtol=1e-5, atol=1e-6)
        if binary:  # the packed weight holds the layer's own weights, nothing folded
            for s in range(groups):
                nr, nc = len(row_slots) // groups, len(col_slots) // groups
                rs, cs = row_slots[s * nr : (s + 1) * nr], col_slots[s * nc : (s + 1) * nc]
                for a, r in enumerate(rs):
                    for b, c in enumerate(cs):
                        want = lin.weight[r, c].detach() if r >= 0 and c >= 0 else 0.0
                        assert float(w[s * nr + a, b]) == float(want)


def _grouped_model(shape: tuple[int, ...], seed: int, task: str = "classify") -> DNArchNet:
    return shrunk_model(shape, seed, axes=ALL_AXES, task=task)


@pytest.mark.parametrize("shape", [(40,), (12, 9)])
@pytest.mark.parametrize("g1, g2", [(1, 1), (2, 8), (4, 4), (8, 1), (8, 8)])
def test_exported_grouped_network_equals_the_masked_one_and_the_counter(
    shape: tuple[int, ...], g1: int, g2: int
) -> None:
    m = _grouped_model(shape, g1 + 3 * g2)
    for i, b in enumerate(m.block_list()):
        assert b.pw1_groups is not None and b.pw2_groups is not None
        set_groups(b.pw1_groups, g1, seed=i)
        set_groups(b.pw2_groups, g2, seed=i + 7)
    spec = harden(m)
    assert all(b.groups == (g1, g2) for b in spec.blocks)
    static = build_static(spec, export_state(m, spec))
    grouped = [blk.pw1.groups for blk in static.blocks] + [blk.pw2.groups for blk in static.blocks]
    assert set(grouped) == {g1, g2} or not static.blocks
    x = torch.randn(5, 2, *shape)
    with torch.no_grad():
        a, b = m(x), static(x)
        assert (m(x, crop=False) - a).abs().max() <= 1e-5 * a.abs().max()
    assert ((a - b).abs().max() / a.abs().max()) < 1e-4
    macs, params = count(static)
    hard = model_cost(m, "hard")
    assert float(hard.macs) == macs
    assert int(hard.params) == params


@pytest.mark.parametrize("shape", [(40,), (33,), (12, 9)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", ["classify", "segment"])
def test_random_grouped_architectures_export_exactly(
    shape: tuple[int, ...], seed: int, task: str
) -> None:
    m = _grouped_model(shape, seed, task)
    spec = harden(m)
    static = build_static(spec, export_state(m, spec))
    x = torch.randn(3, 2, *shape)
    with torch.no_grad():
        a, b = m(x), static(x)
    assert ((a - b).abs().max() / a.abs().max()) < 1e-4
    hard = model_cost(m, "hard")
    assert (float(hard.macs), int(hard.params)) == count(static)


def test_grouping_lowers_macs_and_parameters_as_the_groups_grow() -> None:
    m = build_model(NetConfig(width=16, hidden=32, blocks=2, learn_groups=True), 1, 4, (20,))
    costs = []
    for groups in (1, 2, 4, 8, 16):
        for b in m.block_list():
            for gm in b.group_masks():
                set_groups(gm, groups, binary=True)
        costs.append(model_cost(m, "hard"))
    macs = [float(c.macs) for c in costs]
    params = [float(c.params) for c in costs]
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == 5
    assert params == sorted(params, reverse=True) and len(set(params)) == 5
    # two 16 -> 32 pointwise layers per block at 20 positions: 2 * 20 * 16 * 32 / G MACs
    assert macs[0] - macs[3] == pytest.approx(2 * 2 * 20 * 16 * 32 * (1 - 1 / 8))


def test_gradients_reach_every_gate() -> None:
    """The task loss reaches every Kronecker factor of every layer (at the dense start), and the task
    loss plus the budget penalty reach every group mask's parameter, closed factors included."""
    torch.manual_seed(0)
    m = build_model(NetConfig(width=8, hidden=8, blocks=2, kernel_hidden=8, learn_groups=True),
                    2, 4, (16,))  # fmt: skip
    x, y = torch.randn(6, 2, 16), torch.randint(0, 4, (6,))
    leaves = []
    for b in m.block_list():
        for gm in b.group_masks():
            leaf = gm.factors().detach().clone().requires_grad_(True)
            gm.factors = lambda leaf=leaf: leaf  # type: ignore[method-assign]
            leaves.append(leaf)
    F.cross_entropy(m(x), y).backward()
    assert len(leaves) == 4 and all(leaf.numel() == 3 for leaf in leaves)
    for leaf in leaves:
        assert leaf.grad is not None and bool((leaf.grad != 0).all())
    # now partly grouped: closed factors get no task gradient, but the cost still moves them
    fresh = build_model(NetConfig(width=8, hidden=8, blocks=2, kernel_hidden=8, learn_groups=True),
                        2, 4, (16,))  # fmt: skip
    for b in fresh.block_list():
        for gm in b.group_masks():
            set_groups(gm, 2)
    loss = F.cross_entropy(fresh(x), y)
    cost = model_cost(fresh, "straight_through").macs
    (loss + budget_penalty(cost, 0.3 * float(cost.detach()), 1.0)).backward()
    for b in fresh.block_list():
        for gm in b.group_masks():
            assert gm.mu.grad is not None and float(gm.mu.grad) != 0


def test_straight_through_cost_pushes_every_group_mask_towards_more_groups() -> None:
    """Where no group is padded, more groups always cost less. (With padding they need not: 8
    groups of a 4-channel hidden layer pad it to 8 channels, which its dense neighbour then reads.)"""
    m = build_model(NetConfig(width=16, hidden=32, blocks=3, learn_groups=True), 1, 4, (20,))
    for i, b in enumerate(m.block_list()):
        for j, gm in enumerate(b.group_masks()):
            set_groups(gm, [1, 2, 4, 8][(i + j) % 4], seed=i)
    st = model_cost(m, "straight_through")
    assert float(st.macs.detach()) == float(model_cost(m, "hard").macs)
    st.macs.backward()
    for b in m.block_list():
        for gm in b.group_masks():  # a larger mu opens factors: fewer groups, more MACs
            assert gm.mu.grad is not None and float(gm.mu.grad) > 0


def test_group_masks_are_architecture_parameters_and_gates() -> None:
    m = build_model(NetConfig(blocks=3, learn_groups=True), 1, 10, (40,))
    group_mus = {id(gm.mu) for b in m.block_list() for gm in b.group_masks()}
    assert len(group_mus) == 6
    assert group_mus <= {id(p) for p in m.arch_parameters()}
    assert not group_mus & {id(p) for p in m.weight_parameters()}
    assert sum(isinstance(g, GroupMask) for g in m.gates()) == 6
    assert all(gm.n == 5 for b in m.block_list() for gm in b.group_masks())  # width 32: 5 factors
    floor = floor_copy(m)
    cheapest = float(model_cost(floor, "hard").macs)
    for groups in (1, 32):  # the floor picks the cheaper grouping at the floor widths
        other = floor_copy(m)
        for b in other.block_list():
            for gm in b.group_masks():
                set_groups(gm, groups)
        assert cheapest <= float(model_cost(other, "hard").macs)
    off = build_model(NetConfig(blocks=3), 1, 10, (40,))
    assert all(not b.group_masks() for b in off.block_list())  # off by default: no gates at all


def test_snapping_makes_group_gates_binary_and_keeps_the_network() -> None:
    m = _grouped_model((40,), 5)
    before = harden(m)
    m.snap_gates_()
    after = harden(m)
    assert [b.groups for b in after.blocks] == [b.groups for b in before.blocks]
    for b in m.block_list():
        for gm in b.group_masks():
            f = gm.factors()
            assert bool(((f == 0) | (f == 1)).all())


def test_an_architecture_file_from_before_grouping_loads_ungrouped() -> None:
    spec = harden(shrunk_model((40,), 0))
    d = json.loads(spec.to_json())
    d.pop("group_bits")
    for b in d["blocks"]:
        b.pop("groups")
    old = ArchSpec.from_json(json.dumps(d))
    assert old == spec and all(b.groups == (1, 1) for b in old.blocks)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_padded_groups_export_to_onnx_and_pt2(tmp_path) -> None:
    m = _grouped_model((40,), 1)
    for b in m.block_list():
        assert b.pw1_groups is not None and b.pw2_groups is not None
        set_groups(b.pw1_groups, 8)  # 8 groups of a stream that is not a multiple of 8
        set_groups(b.pw2_groups, 4)
    spec = harden(m)
    assert spec.residual_width % 8 != 0
    static = build_static(spec, export_state(m, spec))
    assert any(blk.in_index is not None for blk in static.blocks)  # the padded gathers are there
    x = torch.randn(3, 2, 40)
    with torch.no_grad():
        want = m(x)
    program = torch.export.load(to_pt2(static, tmp_path / "m.pt2"))
    assert (program.module()(x) - want).abs().max() / want.abs().max() < 1e-4
    session = onnxruntime.InferenceSession(
        str(to_onnx(static, tmp_path / "m.onnx")), providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - want.numpy()).max() / abs(want.numpy()).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("budget", [0.25, 0.1])
def test_a_grouped_run_meets_its_budget_and_exports_exactly(budget: float) -> None:
    data = load_data("mnist1d").limited(128, 64)
    cfg = NetConfig(width=8, hidden=16, blocks=3, backend="direct", learn_groups=True)
    m = build_model(cfg, 1, 10, (40,))
    objective = Objective(m, BudgetConfig(budget=budget))
    train = TrainConfig(epochs=4, batch_size=32, warmup_epochs=0)
    Trainer(m, objective, data, train, progress=False).fit()
    assert objective.budget is not None
    assert float(model_cost(m, "hard").macs) <= objective.budget
    spec = harden(m)
    static = build_static(spec, export_state(m, spec))
    x = data.x_test[:16]
    m.eval()
    with torch.no_grad():
        a, b = m(x), static(x)
    assert ((a - b).abs().max() / a.abs().max()) < 1e-4
    assert math.isclose(count(static)[0], float(model_cost(m, "hard").macs))


@pytest.mark.parametrize("shape", [(40,), (9, 12)])
def test_grouped_training_path_equals_the_dense_masked_product(shape: tuple[int, ...]) -> None:
    """Cropped training may run a grouped layer grouped (where measured faster): values and every
    gradient equal the dense masked product's."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 10)
    x = torch.randn(3, 12, *shape, requires_grad=True)
    for groups in (2, 4, 8):
        mask = GroupMask(3, 1.5, 0.1)
        set_groups(mask, groups, seed=groups)
        outs = []
        for run in ("dense", "grouped"):
            for t in (x, lin.weight, lin.bias, mask.mu):
                t.grad = None
            w = lin.weight[:10, :12] * relation(10, 12, mask.factors())
            y = (
                pointwise(x, lin, 10, 12, mask)
                if run == "dense"
                else grouped_pointwise(x, w, lin.bias, groups)
            )
            (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
            grads = [t.grad.clone() for t in (x, lin.weight, lin.bias, mask.mu)]  # type: ignore[union-attr]
            outs.append((y.detach(), grads))
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
        for a, b in zip(outs[0][1], outs[1][1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("verdict", ["grouped", "dense"])
def test_a_grouped_model_crops_to_the_reference_whichever_way_it_mixes(
    monkeypatch, verdict
) -> None:
    import dnarch.nn.block as block

    monkeypatch.setattr(block, "choose_mixing", lambda *a: verdict)
    m = _grouped_model((12, 9), 3)
    x = torch.randn(4, 2, 12, 9)
    grads = []
    for crop in (True, False):
        m.zero_grad()
        out = m(x, crop=crop)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() <= grads[1].keys()  # the reference also runs the removed blocks
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_mixing_verdict_is_kept_with_the_conv_verdicts() -> None:
    from dnarch.functional import conv as fconv
    from dnarch.functional.groups import choose_mixing

    v = fconv.Verdicts()  # this test's verdicts only
    x, w = torch.randn(8, 12, 30), torch.randn(10, 12)
    verdict = choose_mixing(x, w, 4, v)
    assert verdict in ("grouped", "dense")
    saved = [c for c in v.state() if c[3][:2] == ["groups", 4]]
    assert len(saved) == 1 and saved[0][2] == [30] and saved[0][-1] == verdict
    assert choose_mixing(x, w[:9], 4, v) == verdict  # a width within the same quarter octave: kept
    assert len(v.state()) == 1
    v.load([[*saved[0][:4], "dense" if verdict == "grouped" else "grouped"]])
    assert choose_mixing(x, w, 4, v) != verdict  # a restored verdict wins over a new measurement
    torch.use_deterministic_algorithms(True)
    try:
        assert choose_mixing(x, w, 8, v) == "dense"  # deterministic runs never time
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_grouped_cli_run_reports_its_groups(tmp_path, capsys) -> None:
    from dnarch.cli import main

    flags = ["--epochs", "2", "--net.blocks=2", "--net.width=8", "--net.hidden=8",
             "--net.kernel_hidden=4", "--data.limit_train=64", "--data.limit_test=32",
             "--net.learn_groups=true", "--budget", "0.3", "--preset", "seq"]  # fmt: skip
    assert main(["train", *flags, "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("learned architecture"))
    assert "groups" in lines[title + 1].split()  # the architecture table's header
    spec = ArchSpec.from_json((tmp_path / "run" / "architecture.json").read_text())
    assert spec.group_bits == 3
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "groups (pw1/pw2)" in page
    cells = [f"<td>{b.groups[0]}/{b.groups[1]}</td>" for b in spec.kept_blocks]
    assert all(c in page for c in cells)
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "b0_groups" in header and "soft_block0_groups_pw1" in header
