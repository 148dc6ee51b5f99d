"""Command line: ``dnarch train``, ``dnarch export`` and ``dnarch finetune`` (also ``python -m dnarch``).

Typed config keys are set with dotted overrides generated from the config tree, e.g.
``--net.width=64 --train.epochs 20 --budget.metric params``. Bad input ends with one line on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import dnarch
from dnarch.config import ConfigError, RunConfig, from_dict, with_overrides
from dnarch.data import DATASETS, DataError, load_data
from dnarch.data.registry import check_data_name
from dnarch.export.static import ExportError
from dnarch.models import PRESETS, preset_for, preset_net
from dnarch.train import distributed
from dnarch.train.callbacks import CheckpointError
from dnarch.train.trainer import NumericalError, TrainingInterrupted


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise UsageError(message)


def config_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the config tree, e.g. ``net.width``."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            keys += config_keys(typ, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _parser() -> _Parser:
    p = _Parser(
        prog="dnarch", description="Learn a CNN's architecture and weights together (DNArch)."
    )
    p.add_argument("--version", action="version", version=f"dnarch {dnarch.__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser(
        "train",
        help="train DNArch and export the learned network",
        epilog="Config keys (set with --KEY=VALUE): " + ", ".join(config_keys()),
    )
    t.add_argument(
        "--data",
        help=f"dataset ({', '.join(DATASETS)}) or a .npz file (default mnist1d); "
        "--data.root=DIR names the folder that holds its files",
    )
    t.add_argument(
        "--budget",
        help="fraction (<=1, or a percentage like 25%%) of the maximal cost, absolute "
        "count (a whole number >1) or none",
    )
    t.add_argument(
        "--task",
        help="classify, segment (a label per position) or regress (values per position); default: "
        "the dataset's own, classify for a .npz file (data.task)",
    )
    t.add_argument("--epochs", help="training epochs (train.epochs)")
    t.add_argument("--seed", help="random seed (train.seed)")
    t.add_argument(
        "--threads", help="CPU threads (train.threads; default: one per core; 1 on a busy machine)"
    )
    t.add_argument("--preset", default="auto", help="maximal network: auto, " + ", ".join(PRESETS))
    t.add_argument("--config", help="JSON file with (part of) the config tree")
    t.add_argument("--out", help="run folder (default runs/<data>-<time>)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--overwrite", action="store_true",
        help="replace the run already in --out (finished or not); never a folder that is not a run",
    )  # fmt: skip
    t.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue a stopped run from its last checkpoint (takes no other config flags)",
    )  # fmt: skip
    r = sub.add_parser("report", help="write a run's HTML report (RUN_DIR/report/index.html)")
    r.add_argument("run_dir", help="a run folder written by dnarch train")
    e = sub.add_parser("export", help="export a run's learned network as state, pt2 or onnx")
    e.add_argument("run_dir", help="a run folder written by dnarch train")
    e.add_argument("--format", default="state", help="state (default), pt2 or onnx")
    e.add_argument("--out", help="output file (default RUN_DIR/model.<format>)")
    f = sub.add_parser(
        "finetune",
        help="fine-tune a run's exported network (BN stats recomputed), or retrain it from scratch",
    )
    f.add_argument("run_dir", help="a run folder written by dnarch train")
    f.add_argument(
        "--retrain", action="store_true",
        help="initialise the learned architecture afresh and train it with the plain CNN's recipe",
    )  # fmt: skip
    f.add_argument(
        "--epochs", default=None, help="training epochs (default 5; with --retrain the run's)"
    )
    f.add_argument("--lr", default=None, help="learning rate (default 1e-3; with --retrain 3e-3)")
    f.add_argument(
        "--out", help="output folder (default RUN_DIR/finetuned, with --retrain RUN_DIR/retrained)"
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def cmd_finetune(args: argparse.Namespace, extra: list[str]) -> int:
    from dnarch.train.finetune import finetune_run

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    try:
        epochs = None if args.epochs is None else int(args.epochs)
        lr = None if args.lr is None else float(args.lr)
    except ValueError as err:
        raise UsageError(f"--epochs takes an int and --lr a number: {err}") from err
    from dnarch.train.metrics import SCORES, format_score

    r = finetune_run(
        args.run_dir, epochs, lr, args.out, progress=not args.quiet, from_scratch=args.retrain
    )
    task = r["task"]
    how = "retrained from scratch for" if r["retrained"] else "after"
    print(
        f"test {SCORES[task][1]} {format_score(task, r['test_score_before'])} -> "
        f"{format_score(task, r['test_score_after'])} {how} {r['epochs']} epochs; saved in "
        f"{r['folder']}"
    )
    return 0


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    from dnarch.report import write_report

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    print(f"report: {write_report(args.run_dir)}")
    return 0


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from dnarch.export import export_run

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    path = export_run(args.run_dir, args.format, args.out)
    print(f"exported ({args.format}): {path}")
    return 0


def _split_overrides(extra: list[str]) -> dict[str, str]:
    """``--a.b=v`` / ``--a.b v`` pairs from the arguments argparse did not know."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            raise UsageError(
                f"unrecognised argument {arg!r} (config keys look like --net.width=64)"
            )
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        else:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise UsageError(f"{arg} needs a value")
            key, value = arg[2:], extra[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


def build_config(
    args: argparse.Namespace,
    extra: list[str],
    shape: tuple[int, ...] | None = None,
    task: str = "classify",
) -> RunConfig:
    """Preset (``auto``: by the data's axes and ``task``; fitted to its ``shape``, ``preset_net``),
    then --config file, then the named flags, then dotted overrides."""
    overrides = _split_overrides(extra)
    for flag, key in (("data", "data.name"), ("budget", "budget.budget"), ("epochs", "train.epochs"),
                      ("seed", "train.seed"), ("task", "data.task"),
                      ("threads", "train.threads")):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            overrides = {key: value, **overrides}
    preset = args.preset
    if preset == "auto":
        preset = preset_for(len(shape) if shape else 1, task)
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose auto or one of {', '.join(PRESETS)}")
    cfg = RunConfig(net=preset_net(preset, shape, overrides) if shape else PRESETS[preset])
    if args.config:
        try:
            data = json.loads(Path(args.config).read_text())
        except FileNotFoundError as err:
            raise UsageError(f"config file {args.config!r} does not exist") from err
        except OSError as err:
            raise UsageError(f"cannot read config file {args.config!r}: {err.strerror}") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UsageError(f"config file {args.config!r} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise UsageError(f"config file {args.config!r} must hold a JSON object of sections")
        data.pop("resolved", None)  # a run folder's config.json carries this extra section
        base = dataclasses.asdict(cfg)
        for section, values in data.items():
            if isinstance(values, dict) and isinstance(base.get(section), dict):
                base[section].update(values)
            else:
                base[section] = values
        cfg = from_dict(RunConfig, base)
    return _absolute_paths(with_overrides(cfg, overrides))


def _absolute_paths(cfg: RunConfig) -> RunConfig:
    """A data file and a data root as absolute paths, so the run resumes from any folder."""
    name, root = cfg.data.name, cfg.data.root
    if name not in DATASETS and Path(name).is_file():
        name = str(Path(name).resolve())
    if root:
        root = str(Path(root).resolve())
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name=name, root=root))


