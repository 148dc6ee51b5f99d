"""Gradients reach every parameter; the cost estimate matches a real FLOP counter on the exported
network; the exported plain network equals the masked one."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dnarch.config import NetConfig
from dnarch.cost import budget_penalty, model_cost
from dnarch.export import ArchSpec, build_static, export_state, harden, load_static, save_static
from dnarch.export.static import ExportError
from dnarch.models import build_model
from tests.conftest import shrunk_model


@pytest.mark.parametrize("shape", [(40,), (10, 12)])
def test_every_parameter_gets_a_finite_gradient(shape) -> None:
    torch.manual_seed(0)
    m = build_model(NetConfig(width=8, hidden=8, blocks=3, kernel_hidden=8), 2, 4, shape)
    x, y = torch.randn(6, 2, *shape), torch.randint(0, 4, (6,))
    loss = torch.nn.functional.cross_entropy(m(x), y)
    cost = model_cost(m, "straight_through").macs
    (loss + budget_penalty(cost, 0.5 * float(cost.detach()), 1.0)).backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    bad = [n for n, p in m.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    assert not bad, bad
    for p in m.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0  # each mask parameter is really moved


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_the_fixed_biases_are_exactly_those_a_batchnorm_cancels(task: str) -> None:
    """The block output biases, and the stem's unless the dense head adds the stem output, are fixed
    at zero: in float64, with them trainable, their gradient is zero to rounding, and every other
    parameter's is not."""
    torch.manual_seed(0)
    m = build_model(NetConfig(width=8, hidden=8, blocks=3, kernel_hidden=8, dropout=0.0), 2, 4,
                    (12,), task).double()  # fmt: skip
    fixed = {n for n, p in m.named_parameters() if not p.requires_grad}
    expected = {f"blocks.{i}.pw2.bias" for i in range(3)} | (
        {"stem.bias"} if task == "classify" else set()
    )
    assert fixed == expected
    assert all(float(p.abs().max()) == 0 for n, p in m.named_parameters() if n in fixed)
    for p in m.parameters():
        p.requires_grad_(True)
    out = m(torch.randn(6, 2, 12, dtype=torch.float64))
    (out * torch.randn_like(out)).sum().backward()
    for n, p in m.named_parameters():
        assert p.grad is not None
        if n in fixed:
            assert float(p.grad.abs().max()) < 1e-10, n
        elif n.endswith("bias") and "kernel_net" not in n:
            assert float(p.grad.abs().max()) > 1e-6, n


def test_arch_parameters_found_by_structure() -> None:
    m = build_model(NetConfig(blocks=3), 1, 10, (40,))
    arch = m.arch_parameters()
    # residual width + depth + per block (kernel sigma, hidden width) + a resolution cut-off for
    # every block but the first, which sees the full-resolution input (net.resolution_from=1)
    assert len(arch) == 2 + 3 * 2 + 2
    every = build_model(NetConfig(blocks=3, resolution_from=0), 1, 10, (40,))
    assert len(every.arch_parameters()) == 2 + 3 * 3
    ids = {id(p) for p in arch}
    assert not ids & {id(p) for p in m.weight_parameters()}
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert len(ids) + len(m.weight_parameters()) == len(trainable)
    frozen = build_model(
        NetConfig(learn_kernel=False, learn_width=False, learn_resolution=False, learn_depth=False),
        1, 10, (40,),
    )  # fmt: skip
    assert frozen.arch_parameters() == []


def _counted(static: torch.nn.Module, spec: ArchSpec) -> float:
    with FlopCounterMode(display=False) as counter:
        static(torch.randn(1, spec.in_channels, *spec.input_shape))
    return counter.get_total_flops() / 2  # FLOPs -> MACs


