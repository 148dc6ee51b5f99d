"""Fine-tuning of an exported (static) network: BatchNorm statistics recomputed on the training data for
the widths it now has, then a few epochs of plain training. No masks, no architecture parameters.
Or retraining: the learned architecture freshly initialised and trained with the plain CNN's recipe
(the ``scratch`` method of ``benchmarks/compare.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnarch.data import DataBundle, load_data
from dnarch.export.spec import ArchSpec
from dnarch.export.static import ExportError, StaticNet, load_static, save_static
from dnarch.train.fixed import train_fixed
from dnarch.train.metrics import SCORES, evaluate_task, target_peak
from dnarch.train.runtime import pick_device


@torch.no_grad()
def recompute_bn_stats(net: nn.Module, x: torch.Tensor, batch: int = 256) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them as exact averages over ``x``
    (N, C, *S), in train mode; the network is left in eval mode."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    net.train()
    device = next(net.parameters()).device
    for i in range(0, len(x), batch):
        net(x[i : i + batch].to(device))
    for m, mom in zip(norms, momenta, strict=True):
        m.momentum = mom
    net.eval()


def finetune(
    net: StaticNet,
    data: DataBundle,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Recompute BN statistics, then train ``net`` for ``epochs`` (AdamW, cosine). Per-epoch metrics."""
    _check(net.spec, data, epochs, lr, batch_size, least_epochs=0)
    net.to(pick_device(device))
    recompute_bn_stats(net, data.x_train)  # draws no random numbers; train_fixed seeds
    return train_fixed(
        net, data, epochs, lr, batch_size=batch_size, seed=seed, device=device,
        progress=progress, desc="finetune",
    )  # fmt: skip


def _check_settings(epochs: int, lr: float, batch_size: int, least_epochs: int) -> None:
    if epochs < least_epochs or lr <= 0 or batch_size < 1:
        raise ValueError(
            f"need epochs >= {least_epochs}, lr > 0, batch_size >= 1; got {epochs}, {lr}, "
            f"{batch_size}"
        )


def _check(
    spec: ArchSpec, data: DataBundle, epochs: int, lr: float, batch_size: int, least_epochs: int
) -> None:
    """Refuse settings a training cannot take, and data that does not fit the network's input."""
    _check_settings(epochs, lr, batch_size, least_epochs)
    if data.input_shape != spec.input_shape or data.in_channels != spec.in_channels:
        raise ValueError(
            f"data {(data.in_channels, *data.input_shape)} does not fit the network's input "
            f"{(spec.in_channels, *spec.input_shape)}"
        )


def retrain(
    spec: ArchSpec,
    data: DataBundle,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> tuple[StaticNet, list[dict[str, Any]]]:
    """The architecture ``spec``, freshly initialised (``seed``), trained for ``epochs`` with the
    plain CNN's recipe (AdamW at ``lr``, 2 warm-up epochs, cosine). Returns the network and its
    per-epoch metrics."""
    _check(spec, data, epochs, lr, batch_size, least_epochs=1)
    torch.manual_seed(seed)
    net = StaticNet(spec)
    history = train_fixed(
        net, data, epochs, lr, batch_size=batch_size, seed=seed, device=device,
        warmup_epochs=2, progress=progress, desc="retrain",
    )  # fmt: skip
    return net, history


def finetune_run(
    run_dir: str | os.PathLike[str],
    epochs: int | None = None,
    lr: float | None = None,
    out: str | os.PathLike[str] | None = None,
    data: DataBundle | None = None,
    progress: bool = True,
    from_scratch: bool = False,
) -> dict[str, Any]:
    """Fine-tune the network exported in ``run_dir`` on the run's data (or ``data``) for ``epochs``
    (default 5) at ``lr`` (default 1e-3), or with ``from_scratch`` retrain its architecture from a
    fresh initialisation (``retrain``; default: the run's epochs, lr 3e-3), and save it in ``out``
    (default ``run_dir/finetuned``, ``run_dir/retrained``). Returns the task's score before and
    after (``test_score_before``/``_after``; for classification and segmentation also the
    accuracy)."""
    folder = Path(run_dir)
    # the settings first (a bad one is refused before any data is loaded); a retraining's epochs
    # default to the run's, read below
    lr = (3e-3 if from_scratch else 1e-3) if lr is None else lr
    if epochs is None and not from_scratch:
        epochs = 5
    least = 1 if from_scratch else 0
    _check_settings(least if epochs is None else epochs, lr, 1, least_epochs=least)
    net = load_static(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(
            f"{folder} has no readable config.json; is it a dnarch run folder?"
        ) from err
    if data is None:
        d = cfg["data"]
        data = load_data(d["name"], d.get("root") or None, d.get("task", "auto")).limited(
            d["limit_train"], d["limit_test"]
        )
    peak = target_peak(data.y_test) if data.task == "regress" else 1.0
    before = evaluate_task(
        net, data.x_test, data.y_test, torch.device("cpu"), data.task, data.num_classes, peak
    )
    train = cfg.get("train", {})
    common: dict[str, Any] = {
        "batch_size": train.get("batch_size", 64), "seed": train.get("seed", 0),
        "device": train.get("device", "auto"), "progress": progress,
    }  # fmt: skip
    if epochs is None:
        epochs = int(train.get("epochs", 40))
    if from_scratch:
        net, history = retrain(net.spec, data, epochs, lr, **common)
    else:
        history = finetune(net, data, epochs, lr, **common)
    target = (
        Path(out) if out is not None else folder / ("retrained" if from_scratch else "finetuned")
    )
    save_static(target, net.spec, {k: v.detach().cpu() for k, v in net.state_dict().items()})
    score = SCORES[data.task][0]
    result = {"task": data.task, "score": score, "test_score_before": before[score],
              "test_score_after": history[-1][f"test_{score}"],
              "epochs": epochs, "lr": lr, "retrained": from_scratch, "history": history,
              "folder": str(target)}  # fmt: skip
    if "acc" in before:
        result["test_accuracy_before"] = before["acc"]
        result["test_accuracy_after"] = history[-1]["test_acc"]
    (target / "finetune.json").write_text(json.dumps(result, indent=2))
    return result
