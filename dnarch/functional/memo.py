"""Tensors a module makes once per size and keeps (kernel positions, mask grids, resampling
matrices): ``made_once``."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

T = TypeVar("T")


def made_once(store: dict[Hashable, T], key: Hashable, make: Callable[[], T]) -> T:
    """``store[key]``, made by ``make()`` the first time. It is made outside inference mode, so that
    autograd may save it later whichever mode the first call ran in (an inference tensor cannot be
    saved for backward). ``store`` belongs to the module that asks (no module-level state)."""
    if key not in store:
        with torch.inference_mode(False):
            store[key] = make()
    return store[key]
