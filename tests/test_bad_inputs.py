"""The bad-input catalogue: every case is a user mistake that must end in ONE line naming the thing and
the fix, with the documented exit code of its class, no traceback, and nothing written or overwritten.

Exit code classes (README, nsgan/common/errors.py): 2 bad config or arguments · 3 unusable data ·
4 missing, truncated or foreign model/state · 5 output exists or cannot be written · 6 numerical
failure or lost peer. The CLI cases run `nsgan.cli.main.main` in-process on tiny files; the Python API
cases check the exception class and its one-line message. The test IDs count the cases.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors.torch import save_file

from nsgan.cli.main import main as cli
from nsgan.common.errors import ConfigError, DataError, ModelError, NsganError, OutputError

from .conftest import TINY

FAST = ["--iterations", "2", "--restarts", "1", "--no-progress"]
RNG = np.random.default_rng(12)


# ------------------------------------------------------------------------------- bad files


def gray(h=24, w=24) -> np.ndarray:
    return (RNG.random((h, w)) * 255).astype(np.uint8)


def png(path: Path, arr: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gray() if arr is None else arr).save(path, format="PNG")
    return path


def truncated(path: Path, writer: Callable[[Path], Path]) -> Path:
    writer(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gray(64, 64)).save(path, format="JPEG")
    return path


def tiff(path: Path, arr: np.ndarray | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, gray() if arr is None else arr, **kw)
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 100-byte PNG whose header says width × height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def zero_bytes(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def model_copy(model_file: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, path)
    return path


def model_with_meta(model_file: Path, path: Path, change: Callable[[dict], None]) -> Path:
    """The real model's tensors with edited (JSON-string) metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(model_file), framework="pt") as fh:
        meta = dict(fh.metadata())
    change(meta)
    save_file(load_file(str(model_file)), str(path), metadata=meta)
    return path


def header_longer_than_file(path: Path) -> Path:
    path.write_bytes(struct.pack("<Q", 10_000_000) + b'{"__metadata__":{}}')
    return path


def shard_folder(tiny_shards: Path, dest: Path, extra: Callable[[Path], None]) -> Path:
    dest.mkdir(parents=True)
    extra(dest)
    return dest


