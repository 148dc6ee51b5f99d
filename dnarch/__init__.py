"""dnarch: learn a convolutional network's kernel sizes, widths, downsampling and depth together with
its weights, by backpropagation, in one training run (DNArch, Romero & Zeghidour 2023)."""

import importlib
from typing import TYPE_CHECKING, Any

# The public names load on first use (PEP 562): ``python -m dnarch`` and the ``dnarch`` command import
# this package before anything can catch a Ctrl-C, so it must not import torch itself.
_PUBLIC = {
    "fit": "dnarch.api",
    **dict.fromkeys(
        ["BudgetConfig", "DataConfig", "NetConfig", "RunConfig", "TrainConfig"], "dnarch.config"
    ),
    "model_cost": "dnarch.cost",
    **dict.fromkeys(["DataBundle", "from_arrays", "load_data"], "dnarch.data"),
    **dict.fromkeys(
        [
            "ArchSpec",
            "StaticNet",
            "build_static",
            "export_run",
            "export_state",
            "harden",
            "load_static",
        ],
        "dnarch.export",
    ),
    **dict.fromkeys(["DNArchNet", "build_model"], "dnarch.models"),
    **dict.fromkeys(["RunResult", "run"], "dnarch.runner"),
}

if TYPE_CHECKING:
    from dnarch.api import fit
    from dnarch.config import BudgetConfig, DataConfig, NetConfig, RunConfig, TrainConfig
    from dnarch.cost import model_cost
    from dnarch.data import DataBundle, from_arrays, load_data
    from dnarch.export import (
        ArchSpec,
        StaticNet,
        build_static,
        export_run,
        export_state,
        harden,
        load_static,
    )
    from dnarch.models import DNArchNet, build_model
    from dnarch.runner import RunResult, run


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'dnarch' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "BudgetConfig",
    "DNArchNet",
    "DataBundle",
    "DataConfig",
    "NetConfig",
    "RunConfig",
    "RunResult",
    "StaticNet",
    "TrainConfig",
    "build_model",
    "build_static",
    "export_run",
    "export_state",
    "fit",
    "from_arrays",
    "harden",
    "load_data",
    "load_static",
    "model_cost",
    "run",
]
