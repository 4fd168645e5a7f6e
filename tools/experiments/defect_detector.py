"""A defect detector for the textures protocol's tiles: what share of G's samples show a defect?

Issue 9's mechanism check. The abnormal penalty should keep G from drawing the defects hidden in
its dirty "normal" data, so the share of G's random samples that hold a defect should fall as γ
grows. Counting that needs a detector we can trust on tiles. The detector is the product's own
comparator C (issue 24: an experiment measures the product): `nsgan train-comparator` with the
demo's comparator settings (C reading x beside its blur, which never reads G) trains C onto a copy
of the measured model, on normal tiles from the photo's training part at the protocol's scale; C
paints its own defects as it does for users. A tile's score is the model's image score
(`nsgan.Scorer`, one tile per image); a tile is flagged above the score that FPR_TARGET of fresh
normal tiles from the photo's test part exceed. Its figures (AUROC, true and false positive rates at
that threshold, on other test-part tiles, every other one painted with one of the painter's defects
at the size a defect has in a tile) are kept with it. An experiment tool: its files stay in the
experiment folder.

    python tools/experiments/defect_detector.py --model runs/x/cells/<cell>/run/model.safetensors --out runs/x/detector
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

import nsgan  # noqa: E402
from tools.protocols.textures import _material  # noqa: E402

# A protocol image is 64 px with defects under 1% of it (<= 41 px); a 32-px tile of it holds a
# defect in <= 4% of its pixels, so the detector's painted test tiles get that budget.
DEFECT_FRACTION = {32: 0.04, 16: 0.16}
FPR_TARGET = 0.05  # the share of clean held-out tiles the detector may flag
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


def tiles(n: int, size: int, part: str, seed: int, texture: str = "brick", downscale: int = 2, painted: bool = True):
    """n tiles (n, 1, size, size) in [0, 1], 8-bit like the protocol's PNGs; with `painted`, every other one
    holds one of the painter's defects (label 1)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 1, size, size), np.float32)
    y = np.zeros(n, np.float32)
    for i in range(n):
        img = _material(texture, size, rng, part, downscale)
        if painted and i % 2:
            img, _, _ = nsgan.paint_defects(img, rng, count=1, max_area_frac=DEFECT_FRACTION[size])
            y[i] = 1
        x[i, 0] = np.round(np.clip(img[:, :, 0], 0, 1) * 255) / 255
    return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class Detector:
    """The product's scorer over a model file holding C, and the score above which a tile is flagged."""

    scorer: nsgan.Scorer
    threshold: float

    @classmethod
    def from_file(cls, model: Path, threshold: float, size: int) -> "Detector":
        opts = nsgan.ScoreOptions(stride=size, batch=512)
        return cls(nsgan.Scorer.from_file(model, opts, progress=False), threshold)

    def scores(self, x: torch.Tensor) -> np.ndarray:
        """The image score of each tile (N, 1, S, S) in [0, 1]."""
        arrays = [t.permute(1, 2, 0).numpy() for t in x]
        return np.array([r.score for r in self.scorer.score_all(arrays)], np.float64)

    def flags(self, x: torch.Tensor) -> np.ndarray:
        return self.scores(x) > self.threshold


def _write_tiles(folder: Path, x: torch.Tensor) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(x):
        nsgan.write_png(folder / f"{i:05d}.png", t.permute(1, 2, 0).numpy())


