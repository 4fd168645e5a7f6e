"""nsgan: micro-defect detection with a progressive GAN trained on noisy normal data.

The public API lives here, loaded on first use (PEP 562), so `from nsgan import Scorer` does not
depend on the inner layout and importing `nsgan` (for its version, say) loads nothing else:

    from nsgan import Scorer, ScoreOptions, SearchConfig
    scorer = Scorer.from_pretrained("run/model.safetensors")
    result = scorer.score(image)            # .map, .score, .regions, .verdict

The rooms, bottom to top (imports run downward only; `lint-imports` checks it):
common (errors, atomic writes) · data · models · score · share · train, evaluate · cli, demo.
"""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting make torch 10-25x slower on a CPU shared with any other
# busy process (measured here: 3 vs 87 img/s for the demo's networks). Sleeping waiters cost little
# when the machine is quiet. Must be set before torch loads; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# DeepSpeed (imported by accelerate when installed) warns "Setting accelerator to CPU. If you have
# GPU ..." on every start when it finds no GPU. With torch's CPU wheel there can be none: say so.
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    if _version("torch").endswith("+cpu"):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
except PackageNotFoundError:  # torch not installed as a distribution (a source build): leave DeepSpeed to detect
    pass

# name -> module that defines it
_API = {
    # scoring
    "Scorer": "nsgan.score.scorer", "ScoreResult": "nsgan.score.scorer", "ScoreOptions": "nsgan.score.options",
    "SearchConfig": "nsgan.score.search", "LocalContrast": "nsgan.score.baselines",
    # training
    "train": "nsgan.train.pipeline", "train_encoder": "nsgan.train.encoder_loop",
    "train_comparator": "nsgan.train.comparator_loop", "load_config": "nsgan.train.config",
    "TrainConfig": "nsgan.train.config", "RunLayout": "nsgan.train.layout",
    # data
    "write_shards": "nsgan.data.shards", "ShardStream": "nsgan.data.stream", "read_image": "nsgan.data.imageio",
    "paint_defects": "nsgan.data.painter", "texture_image": "nsgan.data.textures",
    # models
    "load_model": "nsgan.models.model_file", "save_model": "nsgan.models.model_file", "Comparator": "nsgan.models.comparator",
    # measuring
    "evaluate": "nsgan.evaluate.evaluation", "calibrate": "nsgan.evaluate.calibrate", "audit": "nsgan.evaluate.audit",
    # sharing
    "export_onnx": "nsgan.share.onnx_export", "scorer_from_onnx": "nsgan.share.onnx_export",
    "write_card": "nsgan.share.card",
    # errors
    "NsganError": "nsgan.common.errors", "ConfigError": "nsgan.common.errors", "DataError": "nsgan.common.errors",
    "ModelError": "nsgan.common.errors", "OutputError": "nsgan.common.errors",
    # the demo
    "run_demo": "nsgan.demo",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'nsgan' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # loaded once
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
