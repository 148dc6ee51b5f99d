"""ArchSpec: the discrete architecture the masks describe. One place, ``harden``, makes it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dnarch.plan import BlockSpec
from dnarch.tasks import TASKS

if TYPE_CHECKING:  # loading an exported network must not need the training code
    from dnarch.models import DNArchNet


@dataclass(frozen=True)
class ArchSpec:
    """The learned architecture; round-trips through JSON."""

    ndim: int
    in_channels: int
    num_classes: int
    input_shape: tuple[int, ...]
    residual_width: int
    blocks: tuple[BlockSpec, ...]
    max_width: int
    max_hidden: int
    task: str = "classify"  # 'classify': pooled head; 'segment' / 'regress': dense head
    dense_skip: bool = False  # dense head: the stem's output is added before the classifier
    group_bits: int = 0  # learned grouping: residual channels in bit-reversed order of these bits
    stem_kernel: int = 1  # the stem's taps per axis (1: pointwise)

    @property
    def dense(self) -> bool:
        return self.task != "classify"

    @property
    def head_in(self) -> tuple[int, ...]:
        """The resolution the head sees: the last kept block's output (blocks are never all removed)."""
        kept = self.kept_blocks
        return kept[-1].resolution_out if kept else self.input_shape

    def block_width(self, block: BlockSpec) -> int:
        """The residual width block ``block`` runs at."""
        return block.width or self.residual_width

    @property
    def widens(self) -> bool:
        """Whether some kept block runs at another width than the stem (``NetConfig.widen``,
        ``NetConfig.stage_widths``)."""
        return any(self.block_width(b) != self.residual_width for b in self.kept_blocks)

    def widths_text(self) -> str:
        """The residual width, or the stem's and each kept block's where they differ ('32>45>64')."""
        widths = [self.residual_width] + [self.block_width(b) for b in self.kept_blocks]
        steps = [w for i, w in enumerate(widths) if i == 0 or w != widths[i - 1]]
        return ">".join(map(str, steps))

    @property
    def head_width(self) -> int:
        """The residual width the head reads: the last kept block's."""
        kept = self.kept_blocks
        return self.block_width(kept[-1]) if kept else self.residual_width

    @property
    def kept_blocks(self) -> list[BlockSpec]:
        return [b for b in self.blocks if b.kept]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        d: dict[str, Any] = json.loads(text)

        def tuples(items: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in items.items()}

        blocks = tuple(BlockSpec(**tuples(b)) for b in d.pop("blocks"))
        if d.get("task", "classify") not in TASKS:
            raise ValueError(f"unknown task {d['task']!r} in the architecture")
        return cls(blocks=blocks, **tuples(d))


def harden(model: DNArchNet) -> ArchSpec:
    """Turn the model's current masks into discrete decisions."""
    blocks = model.hard_plan()
    return ArchSpec(
        ndim=model.ndim,
        in_channels=model.in_channels,
        num_classes=model.num_classes,
        input_shape=model.input_shape,
        residual_width=model.residual_mask.hard_count(),
        blocks=tuple(blocks),
        max_width=model.width,
        max_hidden=model.hidden,
        task=model.task,
        dense_skip=model.dense_skip,
        group_bits=model.group_bits,
        stem_kernel=model.stem_kernel,
    )
