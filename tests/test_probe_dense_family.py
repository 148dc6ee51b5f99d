"""benchmarks/probe_dense_family.py: every variant is the widest network of its kind within the
MACs budget, maps (B, 1, 32, 32) to per-position logits, and the variants differ as documented."""

from __future__ import annotations

import pytest
import torch

from benchmarks import probe_dense_family as probe
from dnarch.flops import counted_macs

MACS = 4e6  # small, so that the width searches stay quick
VARIANTS = ["unet", "unet-sep3", "unet-sep3-flat", "unet-sep3-noskip", "unet-sep3-head", "iso7"]


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_fits_budget_and_maps_positions(name: str) -> None:
    net = probe.make_variant(name, 1, 11, (32, 32), MACS)
    macs = counted_macs(net, 1, (32, 32))
    assert 0.5 * MACS < macs <= MACS  # the widest under the budget, not far below it
    net.eval()
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 11, 32, 32)


def test_flat_keeps_one_width_and_noskip_ignores_the_encoder() -> None:
    grow = probe.SepUNet(1, 11, 8, 3)
    flat = probe.SepUNet(1, 11, 8, 3, grow=False)
    assert [b.bn2.num_features for b in grow.down] == [8, 16, 32]
    assert [b.bn2.num_features for b in flat.down] == [8, 8, 8]
    for skips in (False, True):
        net = probe.SepUNet(1, 11, 8, 3, skips=skips).eval()
        reduced: list[torch.Tensor] = []
        fused_in: list[torch.Tensor] = []
        for reduce, fuse in zip(net.reduce, net.fuse, strict=True):
            reduce.register_forward_hook(lambda m, i, o, out=reduced: out.append(o))
            fuse.register_forward_pre_hook(lambda m, i, out=fused_in: out.append(i[0]))
        net(torch.randn(2, 1, 32, 32))
        same = [torch.equal(a, b) for a, b in zip(reduced, fused_in, strict=True)]
        assert same == [not skips] * 2  # without skips the decoder sees only the deeper level


def test_unknown_variant_is_one_line() -> None:
    with pytest.raises(SystemExit, match="unknown variant"):
        probe.make_variant("resnet", 1, 11, (32, 32), MACS)
