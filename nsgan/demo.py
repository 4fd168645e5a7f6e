"""`nsgan demo`: the whole product on a fresh machine, offline, in minutes on a CPU.

Builds a small factory-like dataset from a real texture photo bundled in scikit-image (brick),
paints micro-scratches, pits and cracks into it — a few hidden among the "normal" images, as in
real dirty data, and some labelled with masks — writes shards, trains `configs/demo.yaml`, and
exports the model. Then it scores a full-size image with painted defects and says where to look.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import tifffile
from rich.console import Console

from nsgan.common.atomic import atomic_write_json
from nsgan.common.errors import ConfigError, OutputError
from nsgan.data.imageio import read_image, write_png
from nsgan.data.painter import paint_defects
from nsgan.data.shards import ShardSpec, write_shards
from nsgan.data.textures import texture_image
from nsgan.evaluate.metrics import image_auroc
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer
from nsgan.score.search import SearchConfig
from nsgan.share.html_page import write_score_page
from nsgan.train.config import load_config
from nsgan.train.layout import RunLayout
from nsgan.train.pipeline import train

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def _downscale2(img: np.ndarray) -> np.ndarray:
    """Block-average by 2: a photo at half scale, so one small tile holds a few bricks."""
    h, w, c = img.shape
    return img[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))


def _material(texture: str, size: int, rng: np.random.Generator, part: str = "train") -> np.ndarray:
    """Material at half the photo's scale; test images come from a part of the photo training never sees."""
    return _downscale2(texture_image(texture, 2 * size, rng, part=part))


