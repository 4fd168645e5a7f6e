"""`nsgan train` and `accelerate launch launch/train.py`: options to a config, then the training pipeline."""

from __future__ import annotations

import argparse
import os

from nsgan.cli.launch import launch_entry
from nsgan.common.errors import ConfigError
from nsgan.train.config import TrainConfig, load_config, parse_override
from nsgan.train.layout import RunLayout
from nsgan.train.pipeline import train


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML run config (see configs/); with --resume it may be left out if run_dir=RUN is given")
    p.add_argument("--resume", action="store_true", help="continue the run in run_dir at its last complete state")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. loss.gamma=0.1 schedule.total_kimg=20")


def config_for_args(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """The config a train command means: --config + overrides, or (resuming) the run's saved config."""
    if args.config:
        return load_config(args.config, args.overrides), args.config
    run_dirs = [value for keys, value in map(parse_override, args.overrides) if keys == ["run_dir"]]
    if args.resume and run_dirs:
        saved = RunLayout(str(run_dirs[-1])).config
        if not saved.is_file():
            raise ConfigError(f"{saved}: not found; pass --config with the run's config")
        return load_config(saved, args.overrides), str(saved)
    raise ConfigError("--config is required (or --resume run_dir=RUN to continue a run with its saved config)")


def run(args: argparse.Namespace) -> int:
    cfg, source = config_for_args(args)
    path = train(cfg, source, resume=bool(args.resume))
    if str(os.environ.get("RANK", "0")) == "0":
        print(f"model written to {path}")
    return 0


def launch_main(argv: list[str] | None = None) -> int:
    """Entry for `accelerate launch launch/train.py`: same options, one-line errors on every rank."""
    return launch_entry(argv, "launch/train.py", "Train nsgan's progressive GAN under accelerate.", "train",
                        configure_parser, run)
