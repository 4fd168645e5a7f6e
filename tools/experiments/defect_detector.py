"""A defect detector for the textures protocol's tiles: what share of G's samples show a defect?

Issue 9's mechanism check. The abnormal penalty should keep G from drawing the defects hidden in
its dirty "normal" data, so the share of G's random samples that hold a defect should fall as γ
grows. Counting that needs a detector we can trust on tiles, trained here the protocol's way:
brick from the photo's training part at the protocol's scale, half of the tiles with one of the
painter's defects at the size a defect has in a tile; its figures (AUROC, true and false
positive rates at 0.5) are measured on tiles from the photo's test part and kept with it. An
experiment tool, not a product part: its weights stay in the experiment folder. Its small training loop is a
measuring instrument's, not a copy of the product's: nsgan has no tile classifier to call.

    python tools/experiments/defect_detector.py --model runs/x/cells/<cell>/run/model.safetensors --out runs/x/detector
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

import nsgan  # noqa: E402
from tools.protocols.textures import _material  # noqa: E402

# A protocol image is 64 px with defects under 1% of it (<= 41 px); a 32-px tile of it holds a
# defect in <= 4% of its pixels, so the detector's tiles get that budget.
DEFECT_FRACTION = {32: 0.04, 16: 0.16}


def tiles(n: int, size: int, part: str, seed: int, texture: str = "brick", downscale: int = 2):
    """n tiles (n, 1, size, size) in [0, 1], 8-bit like the protocol's PNGs; every other one painted."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 1, size, size), np.float32)
    y = np.zeros(n, np.float32)
    for i in range(n):
        img = _material(texture, size, rng, part, downscale)
        if i % 2:
            img, _, _ = nsgan.paint_defects(img, rng, count=1, max_area_frac=DEFECT_FRACTION[size])
            y[i] = 1
        x[i, 0] = np.round(np.clip(img[:, :, 0], 0, 1) * 255) / 255
    return torch.from_numpy(x), torch.from_numpy(y)


class Detector(nn.Module):
    """Small convnet, max-pooled over positions: a defect anywhere in the tile decides."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 1, 1))

    def forward(self, x):  # x in [0, 1]
        return self.body(x * 2 - 1).amax(dim=(1, 2, 3))


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(nsgan.image_auroc(scores, labels.astype(bool)))


def train(size: int, seed: int = 0, n_train: int = 6000, n_test: int = 2000, steps: int = 1500, log=print):
    """Train on fresh tiles of the photo's training part; measure on its test part."""
    torch.manual_seed(seed)
    xt, yt = tiles(n_train, size, "train", seed)
    xv, yv = tiles(n_test, size, "test", seed + 1)
    det = Detector()
    opt = torch.optim.Adam(det.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(len(xt), (64,), generator=gen)
        xb = xt[idx]
        k = int(torch.randint(4, (1,), generator=gen))
        xb = torch.rot90(xb, k, dims=(2, 3))
        loss = nn.functional.binary_cross_entropy_with_logits(det(xb), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 500 == 0:
            log(f"detector step {step + 1}: loss {loss.item():.3f}")
    det.eval()
    with torch.no_grad():
        p = torch.sigmoid(det(xv)).numpy()
    yv = yv.numpy()
    figures = {"size": size, "seed": seed, "n_train": n_train, "n_test": n_test, "steps": steps,
               "test_auroc": _auroc(p, yv), "test_tpr": float((p[yv == 1] > 0.5).mean()),
               "test_fpr": float((p[yv == 0] > 0.5).mean())}
    return det, figures


def load_or_train(folder: Path, size: int, log=print, **settings):
    """The detector for `size`-px tiles kept in `folder` (trained there on first use, `settings`
    passed to train())."""
    folder = Path(folder)
    weights, info = folder / f"detector-{size}.safetensors", folder / f"detector-{size}.json"
    det = Detector()
    if weights.is_file() and info.is_file():
        det.load_state_dict(load_file(weights))
        det.eval()
        return det, json.loads(info.read_text())
    det, figures = train(size, log=log, **settings)
    folder.mkdir(parents=True, exist_ok=True)
    nsgan.atomic_write(weights, lambda tmp: save_file(det.state_dict(), str(tmp)))
    nsgan.atomic_write_json(info, figures)
    log(f"detector {size} px: test AUROC {figures['test_auroc']:.3f}, TPR {figures['test_tpr']:.3f}, "
        f"FPR {figures['test_fpr']:.3f}")
    return det, figures


def defect_share(model: Path, det: Detector, n: int = 512, seed: int = 0) -> float:
    """The share of G's random samples (8-bit, like the data) the detector calls defective."""
    m = nsgan.load_model(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g = m.generator(torch.randn(n, m.latent_dim, generator=gen))
        g = torch.round((g.clamp(-1, 1) + 1) / 2 * 255) / 255
        p = torch.sigmoid(det(g))
    return float((p > 0.5).float().mean())


def tile_share(folder: Path, det: Detector, size: int, stride: int) -> tuple[float, int]:
    """The share of the tiles cut from a folder's images (as `nsgan shards` cuts them) the detector
    flags: its rate on real data, to read G's rate against."""
    flagged = total = 0
    for path in sorted(Path(folder).glob("*.png")):
        img = torch.from_numpy(nsgan.read_image(path)[:, :, :1].copy()).permute(2, 0, 1)[None]
        t = img.unfold(2, size, stride).unfold(3, size, stride).reshape(-1, 1, size, size)
        with torch.no_grad():
            flagged += int((torch.sigmoid(det(t)) > 0.5).sum())
        total += len(t)
    return flagged / max(total, 1), total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="*", default=[], help="model files whose G to measure")
    p.add_argument("--out", required=True, help="folder keeping the detector")
    p.add_argument("--size", type=int, default=32, choices=sorted(DEFECT_FRACTION))
    p.add_argument("--images", nargs="*", default=[], help="folders of real images: the share of their tiles flagged")
    p.add_argument("--stride", type=int, default=16, help="tile stride for --images")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        det, figures = load_or_train(Path(args.out), args.size)
        print(json.dumps(figures))
        for folder in args.images:
            share, n = tile_share(Path(folder), det, args.size, args.stride)
            print(f"{folder}: share of its {n} tiles with a defect {share:.3f}")
        for m in args.model:
            print(f"{m}: share of G's samples with a defect {defect_share(Path(m), det):.3f}")
    except nsgan.NsganError as err:  # a broken model or image: one line and its exit code, no traceback
        print(f"defect_detector: error: {err}", file=sys.stderr)
        return err.exit_code
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