def cmd_resume(args: argparse.Namespace, extra: list[str]) -> int:
    from dnarch.runner import arch_table, resume_config, run

    given = [
        f"--{f}"
        for f in ("data", "budget", "epochs", "seed", "task", "config", "out", "threads")
        if getattr(args, f)
    ]
    given += ["--overwrite"] if args.overwrite else []
    if extra or given or args.preset != "auto":
        flags = " ".join(given + extra + (["--preset"] if args.preset != "auto" else []))
        raise UsageError(f"--resume continues a run with its own config; drop {flags}")
    cfg = resume_config(args.resume)
    world = distributed.init_from_env(cfg.train.device)
    say = _sayer(args.quiet, world)
    say(f"dnarch: resuming {args.resume} (data {cfg.data.name!r}){_ranks(world)}")
    data = load_data(cfg.data.name, cfg.data.root or None, cfg.data.task)
    result = run(cfg, data=data, out_dir=args.resume, progress=not args.quiet, resume=True)
    if world.main:
        print(arch_table(result))
        print(f"run folder: {result.run_dir}  (exported network: architecture.json + model.pt)")
        print(f"report: {Path(args.resume) / 'report' / 'index.html'}")
    return 0


def _sayer(quiet: bool, world: distributed.World) -> Callable[[str], None]:
    """Progress lines on stdout: rank 0's only, none with --quiet."""
    if quiet or not world.main:
        return lambda msg: None
    return lambda msg: print(msg, flush=True)


