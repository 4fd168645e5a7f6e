"""Which cross-fitting fold each image of a folder belongs to (the out-of-fold audit, nsgan/evaluate/audit.py).

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

from nsgan.common.errors import ConfigError, DataError


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
