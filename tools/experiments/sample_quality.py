"""G's sample quality for a model file already trained: what training now measures at every phase's end.

    python tools/experiments/sample_quality.py --model RUN/model.safetensors --shards SHARDS/normal [--samples 128]

The EMA generator's samples (fixed z, seed `--seed`) against the first 2 × `--samples` tiles of a stream of the
normal shards (seed + 99, the stream `reals.png` shows): PGGAN's SWD ×10³ per Laplacian-pyramid level beside
the real-vs-real reference, their ratio, and the per-pixel spread across z over the reals' (docs/sample_quality.md).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import nsgan  # noqa: E402

CHUNK = 16


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--shards", required=True, help="folder of the normal shards (*.tar)")
    p.add_argument("--samples", type=int, default=128, help="G's samples; the reals are twice as many")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--neighbourhoods", type=int, default=64)
    p.add_argument("--min-resolution", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    m = nsgan.load_model(a.model)
    tars = sorted(str(t) for t in Path(a.shards).glob("*.tar"))
    if not tars:
        print(f"{a.shards}: no shards (*.tar)", file=sys.stderr)
        return nsgan.EXIT_DATA
    stream = iter(nsgan.ShardStream(tars, tile=m.resolution, channels=m.channels, batch=CHUNK, seed=a.seed + 99, num_workers=0))
    reals = (next(stream).images for _ in range((2 * a.samples + CHUNK - 1) // CHUNK))
    z = torch.randn(a.samples, m.latent_dim, generator=torch.Generator().manual_seed(a.seed + 24680))
    with torch.no_grad():
        fakes = (m.generator(z[i:i + CHUNK]) for i in range(0, a.samples, CHUNK))
        settings = nsgan.QualitySettings(min_resolution=a.min_resolution, neighbourhoods=a.neighbourhoods, seed=a.seed)
        q = nsgan.measure_sample_quality(fakes, reals, a.samples, m.resolution, settings)
    print(json.dumps({"model": a.model, "kimg": read_kimg(a.model), **q.row(), "seconds": round(time.perf_counter() - t0, 2)}))
    return nsgan.EXIT_OK


def read_kimg(model: str):
    return nsgan.read_metadata(model).get("kimg")


if __name__ == "__main__":
    sys.exit(main())