def _ranks(world: distributed.World) -> str:
    return f" on {world.size} data-parallel ranks" if world.active else ""


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from dnarch.runner import arch_table, check_budget, prepare_out_dir, run

    if args.resume:
        return cmd_resume(args, extra)
    probe = build_config(args, extra)  # validates every flag before any data is loaded
    root = probe.data.root or None
    check_data_name(probe.data.name, root)
    world = distributed.init_from_env(probe.train.device)  # a world of one unless under torchrun
    out = args.out or distributed.agree(
        f"runs/{Path(probe.data.name).stem}-{time.strftime('%Y%m%d-%H%M%S')}", world
    )
    args.out = out  # named in the hint if the user stops the run
    say = _sayer(args.quiet, world)
    say(f"dnarch: loading data {probe.data.name!r}")
    data = load_data(probe.data.name, root, probe.data.task)
    cfg = build_config(args, extra, shape=tuple(data.input_shape), task=data.task)
    check_budget(cfg, data.limited(cfg.data.limit_train, cfg.data.limit_test))
    # only now create the run folder: bad data or flags must not leave an empty one behind
    distributed.on_main(lambda: prepare_out_dir(out, args.overwrite), world)
    shape = tuple(data.x_train.shape)
    say(f"dnarch: training on {data.name} {shape}{_ranks(world)} -> run folder {out}")
    result = run(cfg, data=data, out_dir=out, progress=not args.quiet, overwrite=args.overwrite)
    if world.main:
        print(arch_table(result))
        print(f"run folder: {result.run_dir}  (exported network: architecture.json + model.pt)")
        print(f"report: {Path(out) / 'report' / 'index.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    finally:
        distributed.shutdown()  # a torchrun rank leaves its process group, on success or error


def _who() -> str:
    """'dnarch', with the rank when several run (each rank reports its own error)."""
    world = distributed.current()
    return f"dnarch[rank {world.rank}]" if world.active else "dnarch"


def _main(argv: list[str]) -> int:
    try:
        args, extra = _parser().parse_known_args(argv)
        if args.command == "train":
            return cmd_train(args, extra)
        if args.command == "export":
            return cmd_export(args, extra)
        if args.command == "finetune":
            return cmd_finetune(args, extra)
        if args.command == "report":
            return cmd_report(args, extra)
        raise UsageError(f"unknown command {args.command!r}")
    except TrainingInterrupted as err:
        folder = getattr(args, "resume", None) or getattr(args, "out", None)
        hint = f"; continue with: dnarch train --resume {folder}" if folder else ""
        if distributed.current().main:  # every rank stopped at the same step; one says so
            print(f"dnarch: {err}; checkpoint saved{hint}", file=sys.stderr)
        return 130
    except (
        UsageError,
        ConfigError,
        DataError,
        ExportError,
        CheckpointError,
        NumericalError,
    ) as err:
        print(f"{_who()}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # validation inside the library (model, run folder)
        print(f"{_who()}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as err:  # unreadable or unwritable paths, full disks
        folder = getattr(args, "resume", None) or getattr(args, "out", None)
        name = os.fsdecode(err.filename) if err.filename else (folder or "")
        where = f": {name}" if name else ""
        hint = ""
        if folder and (Path(folder) / "checkpoint.pt").is_file():
            hint = f"; the last checkpoint is kept: continue with dnarch train --resume {folder}"
        print(f"{_who()}: error: {err.strerror or err}{where}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dnarch: interrupted; files written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
