"""`python -m tools.protocols.visible_preview --out grid.png`: every visible-defect family on every texture.

The visible protocol's claim is "a person sees every defect at a glance"; a number cannot settle that,
so this draws a grid to look at: one row per (texture, family), each example clean | defective |
defective with its mask outlined, its visibility written on it. Examples are drawn from the photos'
test part exactly as the protocol draws its test images (tools/protocols/visible.py).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from nsgan import NsganError

from .visible import TEXTURES, draw_defective, write_preview
from .visible_defects import FAMILIES


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.protocols.visible_preview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--textures", default=",".join(TEXTURES), help="comma-separated textures")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--per-family", type=int, default=2, help="examples per (texture, family)")
    p.add_argument("--max-defects", type=int, default=1, help="defects per example: 1..this")
    p.add_argument("--zoom", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    try:
        rows = []
        for texture in (t.strip() for t in args.textures.split(",") if t.strip()):
            if texture not in TEXTURES:
                raise NsganError(f"--textures: unknown texture {texture!r}; choose from {', '.join(TEXTURES)}")
            for family in FAMILIES:
                examples = []
                for _ in range(args.per_family):
                    clean, img, mask, infos = draw_defective(texture, args.size, rng, "test", (family,), args.max_defects)
                    examples.append((clean, img, mask, min(i["visibility"] for i in infos)))
                rows.append((f"{texture} {family}", examples))
        write_preview(args.out, rows, zoom=args.zoom)
    except NsganError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