@pytest.mark.parametrize("shape", [(40,), (33,), (12, 9), (10, 10)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cost_estimate_matches_flop_counter_and_params_exactly(shape, seed) -> None:
    m = shrunk_model(shape, seed)
    spec = harden(m)
    static = build_static(spec, export_state(m, spec))
    hard = model_cost(m, "hard")
    macs = _counted(static, spec)
    assert float(hard.macs) == macs  # the issue asks for 10%; the estimate is exact
    assert int(hard.params) == sum(p.numel() for p in static.parameters())


def test_max_cost_equals_counter_on_the_maximal_network() -> None:
    m = build_model(NetConfig(width=8, hidden=16, blocks=2), 1, 10, (40,)).eval()
    spec = harden(m)
    static = build_static(spec, export_state(m, spec))
    assert float(model_cost(m, "max").macs) == pytest.approx(_counted(static, spec), rel=1e-9)
    # hand check of the formula for the maximal network: stem, 2 x (dw 39 taps + 2 pointwise), head
    assert float(model_cost(m, "max").macs) == 40 * 8 + 2 * (40 * 8 * 39 + 2 * 40 * 8 * 16) + 8 * 10


def test_straight_through_cost_has_hard_value_and_pushes_every_mask_the_right_way() -> None:
    m = shrunk_model((40,), 3)
    hard = model_cost(m, "hard")
    st = model_cost(m, "straight_through")
    assert float(st.macs.detach()) == pytest.approx(float(hard.macs))
    assert float(st.params.detach()) == pytest.approx(float(hard.params))
    st.macs.backward()
    for p in m.arch_parameters():  # a larger mask parameter never makes the network cheaper
        assert p.grad is not None and (p.grad >= 0).all()
    assert sum(float(p.grad.sum()) for p in m.arch_parameters()) > 0


@pytest.mark.parametrize("shape", [(40,), (33,), (12, 9), (9, 10)])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_static_equals_masked(shape, seed) -> None:
    m = shrunk_model(shape, seed)
    spec = harden(m)
    static = build_static(spec, export_state(m, spec))
    x = torch.randn(5, 2, *shape)
    with torch.no_grad():
        a, b = m(x), static(x)
    assert ((a - b).abs().max() / a.abs().max()) < 1e-4


def test_save_load_roundtrip_and_bad_files(tmp_path) -> None:
    m = shrunk_model((40,), 0)
    spec = harden(m)
    assert ArchSpec.from_json(spec.to_json()) == spec
    save_static(tmp_path, spec, export_state(m, spec))
    loaded = load_static(tmp_path)
    x = torch.randn(3, 2, 40)
    with torch.no_grad():
        assert torch.allclose(loaded(x), m(x), rtol=1e-4, atol=1e-6)
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError):
        load_static(tmp_path)
    with pytest.raises(ExportError):
        load_static(tmp_path / "missing")


@pytest.mark.parametrize(
    ("shape", "task"), [((24,), "classify"), ((10, 10), "classify"), ((10, 10), "segment")]
)
def test_a_freshly_built_static_net_resamples_as_the_exported_one(shape, task) -> None:
    """StaticNet(spec) alone (an architecture trained from scratch) builds the same fixed
    resampling matrices that export_state computes: band-limited, not the identity's first rows."""
    from dnarch.export.static import StaticNet

    resampled = 0
    for seed in range(4):
        m = shrunk_model(shape, seed, task=task)
        spec = harden(m)
        fresh, exported = StaticNet(spec).state_dict(), export_state(m, spec)
        for name, value in exported.items():
            if "matrix" in name:
                resampled += value.shape[0] != value.shape[1]
                assert torch.allclose(fresh[name], value, atol=1e-6), name
    assert resampled > 0  # the shrunk models downsample somewhere


def _composed_straight_through(m, metric: str) -> tuple[float, list]:
    """The straight-through cost as first defined: the cost formula on sizes that take the hard
    value with the soft gradient (``straight_through``); its value and every arch gradient."""
    from dnarch.cost.estimate import estimate_cost, straight_through

    plan = m.hard_plan()
    sizes = straight_through(m.arch_sizes(False, plan), m.arch_sizes(True, plan))
    args = (m.in_channels, m.num_classes, m.input_shape, m.dense, m.stem_kernel**m.ndim)
    cost = estimate_cost(sizes, *args).get(metric)
    params = m.arch_parameters()
    grads = torch.autograd.grad(cost, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    return float(cost.detach()), grads


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((40,), {}),
        ((12, 9), {"task": "segment"}),
        ((40,), {"widen": 2.0, "stage_blocks": 2, "stage_widths": True}),
        ((40,), {"axes": ("kernel", "width", "depth", "groups")}),
        ((40,), {"downsample": "strided", "stem_kernel": 3, "direct_kernel": 3}),
        (
            (40,),
            {"downsample": "strided-mix", "widen": 2.0, "stage_blocks": 2, "stage_widths": True},
        ),
    ],
)
@pytest.mark.parametrize("metric", ["macs", "params"])
def test_linearised_straight_through_cost_equals_the_composed_one(shape, kwargs, metric) -> None:
    """The cost the trainer differentiates (the hard cost plus its slopes, kept per plan) has the
    value and the gradient of the cost formula run on straight-through sizes, step after step as
    the masks move and the plan changes; with the architecture frozen it is the hard cost."""
    m = shrunk_model(shape, 1, **kwargs)
    plans = set()
    for step in range(4):
        value, expected = _composed_straight_through(m, metric)
        st = model_cost(m, "straight_through").get(metric)
        hard = float(model_cost(m, "hard").get(metric))
        assert float(st.detach()) == pytest.approx(hard, rel=1e-6)
        assert float(st.detach()) == pytest.approx(value, rel=1e-6)
        got = torch.autograd.grad(st, m.arch_parameters(), allow_unused=True)
        for g, e in zip(got, expected, strict=True):
            g = torch.zeros_like(e) if g is None else g
            assert torch.allclose(g, e, rtol=1e-4, atol=1e-6 * float(e.abs().max() + 1))
        plans.add(tuple(m.hard_plan()))
        with torch.no_grad():  # move every mask: the plan changes, the kept slopes must follow
            for p in m.arch_parameters():
                p.sub_(0.07 * (step + 1) * torch.sign(p))
            m.project_arch_()
    assert len(plans) > 1
    for p in m.arch_parameters():
        p.requires_grad_(False)
    frozen = model_cost(m, "straight_through").get(metric)
    assert not frozen.requires_grad
    assert float(frozen) == pytest.approx(float(model_cost(m, "hard").get(metric)), rel=1e-6)