def train(size: int, model: Path, folder: Path, seed: int = 0, n_train: int = 6000, n_test: int = 2000, kimg: float = 32,
          log=print, threads: int = 1):
    """C trained by `nsgan train-comparator` onto a copy of `model` (kept as folder/detector-SIZE.safetensors) on
    normal tiles of the photo's training part; threshold and figures from tiles of its test part."""
    work = folder / f"work-{size}"
    shutil.rmtree(work, ignore_errors=True)
    normal, _ = tiles(n_train, size, "train", seed, painted=False)
    _write_tiles(work / "normal", normal)
    shards = work / "shards"
    nsgan.write_shards(nsgan.ShardSpec(work / "normal", tile=size, out=shards, stride=size, channels=1, seed=seed), overwrite=True)
    carrier = folder / f"detector-{size}.safetensors"
    shutil.copy2(model, carrier)
    cmd = [sys.executable, "-m", "nsgan.cli", "train-comparator", "--model", str(carrier), "--config", str(DEMO_CONFIG),
           "--run-dir", str(work / "comparator"), f"model.resolution={size}", f"data.normal={shards / 'normal'}",
           "data.abnormal=", "loss.gamma=0", "data.num_workers=0", "train.display=false", "train.log_with=none", f"seed={seed}",
           "comparator.reference=blur", f"comparator.kimg={kimg}"]
    log(f"detector {size} px: {' '.join(cmd)}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    det = Detector.from_file(carrier, float("inf"), size)
    clean, _ = tiles(max(n_test // 2, 2), size, "test", seed + 2, painted=False)
    det.threshold = float(np.quantile(det.scores(clean), 1 - FPR_TARGET))
    xv, yv = tiles(n_test, size, "test", seed + 1)
    s, yv = det.scores(xv), yv.numpy().astype(bool)
    flagged = s > det.threshold
    figures = {"size": size, "seed": seed, "n_train": n_train, "n_test": n_test, "kimg": kimg, "threshold": det.threshold,
               "threshold_rule": f"{1 - FPR_TARGET:g} quantile of {len(clean)} clean test-part tiles",
               "test_auroc": float(nsgan.image_auroc(s, yv)), "test_tpr": float(flagged[yv].mean()),
               "test_fpr": float(flagged[~yv].mean())}
    shutil.rmtree(work, ignore_errors=True)  # the tiles and shards: the model file and the figures are what is kept
    return det, figures


def load_or_train(folder: Path, size: int, model: Path, log=print, **settings):
    """The detector for `size`-px tiles kept in `folder` (trained there on first use onto a copy of `model`, whose
    resolution must be `size`; `settings` passed to train())."""
    folder = Path(folder)
    carrier, info = folder / f"detector-{size}.safetensors", folder / f"detector-{size}.json"
    if carrier.is_file() and info.is_file():
        figures = json.loads(info.read_text())
        return Detector.from_file(carrier, float(figures["threshold"]), size), figures
    if model is None:
        raise nsgan.DataError(f"{folder}: holds no {size}-px detector yet; pass --model (the model file that carries C)")
    folder.mkdir(parents=True, exist_ok=True)
    det, figures = train(size, Path(model), folder, log=log, **settings)
    nsgan.atomic_write_json(info, figures)
    log(f"detector {size} px: test AUROC {figures['test_auroc']:.3f}, TPR {figures['test_tpr']:.3f}, "
        f"FPR {figures['test_fpr']:.3f}")
    return det, figures


def defect_share(model: Path, det: Detector, n: int = 512, seed: int = 0) -> float:
    """The share of G's random samples (8-bit, like the data) the detector flags."""
    m = nsgan.load_model(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g = m.generator(torch.randn(n, m.latent_dim, generator=gen))
        g = torch.round((g.clamp(-1, 1) + 1) / 2 * 255) / 255
    return float(det.flags(g).mean())


def tile_share(folder: Path, det: Detector, size: int, stride: int) -> tuple[float, int]:
    """The share of the tiles cut from a folder's images (as `nsgan shards` cuts them) the detector
    flags: its rate on real data, to read G's rate against."""
    flagged = total = 0
    for path in sorted(Path(folder).glob("*.png")):
        img = torch.from_numpy(nsgan.read_image(path)[:, :, :1].copy()).permute(2, 0, 1)[None]
        t = img.unfold(2, size, stride).unfold(3, size, stride).reshape(-1, 1, size, size)
        flagged += int(det.flags(t).sum())
        total += len(t)
    return flagged / max(total, 1), total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="*", default=[], help="model files whose G to measure (the first one carries C)")
    p.add_argument("--out", required=True, help="folder keeping the detector")
    p.add_argument("--size", type=int, default=32, choices=sorted(DEFECT_FRACTION))
    p.add_argument("--images", nargs="*", default=[], help="folders of real images: the share of their tiles flagged")
    p.add_argument("--stride", type=int, default=16, help="tile stride for --images")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        det, figures = load_or_train(Path(args.out), args.size, Path(args.model[0]) if args.model else None)
        print(json.dumps(figures))
        for folder in args.images:
            share, n = tile_share(Path(folder), det, args.size, args.stride)
            print(f"{folder}: share of its {n} tiles with a defect {share:.3f}")
        for m in args.model:
            print(f"{m}: share of G's samples with a defect {defect_share(Path(m), det):.3f}")
    except nsgan.NsganError as err:  # a broken model or image: one line and its exit code, no traceback
        print(f"defect_detector: error: {err}", file=sys.stderr)
        return err.exit_code
    except subprocess.CalledProcessError as err:  # train-comparator printed its own one-line error
        return err.returncode
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
