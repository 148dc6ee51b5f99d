"""Behaviour: a short run on tiny data under a tight budget shrinks every axis; the API works."""

import numpy as np
import pytest
import torch

import dnarch
from dnarch.config import BudgetConfig, DataConfig, NetConfig, RunConfig, TrainConfig


@pytest.fixture(scope="module")
def tight_run() -> dnarch.RunResult:
    cfg = RunConfig(
        net=NetConfig(width=16, hidden=16, blocks=4, kernel_hidden=16, backend="direct"),
        budget=BudgetConfig(budget=0.1, anneal_fraction=0.5),
        # 48 steps: the resolution cut-offs learn at the full arch_lr to move (what the default rate,
        # set by the run's length, is capped at for a run this short)
        train=TrainConfig(
            epochs=6, batch_size=64, freeze_arch_fraction=0.0, resolution_lr_scale=1.0
        ),
        data=DataConfig(name="mnist1d", limit_train=512, limit_test=256),
    )
    return dnarch.run(cfg, progress=False)


def test_tight_budget_shrinks_all_four_axes(tight_run: dnarch.RunResult) -> None:
    spec, m = tight_run.spec, tight_run.model
    kept = spec.kept_blocks
    assert len(kept) < 4, "depth"
    assert spec.residual_width < 16 or any(b.hidden < 16 for b in kept), "width"
    assert any(b.kernel[0] < 39 for b in kept), "kernel size"
    assert any(b.resolution_out[0] < 40 for b in kept), "resolution"
    s = tight_run.summary
    # 48 steps do not let the cost settle at the 10% budget, but it must be well on its way
    assert s["macs"] <= 0.25 * s["max_macs"]
    assert s["static_test_accuracy"] == pytest.approx(s["test_accuracy"], abs=0.01)
    assert m.depth_mask.hard_count() == len(kept)


def test_api_fit_on_user_arrays(tmp_path) -> None:
    rng = np.random.default_rng(0)
    # two classes: a wide bump (class 0) or a sharp spike pair (class 1), anywhere in the sequence
    y = rng.integers(0, 2, 240)
    x = rng.normal(0, 0.3, (240, 24)).astype(np.float32)
    for i, (label, at) in enumerate(zip(y, rng.integers(2, 18, 240), strict=True)):
        if label == 0:
            x[i, at : at + 5] += 1.5
        else:
            x[i, at] += 3.0
            x[i, at + 2] -= 3.0
    result = dnarch.fit(
        x[:200], y[:200], x[200:], y[200:], budget=0.5, epochs=8, progress=False, out=tmp_path / "run",
        net__width=8, net__hidden=8, net__blocks=2, net__backend="direct", train__batch_size=16,
        train__warmup_epochs=1,
    )  # fmt: skip
    assert result.test_accuracy > 0.8
    assert isinstance(result.static, torch.nn.Module)
    loaded = dnarch.load_static(tmp_path / "run")
    xt = torch.as_tensor(x[200:])[:, None]
    with torch.no_grad():
        assert torch.allclose(loaded(xt), result.static(xt), atol=1e-5)
        # the exported network takes the (N, S) arrays fit took, as one channel
        assert torch.equal(loaded(torch.as_tensor(x[200:])), loaded(xt))


def test_api_keeps_a_given_config(monkeypatch) -> None:
    from dnarch import api

    seen = {}
    monkeypatch.setattr(api, "run", lambda cfg, **kw: seen.update(cfg=cfg))
    x, y = np.zeros((8, 16), dtype=np.float32), np.arange(8) % 2
    cfg = RunConfig(budget=BudgetConfig(budget=0.25), train=TrainConfig(epochs=7))
    dnarch.fit(x, y, x, y, config=cfg)
    assert seen["cfg"].budget.budget == 0.25 and seen["cfg"].train.epochs == 7
    dnarch.fit(x, y, x, y, config=cfg, budget=None, epochs=3)
    assert seen["cfg"].budget.budget is None and seen["cfg"].train.epochs == 3


def test_api_rejects_bad_arrays() -> None:
    x = np.zeros((10, 2, 3, 4, 5), dtype=np.float32)
    with pytest.raises(dnarch.data.DataError, match="inputs must be"):
        dnarch.fit(x, np.zeros(10), x, np.zeros(10), epochs=1, progress=False)
    x = np.zeros((10, 8), dtype=np.float32)
    with pytest.raises(dnarch.data.DataError, match="labels must be"):
        dnarch.fit(x, np.zeros((10, 2)), x, np.zeros(10), epochs=1, progress=False)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(dnarch.data.DataError, match="NaN"):
        dnarch.fit(bad, np.arange(10) % 2, x, np.arange(10) % 2, epochs=1, progress=False)
