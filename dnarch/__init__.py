"""dnarch: learn a convolutional network's kernel sizes, widths, downsampling and depth together with
its weights, by backpropagation, in one training run (DNArch, Romero & Zeghidour 2023)."""

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
from dnarch.train.run import RunResult, run

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
