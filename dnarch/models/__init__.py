"""DNArchNet and its presets."""

from dnarch.models.dnarchnet import ArchSizes, DNArchNet, build_model
from dnarch.models.presets import PRESETS, preset_for, preset_net

__all__ = ["PRESETS", "ArchSizes", "DNArchNet", "build_model", "preset_for", "preset_net"]
