"""The config a command that adds a network to an existing model file means (train-encoder, train-comparator)."""

from __future__ import annotations

import argparse
from typing import Any

from nsgan.common.errors import ConfigError
from nsgan.train.config import (
    TrainConfig,
    apply_override,
    config_from_dict,
    load_config,
    parse_override,
)


def config_for_model(args: argparse.Namespace, meta: dict[str, Any], phase: str, what: str,
                     **load_kwargs: Any) -> tuple[TrainConfig, str]:
    """--config + overrides, else the model's own stored config + overrides; `phase`.kimg must be > 0
    (`what`: what it counts, for the message); model.resolution must match and data.channels comes from
    the model file. `load_kwargs` go to load_config / config_from_dict as they are."""
    if args.config:
        cfg, source = load_config(args.config, args.overrides, **load_kwargs), args.config
    else:
        source = f"{args.model} (stored config)"
        tree = dict(meta.get("config") or {})
        if not tree:
            raise ConfigError(f"{args.model}: holds no training config; pass --config")
        for text in args.overrides:
            keys, value = parse_override(text)
            apply_override(tree, keys, value)
        cfg = config_from_dict(tree, source=source, **load_kwargs)
    if getattr(cfg, phase).kimg <= 0:
        raise ConfigError(f"{source}: key '{phase}.kimg' is 0: pass {phase}.kimg=N (thousands of {what} to train the {phase} on)")
    res, ch = int(meta["resolution"]), int(meta["channels"])
    if cfg.model.resolution != res:
        raise ConfigError(f"{source}: key 'model.resolution' is {cfg.model.resolution} but the model is {res} px")
    cfg.data.channels = ch
    return cfg, source
