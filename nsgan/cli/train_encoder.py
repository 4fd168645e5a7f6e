"""`nsgan train-encoder` and `accelerate launch launch/train_encoder.py`: add an f-AnoGAN encoder to a model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nsgan.cli.launch import launch_entry
from nsgan.cli.model_config import config_for_model
from nsgan.models.model_file import load_model
from nsgan.train.common import make_accelerator, resolve_data, shutdown
from nsgan.train.config import TrainConfig
from nsgan.train.encoder_loop import check_encoder_run_dir, train_encoder
from nsgan.train.layout import RunLayout


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model (.safetensors) to add an encoder to")
    p.add_argument("--config", help="YAML config (default: the config stored in the model file)")
    p.add_argument("--run-dir", help="encoder run folder (default: <model folder>/encoder)")
    p.add_argument("--resume", action="store_true", help="continue the encoder run at its last complete state")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. encoder.kimg=20 data.normal=shards/normal encoder.lr=0.0005")


def config_for(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[TrainConfig, str]:
    return config_for_model(args, meta, "encoder", "normal tiles")


def run(args: argparse.Namespace, accelerator: Any = None) -> int:
    model_path = Path(args.model)
    m = load_model(model_path)
    cfg, source = config_for(args, m.meta)
    normal, _, channels = resolve_data(cfg, source)
    run_dir = Path(args.run_dir) if args.run_dir else RunLayout(model_path.parent).encoder.root
    check_encoder_run_dir(run_dir, args.resume)  # before any process group or file exists
    acc = accelerator or make_accelerator(cfg, model_dir=model_path.parent, source=source)
    try:
        train_encoder(cfg, m.generator, m.discriminator, model_path, run_dir, acc, normal, channels, resume=args.resume)
    finally:
        shutdown(acc)
    if acc.is_main_process:
        print(f"encoder written into {model_path} (run folder {run_dir})")
    return 0


def launch_main(argv: list[str] | None = None) -> int:
    """Entry for `accelerate launch launch/train_encoder.py`: same options, one-line errors on every rank."""
    return launch_entry(argv, "launch/train_encoder.py", "Train nsgan's encoder under accelerate.", "train-encoder",
                        configure_parser, run)
