"""`nsgan shards`: tiles round-trip, masks split defective images, bad input is reported, outputs are safe."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from nsgan.data import shards
from nsgan.cli.main import main as cli_main
from nsgan.common.errors import DataError, NsganError, OutputError
from nsgan.data.imageio import read_image, to_channels
from nsgan.data.shards import write_shards

RNG = np.random.default_rng(0)


def save(path: Path, arr: np.ndarray) -> Path:
    """Write a synthetic image; the suffix picks the format (TIFF keeps 16 bit and RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, arr)
    else:
        Image.fromarray(arr).save(path)
    return path


def noise(h: int, w: int, c: int | None = None, dtype=np.uint8) -> np.ndarray:
    hi = np.iinfo(dtype).max
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, hi + 1, size=shape, dtype=np.int64).astype(dtype)


def read_set(out: Path, name: str) -> list[tuple[dict, np.ndarray]]:
    """All samples of one shard set as (json, tile array), read with plain tarfile."""
    samples: dict[str, dict] = {}
    for shard in sorted((out / name).glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    result = []
    for s in samples.values():
        meta = json.loads(s["json"])
        if "tiff" in s:
            arr = tifffile.imread(io.BytesIO(s["tiff"]))
        else:
            arr = np.asarray(Image.open(io.BytesIO(s["png"])))
        result.append((meta, arr))
    return result


def as_unit(arr: np.ndarray) -> np.ndarray:
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 65535.0)


def test_tiles_round_trip_every_format(tmp_path):
    normal = tmp_path / "normal"
    save(normal / "gray8.png", noise(40, 48))
    save(normal / "sub/gray16.tif", noise(32, 32, dtype=np.uint16))
    save(normal / "rgb8.png", noise(32, 40, 3))
    save(normal / "rgb16.tiff", noise(36, 32, 3, dtype=np.uint16))
    save(normal / "photo.jpg", noise(32, 32, 3))
    out = tmp_path / "shards"

    manifest = write_shards(normal, tile=16, out=out, shard_size=7)

    assert manifest["channels"] == 3  # RGB inputs present: gray is replicated
    samples = read_set(out, "normal")
    assert len(samples) == manifest["counts"]["tiles_normal"] == 9 + 4 + 6 + 6 + 4
    seen_depths = set()
    for meta, arr in samples:
        src = read_image(normal / meta["source"])
        t, x, y = meta["tile"], meta["x"], meta["y"]
        expected = to_channels(src[y : y + t, x : x + t], 3)
        assert as_unit(arr).shape == (16, 16, 3)
        assert np.abs(as_unit(arr) - expected).max() <= 1 / 255 + 1e-6, meta
        assert meta["label"] == "normal" and meta["channels"] == 3
        seen_depths.add((meta["source"], meta["bit_depth"]))
    assert ("sub/gray16.tif", 16) in seen_depths and ("rgb16.tiff", 16) in seen_depths
    assert ("gray8.png", 8) in seen_depths
    # 16-bit tiles keep 16 bits: the 16-bit RGB tile matches its source exactly
    meta, arr = next((m, a) for m, a in samples if m["source"] == "rgb16.tiff")
    raw = tifffile.imread(normal / "rgb16.tiff")
    assert arr.dtype == np.uint16 and np.array_equal(arr, raw[meta["y"] : meta["y"] + 16, meta["x"] : meta["x"] + 16])
    assert manifest["counts"]["shards_normal"] == 5  # 29 tiles, 7 per shard
    assert manifest["shards"]["normal"]["pattern"] == "normal/normal-{000000..000004}.tar"
    assert manifest["shards"]["abnormal"]["files"] == []


def test_gray_inputs_stay_gray_and_16_bit_gray_is_a_16_bit_png(tmp_path):
    normal = tmp_path / "n"
    src16 = noise(16, 16, dtype=np.uint16)
    save(normal / "a.png", noise(16, 16))
    save(normal / "b.tif", src16)

    manifest = write_shards(normal, tile=16, out=tmp_path / "o")

    assert manifest["channels"] == 1
    by_source = {m["source"]: a for m, a in read_set(tmp_path / "o", "normal")}
    assert by_source["a.png"].ndim == 2
    assert np.array_equal(by_source["b.tif"].astype(np.uint16), src16)


