"""Config overrides and validation; trainer parameter groups and schedule."""

import pytest
import torch

from dnarch.config import (
    ConfigError,
    NetConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    to_dict,
    with_overrides,
)
from dnarch.models import build_model
from dnarch.train.runtime import finite_gradients, pick_device
from dnarch.train.schedule import freeze_epoch, param_groups, resolution_scale, warmup_cosine


def test_the_model_keeps_what_it_reads_of_its_settings_not_the_config() -> None:
    """The settings are read once, when the model is built: nothing in it holds the NetConfig, and
    what other code needs of them is a named attribute of the model."""
    cfg = NetConfig(width=16, hidden=24, blocks=3, widen=2.0, learn_depth=False)
    m = build_model(cfg, 1, 10, (40,))
    assert not any(isinstance(v, NetConfig) for mod in m.modules() for v in vars(mod).values())
    assert (m.width, m.hidden, m.widen, m.max_blocks) == (16, 24, 2.0, 3)
    assert m.learned_axes == {"kernel", "width", "resolution"} and not m.learn_groups
    assert build_model(NetConfig(learn_groups=True), 1, 10, (40,)).learn_groups
    assert not m.kernels_start_small
    assert build_model(NetConfig(init_kernel_cutoff=0.5), 1, 10, (40,)).kernels_start_small
    assert not build_model(
        NetConfig(kernel_ceiling=0.25, init_kernel_cutoff=0.25), 1, 10, (40,)
    ).kernels_start_small


