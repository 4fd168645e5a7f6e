"""nsgan: micro-defect detection with a progressive GAN trained on noisy normal data.

The public API lives here, loaded on first use (PEP 562), so `from nsgan import Scorer` does not
depend on the inner layout and importing `nsgan` (for its version, say) loads nothing else:

    from nsgan import Scorer, ScoreOptions, SearchConfig
    scorer = Scorer.from_pretrained("run/model.safetensors")
    result = scorer.score(image)            # .map, .score, .regions, .verdict

The rooms, bottom to top (imports run downward only; `lint-imports` checks it):
common (errors, atomic writes) · data · models · score · share · train, evaluate · cli, demo.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

# name -> "module" (the module defines that name) or "module:attribute" (a clearer public name for it).
# Importing nsgan sets nothing process-wide: the entry points do (nsgan.cli.set_process_defaults).
_API = {
    # scoring
    "Scorer": "nsgan.score.scorer", "ScoreResult": "nsgan.score.scorer", "ScoreOptions": "nsgan.score.options",
    "SearchConfig": "nsgan.score.search", "LocalContrast": "nsgan.score.baselines",
    # the choices, one enum each (their values are what configs, flags and JSON spell)
    "Inversion": "nsgan.score.choices", "Precision": "nsgan.score.choices", "Residual": "nsgan.score.choices",
    "ImageScore": "nsgan.score.choices", "Verdict": "nsgan.score.choices", "Backend": "nsgan.score.choices",
    "ThresholdSource": "nsgan.score.choices", "GanLossKind": "nsgan.models.losses", "Penalty": "nsgan.models.losses",
    "ComparatorLossKind": "nsgan.models.comparator_loss",
    "AugmentTransform": "nsgan.models.augment:Transform", "AugmentPadding": "nsgan.models.augment:Padding",
    # training
    "train": "nsgan.train.pipeline", "train_encoder": "nsgan.train.encoder_loop",
    "train_comparator": "nsgan.train.comparator_loop", "load_config": "nsgan.train.config",
    "TrainConfig": "nsgan.train.config", "RunLayout": "nsgan.train.layout",
    "weights_digest": "nsgan.train.common",  # how run.json's rank_digests and export_digest are made
    # data: shards, images, painted defects, bundled textures
    "write_shards": "nsgan.data.shards", "ShardSpec": "nsgan.data.shards", "read_manifest": "nsgan.data.stream",
    "ShardStream": "nsgan.data.stream", "measure_loader": "nsgan.data.stream",
    "read_image": "nsgan.data.imageio", "write_png": "nsgan.data.imageio", "list_images": "nsgan.data.imageio",
    "to_channels": "nsgan.data.imageio", "MASK_SUFFIX": "nsgan.data.imageio",
    "paint_defects": "nsgan.data.painter", "DEFECT_KINDS": "nsgan.data.painter:KINDS",
    "paint_blob_image": "nsgan.data.blobs", "BLOB_KIND": "nsgan.data.blobs:FAMILY",
    "SyntheticDefects": "nsgan.data.synthetic", "texture_image": "nsgan.data.textures", "TEXTURES": "nsgan.data.textures",
    # models and the model file
    "load_model": "nsgan.models.model_file", "save_model": "nsgan.models.model_file",
    "read_metadata": "nsgan.models.model_file", "add_encoder": "nsgan.models.model_file",
    "Generator": "nsgan.models.networks", "Discriminator": "nsgan.models.networks", "Encoder": "nsgan.models.encoder",
    "Comparator": "nsgan.models.comparator",
    # measuring: the commands, their test-folder reading and their metrics
    "evaluate": "nsgan.evaluate.evaluation", "calibrate": "nsgan.evaluate.calibrate", "audit": "nsgan.evaluate.audit",
    "read_test_set": "nsgan.evaluate.evaluation:collect", "check_test_set": "nsgan.evaluate.evaluation:check_items",
    "TestImage": "nsgan.evaluate.evaluation:Item", "GOOD_KIND": "nsgan.evaluate.evaluation:GOOD",
    "read_mask": "nsgan.evaluate.evaluation", "evaluation_table": "nsgan.evaluate.evaluation:summary_table",
    "image_auroc": "nsgan.evaluate.metrics", "best_f1": "nsgan.evaluate.metrics", "auroc_per_type": "nsgan.evaluate.metrics",
    "PixelMetrics": "nsgan.evaluate.metrics", "ScoreRange": "nsgan.evaluate.metrics", "AUPRO_MAX_FPR": "nsgan.evaluate.metrics",
    "PIXEL_METRIC_BINS": "nsgan.evaluate.metrics:DEFAULT_BINS",
    "plot_experiment": "nsgan.evaluate.plots",
    "AUDIT_SUSPECTS": "nsgan.evaluate.audit:SUSPECTS", "AUDIT_MASKS": "nsgan.evaluate.audit:MASKS",
    # sharing
    "export_onnx": "nsgan.share.onnx_export", "scorer_from_onnx": "nsgan.share.onnx_export",
    "write_card": "nsgan.share.card",
    # files written whole or not at all
    "atomic_write": "nsgan.common.atomic", "atomic_write_text": "nsgan.common.atomic",
    "atomic_write_json": "nsgan.common.atomic", "fsync_dir": "nsgan.common.atomic",
    # errors and exit codes
    "NsganError": "nsgan.common.errors", "ConfigError": "nsgan.common.errors", "DataError": "nsgan.common.errors",
    "ModelError": "nsgan.common.errors", "OutputError": "nsgan.common.errors", "TargetError": "nsgan.common.errors",
    "EXIT_OK": "nsgan.common.errors", "EXIT_FAILED": "nsgan.common.errors", "EXIT_USAGE": "nsgan.common.errors",
    "EXIT_DATA": "nsgan.common.errors", "EXIT_MODEL": "nsgan.common.errors", "EXIT_OUTPUT": "nsgan.common.errors",
    "EXIT_RUNTIME": "nsgan.common.errors", "EXIT_UNMET": "nsgan.common.errors", "EXIT_INTERRUPTED": "nsgan.common.errors",
    # the demo and its data
    "run_demo": "nsgan.demo", "build_demo_dataset": "nsgan.demo:build_dataset", "build_demo_image": "nsgan.demo:build_test_image",
}
__all__ = ["__version__", *_API]

# Public names that are also subpackages (nsgan.train, nsgan.evaluate): importing the subpackage makes the import
# system set nsgan.<name> to it, which would hide the function `from nsgan import train` means. The package keeps
# the function; the subpackage stays what `import`, `from nsgan.train import ...` and sys.modules give.
_SUBPACKAGE_NAMES = {"train", "evaluate"}


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _SUBPACKAGE_NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'nsgan' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value  # loaded once
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
