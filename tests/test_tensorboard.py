"""TensorBoard: a run folder gets event files with losses, accuracy, cost vs target and soft sizes."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dnarch.config import BudgetConfig, DataConfig, NetConfig, RunConfig, TrainConfig
from dnarch.runner import run


def test_run_writes_tensorboard_scalars(tmp_path) -> None:
    cfg = RunConfig(
        net=NetConfig(width=4, hidden=4, blocks=2, kernel_hidden=4, backend="direct"),
        budget=BudgetConfig(budget=0.5),
        train=TrainConfig(epochs=2, batch_size=32, warmup_epochs=0),
        data=DataConfig(name="mnist1d", limit_train=64, limit_test=32),
    )
    run(cfg, out_dir=tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train_loss", "score/test_acc", "cost/cost", "cost/target"} <= tags
    for block in (0, 1):
        assert {
            f"arch/block{block}/{k}"
            for k in ("depth", "hidden", "kernel_axis0", "resolution_axis0")
        } <= tags
    steps = [e.step for e in events.Scalars("arch/block1/hidden")]
    assert steps == [1, 2]
    assert 3 <= events.Scalars("arch/block0/kernel_axis0")[-1].value < 2 * 40  # soft: may pass N


@pytest.mark.slow
def test_tensorboard_can_be_switched_off(tmp_path) -> None:
    cfg = RunConfig(
        net=NetConfig(width=4, hidden=4, blocks=1, kernel_hidden=4, backend="direct"),
        train=TrainConfig(epochs=1, tensorboard=False),
        data=DataConfig(name="mnist1d", limit_train=32, limit_test=16),
    )
    run(cfg, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "tensorboard").exists()
