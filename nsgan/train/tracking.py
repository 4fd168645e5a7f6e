"""Experiment trackers (TensorBoard, W&B, MLflow, ...) through accelerate, beside metrics.jsonl.

`train.log_with` names them: `auto` (TensorBoard when its package is installed, else none), `none`,
or any tracker name accelerate supports (a name or a list). The Accelerator gets them with its
project folder at RUN/tb; the main process logs (accelerate's trackers are main-process-only):

  * the resolved config, flattened to scalars and strings, as the run's hyperparameters;
  * every metrics.jsonl row's numbers at the same steps, step = images seen, so a resumed run
    continues the same axis (TensorBoard is told to hide what a crashed run logged after the
    state it resumes from, as metrics.jsonl drops those lines);
  * the sample grids (GAN) and reconstruction grids (encoder) as images, TensorBoard only.

The GAN logs as run `gan`, the encoder as run `encoder`, both under the model's folder (RUN/tb).
metrics.jsonl stays the record; trackers are a view of it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import accelerate.utils as au
import numpy as np

from nsgan.common.errors import ConfigError
from nsgan.train.layout import TRACKERS

TB_DIR = TRACKERS  # tracker logs inside the run folder (beside model.safetensors)
EXTRA = {"tensorboard": "pip install 'nsgan[tracking]'"}  # nsgan's extras; other trackers: pip install NAME


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tensorboard_usable() -> bool:
    """What accelerate's TensorBoard tracker needs: torch.utils.tensorboard (the tensorboard package) or tensorboardX."""
    return _installed("tensorboard") or _installed("tensorboardX")


def _available(name: str) -> bool:
    if name == "tensorboard":
        return tensorboard_usable()
    check = getattr(au, f"is_{name}_available", None)
    return bool(check()) if check is not None else _installed(name)


def resolve_log_with(names: list[str], source: str = "<config>") -> list[str] | None:
    """The trackers to hand the Accelerator (None: none); ConfigError naming the package a named one lacks."""
    if not names or names == ["none"]:
        return None
    if names == ["auto"]:
        return ["tensorboard"] if tensorboard_usable() else None
    if names == ["all"]:
        return ["all"]
    for name in names:
        if name != "all" and not _available(name):
            fix = EXTRA.get(name, f"pip install {name}")
            raise ConfigError(f"{source}: key 'train.log_with' names {name}, but its package ({name}) is not installed; "
                              f"{fix}, or set train.log_with=none")
    return list(names)


def flat_hparams(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as `a.b.c` -> int/float/str/bool, what every tracker takes as hyperparameters."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        elif value is None:
            out[name] = ""
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def start(acc: Any, run: str, config: dict[str, Any], step: int = 0) -> None:
    """Open the trackers for run `run` (gan / encoder) with `config` as hyperparameters.

    Trackers a previous run of this Accelerator opened are closed first (the GAN's, when the encoder
    trains next with the same Accelerator). `step` > 0 is a resume: TensorBoard hides what an earlier
    process logged after that step, as metrics.jsonl drops those lines.
    """
    stop(acc)
    if not acc.log_with:
        return
    init_kwargs = {"tensorboard": {"purge_step": step + 1}} if step > 0 else {}
    acc.init_trackers(run, config=flat_hparams(config), init_kwargs=init_kwargs)


def log_scalars(acc: Any, row: dict[str, Any], step: int) -> None:
    """The numbers of a metrics.jsonl row at `step` (images seen); strings and the step itself stay out."""
    if not acc.trackers:
        return
    values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "images_seen"}
    acc.log(values, step=step)


def log_measured(acc: Any, row: dict[str, Any], step: int) -> None:
    """A measured row (its `kind`: sample_quality, ...) at `step`, its figures as `<kind>/<key>` so they group apart
    from the training rows' scalars; where and when it was measured stay out."""
    if not acc.trackers:
        return
    skip = {"images_seen", "kimg", "step", "resolution", "alpha"}
    kind = row.get("kind", "measured")
    values = {f"{kind}/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip}
    acc.log(values, step=step)


def log_grid(acc: Any, tag: str, grid: np.ndarray, step: int) -> None:
    """A sample grid (H, W, C uint8) as an image: TensorBoard only (other trackers get the scalars)."""
    if not (acc.trackers and acc.is_main_process):
        return
    for tracker in acc.trackers:
        if tracker.name == "tensorboard":
            writer = tracker.writer
            image = grid if grid.shape[2] == 3 else np.repeat(grid, 3, axis=2)
            writer.add_image(tag, image, global_step=step, dataformats="HWC")
            writer.flush()


def stop(acc: Any) -> None:
    """Close this Accelerator's open trackers (accelerate's end_training does this too, then drops the process group)."""
    for tracker in list(getattr(acc, "trackers", [])):
        try:
            tracker.finish()
        except Exception:
            pass  # a tracker that cannot close must not turn a finished run into a failure
    if getattr(acc, "trackers", None):
        acc.trackers.clear()


def logging_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / TB_DIR


__all__ = ["resolve_log_with", "flat_hparams", "start", "log_scalars", "log_measured", "log_grid", "stop", "logging_dir", "tensorboard_usable", "TB_DIR"]
