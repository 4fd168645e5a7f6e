"""Typed run configuration: YAML file + dotted `key=value` overrides, validated at the door.

Every key has a type and a default here; an unknown key, a wrong type or an impossible value is
a ConfigError naming the file and the key, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from accelerate.utils import LoggerType

from nsgan.common.errors import ConfigError
from nsgan.data.painter import KINDS as PAINTER_KINDS
from nsgan.models.augment import PADDINGS as AUGMENT_PADDINGS
from nsgan.models.augment import TRANSFORMS as AUGMENT_TRANSFORMS
from nsgan.models.comparator import REFERENCES
from nsgan.models.comparator_loss import LOSS_KINDS as COMPARATOR_LOSS_KINDS
from nsgan.models.losses import KINDS as GAN_LOSS_KINDS
from nsgan.models.losses import PENALTIES, Penalty, penalty_fits

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")  # auto: take accelerate's setting
# comparator.denoise (nsgan/train/denoise.py): none, or leave the normal images an out-of-fold C finds defective
# out of the final C's normal side (exclude); auto: exclude where the folds can be cut, else none, and say why
DENOISE_MODES = ("auto", "none", "exclude")


@dataclass
class DataConfig:
    normal: str = ""  # shard folder (with manifest.json), brace pattern, or list of tar paths
    abnormal: str = ""  # same, for labelled abnormal tiles; empty = none
    channels: int = 0  # 0 = take from the manifest / model
    num_workers: int = 2
    abnormal_fraction: float = 0.5  # abnormal batch = this × normal batch (at least 1)


@dataclass
class ModelConfig:
    resolution: int = 64  # final tile size; shards must hold tiles of this size
    latent_dim: int = 128
    fmap_base: int = 2048
    fmap_max: int = 128
    mbstd_group: int = 4
    patch_grid: int = 0  # side of D's patch-logit map (a power of two ≤ resolution/2); 0 = no patch head


@dataclass
class LossConfig:
    kind: str = "nsgan"  # nsgan (non-saturating + R1) or wgangp (original PGGAN)
    gamma: float = 0.0  # abnormal penalty γ; 0 = plain AnoGAN training. Shapes G and D: a map that reads neither (C beside blur) ignores it
    r1_gamma: float = 10.0
    gp_lambda: float = 10.0
    drift: float = 0.001
    penalty: str = "tile"  # where γ acts: tile (whole tile), patch_mask (masked patches), patch_mil (k least-real patches)
    mil_k: int = 1  # patch_mil: patches penalised per abnormal tile
    r1_every: int = 16  # R1 on every k-th D step, weighted by k (StyleGAN2's lazy regularisation); 1 = every step; wgangp's GP runs every step


@dataclass
class ScheduleSection:
    start_resolution: int = 4
    stable_kimg: float = 600.0
    fade_kimg: float = 600.0
    total_kimg: float = 12000.0
    batch: dict[int, int] = field(default_factory=lambda: {4: 16})  # per process, per resolution
    default_batch: int = 16
    lr: float = 0.001
    lr_per_res: dict[int, float] = field(default_factory=dict)


@dataclass
class TrainSection:
    mixed_precision: str = "auto"  # one of MIXED_PRECISION
    ema_kimg: float = 10.0  # half-life of the generator's moving average, in kimg
    beta1: float = 0.0
    beta2: float = 0.99
    checkpoint_kimg: float = 50.0  # resumable state every N kimg (and at the end)
    keep_checkpoints: int = 3
    log_every: int = 20  # steps between metric lines
    grid_size: int = 8  # sample grid is grid_size × grid_size
    display: bool = True  # rich live display on the main process
    # Experiment trackers, through accelerate (nsgan/train/tracking.py): auto (TensorBoard when installed, else none),
    # none, or accelerate tracker names (tensorboard, wandb, mlflow, ...); a name or a list. Logs go to RUN/tb.
    log_with: list[str] = field(default_factory=lambda: ["auto"])


@dataclass
class AugmentSection:
    """What D sees in the GAN phase, augmented (nsgan/models/augment.py: DiffAugment / ADA); off while p is 0 and
    adaptive is false. Reals, fakes and abnormal tiles alike; scoring, sample grids and the model file never augment."""

    policy: list[str] = field(default_factory=lambda: list(AUGMENT_TRANSFORMS))  # transforms; saturation acts on 3 channels only
    # Off by default: at the demo's 12 kimg p 0.3 and ADA both made G less varied (docs/sample_quality.md, issue 26)
    p: float = 0.0  # probability per image and transform (adaptive: where p starts)
    adaptive: bool = False  # ADA: move p so that E[sign(D(real))] stays at `target`
    target: float = 0.6  # ADA's r_t target
    speed_kimg: float = 10.0  # adaptive: p can cross 0 -> 1 in this many kimg (ADA: 500, for runs of 25 000 kimg)
    p_max: float = 0.8  # adaptive: p's ceiling (past ~0.8 turns and flips may leak into G, ADA §2.2)
    adjust_every: int = 4  # adaptive: D steps per adjustment of p
    translation: float = 0.125  # largest shift, as a share of the side
    padding: str = "zeros"  # translation's border: zeros or reflect
    cutout: float = 0.5  # cutout square's side, as a share of the side

    @property
    def active(self) -> bool:
        return bool(self.policy) and (self.p > 0 or self.adaptive)


@dataclass
class QualitySection:
    """G's sample quality (nsgan/models/sample_quality.py: PGGAN's multi-scale SWD beside its real-vs-real
    reference, and the per-pixel spread across z against the reals'), measured on the main process at every
    schedule phase's end and every periodic state, on the same reals and the same z each time.

    Cost at the defaults (measured, 1 thread on the shared 2-core CPU, 32-px gray tiles, 3 pyramid levels):
    about 1.5 s a measurement; it grows with samples × neighbourhoods × directions × repeats × levels.
    """

    samples: int = 128  # G's samples per measurement (0: off); the reals are twice as many (two halves: the reference)
    min_resolution: int = 8  # coarsest pyramid level, px (PGGAN: 16)
    neighbourhoods: int = 64  # 7×7 descriptors per image and level (PGGAN: 128)
    directions: int = 512  # random projections per repeat (PGGAN: 512)
    repeats: int = 4  # (PGGAN: 4)


@dataclass
class EncoderSection:
    """f-AnoGAN encoder trained after the GAN (nsgan/models/encoder.py); kimg 0 = no encoder."""

    kimg: float = 0.0  # normal tiles (thousands) shown to the encoder after the GAN's schedule ends
    batch: int = 32  # per process
    lr: float = 0.001
    kappa: float = 1.0  # weight of the D-feature term of the izi_f loss
    ziz: float = 1.0  # weight of the latent cycle E(G(z)) ≈ z on G's samples (0: izi_f alone, which collapsed here)
    denoise: float = 0.0  # share of each batch painted (comparator's painter settings) before E, the clean tile the target:
    # G(E(x)) then erases a defect (DRAEM's reconstructive role) instead of redrawing it; 0 = plain izi_f
    fmap_base: int = 0  # 0: the GAN's model.fmap_base
    fmap_max: int = 0  # 0: the GAN's model.fmap_max
    checkpoint_kimg: float = 0.0  # 0: train.checkpoint_kimg
    log_every: int = 20


@dataclass
class ComparatorSection:
    """The comparator C (nsgan/models/comparator.py) trained after the encoder, G, D and E frozen; kimg 0 = no C.

    Each step shows C `batch` tiles per process: `labelled_fraction` of them labelled abnormal tiles with
    masks (when the abnormal shards hold any; else normals take their place), the rest normal tiles of which
    `paint_fraction` get defects painted on the fly (nsgan/data/synthetic.py), the others stay plain (target
    0); plus `mil_bags` whole labelled images without masks (multiple-instance loss), when there are any.
    """

    kimg: float = 0.0  # tiles (thousands) shown to C; 0 = no comparator
    batch: int = 32  # per process
    lr: float = 0.003  # chosen with the bench's own loop at 53746ec (docs/comparator.md); 0.001 learned slower there
    # What C reads beside x: reconstruction (G(E(x))), blur (of x) or none. blur is the default: the bench's own loop
    # chose it beside a CPU-budget G, and the re-run through this trainer holds it (docs/comparator.md, "Through the
    # product trainer"); it needs no E or G.
    reference: str = "blur"
    blur_sigma: float = 2.0  # reference blur: its σ in pixels
    width: int = 8  # channels of every hidden layer (width 16 did no better in the bench loop's runs, docs/comparator.md)
    dilations: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4, 1])  # one 3×3 layer per entry
    kinds: list[str] = field(default_factory=lambda: ["scratch", "pit", "crack"])  # painter kinds drawn
    blob: bool = True  # also paint Perlin-noise blobs filled with displaced material (a family the painter does not draw)
    blob_fraction: float = 0.3  # share of painted defects that are blobs (when kinds is not empty)
    paint_fraction: float = 0.5  # share of the normal tiles painted
    # share of the normal tiles replaced by samples of the frozen G (drawn before painting, so some get painted too):
    # G's variety as extra normal material on C's normal side (issue 26 role c; 0 = real tiles only)
    gan_normals: float = 0.0
    labelled_fraction: float = 0.25  # share of the batch taken from labelled abnormal tiles with masks
    mil_bags: int = 1  # labelled images without masks per step (all their tiles)
    max_area_frac: float = 0.06  # largest painted defect, as a share of the tile
    contrast: list[float] = field(default_factory=lambda: [0.05, 0.5])  # painted contrast range
    blur: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])  # painted edge blurs (σ, px)
    loss: str = "focal_dice"  # focal_dice, focal, bce or bce_dice (nsgan/models/comparator_loss.py)
    focal_gamma: float = 2.0
    alpha: float = 0.75  # focal: weight of the defect class
    dice_weight: float = 1.0
    mil_k: int = 16  # multiple-instance loss: top-k pixels per image
    # 1.0 made C fire on normal texture when image-labelled images were many (the audit loop's r2/oracle arms:
    # pixel AUROC 0.51-0.70); 0.1 kept C's map (0.957): docs/comparator.md, "The multiple-instance weight"
    mil_weight: float = 0.1
    max_labelled_tiles: int = 200000  # labelled tiles held in memory at most
    checkpoint_kimg: float = 0.0  # 0: train.checkpoint_kimg
    log_every: int = 20
    # Training through the noise (issue 27, nsgan/train/denoise.py): exclude = before C, train `denoise_folds` fold
    # comparators each on the other folds' normal images, score each held-out fold with its C, pool the folds'
    # scores as robust z-scores and leave every image above `denoise_z` out of C's normal side. none: as before.
    # auto (the default): exclude when the shards' manifest names their source images and every fold has enough of
    # them (denoise.MIN_FOLD_IMAGES), else none, with the reason in the model file and card. Chosen on the visible
    # protocol (docs/noise.md): at ε 0.1 it costs nothing beyond 0.006 and halves gravel's seed spread; at ε 0.4 it
    # raises image AUROC on every texture
    denoise: str = "auto"
    denoise_folds: int = 2
    # robust z of the logit score (median/MAD of the fold). 2, not the usual outlier cut 3.5: a clean image left out
    # costs C little (it sees the others), a dirty one kept teaches C its defect is normal; at ε 0.4 on visible brick
    # z > 2 left out 22 images, all dirty, z > 3.5 only 2 of the 80 (docs/noise.md)
    denoise_z: float = 2.0
    # kimg of each fold C, at most comparator.kimg: a quarter of 32, so 2 folds cost about half a C training; the folds
    # only have to rank images, not draw a good map (configs/demo.yaml takes 4 to stay inside its 6 minutes)
    denoise_kimg: float = 8.0


@dataclass
class AuditSection:
    """`nsgan audit` of the training folder (nsgan/evaluate/audit.py): folds ≥ 2 scores every image with a comparator
    trained on the other folds only (k-fold cross-fitting, nsgan/data/folds.py); 0 = the model's own C scores the
    folder in-sample. A folder the model did not train on is scored by the model itself (held-out) whatever this
    says. The CLI's --folds / --fold-seed / --fold-file win over these. Default 2 by measurement (docs/noise.md:
    out of fold 0.976 against in-sample 0.970 at ε 0.1, visible protocol 3×3), for two C trainings."""

    folds: int = 2
    fold_seed: int = 0
    fold_file: str = ""  # JSON {relative_path: fold}; empty: by hash of the path and fold_seed


@dataclass
class TrainConfig:
    run_dir: str = "runs/run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    quality: QualitySection = field(default_factory=QualitySection)
    encoder: EncoderSection = field(default_factory=EncoderSection)
    comparator: ComparatorSection = field(default_factory=ComparatorSection)
    audit: AuditSection = field(default_factory=AuditSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Each key's allowed words, from the module that acts on them; checked once, in validate().
CHOICES = {
    "loss.kind": GAN_LOSS_KINDS,
    "loss.penalty": PENALTIES,
    "train.mixed_precision": MIXED_PRECISION,
    "comparator.reference": REFERENCES,
    "comparator.loss": COMPARATOR_LOSS_KINDS,
    "comparator.denoise": DENOISE_MODES,
    "augment.padding": AUGMENT_PADDINGS,
}


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Coerce a YAML/CLI value to `tp`, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: key '{key}' must be {expected}, got {value!r}")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return _build(tp, value, key + ".", source)
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {_convert(k, kt, f"{key}.{k}", source): _convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if origin is list:
        (it,) = typing.get_args(tp)
        if value is None:
            return []
        if isinstance(value, str):  # one name, or names separated by commas (handy on the command line)
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad("a name or a list")
        return [_convert(v, it, key, source) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad("true or false")
    if tp is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise bad("an integer")
    if tp is float:
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a number")
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, bool):  # YAML 1.1 reads a bare `no` (mixed_precision: no) as False
            return "yes" if value else "no"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise bad("a string")
    raise ConfigError(f"{source}: key '{key}' has an unsupported type")  # pragma: no cover


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            raise ConfigError(f"{source}: unknown key '{prefix}{k}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _convert(v, hints[k], prefix + k, source) for k, v in values.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override: key '{'.'.join(path)}' goes below a value that is not a mapping")
        node = child
    node[path[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] = (), has_encoder: bool | None = None) -> TrainConfig:
    """Read a YAML config (or only defaults when path is None), apply overrides, validate.

    `has_encoder`: whether the model a later phase trains for already holds E (None: `encoder.kimg` > 0 says)."""
    tree: dict[str, Any] = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"{p}: not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of keys")
        tree = loaded
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(tree, keys, value)
    cfg = _build(TrainConfig, tree, "", source)
    validate(cfg, source, has_encoder=has_encoder)
    return cfg


def _check(cond: bool, source: str, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{source}: key '{key}' {message}")


def validate(cfg: TrainConfig, source: str = "<config>", has_encoder: bool | None = None) -> None:
    """Values that parse but cannot work: bad choices, impossible sizes, γ without abnormal data."""
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _check(value in choices, source, key, f"must be one of {', '.join(choices)}, got {value!r}")
    m, s, t, d, lo = cfg.model, cfg.schedule, cfg.train, cfg.data, cfg.loss
    res_ok = m.resolution >= 4 and (m.resolution & (m.resolution - 1)) == 0
    _check(res_ok, source, "model.resolution", f"must be a power of two ≥ 4, got {m.resolution}")
    start_ok = 4 <= s.start_resolution <= m.resolution and (s.start_resolution & (s.start_resolution - 1)) == 0
    _check(start_ok, source, "schedule.start_resolution", f"must be a power of two between 4 and model.resolution, got {s.start_resolution}")
    _check(m.latent_dim >= 1, source, "model.latent_dim", "must be ≥ 1")
    _check(m.fmap_base >= 1 and m.fmap_max >= 1, source, "model.fmap_base", "and model.fmap_max must be ≥ 1")
    _check(m.mbstd_group >= 1, source, "model.mbstd_group", "must be ≥ 1")
    _check(lo.gamma >= 0, source, "loss.gamma", f"must be ≥ 0, got {lo.gamma}")
    _check(lo.r1_gamma >= 0, source, "loss.r1_gamma", "must be ≥ 0")
    _check(lo.r1_every >= 1, source, "loss.r1_every", f"must be an integer ≥ 1 (1: R1 on every D step), got {lo.r1_every}")
    _validate_patches(m, lo, source)
    _check(bool(d.normal), source, "data.normal", "is required: the normal shard folder or pattern")
    _check(d.channels in (0, 1, 3), source, "data.channels", f"must be 0 (from the data), 1 or 3, got {d.channels}")
    _check(d.num_workers >= 0, source, "data.num_workers", "must be ≥ 0")
    _check(0 < d.abnormal_fraction <= 4, source, "data.abnormal_fraction", "must be in (0, 4]")
    _check(not (lo.gamma > 0 and not d.abnormal), source, "loss.gamma",
           f"is {lo.gamma} but data.abnormal is not set: the abnormal penalty needs abnormal shards")
    for res, b in s.batch.items():
        _check(b >= 1, source, f"schedule.batch.{res}", f"must be ≥ 1, got {b}")
        _check(res >= 4 and (res & (res - 1)) == 0, source, f"schedule.batch.{res}", "must be keyed by a power-of-two resolution")
    _check(s.default_batch >= 1, source, "schedule.default_batch", "must be ≥ 1")
    _check(s.total_kimg > 0, source, "schedule.total_kimg", "must be > 0")
    _check(s.stable_kimg >= 0 and s.fade_kimg >= 0, source, "schedule.stable_kimg", "and schedule.fade_kimg must be ≥ 0")
    _check(s.lr > 0, source, "schedule.lr", "must be > 0")
    _check(t.ema_kimg >= 0, source, "train.ema_kimg", "must be ≥ 0")
    _check(t.checkpoint_kimg > 0, source, "train.checkpoint_kimg", "must be > 0")
    _check(t.keep_checkpoints >= 1, source, "train.keep_checkpoints", "must be ≥ 1")
    _check(t.log_every >= 1, source, "train.log_every", "must be ≥ 1")
    _check(1 <= t.grid_size <= 32, source, "train.grid_size", "must be between 1 and 32")
    _check(bool(cfg.run_dir), source, "run_dir", "is required")
    validate_trackers(t.log_with, source)
    validate_augment(cfg, source)
    validate_quality(cfg, source)
    validate_encoder(cfg, source)
    validate_comparator(cfg, source, has_encoder)
    validate_audit(cfg.audit, source)


def validate_audit(a: AuditSection, source: str = "<config>") -> None:
    _check(a.folds == 0 or a.folds >= 2, source, "audit.folds",
           f"must be 0 (in-sample) or a number of folds ≥ 2, got {a.folds}")


TRACKER_SWITCHES = ("auto", "none")  # nsgan's own words; everything else is an accelerate tracker name


def validate_trackers(names: list[str], source: str = "<config>") -> None:
    """`train.log_with`: auto or none alone, else names accelerate knows (whether installed is checked at start)."""
    known = LoggerType.list()
    for name in names:
        _check(name in TRACKER_SWITCHES or name in known, source, "train.log_with",
               f"names an unknown tracker {name!r} (known: {', '.join([*TRACKER_SWITCHES, *known])})")
    switches = [n for n in names if n in TRACKER_SWITCHES]
    _check(not switches or len(names) == 1, source, "train.log_with",
           f"is {names}: {switches[0] if switches else ''} cannot be combined with other trackers")


def validate_augment(cfg: TrainConfig, source: str = "<config>") -> None:
    a = cfg.augment
    for name in a.policy:
        _check(name in AUGMENT_TRANSFORMS, source, "augment.policy",
               f"names an unknown transform {name!r} (known: {', '.join(AUGMENT_TRANSFORMS)})")
    for key, ok, why in (
        ("p", 0 <= a.p <= 1, "must be in [0, 1] (0 and adaptive false: no augmentation)"),
        ("p_max", 0 < a.p_max <= 1, "must be in (0, 1]"),
        ("target", 0 < a.target < 1, "must be in (0, 1)"),
        ("speed_kimg", a.speed_kimg > 0, "must be > 0"),
        ("adjust_every", a.adjust_every >= 1, "must be ≥ 1"),
        ("translation", 0 < a.translation <= 0.5, "must be in (0, 0.5]"),
        ("cutout", 0 < a.cutout <= 1, "must be in (0, 1]"),
    ):
        value = getattr(a, key)
        _check(ok and value == value, source, f"augment.{key}", f"{why}, got {value}")
    _check(not a.adaptive or cfg.loss.kind == "nsgan", source, "augment.adaptive",
           f"needs loss.kind nsgan (ADA reads sign(D(real)) of the logistic loss), got {cfg.loss.kind}")
    _check(not a.adaptive or a.p <= a.p_max, source, "augment.p", f"is {a.p}, above augment.p_max = {a.p_max}: an adaptive p starts in [0, p_max]")


def validate_quality(cfg: TrainConfig, source: str = "<config>") -> None:
    q = cfg.quality
    for key, ok, why in (
        ("samples", q.samples == 0 or q.samples >= 2, "must be 0 (off) or ≥ 2"),
        ("min_resolution", q.min_resolution >= 1, "must be ≥ 1"),
        ("neighbourhoods", q.neighbourhoods >= 1, "must be ≥ 1"),
        ("directions", q.directions >= 1, "must be ≥ 1"),
        ("repeats", q.repeats >= 1, "must be ≥ 1"),
    ):
        _check(ok, source, f"quality.{key}", f"{why}, got {getattr(q, key)}")


def validate_encoder(cfg: TrainConfig, source: str = "<config>") -> None:
    e = cfg.encoder
    for key, ok, why in (
        ("kimg", e.kimg >= 0, "must be ≥ 0 (0: no encoder)"),
        ("batch", e.batch >= 1, "must be ≥ 1"),
        ("lr", e.lr > 0, "must be > 0"),
        ("kappa", e.kappa >= 0, "must be ≥ 0"),
        ("ziz", e.ziz >= 0, "must be ≥ 0"),
        ("denoise", 0 <= e.denoise <= 1, "must be in [0, 1] (the share of each batch painted before E)"),
        ("fmap_base", e.fmap_base >= 0, "must be ≥ 0 (0: the GAN's)"),
        ("fmap_max", e.fmap_max >= 0, "must be ≥ 0 (0: the GAN's)"),
        ("checkpoint_kimg", e.checkpoint_kimg >= 0, "must be ≥ 0 (0: train.checkpoint_kimg)"),
        ("log_every", e.log_every >= 1, "must be ≥ 1"),
    ):
        value = getattr(e, key)
        _check(ok and value == value, source, f"encoder.{key}", f"{why}, got {value}")


def validate_comparator(cfg: TrainConfig, source: str = "<config>", has_encoder: bool | None = None) -> None:
    """The `comparator:` section; `has_encoder`: whether the model C is trained for holds E (None: encoder.kimg > 0)."""
    c = cfg.comparator
    for key, ok, why in (
        ("kimg", c.kimg >= 0, "must be ≥ 0 (0: no comparator)"),
        ("batch", c.batch >= 1, "must be ≥ 1"),
        ("lr", c.lr > 0, "must be > 0"),
        ("blur_sigma", 0 < c.blur_sigma <= 16, "must be in (0, 16]"),
        ("width", c.width >= 1, "must be ≥ 1"),
        ("blob_fraction", 0 <= c.blob_fraction <= 1, "must be in [0, 1]"),
        ("paint_fraction", 0 <= c.paint_fraction <= 1, "must be in [0, 1]"),
        ("gan_normals", 0 <= c.gan_normals < 1, "must be in [0, 1) (the share of the normal tiles drawn by G)"),
        ("labelled_fraction", 0 <= c.labelled_fraction < 1, "must be in [0, 1)"),
        ("mil_bags", c.mil_bags >= 0, "must be ≥ 0"),
        ("max_area_frac", 0 < c.max_area_frac <= 0.5, "must be in (0, 0.5]"),
        ("focal_gamma", c.focal_gamma >= 0, "must be ≥ 0"),
        ("alpha", 0 < c.alpha < 1, "must be in (0, 1)"),
        ("dice_weight", c.dice_weight >= 0, "must be ≥ 0"),
        ("mil_k", c.mil_k >= 1, "must be ≥ 1"),
        ("mil_weight", c.mil_weight >= 0, "must be ≥ 0"),
        ("max_labelled_tiles", c.max_labelled_tiles >= 1, "must be ≥ 1"),
        ("checkpoint_kimg", c.checkpoint_kimg >= 0, "must be ≥ 0 (0: train.checkpoint_kimg)"),
        ("log_every", c.log_every >= 1, "must be ≥ 1"),
        ("denoise_folds", c.denoise_folds >= 2, "must be ≥ 2 (cross-fitting needs two folds)"),
        ("denoise_z", 0 < c.denoise_z < float("inf"), "must be a finite robust z-score > 0"),
        ("denoise_kimg", 0 < c.denoise_kimg < float("inf"), "must be > 0 (the kimg of each fold comparator)"),
    ):
        value = getattr(c, key)
        _check(ok and value == value, source, f"comparator.{key}", f"{why}, got {value}")
    r = cfg.model.resolution
    _check(bool(c.dilations) and all(1 <= d < r for d in c.dilations), source, "comparator.dilations",
           f"must be a non-empty list of integers in [1, model.resolution = {r}), got {c.dilations}")
    for kind in c.kinds:
        _check(kind in PAINTER_KINDS, source, "comparator.kinds",
               f"names an unknown defect kind {kind!r} (known: {', '.join(PAINTER_KINDS)})")
    _check(bool(c.kinds) or c.blob or c.paint_fraction == 0, source, "comparator.kinds",
           "is empty and comparator.blob is false: nothing to paint (set comparator.paint_fraction=0 to paint nothing)")
    _check(len(c.contrast) == 2 and 0 < c.contrast[0] <= c.contrast[1] <= 1, source, "comparator.contrast",
           f"must be [low, high] with 0 < low ≤ high ≤ 1, got {c.contrast}")
    _check(bool(c.blur) and all(0 <= b <= 4 for b in c.blur), source, "comparator.blur",
           f"must be a non-empty list of edge blurs in [0, 4] px, got {c.blur}")
    if c.kimg > 0 and c.reference == "reconstruction":
        has_e = cfg.encoder.kimg > 0 if has_encoder is None else has_encoder
        _check(has_e, source, "comparator.reference",
               "is reconstruction, which needs an encoder: set encoder.kimg > 0 (or add one with `nsgan train-encoder`), "
               "or choose comparator.reference blur or none")


def _validate_patches(m: ModelConfig, lo: LossConfig, source: str) -> None:
    """The patch head and the penalty forms that need it go together."""
    g = m.patch_grid
    _check(g == 0 or (4 <= g <= m.resolution // 2 and g & (g - 1) == 0), source, "model.patch_grid",
           f"must be 0 (no patch head) or a power of two between 4 and model.resolution/2 = {m.resolution // 2}, got {g}")
    _check(lo.mil_k >= 1, source, "loss.mil_k", f"must be ≥ 1, got {lo.mil_k}")
    if not Penalty(lo.penalty).on_patches:
        _check(g == 0, source, "model.patch_grid", f"is {g} but loss.penalty is tile: the patch head would not be trained; "
               "set model.patch_grid=0 or choose loss.penalty patch_mask or patch_mil")
        return
    _check(penalty_fits(lo.kind, lo.penalty), source, "loss.penalty", f"is {lo.penalty}, which needs loss.kind nsgan, got {lo.kind}")
    _check(g > 0, source, "model.patch_grid", f"must be set (e.g. {min(8, m.resolution // 2)}) for loss.penalty {lo.penalty}: "
           "the penalty acts on D's patch logits")
    if lo.penalty == Penalty.PATCH_MIL:
        _check(lo.mil_k <= g * g, source, "loss.mil_k", f"is {lo.mil_k}, more than the {g * g} patches of a tile")


def config_from_dict(values: dict[str, Any], source: str = "<saved config>", has_encoder: bool | None = None) -> TrainConfig:
    """Rebuild a TrainConfig from `to_dict()` output (e.g. the copy saved in a run)."""
    cfg = _build(TrainConfig, values, "", source)
    validate(cfg, source, has_encoder=has_encoder)
    return cfg