def test_overrides_are_typed() -> None:
    cfg = with_overrides(
        RunConfig(),
        {
            "net.width": "16",
            "budget.budget": "none",
            "train.lr": "1e-3",
            "net.learn_depth": "false",
        },
    )
    assert cfg.net.width == 16 and cfg.budget.budget is None and cfg.train.lr == 1e-3
    assert cfg.net.learn_depth is False
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"net.widht": "3"}, "unknown config key 'net.widht'"),
        ({"nett.width": "3"}, "unknown config key 'nett.width'"),
        ({"net.width": "abc"}, "net.width expects int"),
        ({"net.width": "2.5"}, "net.width expects int"),
        ({"net.width": "0"}, "net.width must be >= 1"),
        ({"net": "3"}, "is a section"),
        ({"net.width.x": "3"}, "is not a section"),
        ({"budget.budget": "-0.5"}, "budget must be > 0"),
        ({"net.learn_depth": "maybe"}, "expects bool"),
        ({"net.threshold": "0.7"}, "net.threshold must lie in (0, 0.5)"),
        ({"net.kernel_ceiling": "0"}, "net.kernel_ceiling must lie in (0, 1]"),
        ({"train.device": "tpu"}, "train.device"),
        ({"train.device": "cuda:x"}, "train.device"),
        ({"budget.budget": "inf"}, "budget.budget must be finite"),
        ({"train.lr": "nan"}, "train.lr must be finite"),
    ],
)
def test_bad_overrides_are_one_clear_line(overrides, needle) -> None:
    with pytest.raises(ConfigError) as err:
        with_overrides(RunConfig(), overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_from_dict_rejects_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'net.bogus'"):
        from_dict(RunConfig, {"net": {"bogus": 1}})
    with pytest.raises(ConfigError, match="net.width expects int"):
        from_dict(RunConfig, {"net": {"width": "32"}})


def test_param_groups_by_structure() -> None:
    m = build_model(NetConfig(blocks=2), 1, 10, (40,))
    cfg = TrainConfig(lr=1e-3, arch_lr=5e-2, weight_decay=0.1, resolution_lr_scale=0.1)
    groups = {g["name"]: g for g in param_groups(m, cfg, resolution_scale(cfg, 62))}
    arch, res = groups["arch"], groups["resolution"]
    assert arch["params"] and arch["lr"] == 5e-2 and arch["weight_decay"] == 0.0
    assert res["params"] and res["lr"] == pytest.approx(5e-3) and res["weight_decay"] == 0.0
    # block 0 sees the full-resolution input (net.resolution_from=1); the others learn a cut-off
    assert m.blocks[0].resolution is None
    assert {id(p) for p in res["params"]} == {id(b.resolution.mask.mu) for b in m.blocks[1:]}
    both = {id(p) for p in arch["params"] + res["params"]}
    assert both == {id(p) for p in m.arch_parameters()}
    assert groups["weights"]["weight_decay"] == 0.1
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len([p for p in m.parameters() if p.requires_grad])


@pytest.mark.parametrize(
    ("epochs", "steps", "warmup", "freeze"), [(20, 62, 2, 0.2), (10, 15, 2, 0.2), (30, 9, 0, 0.0)]
)
def test_resolution_rate_gives_the_cutoffs_their_travel(
    epochs: int, steps: int, warmup: int, freeze: float
) -> None:
    """Summed over the architecture-learning steps of the real scheduler, the cut-offs' learning
    rate is ``resolution_travel``, whatever the run's length."""
    cfg = TrainConfig(
        epochs=epochs, warmup_epochs=warmup, freeze_arch_fraction=freeze, resolution_travel=0.9
    )
    m = build_model(NetConfig(blocks=2), 1, 10, (40,))
    opt = torch.optim.AdamW(param_groups(m, cfg, resolution_scale(cfg, steps)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(epochs * steps, warmup * steps))
    travel = 0.0
    for _ in range(freeze_epoch(cfg) * steps):
        travel += next(g["lr"] for g in opt.param_groups if g["name"] == "resolution")
        opt.step()
        sched.step()
    assert travel == pytest.approx(0.9)


def test_resolution_rate_defaults_and_overrides() -> None:
    cfg = TrainConfig(epochs=20)
    # MNIST-1D's 20-epoch run (4,000 samples, batch 64): the 0.1 that was measured there
    assert resolution_scale(cfg, 62) == pytest.approx(0.1, abs=1e-3)
    # 4x fewer steps per epoch: about 4x the rate (the warm-up is the same fraction of the run)
    assert resolution_scale(cfg, 15) == pytest.approx(4 * resolution_scale(cfg, 60), rel=0.01)
    assert resolution_scale(TrainConfig(epochs=1), 1) == 1.0  # capped at arch_lr
    assert resolution_scale(TrainConfig(resolution_lr_scale=0.3), 62) == 0.3  # an explicit scale
    assert resolution_scale(TrainConfig(arch_lr=0.0), 62) == 1.0  # nothing to scale


def test_warmup_then_cosine() -> None:
    f = warmup_cosine(total=100, warmup=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert (
        f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    )


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), float("-inf")])
def test_finite_gradients_finds_any_non_finite_entry_and_changes_nothing(bad) -> None:
    params = [torch.nn.Parameter(torch.randn(3, 4)) for _ in range(3)]
    params.append(torch.nn.Parameter(torch.randn(2)))  # no gradient: skipped
    for p in params[:3]:
        p.grad = torch.randn_like(p)
    if bad is not None:
        params[1].grad[2, 3] = bad
    before = [p.grad.clone() for p in params[:3]]
    assert finite_gradients(params) is (bad is None)
    for p, g in zip(params[:3], before, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0, equal_nan=True)
    assert finite_gradients([params[3]]) is True  # nothing to check


def test_device_choice() -> None:
    assert pick_device("cpu").type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - no GPU here
        assert pick_device("auto").type == "cuda"
    else:
        assert pick_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no such CUDA device"):
            pick_device("cuda:0")


