"""One frozen dataclass tree is the configuration. Every field is validated here, once.

The CLI is generated from this tree (dotted overrides such as ``--net.width=64``); the resolved tree is
saved with every run as JSON and read back with unknown keys rejected.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from dnarch.tasks import TASKS


class ConfigError(ValueError):
    """A bad configuration value or key. Its message is one line meant for the user."""


# the pyramids that halve by a learned strided filter (``NetConfig.downsample``)
STRIDED = ("strided", "strided-mix")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _finite(section: str, obj: Any) -> None:
    """Every float field of a config section must be finite (inf or nan would poison the loss)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{f.name} must be finite, got {value}")


@dataclass(frozen=True)
class NetConfig:
    """The maximal network and its masks (``--net.KEY=VALUE``).

    Attributes:
        width: residual channels C of the maximal network.
        hidden: maximal hidden channels W of each block.
        blocks: blocks L_max of the maximal network.
        kernel_hidden: hidden units of each block's kernel network (a SIREN).
        kernel_layers: linear layers of each kernel network (>= 2).
        omega0: the SIREN's frequency: its sine activations compute sin(omega0 * x).
        dropout: dropout probability on each block's output.
        threshold: T, the mask value below which a masked part is cropped.
        width_span: channels over which a width mask's sigmoid step rises from T to 1-T (it sets the
            step's fixed steepness tau).
        depth_span: blocks over which the depth mask's step rises from T to 1-T.
        resolution_span: frequency bins over which a resolution mask's step rises from T to 1-T.
        init_kernel_cutoff: initial relative half-extent of the kernels (1: the whole input).
        kernel_ceiling: the largest relative extent a kernel may reach, and the maximal network's
            kernels (1: the whole map, METHOD.md; 0.25: a quarter of each block's map). At 1 the
            maximal network of a sequence preset spent most of its MACs on kernels over whole
            maps (METHOD-NOTES, "The kernel's ceiling").
        init_kernel_gain: the kernel network's initial output scale: its last layer's weights start
            at this times SIREN's (1, the default: unit-variance kernel values over the whole
            kernel). 0: the continuous kernel starts at zero, so a depthwise kernel starts as its
            directly learned centre (direct_kernel) and grows long only as training makes it;
            kernels over whole maps (the maximal network) then train as well as short ones
            (METHOD-NOTES, "The continuous kernel starts at zero"). Without a direct term
            (direct_kernel 0) a zero start leaves each depthwise layer at its bias until the
            kernel net's last layer has learned.
        learn_kernel: learn each block's kernel size.
        learn_width: learn the residual width and each block's hidden width.
        learn_resolution: learn where the network downsamples and by how much.
        learn_depth: learn the depth. All four learn_* false give the frozen maximal network.
        resolution_from: the first block that may downsample; earlier blocks run at the input
            resolution (1: block 0 sees the full-resolution input, as a strided CNN convolves before
            it subsamples).
        dense_skip: for per-position tasks, add the stem's output to the features brought back to the
            input resolution, before the pointwise classifier.
        learn_groups: learn each pointwise layer's group count (DGConv's Kronecker-factor gates, up to
            2^floor(log2(min(width, hidden))) groups); off by default. Not with widen > 1.
        group_span: Kronecker factors over which a grouping's step rises from T to 1-T.
        backend: the depthwise convolution's backend: direct, fft, or auto (the faster, by
            measurement).
        widen: how far widths may grow where the resolution falls. A block that runs at P of the
            input's P_0 positions has min(widen, (P_0 / P) ** widen_power) times the residual and
            hidden widths (the same masks, stretched). The residual stream is zero-padded where it
            widens. 1 (the default) is METHOD.md's one residual width. Not with learn_groups.
        widen_power: how fast widths grow as the positions fall (with widen > 1). 0.5 (the
            default): with the square root, so a block's pointwise layers cost what they cost at full
            resolution, and widths double where each axis of an image halves, as a ResNet's do. 1:
            widths double where a sequence halves, as the plain CNN's do in 1D (its later stages
            then cost more than its first); no preset uses it (METHOD-NOTES, "How fast widths
            grow").
        init_resolution: where the resolution masks start: block resolution_from + j at a cut-off of
            init_resolution ** (j + 1) of the input's Nyquist frequency (0.5: every block halves
            each axis, as a strided pyramid); 1 (the default): every block at full resolution. The
            masks may raise it again up to full resolution; the maximal network and its cost are the
            same. With learn_resolution false the pyramid stays where it starts (fixed downsampling).
        direct_kernel: k > 0 adds a directly learned k-tap-per-axis term to the centre of every
            depthwise kernel, beside the kernel net (0, the default: METHOD.md's kernel net alone).
            See DepthwiseCKConv.
        stem_kernel: taps per axis of the stem (odd). 1, the default: METHOD.md's pointwise (linear)
            stem. k > 1: the plain CNN's stem, a full k-tap convolution from the input channels to
            the residual width at the input resolution, then BatchNorm and ReLU.
        downsample: how the network falls in resolution. 'fourier' (the default): METHOD.md's
            resolution masks, a band-limited crop of the spectrum, learned or fixed
            (init_resolution). 'strided': a fixed pyramid on which the first block of each stage
            from resolution_from on (every block, with stage_blocks 1) halves each axis (ceil(n / 2)
            samples) through a learned 3-tap-per-axis depthwise filter at stride 2, started halfway
            between anti-aliasing and plain subsampling ([1, 6, 1] / 8 per axis): it keeps part of
            the aliasing that a band-limited crop removes, which images read as sequences of pixels
            need (METHOD-NOTES, "How a fixed pyramid halves"). 'strided-mix': as 'strided', and
            each halving also adds a full 3-tap-per-axis convolution at stride 2 from every incoming
            channel to every channel of the block (started at zero, its rows following the block's
            residual width mask), as the plain CNN's strided convolution mixes channels where it
            halves (METHOD-NOTES, "A halving that mixes channels"). Both need learn_resolution
            false and init_resolution 1.
        stage_blocks: blocks per stage of a fixed pyramid (learn_resolution false; strided, or
            Fourier with init_resolution < 1). n > 1: blocks come in stages of n, the first block of
            each stage from stage resolution_from on halves (a Fourier pyramid: stage j at
            init_resolution ** (j + 1)), and the depth is learned per stage, one step mask over each
            stage's blocks with its first block always kept (so the depth never removes a stage or
            a halving). 1 (the default): every block is a stage, one depth mask over all of them
            (METHOD.md), which on a pyramid can only remove the last stages.
        stage_widths: learn the residual width per stage (one width mask per stage of stage_blocks
            blocks; the stem's is the first stage's), so the stream may be narrower at full
            resolution than where it falls, as a plain CNN's is. Where a stage is narrower than the
            one before, its first block keeps the stream's first channels and drops the rest; where
            it is wider, zero channels are appended. False (the default): METHOD.md's one residual
            width mask, shared by every block (stretched where widen > 1). Not with learn_groups.
        branch_norm: a BatchNorm on each block's output before the residual sum, as a ResNet
            block ends its branch (the residual and depth masks scale its affine parameters; the
            export folds it into the last 1x1 layer). False (the default): METHOD.md's block.
    """

    width: int = 32
    hidden: int = 64
    blocks: int = 6
    kernel_hidden: int = 32
    kernel_layers: int = 3
    omega0: float = 30.0
    dropout: float = 0.1
    threshold: float = 0.1
    width_span: float = 2.5
    depth_span: float = 1.5
    resolution_span: float = 2.5
    init_kernel_cutoff: float = 1.0
    kernel_ceiling: float = 1.0
    init_kernel_gain: float = 1.0
    learn_kernel: bool = True
    learn_width: bool = True
    learn_resolution: bool = True
    learn_depth: bool = True
    resolution_from: int = 1
    dense_skip: bool = True
    learn_groups: bool = False
    group_span: float = 1.5
    backend: str = "auto"
    widen: float = 1.0
    widen_power: float = 0.5
    init_resolution: float = 1.0
    direct_kernel: int = 0
    stem_kernel: int = 1
    downsample: str = "fourier"
    stage_blocks: int = 1
    stage_widths: bool = False
    branch_norm: bool = False

    def __post_init__(self) -> None:
        _finite("net", self)
        _require(
            self.downsample in ("fourier", *STRIDED),
            f"net.downsample must be fourier, strided or strided-mix, got {self.downsample!r}",
        )
        _require(
            self.stage_blocks >= 1 and self.blocks % self.stage_blocks == 0,
            f"net.stage_blocks must be >= 1 and divide net.blocks={self.blocks}, got "
            f"{self.stage_blocks}",
        )
        _require(
            self.stage_blocks == 1 or not self.learn_resolution,
            "net.stage_blocks > 1 needs a fixed pyramid: net.learn_resolution=false",
        )
        _require(
            self.downsample == "fourier"
            or (not self.learn_resolution and self.init_resolution == 1),
            f"net.downsample={self.downsample} is a fixed pyramid: it needs "
            "net.learn_resolution=false and net.init_resolution=1",
        )
        _require(
            self.stem_kernel >= 1 and self.stem_kernel % 2 == 1,
            f"net.stem_kernel must be odd and positive, got {self.stem_kernel}",
        )
        _require(
            self.direct_kernel == 0 or (self.direct_kernel > 0 and self.direct_kernel % 2 == 1),
            f"net.direct_kernel must be 0 or odd and positive, got {self.direct_kernel}",
        )
        _require(self.widen >= 1, f"net.widen must be >= 1, got {self.widen}")
        _require(
            0 < self.widen_power <= 1,
            f"net.widen_power must lie in (0, 1], got {self.widen_power}",
        )
        _require(
            self.init_kernel_gain >= 0,
            f"net.init_kernel_gain must be >= 0, got {self.init_kernel_gain}",
        )
        _require(
            0 < self.init_resolution <= 1,
            f"net.init_resolution must lie in (0, 1], got {self.init_resolution}",
        )
        _require(
            not (self.stage_widths and self.learn_groups),
            "net.stage_widths does not combine with net.learn_groups",
        )
        _require(
            self.widen == 1 or not self.learn_groups,
            "net.widen > 1 does not combine with net.learn_groups (the *-stages and image-pyramid "
            "presets widen: give --preset seq or --preset image to learn groups)",
        )
        for name in ("width", "hidden", "blocks", "kernel_hidden"):
            _require(
                getattr(self, name) >= 1, f"net.{name} must be >= 1, got {getattr(self, name)}"
            )
        _require(
            self.kernel_layers >= 2, f"net.kernel_layers must be >= 2, got {self.kernel_layers}"
        )
        _require(
            0 <= self.resolution_from <= self.blocks,
            f"net.resolution_from must lie in [0, net.blocks={self.blocks}], got {self.resolution_from}",
        )
        _require(self.omega0 > 0, f"net.omega0 must be > 0, got {self.omega0}")
        _require(0 <= self.dropout < 1, f"net.dropout must lie in [0, 1), got {self.dropout}")
        _require(
            0 < self.threshold < 0.5, f"net.threshold must lie in (0, 0.5), got {self.threshold}"
        )
        for name in ("width_span", "depth_span", "resolution_span", "group_span"):
            _require(getattr(self, name) > 0, f"net.{name} must be > 0, got {getattr(self, name)}")
        _require(
            0 < self.init_kernel_cutoff <= 1,
            f"net.init_kernel_cutoff must lie in (0, 1], got {self.init_kernel_cutoff}",
        )
        _require(
            0 < self.kernel_ceiling <= 1,
            f"net.kernel_ceiling must lie in (0, 1], got {self.kernel_ceiling}",
        )
        _require(
            self.backend in ("auto", "direct", "fft"),
            f"net.backend must be one of auto, direct, fft; got {self.backend!r}",
        )

    @property
    def learns_anything(self) -> bool:
        return (
            self.learn_kernel
            or self.learn_width
            or self.learn_resolution
            or self.learn_depth
            or self.learn_groups
        )

    @property
    def group_bits(self) -> int:
        """Kronecker factors of each pointwise layer's grouping (0 when grouping is not learned)."""
        return int(math.log2(min(self.width, self.hidden))) if self.learn_groups else 0