def test_forced_gray_from_rgb_uses_luminance(tmp_path):
    normal = tmp_path / "n"
    save(normal / "c.png", noise(16, 16, 3))
    write_shards(normal, tile=16, out=tmp_path / "o", channels=1)
    ((meta, arr),) = read_set(tmp_path / "o", "normal")
    expected = to_channels(read_image(normal / "c.png"), 1)
    assert meta["channels"] == 1 and np.abs(as_unit(arr) - expected).max() <= 1 / 255


def test_grid_covers_edges_and_stride_and_random_crops(tmp_path):
    normal = tmp_path / "n"
    save(normal / "a.png", noise(20, 40))
    write_shards(normal, tile=16, out=tmp_path / "grid")
    xy = sorted((m["x"], m["y"]) for m, _ in read_set(tmp_path / "grid", "normal"))
    assert xy == [(0, 0), (0, 4), (16, 0), (16, 4), (24, 0), (24, 4)]  # last column/row aligned to the edge

    write_shards(normal, tile=16, out=tmp_path / "stride", stride=8)
    xs = sorted({m["x"] for m, _ in read_set(tmp_path / "stride", "normal")})
    assert xs == [0, 8, 16, 24]

    m1 = write_shards(normal, tile=16, out=tmp_path / "r1", random_crops=5, seed=3)
    m2 = write_shards(normal, tile=16, out=tmp_path / "r2", random_crops=5, seed=3)
    assert m1["counts"]["tiles_normal"] == 5 and m1["stride"] is None
    assert (tmp_path / "r1/normal/normal-000000.tar").read_bytes() == (tmp_path / "r2/normal/normal-000000.tar").read_bytes()


def test_masks_split_defective_images(tmp_path):
    normal, abnormal, masks = tmp_path / "n", tmp_path / "a", tmp_path / "m"
    save(normal / "ok.png", noise(16, 16))
    save(abnormal / "scratch/001.png", noise(32, 32))  # mask touches the top-left tile only
    mask = np.zeros((32, 32), np.uint8)
    mask[2:5, 3:6] = 255
    save(masks / "scratch/001_mask.png", mask)
    save(abnormal / "scratch/002.png", noise(32, 32))  # no mask: every tile abnormal
    save(abnormal / "dent.png", noise(32, 32))
    save(masks / "dent.tif", np.zeros((16, 16), np.uint8))  # wrong size: image skipped

    manifest = write_shards(normal, abnormal, masks, tile=16, out=tmp_path / "o")

    ab = read_set(tmp_path / "o", "abnormal")
    assert sorted((m["source"], m["x"], m["y"]) for m, _ in ab) == [("scratch/001.png", 0, 0)] + [
        ("scratch/002.png", x, y) for x, y in [(0, 0), (0, 16), (16, 0), (16, 16)]
    ]
    assert all(m["label"] == "abnormal" for m, _ in ab)
    from_defect = [m for m, _ in read_set(tmp_path / "o", "normal") if m.get("from_defective")]
    assert sorted((m["x"], m["y"]) for m in from_defect) == [(0, 16), (16, 0), (16, 16)]
    assert all(m["source"] == "scratch/001.png" and m["input"] == "abnormal" and m["label"] == "normal" for m in from_defect)
    c = manifest["counts"]
    assert (c["tiles_abnormal"], c["tiles_normal"], c["tiles_normal_from_defective"]) == (5, 4, 3)
    assert manifest["abnormal_without_mask"] == ["scratch/002.png"]
    (skip,) = manifest["skipped"]
    assert skip["path"].endswith("dent.png") and "16x16" in skip["reason"] and "32x32" in skip["reason"]