def test_frozen_phase_keeps_the_architecture() -> None:
    from dnarch.config import BudgetConfig
    from dnarch.data import load_data
    from dnarch.train.objective import Objective
    from dnarch.train.trainer import Trainer

    data = load_data("mnist1d").limited(128, 64)
    m = build_model(NetConfig(width=8, hidden=8, blocks=2, backend="direct"), 1, 10, (40,))
    snapshots = []

    class Snap:
        def on_epoch_end(self, state) -> None:
            snapshots.append(
                [p.detach().clone() for p in m._axis_parameters(True, True, True, True, True)]
            )

    cfg = TrainConfig(epochs=4, batch_size=32, freeze_arch_fraction=0.5, warmup_epochs=0)
    Trainer(m, Objective(m, BudgetConfig(budget=0.3)), data, cfg, [Snap()], progress=False).fit()
    moved = [not torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[1], strict=True)]
    assert any(moved)  # learning epochs move the masks
    # epochs 3-4 are frozen (the budget fit may move the masks once, before epoch 3 trains)
    for a, b in zip(snapshots[2], snapshots[3], strict=True):
        assert torch.equal(a, b)
    assert m.arch_parameters()  # learnable again after training


def test_the_loop_raises_its_events_to_phases_and_knows_no_dnarch_phase_itself() -> None:
    """A fixed network trains with no phase; a given phase sees every event in order (epoch start,
    then per step start / before the optimiser / end), and with no ``ArchitecturePhases`` a DNArch
    model's masks do not freeze (they still learn in the "frozen" epoch 2)."""
    from dnarch.config import BudgetConfig
    from dnarch.data import load_data
    from dnarch.train.fixed import FixedNet, TaskObjective
    from dnarch.train.objective import Objective
    from dnarch.train.phases import ArchitecturePhases, Events
    from dnarch.train.trainer import Trainer

    data = load_data("mnist1d").limited(64, 32)
    cfg = TrainConfig(epochs=2, batch_size=32, freeze_arch_fraction=0.5, warmup_epochs=0)
    fixed = FixedNet(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 10)), "classify", 10
    )
    assert Trainer(fixed, TaskObjective(), data, cfg, progress=False).phases == []

    seen: list[str] = []

    class Recorder(Events):
        def on_epoch_start(self, trainer, epoch, resumed):  # type: ignore[no-untyped-def]
            seen.append(f"epoch{epoch}")
            return {}

        def on_step_start(self, trainer, epoch, progress):  # type: ignore[no-untyped-def]
            masks = [
                p
                for g in trainer.optimizer.param_groups
                if g["name"] == "arch"
                for p in g["params"]
            ]
            learning = all(p.requires_grad for p in masks)
            seen.append("start" if learning else "start-frozen")

        def on_before_optimizer_step(self, trainer, epoch, global_step):  # type: ignore[no-untyped-def]
            seen.append(f"opt{global_step}")

        def on_step_end(self, trainer):  # type: ignore[no-untyped-def]
            seen.append("end")

        def on_fit_end(self, trainer):  # type: ignore[no-untyped-def]
            seen.append("fit_end")

    m = build_model(NetConfig(width=8, hidden=8, blocks=2, backend="direct"), 1, 10, (40,))
    assert isinstance(
        Trainer(m, Objective(m, BudgetConfig(budget=None)), data, cfg).phases[0], ArchitecturePhases
    )
    Trainer(
        m, Objective(m, BudgetConfig(budget=None)), data, cfg, progress=False, phases=[Recorder()]
    ).fit()
    step = ["start", "opt{}", "end"]
    expected = ["epoch0", *[e.format(0) for e in step], *[e.format(1) for e in step]]
    expected += ["epoch1", *[e.format(2) for e in step], *[e.format(3) for e in step], "fit_end"]
    assert seen == expected


