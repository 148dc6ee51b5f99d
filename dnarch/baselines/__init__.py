"""Baselines a user would pick instead of DNArch, measured side by side in ``benchmarks/``: the frozen
maximal network and single-axis ablations (configs, ``ablation_net``), a plain 3x3 CNN at a matched
budget (``dnarch.models.plain_cnn``) and prune-then-finetune with Torch-Pruning (``prune``)."""

from dnarch.baselines.ablations import AXES, ablation_net, frozen_net

__all__ = ["AXES", "ablation_net", "frozen_net"]
