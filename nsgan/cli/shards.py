"""`nsgan shards`: cut image folders into tiles and write WebDataset shards."""

from __future__ import annotations

import argparse

from nsgan.data.shards import write_shards


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--normal", required=True, metavar="DIR", help="folder of normal images (searched recursively)")
    p.add_argument("--abnormal", metavar="DIR", help="folder of known defective images")
    p.add_argument(
        "--abnormal-masks",
        metavar="DIR",
        help="defect masks for --abnormal, matched by relative path (name.png or name_mask.png); "
        "only tiles touching a mask are abnormal, the rest go to the normal set",
    )
    p.add_argument("--tile", type=int, required=True, metavar="N", help="tile size in pixels")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for shards and manifest.json")
    p.add_argument("--stride", type=int, metavar="N", help="grid step in pixels (default: the tile size)")
    p.add_argument("--random-crops", type=int, default=0, metavar="K", help="K random crops per image instead of the grid")
    p.add_argument(
        "--abnormal-centred",
        type=int,
        default=0,
        metavar="K",
        help="with --abnormal-masks: K abnormal tiles per mask component, centred on it (with jitter), instead of "
        "the grid's tiles that touch the mask, so each labelled tile is mostly defect context",
    )
    p.add_argument("--centre-jitter", type=int, metavar="N", help="largest shift of a centred tile, in pixels (default tile/8); "
                   "kept small enough that the component stays inside the tile where it fits")
    p.add_argument("--channels", type=int, choices=(1, 3), help="force gray (1) or RGB (3); default: 1 if all inputs are gray")
    p.add_argument("--shard-size", type=int, default=1000, metavar="N", help="samples per shard (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed for image order and random crops")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard set in --out")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    manifest = write_shards(
        args.normal,
        args.abnormal,
        args.abnormal_masks,
        tile=args.tile,
        out=args.out,
        stride=args.stride,
        random_crops=args.random_crops,
        channels=args.channels,
        shard_size=args.shard_size,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=True,
        abnormal_centred=args.abnormal_centred,
        centre_jitter=args.centre_jitter,
    )
    c = manifest["counts"]
    console = Console(stderr=True)
    console.print(
        f"wrote {c['tiles_normal']} normal tiles ({c['tiles_normal_from_defective']} from defective images) "
        f"in {c['shards_normal']} shard(s) and {c['tiles_abnormal']} abnormal tiles in {c['shards_abnormal']} "
        f"shard(s) to {args.out}: {c['images_read']} images read, {c['images_skipped']} skipped, "
        f"{c['images_padded']} padded; tile {manifest['tile']}, {manifest['channels']} channel(s)",
        highlight=False,
    )
    for item in manifest["skipped"][:10]:
        console.print(f"  skipped {item['path']}: {item['reason']}", highlight=False, markup=False)
    if len(manifest["skipped"]) > 10:
        console.print(f"  ... and {len(manifest['skipped']) - 10} more (see manifest.json)", highlight=False)
    return 0
