import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dnarch.config import NetConfig
from dnarch.cost import model_cost
from dnarch.export import ArchSpec, build_static, export_state, harden
from dnarch.models import DNArchNet, build_model

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("DNARCH_CACHE", str(tmp_path_factory.mktemp("cache")))


def shrunk_model(
    shape: tuple[int, ...],
    seed: int,
    in_channels: int = 2,
    classes: int = 5,
    blocks: int = 4,
    axes: tuple[str, ...] = ("kernel", "width", "resolution", "depth"),
    task: str = "classify",
    skip: bool = True,
    widen: float = 1.0,
    widen_power: float = 0.5,
    direct_kernel: int = 0,
    stem_kernel: int = 1,
    downsample: str = "fourier",
    stage_blocks: int = 1,
    stage_widths: bool = False,
    kernel_ceiling: float = 1.0,
    branch_norm: bool = False,
) -> DNArchNet:
    """A small model with random mask settings on the chosen axes and trained BN statistics.
    task: 'classify', or 'segment' / 'regress' for a dense head (with the stem skip if ``skip``).
    axes may add 'groups': learned grouping (3 factors: up to 8 groups) at random group counts.
    widen: ``NetConfig.widen`` (widths that grow where the resolution falls), as fast as
    ``widen_power`` says.
    direct_kernel: ``NetConfig.direct_kernel`` (a directly learned central kernel term).
    stem_kernel: ``NetConfig.stem_kernel`` (the stem's taps per axis).
    downsample: ``NetConfig.downsample``; 'strided' halves at every block from resolution_from on,
    through perturbed filters (no resolution masks); ``stage_blocks`` > 1 groups the blocks in
    stages with a depth mask each (``NetConfig.stage_blocks``), on a fixed Fourier pyramid that
    halves the cut-off per stage where not strided. ``stage_widths``: a residual width mask per
    stage (``NetConfig.stage_widths``), each at its own random cut-off. ``kernel_ceiling``:
    ``NetConfig.kernel_ceiling`` (the kernels' largest relative extent). ``branch_norm``:
    ``NetConfig.branch_norm`` (a norm on each block's output), its scales drawn at random."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    # even seeds let block 0 downsample too (net.resolution_from=0); odd seeds keep the default (1)
    cfg = NetConfig(
        width=12, hidden=10, blocks=blocks, kernel_hidden=8, dropout=0.0, backend="direct",
        resolution_from=seed % 2, dense_skip=skip, learn_groups="groups" in axes,
        widen=widen, widen_power=widen_power, direct_kernel=direct_kernel, stem_kernel=stem_kernel,
        downsample=downsample, stage_blocks=stage_blocks, stage_widths=stage_widths,
        kernel_ceiling=kernel_ceiling, branch_norm=branch_norm,
        # stages need a fixed pyramid: a Fourier one halves each stage's cut-off
        learn_resolution=downsample == "fourier" and stage_blocks == 1,
        init_resolution=0.5 if downsample == "fourier" and stage_blocks > 1 else 1.0,
    )  # fmt: skip
    m = build_model(cfg, in_channels, classes, shape, task)

    def r(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    with torch.no_grad():
        if "width" in axes:
            for rm in m.residual_masks():
                rm.mu.fill_(r(0.2, 0.8))
        if "depth" in axes:
            if stage_blocks == 1:
                m.depth_mask.mu.fill_(r(0.1, 0.4))  # keeps 2 or 3 of 4 blocks
            for dm in m.stage_depth:  # per stage: any count the mask allows
                dm.mu.fill_(r(dm.mu_min, dm.mu_max))
            if stage_blocks > 1:
                m.depth_mask.mu.fill_(r(m.depth_mask.mu_min, m.depth_mask.mu_max))
        for b in m.blocks:
            if "kernel" in axes:
                b.conv.mask.sigma.mul_(torch.tensor([r(0.1, 0.9) for _ in shape]))
            if "width" in axes:
                b.width_mask.mu.fill_(r(0.1, 0.9))
            if "resolution" in axes and b.resolution is not None and stage_blocks == 1:
                b.resolution.mask.mu.copy_(torch.tensor([r(0.3, 0.9) for _ in shape]))
            for gm in b.group_masks():
                gm.mu.fill_(r(gm.mu_min, gm.mu_max))
            if b.halve_filter is not None:
                b.halve_filter.add_(0.3 * torch.randn(b.halve_filter.shape, generator=g))
            if b.halve_mix is not None:  # 'strided-mix': the full convolution starts at zero
                b.halve_mix.normal_(0, 0.3, generator=g)
            if b.branch_norm is not None:
                b.branch_norm.weight.uniform_(0.2, 2.0, generator=g)
        for name, p in m.named_parameters():  # biases start at zero; make them matter
            if name.endswith("bias"):
                p.normal_(0, 0.3)
        m.train()
        for _ in range(3):
            m(torch.randn(16, in_channels, *shape))
    return m.eval()


def stream_narrows(m: DNArchNet) -> bool:
    """Does some kept block run narrower than the stream before it (``NetConfig.stage_widths``)?"""
    widths = [m.residual_mask.hard_count()] + [p.width for p in m.hard_plan() if p.kept]
    return any(b < a for a, b in zip(widths, widths[1:], strict=False))


def check_crop_export_and_cost(m: DNArchNet, x: torch.Tensor) -> ArchSpec:
    """The contract on ``m`` (eval mode) and a batch ``x``: cropped equals masked (1e-5), the exported
    network equals the cropped one (1e-4), the hard cost equals the FLOP counter's MACs and the
    exported parameter count, and the spec reloaded from JSON gives the same network. Returns the
    spec."""
    with torch.no_grad():
        cropped, masked = m(x), m(x, crop=False)
    assert ((cropped - masked).abs().max() / masked.abs().max()) < 1e-5
    spec = harden(m)
    static = build_static(spec, export_state(m, spec))
    with torch.no_grad():
        exported = static(x)
    assert ((cropped - exported).abs().max() / cropped.abs().max()) < 1e-4
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        static(torch.randn(1, spec.in_channels, *spec.input_shape))
    assert float(model_cost(m, "hard").macs) == counter.get_total_flops() / 2
    assert int(model_cost(m, "hard").params) == sum(p.numel() for p in static.parameters())
    loaded = build_static(ArchSpec.from_json(spec.to_json()), export_state(m, spec))
    loaded.verdicts.load(static.verdicts.state())  # the same backends: the same bits
    with torch.no_grad():
        assert torch.equal(loaded(x), exported)
    return spec