def build_dataset(root: Path, texture: str = "brick", n_normal: int = 60, n_abnormal: int = 12,
                  hidden_fraction: float = 0.1, size: int = 128, seed: int = 0) -> dict:
    """Write normal (some secretly defective), abnormal and mask PNGs; return what was made."""
    rng = np.random.default_rng(seed)
    dirs = {k: root / k for k in ("normal", "abnormal", "abnormal_masks")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    hidden = set(rng.choice(n_normal, size=int(round(hidden_fraction * n_normal)), replace=False).tolist())
    for i in range(n_normal):
        img = _material(texture, size, rng)
        if i in hidden:  # dirty "normal" data: a defect nobody labelled
            img, _, _ = paint_defects(img, rng, count=1, max_area_frac=0.008)
        write_png(dirs["normal"] / f"normal_{i:04d}.png", img)
    for i in range(n_abnormal):
        img, mask, _ = paint_defects(_material(texture, size, rng), rng, count=int(rng.integers(1, 3)), max_area_frac=0.008)
        write_png(dirs["abnormal"] / f"defect_{i:04d}.png", img)
        write_png(dirs["abnormal_masks"] / f"defect_{i:04d}.png", mask.astype(np.float32)[:, :, None])
    return {"texture": texture, "normal": n_normal, "hidden_defects": len(hidden), "abnormal": n_abnormal, "size": size}


def build_test_image(root: Path, texture: str = "brick", size: int = 256, seed: int = 1) -> tuple[Path, Path]:
    """One full-size image with painted defects and its mask (what the demo scores)."""
    rng = np.random.default_rng(seed)
    img, mask, _ = paint_defects(_material(texture, size, rng, part="test"), rng, count=3, max_area_frac=0.005)
    root.mkdir(parents=True, exist_ok=True)
    image_path, mask_path = root / "part_full.png", root / "part_full_mask.png"
    write_png(image_path, img)
    write_png(mask_path, mask.astype(np.float32)[:, :, None])
    return image_path, mask_path


DEMO_MARKER = ".nsgan-demo"
DEMO_ENTRIES = {DEMO_MARKER, "demo.json", "data", "shards", "run", "score"}


def is_earlier_demo(out: Path) -> bool:
    """Only a folder `nsgan demo` wrote (its marker or demo.json, and nothing else) may be replaced."""
    names = {p.name for p in out.iterdir()}
    return bool(names & {DEMO_MARKER, "demo.json"}) and names <= DEMO_ENTRIES


def run_demo(out: str | Path, *, config: str | Path = DEFAULT_CONFIG, texture: str = "brick", seed: int = 0,
             overwrite: bool = False, image_size: int = 256, search_iterations: int | None = None,
             overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Build the demo in `out` (replacing only an earlier demo, with overwrite), train, score; returns demo.json's summary."""
    console = Console(soft_wrap=True)  # paths stay whole, so they can be copied
    out, config = Path(out), str(config)
    if not Path(config).is_file():
        raise ConfigError(f"{config}: demo config not found (run from a source checkout, or pass --config)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not is_earlier_demo(out):
            raise OutputError(f"{out}: not empty and not an earlier nsgan demo; choose another --out (--overwrite only replaces a demo)")
        if not overwrite:
            raise OutputError(f"{out}: not empty; pass --overwrite to replace the earlier demo")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / DEMO_MARKER).write_text("written by `nsgan demo`: --overwrite may replace this folder\n")
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the demo here ({exc.strerror or exc})") from None
    t0 = time.perf_counter()
    console.rule("[bold]nsgan demo")
    console.print(f"1/4 painting a dataset from the bundled '{texture}' photo → {out / 'data'}")
    made = build_dataset(out / "data", texture=texture, seed=seed)
    console.print(f"    {made['normal']} normal images ({made['hidden_defects']} with unlabelled defects), "
                  f"{made['abnormal']} labelled defective images with masks")
    cfg = load_config(config, [
        f"data.normal={out / 'shards' / 'normal'}", f"data.abnormal={out / 'shards' / 'abnormal'}",
        f"run_dir={out / 'run'}", f"seed={seed}", *overrides,
    ])
    console.print(f"2/4 writing {cfg.model.resolution}-px tile shards → {out / 'shards'}")
    manifest = write_shards(ShardSpec(out / "data" / "normal", abnormal_dir=out / "data" / "abnormal",
                                      abnormal_masks_dir=out / "data" / "abnormal_masks", tile=cfg.model.resolution,
                                      out=out / "shards", stride=cfg.model.resolution // 2, channels=1, seed=seed))
    console.print(f"    {manifest['counts']['tiles_normal']} normal tiles, {manifest['counts']['tiles_abnormal']} abnormal tiles")
    console.print(f"3/4 training {config} (γ = {cfg.loss.gamma}, {cfg.schedule.total_kimg:g} kimg) → {out / 'run'}")
    model = train(cfg, source=config)
    run = RunLayout(out / "run")
    summary = {"data": made, "model": str(model), "samples": str(run.samples), "train_minutes": round((time.perf_counter() - t0) / 60, 2)}
    console.print(f"4/4 scoring a full-size image with painted defects → {out / 'score'}")
    summary.update(_score_full_image(out, model, texture, seed, console, image_size, search_iterations))
    summary["total_minutes"] = round((time.perf_counter() - t0) / 60, 2)
    atomic_write_json(out / "demo.json", summary, indent=1)
    console.rule("[bold green]done")
    console.print(f"model:          {model}")
    console.print(f"sample grids:   {run.samples} (reals.png = training tiles, final.png = generated)")
    console.print(f"metrics:        {run.metrics}")
    if summary.get("overlay"):
        console.print(f"anomaly overlay: {summary['overlay']}")
        console.print(f"report:          {summary['report']}")
    console.print(f"total time:     {summary['total_minutes']:.1f} min")
    return summary


def _score_full_image(out: Path, model: Path, texture: str, seed: int, console, size: int, iterations: int) -> dict:
    """Score a full-size test image with painted defects; say whether the top region hits one."""
    image, mask_path = build_test_image(out / "data" / "test", texture=texture, size=size, seed=seed + 1)
    options = ScoreOptions(search=SearchConfig(iterations=iterations, restarts=1, seed=seed))  # else nsgan score's defaults
    scorer = Scorer.from_file(model, options, progress=True)
    result = scorer.score_to_files(image, out / "score")
    mask = read_image(mask_path)[:, :, 0] > 0.5
    hits = []
    for region in sorted(result.regions, key=lambda r: -r.peak)[:3]:
        x0, y0, x1, y1 = region.bbox
        hits.append(bool(mask[y0:y1, x0:x1].any()))
    write_score_page(out / "score")  # the same index.html `nsgan score` writes
    amap = tifffile.imread(result.map_path)
    pixel_auroc = image_auroc(amap.ravel(), mask.ravel())  # how well the map ranks defect pixels above the rest
    console.print(f"    image score {result.score:.4f} ({result.verdict}); map's pixel AUROC against the painted "
                  f"defects {pixel_auroc:.3f}; {len(result.regions)} regions above the map's threshold; the strongest "
                  f"{len(hits)} touch a painted defect: {hits}")
    return {"test_image": str(image), "test_mask": str(mask_path), "overlay": str(result.overlay_path),
            "report": str(result.report_path), "map": str(result.map_path), "image_score": result.score,
            "top_regions_hit_defect": hits, "pixel_auroc": pixel_auroc}
