"""Task metrics against hand-computed values."""

import math

import pytest
import torch

from dnarch.train.metrics import (
    EVAL_BATCHES,
    EVAL_BYTES,
    Tally,
    eval_batch,
    evaluate_task,
    mean_iou,
    target_peak,
    task_loss,
)


def _onehot(pred: torch.Tensor, k: int) -> torch.Tensor:
    """Logits whose argmax over dim 1 is ``pred``: (B, *S) -> (B, K, *S)."""
    return torch.nn.functional.one_hot(pred, k).movedim(-1, 1).float()


def test_mean_iou_by_hand() -> None:
    truth = torch.tensor([[0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0]])
    tally = Tally("segment", 4)  # class 3 never occurs: it must not count
    tally.add(_onehot(pred, 4), truth)
    # class 0: tp 1, union {0,1,5} = 3; class 1: tp 2, union {1,2,3} = 3; class 2: tp 1, union 2
    want = (1 / 3 + 2 / 3 + 1 / 2) / 3
    r = tally.result()
    assert r["miou"] == pytest.approx(want) and r["acc"] == pytest.approx(4 / 6)


def test_tally_sums_batches_like_one_batch() -> None:
    g = torch.Generator().manual_seed(0)
    truth, pred = (
        torch.randint(0, 5, (6, 7, 8), generator=g),
        torch.randint(0, 5, (6, 7, 8), generator=g),
    )
    whole, parts = Tally("segment", 5), Tally("segment", 5)
    whole.add(_onehot(pred, 5), truth)
    for i in range(0, 6, 4):
        parts.add(_onehot(pred[i : i + 4], 5), truth[i : i + 4])
    assert whole.result() == pytest.approx(parts.result())
    conf = torch.zeros(5, 5, dtype=torch.float64)
    for t, p in zip(truth.flatten().tolist(), pred.flatten().tolist(), strict=True):
        conf[t, p] += 1
    assert whole.result()["miou"] == pytest.approx(mean_iou(conf))


def test_psnr_and_mse() -> None:
    y = torch.zeros(2, 1, 10)
    y[:, :, 5:] = 2.0  # range 2
    out = y + 0.1
    tally = Tally("regress", 1, peak=target_peak(y))
    tally.add(out, y)
    r = tally.result()
    assert r["mse"] == pytest.approx(0.01)
    assert r["psnr"] == pytest.approx(10 * math.log10(4 / 0.01))
    assert float(task_loss("regress", out, y)) == pytest.approx(0.01)


def test_classification_accuracy_and_unknown_task() -> None:
    tally = Tally("classify", 3)
    tally.add(torch.tensor([[3.0, 0, 0], [0, 0, 1], [0, 2, 0]]), torch.tensor([0, 1, 1]))
    assert tally.result() == {"acc": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="unknown task"):
        Tally("detect", 3)


def _net(width: int) -> torch.nn.Module:
    """(B, 1, 28, 28) -> (B, 10): a conv of ``width`` channels at full resolution, its widest output."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(width, 10),
    )


@pytest.mark.parametrize(
    ("width", "want"), [(64, 64), (83, 64), (84, 32), (24, 128), (2, 128), (1024, 16)]
)
def test_eval_batch_follows_the_widest_activation(width: int, want: int) -> None:
    # widest output of one sample: width x 28 x 28 float32; the largest power of two whose batch
    # of it fits EVAL_BYTES, within EVAL_BATCHES
    per_sample = width * 28 * 28 * 4
    assert EVAL_BATCHES == (16, 128)
    assert want * per_sample <= EVAL_BYTES or want == 16
    assert want == 128 or 2 * want * per_sample > EVAL_BYTES
    x = torch.zeros(3, 1, 28, 28)
    net = _net(width).train()
    assert eval_batch(net, x, torch.device("cpu")) == want
    assert net.training  # its mode is restored


def test_evaluation_does_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(_net(8), torch.nn.BatchNorm1d(10))
    x, y = torch.randn(70, 1, 28, 28), torch.randint(0, 10, (70,))
    net.train()
    chosen = evaluate_task(net, x, y, torch.device("cpu"), "classify", 10)
    assert net.training  # its mode is restored
    for batch in (1, 7, 70):
        assert evaluate_task(net, x, y, torch.device("cpu"), "classify", 10, batch=batch) == (
            pytest.approx(chosen)
        )
