"""The `reidlib` command: reproduce (papermill batch), summary, synth, datasets."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reidlib.data.formats import Adapter

# The data set every notebook generates itself when no data root is given (ci and demo profiles).
GENERATED_DATASET = "synthocc"
# Set to 1 to see the full traceback of an error the command otherwise reports in one line.
TRACEBACK_ENV = "REIDLIB_TRACEBACK"
# What to do about an OSError on a path the user gave, by its kind.
_OS_ERROR_FIXES: dict[type[OSError], str] = {
    PermissionError: "fix its permissions (chmod / chown) or choose another path",
    FileExistsError: "something is already there: remove it or choose another path",
    NotADirectoryError: "a file stands where a folder is needed: remove it or choose another path",
    IsADirectoryError: "a folder stands where a file is needed: choose a file path",
}


def _positive(convert: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse `type` that also refuses zero, negative and non-finite values (argparse then names the
    flag: "argument --timeout: ...")."""

    def parse(text: str) -> float:
        value = convert(text)  # ValueError: argparse reports "invalid <type> value"
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number; give a value above 0")
        return value

    parse.__name__ = convert.__name__  # argparse's "invalid int value" message uses the type's name
    return parse


def _check_data_args(dataset: str | None, data_root: str | None, profile: str) -> None:
    """What a notebook would otherwise find out only after it started: an unknown --dataset, a real data set
    without --data-root, or a --data-root that does not hold the data set."""
    from reidlib.data.formats import DATASETS, DatasetLayoutError, locate

    adapter = None if dataset is None else DATASETS.get(dataset, where="--dataset")
    if data_root is None:
        if profile == "paper" or dataset not in (None, GENERATED_DATASET):
            raise ValueError(_data_root_missing(adapter))
        return
    root = Path(data_root).expanduser().absolute()
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise ValueError(f"--data-root {data_root}: {root} {state}; pass the folder holding the data set "
                         "(`reidlib datasets check DIR` says what it finds there)")
    if adapter is not None and adapter.name != GENERATED_DATASET:  # SynthOcc folders vary by protocol
        try:
            locate(root, adapter)
        except DatasetLayoutError as exc:  # the layouts expected there and what was found
            raise DatasetLayoutError(f"--data-root {data_root}: {exc}") from None


def _data_root_missing(adapter: Adapter | None) -> str:
    if adapter is None:  # the paper profile, each notebook with its own data set
        return ("--profile paper trains on real data sets: pass --data-root DIR, the folder holding them "
                "(`reidlib datasets list` shows the layouts each data set may have there)")
    layouts = "".join(f"\n  - {layout.describe()}" for layout in adapter.layouts)
    return (f"--dataset {adapter.name} is read from disk: pass --data-root DIR, the folder holding "
            f"{adapter.title}, in one of these layouts:{layouts}\n"
            f"`reidlib datasets check DIR {adapter.name}` checks it; only {GENERATED_DATASET} is generated "
            "when --data-root is left out")


def _check_output_folder(flag: str, path: str) -> None:
    """An output folder must be a folder you can write in, or one that can be created there: checked before
    any work, so that a wrong path fails now and not in a traceback after the first notebook."""
    target = Path(path).expanduser().absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{flag} {path}: {existing} is a file, not a folder; pass a folder path "
                                 "(a missing folder is created)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path}: you cannot write in {existing}; pass a folder you can write "
                              f"in, or make it writable (chmod u+w {existing})")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from reidlib.runner import reproduce

    _check_data_args(args.dataset, args.data_root, args.profile)
    _check_output_folder("--out-dir", args.out_dir)
    return reproduce(
        papers=args.papers, profile=args.profile, dataset=args.dataset, data_root=args.data_root,
        jobs=args.jobs, timeout=args.timeout, out_dir=args.out_dir, retrain=args.retrain,
    )


def _cmd_summary(args: argparse.Namespace) -> int:
    from reidlib.runner import print_summary

    return print_summary(args.runs_dir)


def _parse_set(items: list[str]) -> dict:
    """`--set KEY=VALUE` pairs; values are read as YAML (numbers, lists such as [0.3, 0.6], strings)."""
    import yaml

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. --set num_train_ids=40")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _cmd_synth(args: argparse.Namespace) -> int:
    import time

    from reidlib.data import synthocc

    options = _parse_set(args.set)
    if args.occlusion_ratio is not None:
        options["occlusion_ratio"] = tuple(args.occlusion_ratio) if len(args.occlusion_ratio) == 2 \
            else args.occlusion_ratio[0]
    if args.positions is not None:
        options["occlusion_positions"] = tuple(args.positions)
    if args.occluders is not None:
        options["occluder_kinds"] = tuple(args.occluders)
    _check_output_folder("--out", args.out)
    start = time.perf_counter()
    out = synthocc.generate(args.out, seed=args.seed, size=args.size, protocols=args.protocols, **options)
    elapsed = time.perf_counter() - start
    print(synthocc.describe(out))
    print(f"SynthOcc ({args.size}, seed {args.seed}) written to {out} in {elapsed:.1f} s")
    if args.contact_sheet:
        sheet = synthocc.contact_sheet(out, protocol=synthocc.resolve_protocols(args.protocols)[0])
        sheet.save(args.contact_sheet)
        print(f"contact sheet: {args.contact_sheet}")
    return 0