def test_manifest_counts_skipped_and_padded_files(tmp_path):
    normal = tmp_path / "n"
    save(normal / "a.png", noise(32, 32))
    save(normal / "small.png", noise(10, 20))  # smaller than the tile: reflect-padded
    (normal / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (normal / "notes.txt").write_text("ignored: not an image")

    manifest = write_shards(normal, tile=16, out=tmp_path / "o")

    on_disk = json.loads((tmp_path / "o/manifest.json").read_text())
    assert on_disk == manifest
    c = manifest["counts"]
    assert (c["images_found"], c["images_read"], c["images_skipped"], c["images_padded"]) == (3, 2, 1, 1)
    assert c["tiles_normal"] == 4 + 2 and c["shards_normal"] == 1
    assert manifest["skipped"][0]["path"].endswith("broken.png") and "cannot read" in manifest["skipped"][0]["reason"]
    assert manifest["padded"] == [{"source": "small.png", "input": "normal", "size": [20, 10]}]
    assert manifest["shards"]["normal"] == {"pattern": "normal/normal-000000.tar", "files": ["normal/normal-000000.tar"], "tiles": 6}
    padded = [m for m, a in read_set(tmp_path / "o", "normal") if m["source"] == "small.png"]
    assert len(padded) == 2 and all(m.get("padded") for m in padded)
    assert (manifest["tile"], manifest["channels"], manifest["stride"], manifest["seed"]) == (16, 1, 16, 0)


def test_no_normal_tiles_is_a_data_error_and_leaves_nothing(tmp_path):
    normal = tmp_path / "n"
    normal.mkdir()
    (normal / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match="no normal tiles written from"):
        write_shards(normal, tile=16, out=tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n"]


def test_existing_output_is_refused_untouched_unless_overwrite(tmp_path):
    normal = tmp_path / "n"
    save(normal / "a.png", noise(16, 32))
    out = tmp_path / "o"
    write_shards(normal, tile=16, out=out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    save(normal / "b.png", noise(16, 16))
    with pytest.raises(OutputError, match="--overwrite"):
        write_shards(normal, tile=16, out=out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n", "o"]

    manifest = write_shards(normal, tile=16, out=out, overwrite=True)
    assert manifest["counts"]["tiles_normal"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n", "o"]

    foreign = tmp_path / "docs"
    save(foreign / "keep.png", noise(4, 4))
    with pytest.raises(OutputError, match="not an nsgan shard folder"):
        write_shards(normal, tile=16, out=foreign, overwrite=True)
    assert (foreign / "keep.png").exists()


def test_a_crash_while_writing_leaves_no_half_shard_set(tmp_path, monkeypatch):
    normal = tmp_path / "n"
    for i in range(3):
        save(normal / f"{i}.png", noise(16, 16))
    calls = []

    def failing_encode(arr):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real_encode(arr)

    real_encode = shards._encode_tile
    monkeypatch.setattr(shards, "_encode_tile", failing_encode)
    with pytest.raises(RuntimeError):
        write_shards(normal, tile=16, out=tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n"]


def test_bad_options_are_one_line_errors(tmp_path):
    save(tmp_path / "n/a.png", noise(16, 16))
    with pytest.raises(NsganError, match="--tile"):
        write_shards(tmp_path / "n", tile=0, out=tmp_path / "o")
    with pytest.raises(NsganError, match="--abnormal-masks needs --abnormal"):
        write_shards(tmp_path / "n", abnormal_masks_dir=tmp_path, tile=16, out=tmp_path / "o")
    with pytest.raises(DataError, match="not a folder"):
        write_shards(tmp_path / "missing", tile=16, out=tmp_path / "o")


def test_cli_writes_shards_and_reports_errors_with_exit_codes(tmp_path, capsys):
    save(tmp_path / "n/a.png", noise(32, 32))
    save(tmp_path / "a/b.png", noise(16, 16))
    out = tmp_path / "o"
    argv = ["shards", "--normal", str(tmp_path / "n"), "--abnormal", str(tmp_path / "a"), "--tile", "16", "--out", str(out)]
    assert cli_main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["tiles_normal"] == 4 and manifest["counts"]["tiles_abnormal"] == 1
    assert (out / "abnormal/abnormal-000000.tar").is_file()

    assert cli_main(argv) == OutputError.exit_code
    err = capsys.readouterr().err
    assert "already holds a shard set" in err and "Traceback" not in err
