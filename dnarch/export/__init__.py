"""Export: harden the masks into an ArchSpec and build a plain network of standard layers."""

from dnarch.export.formats import FORMATS, export_run, to_onnx, to_pt2
from dnarch.export.spec import ArchSpec, BlockSpec, harden
from dnarch.export.static import StaticNet, build_static, export_state, load_static, save_static

__all__ = [
    "FORMATS",
    "export_run",
    "to_onnx",
    "to_pt2",
    "ArchSpec",
    "BlockSpec",
    "StaticNet",
    "build_static",
    "export_state",
    "harden",
    "load_static",
    "save_static",
]
