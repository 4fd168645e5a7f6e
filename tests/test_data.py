"""Training streams: tiles come back as written, bad data is dropped and counted, ranks differ, resume is exact."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import webdataset as wds
from PIL import Image

from nsgan.data import stream as data
from nsgan.data.stream import CorruptSampleWarning, DataWarning, ShardStream, measure_loader, read_manifest, resolve_shards
from nsgan.common.errors import DataError
from nsgan.data.imageio import read_image, to_channels
from nsgan.data.shards import write_shards

RNG = np.random.default_rng(1)
# broken samples are part of the fixtures; tests that are about the warnings use pytest.warns
pytestmark = pytest.mark.filterwarnings("ignore::nsgan.data.stream.CorruptSampleWarning")
TILE = 16


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path, samples: list[dict]) -> str:
    """A shard written by hand, so that it can hold broken samples."""
    with wds.TarWriter(str(path)) as w:
        for s in samples:
            w.write(s)
    return str(path)


def gray(value: int, size: int = TILE) -> bytes:
    return png_bytes(np.full((size, size), value, np.uint8))


def good(key: str, value: int) -> dict:
    return {"__key__": key, "png": gray(value), "json": b"{}"}


def take(stream, n: int) -> list:
    it = iter(stream)
    try:
        return list(itertools.islice(it, n))
    finally:
        it.close()


def value_of(img: torch.Tensor) -> int:
    """The 8-bit value of a constant gray tile in [-1, 1]."""
    return round(float((img.mean() + 1) / 2 * 255))


@pytest.fixture(scope="module")
def numbered_shards(tmp_path_factory) -> list[str]:
    """4 shards of 6 constant tiles each, values 0..23 (tile value = sample number), plus one broken sample."""
    root = tmp_path_factory.mktemp("numbered")
    paths = []
    for s in range(4):
        samples = [good(f"s{s}-{i}", 6 * s + i) for i in range(6)]
        if s == 2:
            samples.insert(3, {"__key__": "s2-bad", "png": b"\x89PNG\r\n\x1a\nbroken", "json": b"{}"})
        paths.append(write_tar(root / f"part-{s:06d}.tar", samples))
    return paths


def test_tiles_round_trip_from_images_through_shards(tmp_path):
    normal = tmp_path / "n"
    normal.mkdir()
    Image.fromarray(RNG.integers(0, 256, (32, 16), dtype=np.uint8)).save(normal / "g8.png")
    tifffile.imwrite(normal / "g16.tif", RNG.integers(0, 65536, (16, 32), dtype=np.uint16))
    Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(normal / "c8.png")
    tifffile.imwrite(normal / "c16.tif", RNG.integers(0, 65536, (16, 16, 3), dtype=np.uint16))
    write_shards(normal, tile=TILE, out=tmp_path / "s", shard_size=3)
    sources = {p.name: read_image(p) for p in normal.iterdir()}
    crops = [src[y : y + TILE, x : x + TILE] for src in sources.values() for y in (0, 16) for x in (0, 16)
             if y + TILE <= src.shape[0] and x + TILE <= src.shape[1]]
    assert len(crops) == 6

    for channels in (3, 1):
        expected = [torch.from_numpy(to_channels(c, channels)).permute(2, 0, 1) * 2 - 1 for c in crops]
        stream = ShardStream(str(tmp_path / "s"), TILE, channels, batch=3, seed=0, num_workers=0)
        seen = set()
        for b in take(stream, 8):
            assert b.images.shape == (3, channels, TILE, TILE) and b.images.dtype == torch.float32
            assert b.skipped == 0
            for img in b.images:
                errors = [float((img - e).abs().max()) for e in expected]
                assert min(errors) <= 2 / 255 + 1e-5  # 1/255 in [0, 1]
                seen.add(int(np.argmin(errors)))
        assert seen == set(range(6))


def test_gray_shards_are_streamed_as_rgb_on_request(numbered_shards):
    (b,) = take(ShardStream(numbered_shards[:1], TILE, 3, batch=6, seed=0, num_workers=0), 1)
    assert b.images.shape == (6, 3, TILE, TILE)
    assert torch.equal(b.images[:, :1].expand(-1, 3, -1, -1), b.images)
    assert sorted(value_of(i) for i in b.images) == [0, 1, 2, 3, 4, 5]


def test_corrupt_samples_are_dropped_counted_and_warned_once_per_kind(tmp_path):
    la = png_bytes(np.zeros((TILE, TILE, 2), np.uint8))  # gray + alpha: not a tile nsgan writes
    shard = write_tar(tmp_path / "c.tar", [
        good("a", 0), good("b", 10),
        {"__key__": "garbage", "png": b"\x89PNG\r\n\x1a\nnot a png", "json": b"{}"},
        {"__key__": "small", "png": gray(20, size=8), "json": b"{}"},
        good("c", 30), good("d", 40),
        {"__key__": "alpha", "png": la, "json": b"{}"},
        {"__key__": "meta-only", "json": b"{}"},
        good("e", 50), good("f", 60),
    ])
    stream = ShardStream(shard, TILE, 1, batch=2, seed=0, num_workers=0, shuffle_buffer=1)  # buffer 1: file order
    with pytest.warns(CorruptSampleWarning) as record:
        batches = take(stream, 6)
    assert [[value_of(i) for i in b.images] for b in batches] == [[0, 10], [30, 40], [50, 60]] * 2
    assert [b.skipped for b in batches] == [0, 2, 2, 0, 2, 2]
    kinds = sorted(str(w.message).split(":")[0] for w in record if w.category is CorruptSampleWarning)
    assert kinds == ["no image in sample", "undecodable image", "wrong channel count", "wrong tile size"]


def test_truncated_shard_is_warned_counted_and_the_stream_goes_on(tmp_path):
    whole = write_tar(tmp_path / "whole.tar", [good(f"w{i}", 100 + i) for i in range(4)])
    cut = tmp_path / "cut.tar"
    write_tar(cut, [good(f"c{i}", 200 + i) for i in range(4)])
    cut.write_bytes(cut.read_bytes()[:7000])  # ends inside the second sample's image
    stream = ShardStream([whole, str(cut)], TILE, 1, batch=2, seed=3, num_workers=0)
    with pytest.warns(CorruptSampleWarning, match="unreadable shard|no image in sample"):
        batches = take(stream, 12)
    values = {value_of(i) for b in batches for i in b.images}
    assert {100, 101, 102, 103, 200} <= values and values <= {100, 101, 102, 103, 200, 201}
    assert sum(b.skipped for b in batches) >= 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_all_shards_unreadable_is_a_data_error_not_an_endless_loop(tmp_path, num_workers):
    bad = [str(tmp_path / f"bad-{i}.tar") for i in range(3)]
    for p in bad:
        Path(p).write_bytes(b"this is not a tar file" * 10)
    with pytest.raises(DataError, match=r"no usable sample in 3 shard\(s\).*bad-0\.tar") as err:
        take(ShardStream(bad, TILE, 1, batch=2, seed=0, num_workers=num_workers), 1)
    assert "\n" not in str(err.value)


def test_wrong_tile_size_everywhere_is_a_data_error(numbered_shards):
    with pytest.raises(DataError, match="wrong tile size.*expected 32x32"):
        take(ShardStream(numbered_shards, 32, 1, batch=2, seed=0, num_workers=0), 1)


def test_ranks_get_different_deterministic_streams(numbered_shards):
    def values(rank, seed=0):
        stream = ShardStream(numbered_shards, TILE, 1, batch=3, seed=seed, rank=rank, world=2, num_workers=0)
        return [value_of(i) for b in take(stream, 4) for i in b.images]

    r0, r1 = values(0), values(1)
    assert r0 == values(0) and r1 == values(1)
    assert r0 != r1
    assert set(r0[:6]).isdisjoint(r1[:6])  # epoch 0: the ranks read different shards
    assert values(0, seed=1) != r0


@pytest.mark.parametrize("after", [3, 4])  # 2 workers: the next batch comes from worker 1, or worker 0
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_a_position_yields_exactly_the_next_batches(numbered_shards, num_workers, after):
    def stream(position=None):
        return ShardStream(numbered_shards, TILE, 1, batch=4, seed=7, num_workers=num_workers, position=position,
                           shuffle_buffer=5)

    full = take(stream(), 9)
    position = json.loads(json.dumps(full[after - 1].position))  # as stored in a checkpoint
    resumed = take(stream(position), 9 - after)
    for a, b in zip(full[after:], resumed, strict=True):
        assert torch.equal(a.images, b.images)
        assert a.skipped == b.skipped and a.position == b.position
    assert sum(b.skipped for b in full) >= 1  # the broken sample is on the way, and counted the same
    assert len(position["workers"]) == max(1, num_workers)


def test_resume_does_not_decode_the_samples_it_skips(numbered_shards, monkeypatch):
    first = take(ShardStream(numbered_shards, TILE, 1, batch=4, seed=2, num_workers=0), 3)
    calls = []
    real = data.decode_sample
    monkeypatch.setattr(data, "decode_sample", lambda *a: calls.append(1) or real(*a))
    take(ShardStream(numbered_shards, TILE, 1, batch=4, seed=2, num_workers=0, position=first[-1].position), 1)
    assert len(calls) <= 5  # one batch of 4, perhaps one broken sample; not the 12 before it


def test_a_position_from_another_setup_warns_and_starts_fresh_epochs(numbered_shards):
    first = take(ShardStream(numbered_shards, TILE, 1, batch=2, seed=0, num_workers=0), 2)
    with pytest.warns(DataWarning, match="not exactly"):
        s = ShardStream(numbered_shards, TILE, 1, batch=2, seed=0, num_workers=2, position=first[-1].position)
    assert [w["epoch"] for w in s.position["workers"]] == [1, 1]
    with pytest.raises(DataError, match="malformed"):
        ShardStream(numbered_shards, TILE, 1, batch=2, seed=0, position={"workers": 3})


def test_resolve_shards_patterns_folders_and_manifests(tmp_path, numbered_shards):
    folder = str(numbered_shards[0]).rsplit("/", 1)[0]
    assert resolve_shards(f"{folder}/part-{{000000..000003}}.tar") == sorted(numbered_shards)
    assert resolve_shards(folder) == sorted(numbered_shards)
    assert resolve_shards("part-00000[01].tar", base_dir=folder) == sorted(numbered_shards)[:2]
    with pytest.raises(DataError, match=r"6 listed shard\(s\) missing, e.g. .*part-000004.tar"):
        resolve_shards(f"{folder}/part-{{000000..000009}}.tar")
    with pytest.raises(DataError, match="nothing-here.*no shard matches"):
        resolve_shards(str(tmp_path / "nothing-here-{0..3}.tar"))

    (tmp_path / "n").mkdir()
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(tmp_path / "n/a.png")
    write_shards(tmp_path / "n", tile=TILE, out=tmp_path / "set", shard_size=1)
    normal = resolve_shards(tmp_path / "set")
    assert [p.rsplit("/", 1)[1] for p in normal] == ["normal-000000.tar", "normal-000001.tar"]
    assert resolve_shards(tmp_path / "set/manifest.json") == normal
    with pytest.raises(DataError, match="no abnormal shards"):
        resolve_shards(tmp_path / "set", label="abnormal")
    assert read_manifest(tmp_path / "set")["tile"] == TILE
    with pytest.raises(DataError, match="no shard manifest"):
        read_manifest(tmp_path / "n")


def test_measure_loader_reports_images_per_second(numbered_shards):
    assert measure_loader(numbered_shards, TILE, 1, batch=8, num_workers=0, seconds=0.2) > 0