def _cmd_datasets_check(args: argparse.Namespace) -> int:
    from reidlib.data.formats import check_dataset

    return check_dataset(args.root, args.name, verify_images=args.verify)


def _cmd_datasets_list(args: argparse.Namespace) -> int:
    from reidlib.data.formats import describe_datasets

    print(describe_datasets())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reidlib", description=__doc__,
                                     epilog=f"Errors are reported in one line; set {TRACEBACK_ENV}=1 to see "
                                            "their traceback.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="execute paper notebooks with papermill",
                       description="Execute the paper notebooks with papermill into runs/notebooks/.")
    p.add_argument("--papers", nargs="+", default=None,
                   help="notebook names or numbers (default: all), e.g. qpm 04_dpm 00")
    p.add_argument("--profile", default="demo", choices=["ci", "demo", "paper"])
    p.add_argument("--dataset", default=None, help="data set name (default: the notebook's own)")
    p.add_argument("--data-root", default=None, help="folder holding the real data set")
    p.add_argument("--jobs", type=_positive(int), default=1, help="notebooks executed in parallel")
    p.add_argument("--timeout", type=_positive(float), default=None,
                   help="seconds per notebook before it fails")
    p.add_argument("--out-dir", default="runs", help="where executed notebooks and results go")
    p.add_argument("--retrain", action="store_true", help="ignore cached finished runs")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("summary", help="the notebooks and training runs under runs/",
                       description="Gather the metrics sidecars under RUNS_DIR into a short table (status,"
                                   " mAP, Rank-1 per notebook) and a details table of every headline"
                                   " metric, and list the cached training runs.")
    p.add_argument("runs_dir", nargs="?", default="runs")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("synth", help="write a SynthOcc data set",
                       description="Generate the SynthOcc synthetic occluded-person data set (one Duke-layout"
                                   " folder per protocol, with parsing masks and metadata.csv).")
    p.add_argument("--out", required=True, help="output folder (an older SynthOcc set there is replaced)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="demo", help="size preset: ci, demo or paper")
    p.add_argument("--protocols", nargs="+", default=None,
                   help="occluded_duke holistic occluded_reid partial_reid (default: all)")
    p.add_argument("--occlusion-ratio", nargs="+", type=float, default=None, metavar="R",
                   help="share of the body an occluder hides: one value or LOW HIGH (default 0.2 0.55)")
    p.add_argument("--positions", nargs="+", default=None,
                   help="where occluders enter from: bottom left right top side (default: all)")
    p.add_argument("--occluders", nargs="+", default=None,
                   help="occluder kinds: car pole board tree luggage pedestrian (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other generator option, e.g. --set num_train_ids=40 --set train_occluded=0.3")
    p.add_argument("--contact-sheet", default=None, metavar="PNG",
                   help="also save a grid of images with their parsing maps")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("datasets", help="inspect data set folders",
                       description="Check real data set layouts on disk.")
    dsub = p.add_subparsers(dest="datasets_command", required=True)
    c = dsub.add_parser("check", help="count images / identities / cameras per split",
                        description="Load ROOT as data set NAME (guessed when omitted) and print per "
                                    "split the number of images, identities and cameras.")
    c.add_argument("root")
    c.add_argument("name", nargs="?", default=None)
    c.add_argument("--verify", action="store_true", help="open every image and report corrupt ones")
    c.set_defaults(func=_cmd_datasets_check)
    c = dsub.add_parser("list", help="the data sets reidlib knows and the layouts it accepts")
    c.set_defaults(func=_cmd_datasets_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if not _is_user_error(exc) or os.environ.get(TRACEBACK_ENV, "0") not in ("", "0"):
            raise
        print(f"reidlib: error: {_describe_error(exc)}", file=sys.stderr)  # one clear line, no traceback
        return 2


def _is_user_error(exc: Exception) -> bool:
    """Errors about the user's arguments, paths, files or configs: OSError, ValueError and reidlib's own error
    types. Anything else is a bug and keeps its traceback."""
    return isinstance(exc, OSError | ValueError) or type(exc).__module__.partition(".")[0] == "reidlib"


def _describe_error(exc: Exception) -> str:
    """The message; for an OSError raised by the system, the path it names and what to do about it."""
    if isinstance(exc, OSError) and exc.filename is not None:
        fix = next((text for kind, text in _OS_ERROR_FIXES.items() if isinstance(exc, kind)), "")
        return f"{exc.filename}: {exc.strerror}" + (f"; {fix}" if fix else "")
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
