"""One way to write files (temp name, fsync, rename, fsync folder) and one definition of shared names."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nsgan.common import atomic
from nsgan.common.atomic import atomic_write, atomic_write_json
from nsgan.common.errors import OutputError

from .conftest import REPO


def test_write_is_fsynced_renamed_and_its_folder_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert path.read_text() == '{\n  "x": 1\n}\n'
    assert synced[0].endswith(".a.json.%d.tmp" % os.getpid()) and synced[1] == str(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    old = tmp_path / "m.bin"
    old.write_bytes(b"old")

    def half_then_disk_full(tmp: Path) -> None:
        tmp.write_bytes(b"new but only half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"m\.bin: cannot write \(No space left on device\)"):
        atomic_write(old, half_then_disk_full)
    assert old.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.bin"]

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(old, interrupted)
    assert old.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.bin"]


def test_no_module_renames_files_into_place_by_itself():
    """Every file write-then-rename goes through nsgan.common.atomic (folders renamed whole are the exceptions)."""
    allowed = {"nsgan/common/atomic.py": 1, "nsgan/train/checkpoint.py": 1, "nsgan/data/shards.py": 2, "tools/protocols/common.py": 1}
    found = {}
    for path in [*REPO.glob("nsgan/**/*.py"), *REPO.glob("tools/**/*.py")]:
        n = len(re.findall(r"os\.(replace|rename)\(", path.read_text()))
        if n:
            found[path.relative_to(REPO).as_posix()] = n
    assert found == allowed


def test_mask_suffix_and_gray_modes_are_defined_once():
    sources = {p.relative_to(REPO).as_posix(): p.read_text() for p in [*REPO.glob("nsgan/**/*.py"), *REPO.glob("tools/**/*.py")]}
    assert [name for name, text in sources.items() if re.search(r"""^\s*MASK_SUFFIX\s*=""", text, re.M)] == ["nsgan/data/imageio.py"]
    assert [name for name, text in sources.items() if re.search(r"""\bf["'][^"'\n]*_mask""", text)] == []
    assert [name for name, text in sources.items() if re.search(r"""["']I;16B["']""", text)] == ["nsgan/data/imageio.py"]


def test_a_one_bit_png_tile_streams_like_the_shards_writer_reads_it():
    """shards.py counted mode "1" as gray but the stream refused it as a wrong channel count."""
    from nsgan.data.stream import decode_sample

    bits = np.zeros((16, 16), dtype=bool)
    bits[4:8] = True
    buf = io.BytesIO()
    Image.fromarray(bits).convert("1").save(buf, format="PNG")
    arr, kind, why = decode_sample({"png": buf.getvalue(), "__key__": "k"}, tile=16, channels=1)
    assert kind == "" and why == "", why
    assert arr.shape == (1, 16, 16) and arr.max() == 1.0 and arr.min() == -1.0 and (arr[0, 4:8] == 1.0).all()


def test_temp_names_are_hidden_and_per_process(tmp_path):
    t = atomic.temp_name(tmp_path / "x.overlay.png")
    assert t.parent == tmp_path and t.name.startswith(".x.overlay.png.") and t.name.endswith(".tmp") and str(os.getpid()) in t.name
