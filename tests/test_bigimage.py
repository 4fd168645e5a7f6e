"""Big-image I/O: lazy TIFF regions equal whole reads, map BigTIFF round trip, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nsgan.data.bigimage import open_image, read_map_rows, write_map
from nsgan.common.errors import DataError

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "arr,kwargs",
    [
        (RNG.integers(0, 256, (100, 77), dtype=np.uint8), dict(tile=(32, 32))),
        (RNG.integers(0, 65536, (100, 77, 3), dtype=np.uint16), dict(rowsperstrip=7, compression="zlib")),
        (RNG.integers(0, 256, (3, 50, 70), dtype=np.uint8), dict(tile=(16, 32), planarconfig="separate", photometric="rgb")),
        (RNG.integers(0, 256, (40, 33), dtype=np.uint8), dict()),
    ],
    ids=["tiled-u8", "strips-u16-rgb-zlib", "planar-rgb", "one-strip"],
)
def test_tiff_regions_equal_the_whole_image(tmp_path, arr, kwargs):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, arr, **kwargs)
    full = tifffile.imread(path)
    if full.ndim == 3 and full.shape[0] == 3:
        full = np.moveaxis(full, 0, -1)
    full = full if full.ndim == 3 else full[:, :, None]
    scale = 255.0 if full.dtype == np.uint8 else 65535.0
    with open_image(path) as src:
        assert src.shape == full.shape[:2] and src.channels == full.shape[2]
        np.testing.assert_array_equal(src.read(5, 37, 3, 30), full[5:37, 3:30].astype(np.float32) / scale)
        np.testing.assert_array_equal(src.read(0, full.shape[0]), full.astype(np.float32) / scale)


def test_map_round_trip_is_a_tiled_float32_bigtiff(tmp_path):
    m = RNG.random((300, 500)).astype(np.float32)
    path = write_map(tmp_path / "m.map.tif", 300, 500, (m[i : i + 37] for i in range(0, 300, 37)))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.pages.first.is_tiled and tif.pages.first.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([b for _, b in read_map_rows(path, 100)]), m)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.map.tif"]  # no temporary file left


@pytest.mark.parametrize("name,content", [("bad.tif", b"II*\x00garbage"), ("bad.png", b"\x89PNG\r\n\x1a\nnope")])
def test_corrupt_images_raise_data_error_naming_the_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=name):
        open_image(tmp_path / name).read(0, 1)


def test_unsupported_tiff_pixel_type_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "i32.tif", np.zeros((8, 8), np.int32))
    with pytest.raises(DataError, match="i32.tif: unsupported pixel type"):
        open_image(tmp_path / "i32.tif")


STREAM_CHILD = textwrap.dedent(
    """
    import json, resource, sys, psutil, numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from tests.test_search import PatternG, TinyD
    from nsgan.score.options import ScoreOptions
    from nsgan.score.scorer import Scorer
    from nsgan.score.search import SearchConfig
    T = 64
    opts = ScoreOptions(stride=T, batch=64, batches_per_band=2, min_region_area=1,
                        search=SearchConfig(iterations=1, restarts=1))
    s = Scorer(PatternG(T), TinyD(), resolution=T, channels=1, options=opts)
    # Warm up on a short image of the same width: same band, batch and writer shapes, so what
    # grows afterwards is what depends on the image's height.
    s.score_to_files(sys.argv[4], sys.argv[2], "warm")
    # Restart the high-water mark here (Linux clear_refs 5), so the warm-up's own transient peak is
    # not counted as growth; fall back to the lifetime peak where that is not available.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base = psutil.Process().memory_info().rss
    r = s.score_to_files(sys.argv[1], sys.argv[2], "big")
    status = open("/proc/self/status").read() if sys.platform.startswith("linux") else ""
    hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
    peak = hwm[0] * 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base": base, "peak": peak, "score": r.score, "regions": len(r.regions)}))
    """
)


def test_streaming_8192_tiff_stays_within_a_band_sized_memory_bound(tmp_path):
    side, t = 8192, 256
    big = tmp_path / "big.tif"

    def tiles():
        for _y in range(0, side, t):
            for _x in range(0, side, t):
                yield np.full((t, t), 128, np.uint8)

    tifffile.imwrite(big, tiles(), shape=(side, side), dtype=np.uint8, tile=(t, t), bigtiff=True)
    warm = tmp_path / "warm.tif"
    tifffile.imwrite(warm, np.full((256, side), 128, np.uint8), tile=(t, t))
    child = tmp_path / "child.py"
    child.write_text(STREAM_CHILD)
    out = subprocess.run([sys.executable, str(child), str(big), str(tmp_path / "out"), str(Path(__file__).parent.parent), str(warm)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    # What the pipeline holds at once (tile 64, 2 batches of 64 tiles per band = one tile row of 64 px):
    # the band's image, tiles and residuals (float32) and the float64 blender (value + weight);
    # one row of 256-px map tiles being re-cut for the writer (twice, while concatenating); and one
    # 256-row block of the region pass (map, mask, int32 labels, temporaries).
    band = 64 * side * (4 + 4 + 4 + 2 * 8)
    writer = 2 * 256 * side * 4
    regions = 64 * side * (4 + 1 + 4 + 8) * 4  # a 64-row block; scipy temporaries take a few copies
    bound = band + writer + regions + 64 * 2**20  # + slack: glibc keeps freed blocks, zlib buffers
    full_map = side * side * 4
    assert bound < full_map / 2 + full_map / 4  # meaningful: well below holding the map (let alone the image too)
    growth = rep["peak"] - rep["base"]
    print(f"peak RSS growth {growth / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB")
    assert growth < bound, f"peak RSS grew by {growth / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB"
    assert (tmp_path / "out" / "big.map.tif").is_file()
    with tifffile.TiffFile(tmp_path / "out" / "big.map.tif") as tif:
        assert tif.pages.first.shape == (side, side)
