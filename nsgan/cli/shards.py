"""`nsgan shards`: cut image folders into tiles and write WebDataset shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from nsgan.common.errors import EXIT_OK, ConfigError
from nsgan.data.shards import ShardSpec, write_shards


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
    listed = p.add_argument_group("images of --normal that are defective after all (the audit's suspects)")
    listed.add_argument("--abnormal-list", metavar="FILE",
                        help="text file naming images under --normal (one relative path a line, e.g. nsgan audit's "
                             "suspects.txt): they go to the abnormal set instead")
    listed.add_argument("--abnormal-list-masks", metavar="DIR",
                        help="masks for the listed images, by the same relative path (e.g. nsgan audit's OUT/masks)")
    listed.add_argument("--abnormal-masks-from-audit", metavar="AUDIT_OUT",
                        help="both of the above from an `nsgan audit --out AUDIT_OUT`: its suspects.txt and masks/, so "
                             "the patch-level penalty can act on the regions the audit found")


def run(args: argparse.Namespace) -> int:
    listed, list_masks = args.abnormal_list, args.abnormal_list_masks
    if args.abnormal_masks_from_audit:
        if listed or list_masks:
            raise ConfigError("--abnormal-masks-from-audit sets --abnormal-list and --abnormal-list-masks: pass one or the other")
        from nsgan.evaluate.audit import MASKS, SUSPECTS  # deferred: the audit loads torch and the scorer; only this flag needs it

        audit_out = Path(args.abnormal_masks_from_audit)
        listed = audit_out / SUSPECTS
        if not listed.is_file():
            raise ConfigError(f"--abnormal-masks-from-audit: {listed} not found (not an nsgan audit output folder?)")
        list_masks = audit_out / MASKS
        if not list_masks.is_dir():  # no suspect had a region: image labels only
            list_masks = None
    spec = ShardSpec(args.normal, abnormal_dir=args.abnormal, abnormal_masks_dir=args.abnormal_masks, tile=args.tile,
                     out=args.out, stride=args.stride, random_crops=args.random_crops, channels=args.channels,
                     shard_size=args.shard_size, seed=args.seed, abnormal_centred=args.abnormal_centred,
                     centre_jitter=args.centre_jitter, abnormal_list=listed, abnormal_list_masks=list_masks)
    manifest = write_shards(spec, overwrite=args.overwrite, progress=True)
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
    return EXIT_OK