def unrelated_tar(dest: Path) -> None:
    import tarfile
    import io

    with tarfile.open(dest / "x-000000.tar", "w") as tar:
        for i in range(20):
            data = f"line {i}\n".encode()
            info = tarfile.TarInfo(f"doc{i:03d}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------- the cases


@dataclass
class Ctx:
    tmp: Path
    model: Path  # a real untrained 16-px gray model (shared: never written by a case)
    shards: Path  # tiny shards (shared)

    def cfg(self, text: str = "seed: 0\n") -> Path:
        p = self.tmp / "cfg.yaml"
        p.write_text(text)
        return p

    def train(self, *overrides: str, cfg: Path | None = None) -> list[str]:
        base = [*TINY, f"data.normal={self.shards / 'normal'}", f"data.abnormal={self.shards / 'abnormal'}", f"run_dir={self.tmp / 'run'}"]
        return ["train", "--config", str(cfg or self.cfg()), *base, *overrides]

    def score(self, image: Path, model: Path | None = None, *extra: str) -> list[str]:
        return ["score", "--model", str(model or self.model), "--image", str(image), "--out", str(self.tmp / "out"), *FAST, *extra]

    def shards_cmd(self, normal: Path, *extra: str) -> list[str]:
        return ["shards", "--normal", str(normal), "--tile", "16", "--out", str(self.tmp / "shards-out"), *extra]

    def train_encoder(self, *overrides: str, model: Path | None = None, config: bool = True) -> list[str]:
        model = model or model_copy(self.model, self.tmp / "mdl" / "m.safetensors")
        data = [f"data.normal={self.shards / 'normal'}", f"data.abnormal={self.shards / 'abnormal'}"]
        cfg = ["--config", str(self.cfg()), *TINY, *data, "encoder.kimg=0.032"] if config else []
        return ["train-encoder", "--model", str(model), "--run-dir", str(self.tmp / "enc"), *cfg, *overrides]

    def calibrate(self, normal: Path, *extra: str, model: Path | None = None) -> list[str]:
        return ["calibrate", "--model", str(model or model_copy(self.model, self.tmp / "cal" / "m.safetensors")),
                "--normal", str(normal), *FAST, *extra]


@dataclass
class Case:
    id: str
    code: int
    argv: Callable[[Ctx], list[str]]
    says: tuple[str, ...]  # the thing it names and the fix it points to, all in the one line


def _score_existing(c: Ctx) -> list[str]:
    out = c.tmp / "out"
    out.mkdir()
    (out / "img.json").write_text("earlier result")
    return c.score(png(c.tmp / "img.png"))


def _read_only(folder: Path) -> Path:
    """A folder nobody may write into: chmod 555, or for root (who ignores that) the kernel's /sys."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    return folder


def _clashing_folder(c: Ctx) -> Path:
    png(c.tmp / "imgs" / "a.png")
    tiff(c.tmp / "imgs" / "a.tif")
    return c.tmp / "imgs"


def _evaluate_folder(c: Ctx, mask_shape=(24, 24)) -> Path:
    data = c.tmp / "mvtec"
    png(data / "test" / "good" / "g.png")
    png(data / "test" / "scratch" / "s.png")
    png(data / "ground_truth" / "scratch" / "s_mask.png", np.zeros(mask_shape, np.uint8))
    return data


NON_UTF8 = os.fsdecode(b"caf\xe9-\xff")  # a Latin-1 file name, as old Windows shares hand them over

CASES: list[Case] = [
    # ---- nsgan shards
    Case("shards-normal-folder-missing", 3, lambda c: c.shards_cmd(c.tmp / "nope"), ("nope", "not a folder")),
    Case("shards-only-a-zero-byte-png", 3, lambda c: c.shards_cmd(zero_bytes(c.tmp / "n" / "a.png").parent), ("no normal tiles", "1 skipped", "a.png", "--normal needs readable")),
    Case("shards-only-a-truncated-png", 3, lambda c: c.shards_cmd(truncated(c.tmp / "n" / "a.png", png).parent), ("no normal tiles", "a.png")),
    Case("shards-only-a-truncated-jpeg", 3, lambda c: c.shards_cmd(truncated(c.tmp / "n" / "a.jpg", jpeg).parent), ("no normal tiles", "a.jpg")),
    Case("shards-only-a-truncated-tiff", 3, lambda c: c.shards_cmd(truncated(c.tmp / "n" / "a.tif", tiff).parent), ("no normal tiles", "a.tif")),
    Case("shards-only-a-2-channel-tiff", 3, lambda c: c.shards_cmd(tiff(c.tmp / "n" / "a.tif", np.zeros((24, 24, 2), np.uint8), photometric="minisblack", planarconfig="contig").parent), ("no normal tiles", "channel count 2")),
    Case("shards-only-a-100000x100000-png", 3, lambda c: c.shards_cmd(png_claiming(c.tmp / "n" / "bomb.png", 100000, 100000).parent), ("bomb.png", "pixel limit")),
    Case("shards-tile-zero", 2, lambda c: c.shards_cmd(png(c.tmp / "n" / "a.png").parent, "--tile", "0"), ("--tile", ">= 1")),
    Case("shards-masks-without-abnormal", 2, lambda c: c.shards_cmd(png(c.tmp / "n" / "a.png").parent, "--abnormal-masks", str(c.tmp)), ("--abnormal-masks", "needs --abnormal")),
    Case("shards-out-is-a-file", 5, lambda c: [*c.shards_cmd(png(c.tmp / "n" / "a.png").parent)[:-2], "--out", str(zero_bytes(c.tmp / "f.txt"))], ("f.txt", "not a folder")),
    Case("shards-out-is-someone-elses-folder", 5, lambda c: [*c.shards_cmd(png(c.tmp / "n" / "a.png").parent)[:-2], "--out", str(png(c.tmp / "mine" / "x.png").parent)], ("mine", "choose another --out")),
    Case("shards-out-holds-shards", 5, lambda c: [*c.shards_cmd(png(c.tmp / "n" / "a.png").parent)[:-2], "--out", str(_fake_shard_set(c.tmp / "old"))], ("old", "--overwrite")),
    Case("shards-out-in-read-only-folder", 5, lambda c: [*c.shards_cmd(png(c.tmp / "n" / "a.png").parent)[:-2], "--out", str(_read_only(c.tmp / "ro") / "s")], ("cannot create output folder",)),
    # ---- nsgan train: configs
    Case("train-config-missing", 2, lambda c: ["train", "--config", str(c.tmp / "none.yaml")], ("none.yaml", "not found")),
    Case("train-config-not-yaml", 2, lambda c: c.train(cfg=c.cfg("a: [1, 2\n")), ("cfg.yaml", "not valid YAML")),
    Case("train-config-not-utf8", 2, lambda c: c.train(cfg=_bytes_file(c.tmp / "cfg.yaml", b"seed: 0\nname: caf\xe9\n")), ("cfg.yaml", "UTF-8")),
    Case("train-config-a-list", 2, lambda c: c.train(cfg=c.cfg("- 1\n- 2\n")), ("cfg.yaml", "mapping")),
    Case("train-unknown-key", 2, lambda c: c.train("model.colour=3"), ("model.colour", "unknown key")),
    Case("train-wrong-type", 2, lambda c: c.train("model.resolution=big"), ("model.resolution", "integer")),
    Case("train-nan-gamma", 2, lambda c: c.train("loss.gamma=nan"), ("loss.gamma", "nan")),
    Case("train-inf-lr", 2, lambda c: c.train("schedule.lr=inf"), ("schedule.lr", "inf")),
    Case("train-negative-kimg", 2, lambda c: c.train("schedule.total_kimg=-1"), ("schedule.total_kimg", "> 0")),
    Case("train-negative-r1", 2, lambda c: c.train("loss.r1_gamma=-1"), ("loss.r1_gamma", "≥ 0")),
    Case("train-r1-every-zero", 2, lambda c: c.train("loss.r1_every=0"), ("loss.r1_every", "≥ 1")),
    Case("train-r1-every-not-integer", 2, lambda c: c.train("loss.r1_every=2.5"), ("loss.r1_every", "integer")),
    Case("train-gamma-without-abnormal", 2, lambda c: c.train("data.abnormal="), ("loss.gamma", "data.abnormal")),
    Case("train-shard-folder-missing", 2, lambda c: c.train(f"data.normal={c.tmp / 'nowhere'}"), ("data.normal", "nowhere")),
    Case("train-shard-folder-with-a-non-tar-file", 2, lambda c: c.train(f"data.normal={shard_folder(c.shards, c.tmp / 'sh', lambda d: (d / 'readme.txt').write_text('x'))}", "data.channels=1"), ("data.normal", "sh")),
    Case("train-tar-of-unrelated-samples", 3, lambda c: c.train(f"data.normal={shard_folder(c.shards, c.tmp / 'sh', unrelated_tar)}", "data.channels=1"), ("x-000000.tar", "no usable sample")),
    Case("train-resolution-differs-from-shards", 2, lambda c: c.train("model.resolution=32"), ("model.resolution", "16-px tiles")),
    Case("train-resume-without-state", 2, lambda c: [*c.train(), "--resume"], ("run", "no complete training state")),
    # ---- nsgan train-encoder
    Case("train-encoder-model-missing", 4, lambda c: c.train_encoder(model=c.tmp / "none.safetensors"), ("none.safetensors", "no such model file")),
    Case("train-encoder-model-truncated", 4, lambda c: c.train_encoder(model=truncated(c.tmp / "m.safetensors", lambda p: model_copy(c.model, p))), ("m.safetensors", "truncated")),
    Case("train-encoder-model-not-nsgan", 4, lambda c: c.train_encoder(model=_foreign_model(c.tmp / "m.safetensors")), ("m.safetensors", "not an nsgan model")),
    Case("train-encoder-model-holds-no-config", 2, lambda c: c.train_encoder(config=False), ("m.safetensors", "no training config", "--config")),
    Case("train-encoder-unknown-key", 2, lambda c: c.train_encoder("encoder.colour=3"), ("encoder.colour", "unknown key")),
    Case("train-encoder-kimg-zero", 2, lambda c: c.train_encoder("encoder.kimg=0"), ("encoder.kimg", "is 0")),
    Case("train-encoder-negative-lr", 2, lambda c: c.train_encoder("encoder.lr=-1"), ("encoder.lr",)),
    Case("train-encoder-resolution-differs-from-model", 2, lambda c: c.train_encoder("model.resolution=32"), ("model.resolution", "16 px")),
    Case("train-encoder-shard-folder-missing", 2, lambda c: c.train_encoder(f"data.normal={c.tmp / 'nowhere'}"), ("data.normal", "nowhere")),
    Case("train-encoder-shard-folder-empty", 2, lambda c: c.train_encoder(f"data.normal={_mkdir(c.tmp / 'empty')}"), ("data.normal", "empty")),
    Case("train-encoder-tar-of-unrelated-samples", 3, lambda c: c.train_encoder(f"data.normal={shard_folder(c.shards, c.tmp / 'sh', unrelated_tar)}"), ("x-000000.tar", "no usable sample")),
    Case("train-encoder-resume-without-state", 2, lambda c: c.train_encoder("--resume"), ("enc", "--resume", "no complete encoder state")),
    # ---- nsgan score: model files
    Case("score-model-missing", 4, lambda c: c.score(png(c.tmp / "img.png"), c.tmp / "none.safetensors"), ("none.safetensors", "no such model file")),
    Case("score-model-zero-bytes", 4, lambda c: c.score(png(c.tmp / "img.png"), zero_bytes(c.tmp / "m.safetensors")), ("m.safetensors", "too short to be a model file", "copy it again")),
    Case("score-model-truncated", 4, lambda c: c.score(png(c.tmp / "img.png"), truncated(c.tmp / "m.safetensors", lambda p: model_copy(c.model, p))), ("m.safetensors", "truncated")),
    Case("score-model-header-longer-than-file", 4, lambda c: c.score(png(c.tmp / "img.png"), header_longer_than_file(c.tmp / "m.safetensors")), ("m.safetensors", "header", "exceeds")),
    Case("score-model-not-nsgan", 4, lambda c: c.score(png(c.tmp / "img.png"), _foreign_model(c.tmp / "m.safetensors")), ("m.safetensors", "not an nsgan model")),
    Case("score-model-metadata-missing-key", 4, lambda c: c.score(png(c.tmp / "img.png"), model_with_meta(c.model, c.tmp / "m.safetensors", lambda m: m.pop("generator"))), ("m.safetensors", "'generator'")),
    Case("score-model-metadata-wrong-type", 4, lambda c: c.score(png(c.tmp / "img.png"), model_with_meta(c.model, c.tmp / "m.safetensors", lambda m: m.update(resolution='"big"'))), ("m.safetensors", "resolution")),
    Case("score-model-metadata-not-json", 4, lambda c: c.score(png(c.tmp / "img.png"), model_with_meta(c.model, c.tmp / "m.safetensors", lambda m: m.update(channels="{oops"))), ("m.safetensors", "not an nsgan model", "nsgan's JSON")),
    # ---- nsgan score: images
    Case("score-image-missing", 3, lambda c: c.score(c.tmp / "none.png"), ("none.png", "no such image")),
    Case("score-zero-byte-png", 3, lambda c: c.score(zero_bytes(c.tmp / "img.png")), ("img.png", "cannot read image")),
    Case("score-truncated-png", 3, lambda c: c.score(truncated(c.tmp / "img.png", png)), ("img.png", "cannot read image")),
    Case("score-truncated-jpeg", 3, lambda c: c.score(truncated(c.tmp / "img.jpg", jpeg)), ("img.jpg", "cannot read image")),
    Case("score-truncated-tiff", 3, lambda c: c.score(truncated(c.tmp / "img.tif", tiff)), ("img.tif", "cannot read image")),
    Case("score-2-channel-tiff", 3, lambda c: c.score(tiff(c.tmp / "img.tif", np.zeros((24, 24, 2), np.uint8), photometric="minisblack", planarconfig="contig")), ("img.tif", "channel count 2", "1 or 3")),
    Case("score-1-bit-tiff", 3, lambda c: c.score(tiff(c.tmp / "img.tif", np.zeros((24, 24), bool))), ("img.tif", "1 bit", "8 or 16 bit")),
    Case("score-float-tiff-outside-0-1", 3, lambda c: c.score(tiff(c.tmp / "img.tif", np.full((24, 24), 7.0, np.float32))), ("img.tif", "outside [0, 1]")),
    Case("score-16-bit-rgb-for-a-gray-model", 3, lambda c: c.score(tiff(c.tmp / "img.tif", np.zeros((24, 24, 3), np.uint16), photometric="rgb")), ("img.tif", "3 channel(s)", "expects 1")),
    Case("score-png-claiming-100000x100000", 3, lambda c: c.score(png_claiming(c.tmp / "img.png", 100000, 100000)), ("img.png", "pixel limit", "tiled TIFF")),
    Case("score-folder-with-clashing-names", 3, lambda c: c.score(_clashing_folder(c)), ("a.png", "a.tif", "same outputs")),
    Case("score-empty-folder", 3, lambda c: c.score(_mkdir(c.tmp / "empty")), ("empty", "no images")),
    Case("score-empty-list", 3, lambda c: c.score(_text(c.tmp / "list.txt", "# nothing\n")), ("list.txt", "names no images")),
    Case("score-non-utf8-path", 3, lambda c: c.score(c.tmp / f"{NON_UTF8}.png"), ("caf", "no such image")),
    # ---- nsgan score: options and outputs
    Case("score-stride-zero", 2, lambda c: c.score(png(c.tmp / "img.png"), None, "--stride", "0"), ("stride", "0")),
    Case("score-stride-larger-than-tile", 2, lambda c: c.score(png(c.tmp / "img.png"), None, "--stride", "64"), ("stride", "larger than the tile")),
    Case("score-negative-iterations", 2, lambda c: c.score(png(c.tmp / "img.png"), None, "--iterations", "-1"), ("iterations",)),
    Case("score-nan-lr", 2, lambda c: c.score(png(c.tmp / "img.png"), None, "--lr", "nan"), ("lr", "nan")),
    Case("score-out-is-a-file", 5, lambda c: [*c.score(png(c.tmp / "img.png"))[:-len(FAST) - 2], "--out", str(zero_bytes(c.tmp / "o.txt")), *FAST], ("o.txt", "not writable")),
    Case("score-out-read-only", 5, lambda c: [*c.score(png(c.tmp / "img.png"))[:-len(FAST) - 2], "--out", str(_read_only(c.tmp / "ro")), *FAST], ("output folder is not writable",)),
    Case("score-outputs-exist", 5, _score_existing, ("img.json", "--overwrite")),
    # ---- nsgan calibrate
    Case("calibrate-normal-folder-missing", 3, lambda c: c.calibrate(c.tmp / "nope"), ("nope", "not a folder")),
    Case("calibrate-normal-folder-empty", 3, lambda c: c.calibrate(_mkdir(c.tmp / "empty")), ("empty", "no images")),
    Case("calibrate-masks-without-abnormal", 2, lambda c: c.calibrate(png(c.tmp / "n" / "a.png").parent, "--masks", str(c.tmp)), ("--masks", "needs --abnormal")),
    Case("calibrate-pixel-quantile-out-of-range", 2, lambda c: c.calibrate(png(c.tmp / "n" / "a.png").parent, "--pixel-quantile", "1.5"), ("--pixel-quantile", "(0, 1)")),
    Case("calibrate-mask-missing", 3, lambda c: c.calibrate(png(c.tmp / "n" / "a.png").parent, "--abnormal", str(png(c.tmp / "ab" / "d.png").parent), "--masks", str(_mkdir(c.tmp / "masks"))), ("d.png", "no mask")),
    Case("calibrate-mask-of-another-size", 3, lambda c: c.calibrate(png(c.tmp / "n" / "a.png").parent, "--abnormal", str(png(c.tmp / "ab" / "d.png").parent), "--masks", str(png(c.tmp / "masks" / "d_mask.png", np.zeros((10, 12), np.uint8)).parent)), ("d_mask.png", "12×10")),
    Case("calibrate-foreign-model", 4, lambda c: c.calibrate(png(c.tmp / "n" / "a.png").parent, model=_foreign_model(c.tmp / "m.safetensors")), ("m.safetensors", "not an nsgan model")),
    Case("calibrate-abnormal-folder-missing", 3, lambda c: c.calibrate(png(c.tmp / "n" / "a.png").parent, "--abnormal", str(c.tmp / "nope")), ("nope", "not a folder")),
    # ---- nsgan evaluate
    Case("evaluate-data-missing", 3, lambda c: ["evaluate", "--model", str(c.model), "--data", str(c.tmp / "none"), "--out", str(c.tmp / "ev"), *FAST], ("none", "no test folder")),
    Case("evaluate-mask-of-another-size", 3, lambda c: ["evaluate", "--model", str(c.model), "--data", str(_evaluate_folder(c, (10, 12))), "--out", str(c.tmp / "ev"), *FAST], ("s_mask.png", "12")),
    Case("evaluate-out-is-a-file", 5, lambda c: ["evaluate", "--model", str(c.model), "--data", str(_evaluate_folder(c)), "--out", str(zero_bytes(c.tmp / "ev")), *FAST], ("ev", "not writable")),
]


def _fake_shard_set(folder: Path) -> Path:
    (folder / "normal").mkdir(parents=True)
    (folder / "manifest.json").write_text('{"format": "nsgan-shards"}')
    return folder


def _bytes_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _foreign_model(path: Path) -> Path:
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root with a digest of its content (folders: 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = os.fsencode(p.relative_to(root)).decode("utf-8", "backslashreplace")
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_its_exit_code_and_writes_nothing(case, tmp_path, capsys, model_file, tiny_shards):
    work = tmp_path / "w"
    work.mkdir()
    argv = case.argv(Ctx(work, model_file, tiny_shards))
    before = snapshot(work)
    try:
        code = cli(argv)
    finally:
        for p in work.rglob("*"):  # give read-only folders back to pytest's clean-up
            if p.is_dir():
                p.chmod(0o755)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert code == case.code, err
    line = lines[0]
    assert line.startswith(f"nsgan {argv[0]}: error: ")
    for needle in case.says:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert snapshot(work) == before  # nothing new left behind, nothing existing overwritten


def test_the_catalogue_covers_every_exit_code_class_and_enough_cases():
    codes = {c.code for c in CASES}
    assert codes == {2, 3, 4, 5} and len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    commands = {c.id.split("-")[0] for c in CASES}
    assert commands == {"shards", "train", "score", "calibrate", "evaluate"}


def test_exit_codes_are_the_documented_ones():
    from nsgan.common import errors

    page = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()  # the README links it
    for cls, code in ((ConfigError, 2), (DataError, 3), (ModelError, 4), (OutputError, 5)):
        assert cls.exit_code == code and f"{code} " in page.split("## Exit codes")[1][:600]
    assert errors.EXIT_RUNTIME == 6 and NsganError("x").exit_code == 2


# ------------------------------------------------------------------------------- Python API


def _scorer(model_file):
    from nsgan.score.options import ScoreOptions
    from nsgan.score.scorer import Scorer
    from nsgan.score.search import SearchConfig

    return Scorer.from_file(model_file, ScoreOptions(search=SearchConfig(iterations=2, restarts=1)))


API_CASES = [
    ("api-score-2-channel-array", DataError, lambda m, t: _scorer(m).score(np.zeros((20, 20, 2), np.float32)), "channel count 2"),
    ("api-score-nan-array", DataError, lambda m, t: _scorer(m).score(np.full((20, 20), np.nan, np.float32)), "NaN"),
    ("api-score-float-array-outside-0-1", DataError, lambda m, t: _scorer(m).score(np.full((20, 20), 3.0, np.float32)), "outside [0, 1]"),
    ("api-score-volume", DataError, lambda m, t: _scorer(m).score(np.zeros((2, 20, 20, 1), np.float32)), "unsupported image shape"),
    ("api-score-int64-array", DataError, lambda m, t: _scorer(m).score(np.zeros((20, 20), np.int64)), "unsupported pixel type int64"),
    ("api-score-options-batch-zero", ConfigError, lambda m, t: __import__("nsgan.score.options", fromlist=["x"]).ScoreOptions(batch=0), "batch"),
    ("api-load-foreign-model", ModelError, lambda m, t: __import__("nsgan.models.model_file", fromlist=["x"]).load_model(_foreign_model(t / "f.safetensors")), "not an nsgan model"),
    ("api-write-shards-negative-tile", NsganError, lambda m, t: __import__("nsgan.data.shards", fromlist=["x"]).write_shards(t, tile=-1, out=t / "o"), "--tile"),
    ("api-load-config-nan", ConfigError, lambda m, t: __import__("nsgan.train.config", fromlist=["x"]).load_config(None, ["loss.gamma=nan"]), "loss.gamma"),
]


@pytest.mark.parametrize("cid, exc, call, needle", API_CASES, ids=[c[0] for c in API_CASES])
def test_python_api_bad_input_raises_one_line_nsgan_errors(cid, exc, call, needle, model_file, tmp_path):
    with pytest.raises(exc) as info:
        call(model_file, tmp_path)
    message = str(info.value)
    assert needle in message and "\n" not in message


# ------------------------------------------------------------------------------- edges that must work


EDGES = [
    ("smaller-than-a-tile", lambda d: png(d / "x.png", gray(5, 7))),
    ("1-bit-png", lambda d: _bytes_file(d / "x.png", _one_bit_png())),
    ("16-bit-gray-png", lambda d: png(d / "x.png", (RNG.random((20, 20)) * 65535).astype(np.uint16))),
    ("float-tiff-in-0-1", lambda d: tiff(d / "x.tif", RNG.random((20, 20)).astype(np.float32))),
    ("tiled-16-bit-gray-tiff", lambda d: tiff(d / "x.tif", (RNG.random((20, 20)) * 65535).astype(np.uint16), tile=(16, 16))),
]


def _one_bit_png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(RNG.random((20, 20)) > 0.5).convert("1").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name, make", EDGES, ids=[e[0] for e in EDGES])
def test_edge_inputs_that_are_not_mistakes_are_scored(name, make, model_file, tmp_path, capsys):
    image = make(tmp_path)
    assert cli(["score", "--model", str(model_file), "--image", str(image), "--out", str(tmp_path / "o"), *FAST]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "o" / "x.json").is_file() and (tmp_path / "o" / "x.map.tif").is_file()


def test_a_file_name_that_is_not_utf8_is_scored_and_printed(model_file, tmp_path):
    """In a real terminal stdout refuses undecodable file names; the CLI prints them escaped instead of crashing."""
    import subprocess
    import sys

    from .conftest import subprocess_env

    folder = tmp_path / "imgs"
    name = os.fsdecode(b"caf\xe9.png")
    png(folder / name)
    env = {**subprocess_env(), "PYTHONIOENCODING": "utf-8"}  # strict UTF-8 streams, as on most terminals
    proc = subprocess.run([sys.executable, "-m", "nsgan.cli.main", "score", "--model", str(model_file), "--image", str(folder),
                           "--out", str(tmp_path / "o"), *FAST], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert b"caf\\udce9.png: score" in proc.stdout  # the undecodable byte, escaped
    assert [os.fsencode(p.name) for p in (tmp_path / "o").glob("*.json")] == [b"caf\xe9.json"]


def test_evaluate_on_a_folder_with_a_file_name_that_is_not_utf8_writes_its_bytes_into_scores_csv(model_file, tmp_path):
    data = tmp_path / "mvtec"
    png(data / "test" / "good" / "g.png")
    png(data / "test" / "good" / os.fsdecode(b"caf\xe9.png"))
    png(data / "test" / "scratch" / "s.png")
    mask = np.zeros((24, 24), np.uint8)
    mask[5:9, 5:9] = 255
    png(data / "ground_truth" / "scratch" / "s_mask.png", mask)
    assert cli(["evaluate", "--model", str(model_file), "--data", str(data), "--out", str(tmp_path / "ev"), *FAST]) == 0
    rows = (tmp_path / "ev" / "scores.csv").read_bytes().splitlines()
    assert any(row.startswith(b"test/good/caf\xe9.png,0,good,") for row in rows), rows