@pytest.mark.slow
def test_fit_budget_brings_the_cropped_cost_under_the_budget() -> None:
    from dnarch.config import BudgetConfig
    from dnarch.cost import model_cost
    from dnarch.train.objective import Objective

    m = build_model(NetConfig(width=16, hidden=16, blocks=3, backend="direct"), 1, 10, (40,))
    objective = Objective(m, BudgetConfig(budget=0.3))
    groups = [(m.arch_parameters(), 1e-3)]
    assert float(model_cost(m, "hard").macs) > objective.budget  # the maximal network does not fit
    steps = objective.fit_budget_(m, groups)
    cost = float(model_cost(m, "hard").macs)
    assert 0 < steps < 5000
    assert 0.98 * objective.budget <= cost <= objective.budget  # in the band, whichever way it went
    assert objective.fit_budget_(m, groups) == 0  # a network that fits is left alone
    assert float(model_cost(m, "hard").macs) == cost
    # a network well under the budget grows back to just under it
    for p in m.arch_parameters():
        p.data.mul_(0.5)
    m.project_arch_()
    assert float(model_cost(m, "hard").macs) < 0.9 * objective.budget
    assert objective.fit_budget_(m, groups) > 0
    assert 0.98 * objective.budget <= float(model_cost(m, "hard").macs) <= objective.budget


def test_the_frozen_architecture_meets_the_budget_even_when_training_is_short() -> None:
    from dnarch.config import BudgetConfig
    from dnarch.cost import model_cost
    from dnarch.data import load_data
    from dnarch.train.objective import Objective
    from dnarch.train.trainer import Trainer

    data = load_data("mnist1d").limited(64, 32)
    m = build_model(NetConfig(width=8, hidden=8, blocks=2, backend="direct"), 1, 10, (40,))
    # the target reaches the budget only at the end: without the fit, the net freezes far above it
    budget = BudgetConfig(budget=0.3, anneal_fraction=1.0)
    objective = Objective(m, budget)
    cfg = TrainConfig(epochs=4, batch_size=32, freeze_arch_fraction=0.5, warmup_epochs=0)
    history = Trainer(m, objective, data, cfg, progress=False).fit()
    assert [r["budget_fit_steps"] > 0 for r in history] == [False, False, True, False]
    assert history[1]["cost"] > objective.budget  # it was over the budget before the fit
    assert objective.budget is not None
    assert float(model_cost(m, "hard").macs) <= objective.budget


@pytest.mark.parametrize(
    ("epochs", "fraction", "frozen_epochs"), [(1, 0.2, 0), (2, 0.2, 1), (3, 0.0, 0), (5, 0.2, 1)]
)
def test_every_run_with_a_budget_ends_inside_it(
    epochs: int, fraction: float, frozen_epochs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs too short for ``freeze_arch_fraction`` to round to a frozen epoch freeze their last one
    (two epochs or more); runs with no frozen phase are fit into the budget after the last step, with
    a note, so the exported network meets the budget either way."""
    from dnarch.config import BudgetConfig
    from dnarch.cost import model_cost
    from dnarch.data import load_data
    from dnarch.train.metrics import evaluate_task
    from dnarch.train.objective import Objective
    from dnarch.train.trainer import Trainer

    cfg = TrainConfig(epochs=epochs, batch_size=32, freeze_arch_fraction=fraction)
    assert epochs - freeze_epoch(cfg) == frozen_epochs
    data = load_data("mnist1d").limited(64, 32)
    m = build_model(NetConfig(width=8, hidden=8, blocks=2, backend="direct"), 1, 10, (40,))
    objective = Objective(m, BudgetConfig(budget=0.25))
    trainer = Trainer(m, objective, data, cfg, progress=False)
    history = trainer.fit()
    assert objective.budget is not None
    cost = float(model_cost(m, "hard").macs)
    assert 0.98 * objective.budget <= cost <= objective.budget
    assert [r["arch_frozen"] for r in history] == [e >= freeze_epoch(cfg) for e in range(epochs)]
    assert ("never froze" in capsys.readouterr().err) == (frozen_epochs == 0)
    # the runner takes the last epoch's test metrics only where they are the final model's: not
    # where the fit after the last step changed it
    if frozen_epochs:
        assert trainer.last_test == {"acc": history[-1]["test_acc"]}
        assert trainer.last_test == evaluate_task(
            m, data.x_test, data.y_test, trainer.device, "classify", 10
        )
    else:
        assert trainer.last_test is None
