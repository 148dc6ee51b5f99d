"""Before/after: parameters and MACs of the maximal and of the exported network, counted by
``torch.utils.flop_counter`` on real modules, next to the differentiable estimate."""

from __future__ import annotations

from typing import Any

from dnarch.export.spec import ArchSpec, harden
from dnarch.export.static import StaticNet
from dnarch.flops import counted_macs


def count(net: StaticNet) -> tuple[int, int]:
    """(MACs per sample, parameters) of a static network: FlopCounterMode's FLOPs / 2, and numel."""
    spec = net.spec
    return counted_macs(net, spec.in_channels, spec.input_shape), sum(
        p.numel() for p in net.parameters()
    )


def before_after(
    model: Any, spec: ArchSpec | None = None, maximal: ArchSpec | None = None
) -> dict[str, int]:
    """Counted and estimated MACs and parameters of the maximal (``ceiling_copy``) and the exported
    network. ``spec``: ``harden(model)``, and ``maximal``: ``harden(model.ceiling_copy())``, if the
    caller has them already."""
    from dnarch.cost import model_cost

    spec = harden(model) if spec is None else spec
    maximal = harden(model.ceiling_copy()) if maximal is None else maximal
    max_macs, max_params = count(StaticNet(maximal))
    macs, params = count(StaticNet(spec))
    hard, top = model_cost(model, "hard"), model_cost(model, "max")
    return {
        "max_macs_counted": max_macs,
        "max_params_counted": max_params,
        "macs_counted": macs,
        "params_counted": params,
        "max_macs_estimate": int(top.macs),
        "max_params_estimate": int(top.params),
        "macs_estimate": int(hard.macs),
        "params_estimate": int(hard.params),
    }


def before_after_table(numbers: dict[str, int]) -> str:
    """The before/after numbers as a small text table."""
    rows = [
        f"{'':<10} {'MACs counted':>14} {'MACs estimate':>14} {'params counted':>15} {'params estimate':>16}",
    ]
    for label, pre in (("maximal", "max_"), ("exported", "")):
        rows.append(
            f"{label:<10} {numbers[pre + 'macs_counted']:>14,} {numbers[pre + 'macs_estimate']:>14,} "
            f"{numbers[pre + 'params_counted']:>15,} {numbers[pre + 'params_estimate']:>16,}"
        )
    return "\n".join(rows)
