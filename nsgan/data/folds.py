"""Which cross-fitting fold each image of a folder belongs to, and the folds' scores on one scale (the out-of-fold
audit, nsgan/evaluate/audit.py, and the denoised comparator, nsgan/train/denoise.py).

A model scores the images it trained on in-sample: what it learned as normal stays quiet. The audit
therefore splits the folder into k folds and scores each fold with a comparator trained on the others
(confident learning's out-of-sample scores). The split is either

- by hash: each image's relative path (posix, as `nsgan shards` names a tile's `source`) is hashed
  with the seed (SHA-256), the images are ordered by that hash and dealt round the folds, so every
  fold holds ⌊n/k⌋ or ⌈n/k⌉ images and the split does not depend on the order a disk lists files
  (a grown folder is split anew: the audit then refuses the old OUT, its split differs); or
- from a fold file: JSON `{relative_path: fold}` naming every image of the folder exactly, folds
  0..k-1 each non-empty (e.g. to keep the images of one part together).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from nsgan.common.errors import ConfigError, DataError
from nsgan.data.stream import read_manifest


def _check_k(k: int, n: int, where: str) -> None:
    if k < 2:
        raise ConfigError(f"{where}: {k} folds; cross-fitting needs at least 2")
    if k > n:
        raise ConfigError(f"{where}: {k} folds but the folder holds only {n} image(s); choose at most {n}")


def assign_folds(names: Iterable[str], k: int, seed: int = 0, where: str = "audit.folds") -> dict[str, int]:
    """{name: fold} for the relative paths `names`: balanced (sizes differ by at most one), deterministic."""
    names = sorted(set(names))
    _check_k(int(k), len(names), where)
    keyed = sorted(names, key=lambda n: (hashlib.sha256(f"{int(seed)}:{n}".encode("utf-8", "surrogateescape")).hexdigest(), n))
    return {name: i % int(k) for i, name in enumerate(keyed)}


def read_fold_file(path: str | Path, names: Iterable[str]) -> dict[str, int]:
    """The {name: fold} of a JSON fold file, checked against the folder's images `names` (one-line errors)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: fold file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a JSON fold file ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        raise ConfigError(f"{path}: a fold file is one JSON object {{relative_path: fold number}}")
    names = set(names)
    unknown = sorted(set(raw) - names)
    if unknown:
        raise DataError(f"{path}: names {len(unknown)} image(s) not in the folder, e.g. {unknown[0]}")
    missing = sorted(names - set(raw))
    if missing:
        raise DataError(f"{path}: misses {len(missing)} image(s) of the folder, e.g. {missing[0]}")
    k = max(raw.values()) + 1 if raw else 0
    _check_k(k, len(names), str(path))
    empty = sorted(set(range(k)) - set(raw.values()))
    if min(raw.values()) < 0 or empty:
        raise ConfigError(f"{path}: folds must be numbered 0..{k - 1}, each with an image (fold {empty[0] if empty else min(raw.values())})")
    return dict(sorted(raw.items()))


def fold_digest(folds: dict[str, int]) -> str:
    """SHA-256 of an assignment: two audits with the same digest cross-fit the same split."""
    return hashlib.sha256(json.dumps(sorted(folds.items()), ensure_ascii=False).encode("utf-8", "surrogateescape")).hexdigest()


def held_out(folds: dict[str, int], fold: int) -> list[str]:
    """The names in `fold`, sorted."""
    return sorted(n for n, f in folds.items() if f == fold)


def fold_scale(scores: np.ndarray) -> np.ndarray:
    """One fold's raw image scores on the pooled scale: a robust z-score, (s − median) / (1.4826 · MAD).

    Each fold's C is another network, so its scores have their own offset and spread; pooled raw, the
    fold with the louder C would fill the top of the ranking. No clean normals are known to calibrate
    on (finding them is the audit's job), so the fold's own held-out images stand in: median and MAD
    stay put while fewer than half of them are dirty (the paper's 10–40 %), which a mean and standard
    deviation do not. Ranks within the fold would also share the scale, but they cap every fold's top
    at the same value whatever the fold holds (a fold without a dirty image would set its loudest
    normal beside the other fold's defects); a z-score keeps how far out an image lies. MAD 0 (a fold
    whose scores are mostly equal) falls back to the standard deviation, then to 1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    med = float(np.median(scores))
    spread = 1.4826 * float(np.median(np.abs(scores - med)))
    if not spread > 0:
        spread = float(np.std(scores)) or 1.0
    return (scores - med) / spread


def images_folder(data: str | Path) -> Path:
    """The folder of images (to audit, to fold): `data` itself, or the normal-images folder a shard set was cut from."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: no such folder")
    manifest = data / "manifest.json" if data.is_dir() else data if data.name == "manifest.json" else None
    if manifest is not None and manifest.is_file():
        root = read_manifest(manifest).get("inputs", {}).get("normal")
        if not root:
            raise DataError(f"{manifest}: names no normal-images folder (inputs.normal)")
        root = Path(root)
        if not root.is_absolute() and not root.is_dir():
            root = manifest.parent / root
        if not root.is_dir():
            raise DataError(f"{manifest}: its normal images ({root}) are not here; pass the image folder as --data")
        return root
    if not data.is_dir():
        raise DataError(f"{data}: not a folder of images nor a shard set (no manifest.json)")
    return data


SOURCES_SEEN = "sources_seen.json"  # in a comparator run folder: the source images its normal tiles came from


def sources_seen(run_dir: Path, held: Iterable[str]) -> list[str]:
    """The sources a fold's comparator run drew (its SOURCES_SEEN record); DataError if any of `held` is among them.

    Cannot happen while the stream filters by source; a fold comparator that saw its own images is worthless."""
    seen = json.loads((Path(run_dir) / SOURCES_SEEN).read_text(encoding="utf-8"))["seen"]
    leaked = sorted(set(seen) & set(held))
    if leaked:
        raise DataError(f"{run_dir}: the fold's comparator saw {len(leaked)} held-out image(s), e.g. {leaked[0]}")
    return seen


def pooling_scale(scores: np.ndarray) -> np.ndarray:
    """Scores on the scale the robust z is taken on: logits when every score is a probability (C's map, the default
    image score of a model with C), else as they are.

    C's image score is a top-k mean of sigmoid(C) and saturates near 1: at ε 0.4 on visible brick half of the dirty
    images scored 0.93–0.999, so no image lay 2 robust MADs above its fold's median (0 of 80 dirty found at z > 2);
    on the logit scale the saturated top is unbounded again (22 found at z > 2, all dirty; docs/noise.md)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size and np.all((s >= 0) & (s <= 1)):
        s = np.clip(s, 1e-6, 1 - 1e-6)
        return np.log(s / (1 - s))
    return s


def fold_z(scores: np.ndarray) -> np.ndarray:
    """One fold's raw image scores on the pooled scale: the robust z (`fold_scale`) of their `pooling_scale`."""
    return fold_scale(pooling_scale(scores))
