"""Task metrics against hand-computed values."""

import math

import pytest
import torch

from dnarch.train.metrics import Tally, mean_iou, target_peak, task_loss


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
