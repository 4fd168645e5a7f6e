"""The `nsgan` command: one subcommand per job, each a module of nsgan.cli.

Each command module exposes `configure_parser(parser)` and `run(args) -> int`; the work itself is done
by the library modules they call. Modules are imported
only when their subcommand runs, so `nsgan --help` stays fast. User mistakes (NsganError) are
printed as one line and turned into exit codes; nothing else is caught here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nsgan import __version__
from nsgan.cli import set_process_defaults
from nsgan.common.errors import EXIT_INTERRUPTED, EXIT_USAGE, NsganError, printable

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "shards": ("nsgan.cli.shards", "cut images into tiles and write WebDataset shards"),
    "train": ("nsgan.cli.train", "train the progressive GAN (one process; use `accelerate launch launch/train.py` for many)"),
    "train-encoder": ("nsgan.cli.train_encoder", "train the f-AnoGAN encoder for an existing model file (fast scoring)"),
    "train-comparator": ("nsgan.cli.train_comparator", "train the comparator C (a learned defect map beside G(E(x))) for an existing model file"),
    "demo": ("nsgan.cli.demo", "build a demo dataset from bundled texture photos, train, export and score"),
    "score": ("nsgan.cli.score", "score full-size images tile by tile and write anomaly maps and reports"),
    "calibrate": ("nsgan.cli.calibrate", "set image and pixel thresholds from held-out images and store them with the model"),
    "evaluate": ("nsgan.cli.evaluate", "measure detection quality on an MVTec-style folder"),
    "audit": ("nsgan.cli.audit", "rank the training images by the model's image score: which \"normal\" images are dirty"),
    "export-onnx": ("nsgan.cli.export_onnx", "export the feed-forward scoring path (E → G → residual, score) to ONNX, checked in ONNX Runtime"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `nsgan` parser; only the subcommand named by argv[0] (default: sys.argv[1]) gets its options,
    so only its module is imported."""
    wanted = list(sys.argv[1:2] if argv is None else argv[:1])
    parser = argparse.ArgumentParser(prog="nsgan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nsgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name in wanted:  # only import the module whose options we need
            importlib.import_module(module).configure_parser(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    set_process_defaults()  # before any subcommand's module loads torch
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.argv[1:] = argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name must print, not crash the report
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except NsganError as err:
        print(f"nsgan {args.command}: error: {printable(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"nsgan {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
