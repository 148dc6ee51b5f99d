"""The Python API: train DNArch on your own tensors in a few lines.

import dnarch
result = dnarch.fit(x_train, y_train, x_test, y_test, budget=0.25, epochs=30)
print(result.test_accuracy, result.spec)
small = result.static          # a plain torch.nn.Module
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from dnarch.config import BUDGET_HELP, ConfigError, RunConfig, with_overrides
from dnarch.data import from_arrays
from dnarch.models import preset_for, preset_net
from dnarch.runner import RunResult, run

ArrayLike = Tensor | np.ndarray


def _budget_text(budget: object) -> str:
    """``fit``'s budget as the command line writes it: a number, '25%', 'none' or None."""
    if budget is None:
        return "none"
    if isinstance(budget, str):
        return budget
    if isinstance(budget, int | float | np.integer | np.floating) and not isinstance(budget, bool):
        return repr(float(budget))
    raise ConfigError(f"budget takes {BUDGET_HELP}; got {budget!r}")


def fit(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    *,
    budget: float | None | str = "default",
    epochs: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    config: RunConfig | None = None,
    task: str | None = None,
    **overrides: Any,
) -> RunResult:
    """Learn an architecture and its weights on (x, y) and return the run's result.

    x_*: (N, S), (N, C, S) or (N, C, H, W). y_* by ``task``: 'classify' (N,) integer labels;
    'segment' (N, *S) an integer label per position; 'regress' (N, *S) or (N, C_out, *S) values per
    position (the network then outputs at every position, through the dense head); left out, the
    config's ``data.task`` (``data__task=...`` or ``config``), else 'classify'. budget: fraction (<= 1) of the
    maximal network's MACs (or a string like '25%'), an absolute whole number (> 1), or None for no
    complexity loss; anything else raises ``ConfigError``; left out, the
    config's (default 0.5). epochs: left out, the config's (default 40). ``overrides`` are dotted config
    keys as the CLI names them, ``**{"net.width": 64}``, or with ``__`` for the dot, ``net__width=64``. out: optional run folder: new or empty, or holding a run that ``overwrite``
    replaces (a folder that is not a run is never touched).
    """
    given = task or str(overrides.pop("data__task", "auto"))
    if given == "auto" and config is not None:
        given = config.data.task
    task = "classify" if given == "auto" else given
    data = from_arrays(x_train, y_train, x_test, y_test, name="arrays", task=task)
    shape = tuple(data.input_shape)
    flat: dict[str, str] = {"data.task": task}
    if not (isinstance(budget, str) and budget == "default"):
        flat["budget.budget"] = _budget_text(budget)
    if epochs is not None:
        flat["train.epochs"] = str(epochs)
    flat.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
    cfg = config or RunConfig(net=preset_net(preset_for(len(shape), task), shape, flat))
    return run(
        with_overrides(cfg, flat), data=data, out_dir=out, progress=progress, overwrite=overwrite
    )