@dataclass(frozen=True)
class BudgetConfig:
    """The compute budget and its complexity loss (``--budget.KEY=VALUE``; ``--budget`` sets
    budget.budget).

    Attributes:
        budget: a fraction of the maximal network's cost if <= 1, else an absolute number (of MACs
            or parameters); None turns the complexity loss off.
        metric: what the budget counts: macs (per sample) or params.
        mode: 'two_sided' holds the cost at the target (lands on the budget); 'upper' only pushes
            down.
        weight: lambda, the penalty's weight.
        anneal: 'cosine' lowers the target from its start to the budget over the first
            anneal_fraction of training; 'none' applies the budget from the first step.
        anneal_fraction: the fraction of training over which the target is annealed.
        anneal_from: where the annealed target starts: 'max', the maximal network's cost
            (METHOD.md), or 'start', the cost of the network the masks start at (below the maximal
            one when kernels start short; from 'max' the two-sided penalty first pushes such a
            network up, growing its kernels, before it shrinks it). 'auto' (the default): 'start'
            when the kernels start short (net.init_kernel_cutoff < net.kernel_ceiling, the
            *-stages presets), else 'max'.
    """

    budget: float | None = 0.5
    metric: str = "macs"
    mode: str = "two_sided"
    weight: float = 20.0
    anneal: str = "cosine"
    anneal_fraction: float = 0.5
    anneal_from: str = "auto"

    def __post_init__(self) -> None:
        _finite("budget", self)
        _require(
            self.anneal_from in ("auto", "max", "start"),
            f"budget.anneal_from must be auto, max or start, got {self.anneal_from!r}",
        )
        _require(self.budget is None or self.budget > 0, f"budget must be > 0, got {self.budget}")
        if self.budget is not None and self.budget > 1 and not float(self.budget).is_integer():
            raise ConfigError(
                f"budget {self.budget:g} is neither a fraction of the maximal network (at most 1, "
                "like 0.25 or 25%) nor an absolute count (a whole number of MACs or parameters)"
            )
        _require(
            self.metric in ("macs", "params"),
            f"budget.metric must be macs or params, got {self.metric!r}",
        )
        _require(
            self.mode in ("two_sided", "upper"),
            f"budget.mode must be two_sided or upper, got {self.mode!r}",
        )
        _require(self.weight >= 0, f"budget.weight must be >= 0, got {self.weight}")
        _require(
            self.anneal in ("cosine", "none"),
            f"budget.anneal must be cosine or none, got {self.anneal!r}",
        )
        _require(
            0 < self.anneal_fraction <= 1,
            f"budget.anneal_fraction must lie in (0, 1], got {self.anneal_fraction}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and the run's machinery (``--train.KEY=VALUE``).

    Attributes:
        epochs: training epochs.
        batch_size: the global batch: under torchrun each rank takes its share of every batch.
        lr: the weights' learning rate (AdamW, linear warm-up then cosine decay).
        arch_lr: the mask parameters' learning rate (no weight decay).
        resolution_travel: how far (in the input's normalised frequency, Nyquist = 1) a resolution
            cut-off can move over the architecture-learning epochs if every step pushes it the same
            way: the sum of its learning rate over those steps (Adam's steps are about one learning
            rate long). The cut-offs' learning rate is set from it and the run's length, at most
            arch_lr, so that short and long runs give the cut-offs the same reach.
        resolution_lr_scale: if set, the cut-offs learn at arch_lr times this instead (the travel
            is then ignored).
        weight_decay: the weights' decoupled weight decay.
        warmup_epochs: epochs of linear learning-rate warm-up.
        freeze_arch_fraction: the last fraction of epochs trains the weights with the architecture
            frozen.
        seed: the seed of every random number generator of the run.
        device: 'auto' picks CUDA when present, else CPU; or cpu, cuda, cuda:N.
        deterministic: PyTorch's deterministic algorithms, and the conv backend chosen by operation
            count instead of timing, so that a run (and a resumed run) repeats bit for bit on CPU.
        tensorboard: with a run folder, also write TensorBoard event files into RUN_DIR/tensorboard.
        precision: 'fp32', or 'bf16' for bfloat16 autocast of the training forward pass (for GPUs
            that have it; weights, FFTs and the optimiser stay float32).
        workers: DataLoader worker processes that gather the batches (0: in the training process).
        threads: CPU threads for PyTorch's operations (0: PyTorch's default, one per core). On a
            machine whose cores are busy with other work, 1 runs several times faster than the
            default.
        anneal_gates: DNAL-style annealed gates: the sigmoid masks (widths, depth, resolution)
            sharpen geometrically until the architecture freezes, where they become exactly binary
            (see DNArchNet.snap_gates_). Not with net.widen > 1.
        alternate: decoupled updates: weights and mask parameters step on alternate batches while
            the architecture is learned.
    """

    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    arch_lr: float = 2e-2
    resolution_travel: float = 1.22
    resolution_lr_scale: float | None = None
    weight_decay: float = 1e-2
    warmup_epochs: int = 2
    freeze_arch_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    tensorboard: bool = True
    precision: str = "fp32"
    workers: int = 0
    threads: int = 0
    anneal_gates: bool = False
    alternate: bool = False

    def __post_init__(self) -> None:
        _finite("train", self)
        _require(
            self.precision in ("fp32", "bf16"),
            f"train.precision must be fp32 or bf16, got {self.precision!r}",
        )
        _require(self.workers >= 0, f"train.workers must be >= 0, got {self.workers}")
        _require(self.threads >= 0, f"train.threads must be >= 0, got {self.threads}")
        _require(0 <= self.seed < 2**32, f"train.seed must lie in [0, 2**32), got {self.seed}")
        _require(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _require(self.arch_lr >= 0, f"train.arch_lr must be >= 0, got {self.arch_lr}")
        _require(
            self.resolution_lr_scale is None or self.resolution_lr_scale >= 0,
            f"train.resolution_lr_scale must be >= 0, got {self.resolution_lr_scale}",
        )
        _require(
            self.resolution_travel >= 0,
            f"train.resolution_travel must be >= 0, got {self.resolution_travel}",
        )
        _require(
            self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}"
        )
        _require(
            self.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0, got {self.warmup_epochs}"
        )
        _require(
            0 <= self.freeze_arch_fraction < 1,
            f"train.freeze_arch_fraction must lie in [0, 1), got {self.freeze_arch_fraction}",
        )
        _require(
            self.device == "auto" or re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is not None,
            f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )


@dataclass(frozen=True)
class DataConfig:
    """The data (``--data NAME`` or ``--data.KEY=VALUE``).

    Attributes:
        name: a registered dataset (see dnarch.data.DATASETS) or a path to an .npz file with arrays
            x_train, y_train, x_test, y_test.
        root: the folder that holds a file-based dataset ('' = search $DNARCH_DATA and the usual
            places); for a generated one, where its cache lives.
        limit_train: use only the first N training samples (0 = all), for quick runs.
        limit_test: use only the first N test samples (0 = all).
        task: 'auto' (the dataset's own task; classify for a .npz file), or classify, segment (a
            label per position) or regress (values per position), which says how a .npz file's y
            arrays are read.
    """

    name: str = "mnist1d"
    root: str = ""
    limit_train: int = 0
    limit_test: int = 0
    task: str = "auto"

    def __post_init__(self) -> None:
        _require(bool(self.name), "data.name must not be empty")
        _require(
            self.task in ("auto", *TASKS),
            f"data.task must be auto or one of {', '.join(TASKS)}; got {self.task!r}",
        )
        _require(self.limit_train >= 0, f"data.limit_train must be >= 0, got {self.limit_train}")
        _require(self.limit_test >= 0, f"data.limit_test must be >= 0, got {self.limit_test}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs."""

    net: NetConfig = field(default_factory=NetConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        _require(
            self.net.widen == 1 or not self.train.anneal_gates,
            "net.widen > 1 does not combine with train.anneal_gates (a stretched width mask has no "
            "binary snap; the *-stages and image-pyramid presets widen: give --preset seq or "
            "--preset image for annealed gates)",
        )


def upgrade_saved(saved: dict[str, Any]) -> dict[str, Any]:
    """A run folder's saved config (``config.json``) with the keys older dnarch versions did not write
    set to what those versions did, so that an old run resumes and reports as it was trained:
    ``net.resolution_from`` = 0 (every block had a resolution mask), ``resolved.task`` = classify,
    ``budget.anneal_from`` = max (the target started at the maximal cost)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in saved.items()}
    if isinstance(out.get("net"), dict):
        out["net"].setdefault("resolution_from", 0)
    if isinstance(out.get("budget"), dict):
        out["budget"].setdefault("anneal_from", "max")
    if isinstance(out.get("resolved"), dict):
        out["resolved"].setdefault("task", "classify")
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config tree as plain JSON-able dicts."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build a config dataclass from nested dicts, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key {path!r} (known: {', '.join(known)})")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value, prefix=f"{path}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _check_type(path, value, typ)
    return cls(**kwargs)


def with_overrides(cfg: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Apply dotted string overrides (``{"net.width": "64"}``) with type checking."""
    data = to_dict(cfg)
    for dotted, text in overrides.items():
        parts = dotted.split(".")
        node: Any = data
        cls: Any = RunConfig
        for i, part in enumerate(parts):
            names = {f.name for f in fields(cls)}
            if part not in names:
                where = ".".join(parts[:i]) or "the top level"
                raise ConfigError(
                    f"unknown config key {dotted!r} ({where} has: {', '.join(sorted(names))})"
                )
            typ = typing.get_type_hints(cls)[part]
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(typ):
                    raise ConfigError(
                        f"{dotted!r} is a section; set one of its keys, e.g. {dotted}.<key>"
                    )
                node[part] = parse_value(dotted, text, typ)
            else:
                if not dataclasses.is_dataclass(typ):
                    raise ConfigError(
                        f"unknown config key {dotted!r} ({'.'.join(parts[: i + 1])} is not a section)"
                    )
                node, cls = node[part], typ
    return from_dict(RunConfig, data)


# the four learned axes, as ``NetConfig.learn_<axis>`` names them
AXES = ("kernel", "width", "resolution", "depth")

BUDGET_HELP = "a fraction of the maximal network like 0.25 or 25%, an absolute count, or none"


def parse_budget(text: str) -> float | None:
    """A budget as written on the command line: '0.25', '25%', '1200000' or 'none'."""
    t = text.strip().lower()
    if t in ("none", "null"):
        return None
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ConfigError(f"--budget takes {BUDGET_HELP}; got {text!r}") from None
    if t.endswith("%") and not 0 < value <= 1:
        raise ConfigError(f"a budget in percent lies in (0%, 100%]; got {text!r}")
    return value


def parse_value(path: str, text: str, typ: Any) -> Any:
    """Parse a command-line string as ``typ`` (int, float, bool, str or an Optional of them);
    ``budget.budget`` as ``parse_budget``."""
    if path == "budget.budget":
        return parse_budget(text)
    options = _type_options(typ)
    if type(None) in options and text.lower() in ("none", "null"):
        return None
    for opt in options:
        try:
            if opt is bool:
                low = text.lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                continue
            if opt in (int, float, str):
                return opt(text)
        except ValueError:
            continue
    names = " or ".join(o.__name__ for o in options)
    raise ConfigError(f"{path} expects {names}, got {text!r}")


def _type_options(typ: Any) -> tuple[Any, ...]:
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        return typing.get_args(typ)
    return (typ,)


def _check_type(path: str, value: Any, typ: Any) -> Any:
    options = _type_options(typ)
    for opt in options:
        if opt is type(None) and value is None:
            return None
        if opt is bool and isinstance(value, bool):
            return value
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if opt is str and isinstance(value, str):
            return value
    names = " or ".join(o.__name__ for o in options)
    raise ConfigError(f"{path} expects {names}, got {value!r}")


def describe_gates(train: dict[str, Any]) -> str:
    """How a run's sigmoid masks decided (for tables and reports); ``train``: the config's train
    section as saved (keys missing in older runs read as off)."""
    words = (
        "annealed to binary 0/1 decisions (DNAL-style)"
        if train.get("anneal_gates")
        else "sigmoid masks (DNArch)"
    )
    if train.get("alternate"):
        words += ", weights and masks updated on alternate steps"
    return f"gates: {words}"