def test_linearised_cost_in_double_precision_and_under_autocast() -> None:
    """A float64 model gets a float64 cost with the composed form's gradient; under CPU autocast
    (``train.precision=bf16``) the cost stays float32, exact to the MAC."""
    m = shrunk_model((40,), 2).double()
    st = model_cost(m, "straight_through").macs
    assert st.dtype == torch.float64
    value, expected = _composed_straight_through(m, "macs")
    assert float(st.detach()) == pytest.approx(value, rel=1e-9)
    got = torch.autograd.grad(st, m.arch_parameters(), allow_unused=True)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(torch.zeros_like(e) if g is None else g, e, rtol=1e-6, atol=1e-9)
    m = shrunk_model((40,), 2)
    with torch.autocast("cpu", torch.bfloat16):
        st = model_cost(m, "straight_through").macs
    assert st.dtype == torch.float32
    assert float(st.detach()) == float(model_cost(m, "hard").macs)


def test_linearised_cost_first_asked_in_inference_mode() -> None:
    """The kept slopes can be made under ``torch.inference_mode`` and serve a later training step."""
    m = shrunk_model((40,), 3)
    with torch.inference_mode():
        st = model_cost(m, "straight_through").macs
    assert float(st) == float(model_cost(m, "hard").macs)
    st = model_cost(m, "straight_through").macs
    st.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.arch_parameters())


def test_a_block_reads_its_output_bias_when_it_is_not_zero() -> None:
    """The block leaves pw2's bias out while it is fixed at zero (``output_bias_is_zero``); set to
    another value, even without a gradient, it counts again (the check follows every change)."""
    torch.manual_seed(0)
    m = build_model(NetConfig(width=8, hidden=12, blocks=2, dropout=0.0), 1, 3, (20,)).eval()
    block = m.block_list()[0]
    assert not block.pw2.bias.requires_grad and block.output_bias_is_zero()
    x = torch.randn(4, 1, 20)
    before = m(x)
    with torch.no_grad():
        block.pw2.bias.fill_(0.5)
    assert not block.output_bias_is_zero()
    assert not torch.allclose(m(x), before)
    with torch.no_grad():
        block.pw2.bias.zero_()
    assert block.output_bias_is_zero() and torch.equal(m(x), before)
