"""`nsgan audit`: a model trained on a folder with hidden defective images ranks those images first;
the ranking, suspects list, masks and page are right; a stopped audit resumes; the suspects move into
the abnormal set with `nsgan shards --abnormal-list` / `--abnormal-masks-from-audit`."""

from __future__ import annotations

import csv
import json
import math
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from nsgan.cli.main import main as cli
from nsgan.common.errors import EXIT_USAGE, EXIT_DATA, EXIT_OUTPUT, OutputError
from nsgan.data.shards import write_shards
from nsgan.evaluate.audit import CSV, MASKS, ROWS, SUSPECTS, audit
from nsgan.evaluate.metrics import image_auroc
from nsgan.score.scorer import Scorer
from nsgan.train.config import load_config
from nsgan.train.pipeline import train

from .conftest import SMOOTH_MATERIAL_TRAIN, write_dirty_folder
from .headless import CHROMIUM, Browser

AUDIT_AUROC_BOUND = 0.8  # measured 0.90 and 0.99 (seeds 0 and 1 of this fixture) when the test was written
N_CLEAN, N_DIRTY = 18, 6


@pytest.fixture(scope="module")
def dirty(tmp_path_factory) -> dict:
    """A 'normal' training folder with hidden defective images, and a model (G, E and C) trained on all of it."""
    root = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    folder = root / "good"
    names = write_dirty_folder(folder, rng, N_CLEAN, N_DIRTY, 48, sub_every=3)
    write_shards(folder, None, None, tile=16, out=root / "shards", stride=8, channels=1, seed=0)
    cfg = load_config(None, [*SMOOTH_MATERIAL_TRAIN,
        # the comparator C, whose map is the default for a model that has one (nsgan/score/options.py)
        "comparator.kimg=3", "comparator.reference=none", "comparator.width=8", "comparator.lr=0.003", "comparator.batch=16",
        "comparator.denoise=none", "audit.folds=0",  # the in-sample audit of a C that learned from every image
        f"data.normal={root / 'shards' / 'normal'}", f"run_dir={root / 'run'}"])
    model = train(cfg)
    out = root / "audit"
    result = audit(model, root / "shards", out)  # through the shard set: its manifest names the folder
    return {"root": root, "folder": folder, "names": names, "model": model, "out": out, "result": result}


def test_the_audit_ranks_the_hidden_defective_images_first(dirty):
    """With the default scoring of a model with C: the comparator's map (the detail residual of the same
    model gave 0.74 and 0.35 on seeds 0 and 1 of this folder when the test was written)."""
    assert dirty["result"].rows and Scorer.from_file(dirty["model"]).map_settings()["residual"] == "comparator"
    rows = dirty["result"].rows
    assert sorted(r.path for r in rows) == sorted(dirty["names"])
    scores = np.array([r.score for r in rows])
    labels = np.array([dirty["names"][r.path] for r in rows])
    assert image_auroc(scores, labels) > AUDIT_AUROC_BOUND, list(zip(scores.round(4), labels))
    assert list(scores) == sorted(scores, reverse=True)


def test_ranking_suspects_and_masks_on_disk(dirty):
    out, result = dirty["out"], dirty["result"]
    n = len(dirty["names"])
    with open(out / CSV, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [t["path"] for t in table] == [r.path for r in result.rows]
    assert [int(t["rank"]) for t in table] == list(range(1, n + 1))
    # uncalibrated model, no --top: the top 5 %
    expected = [r.path for r in result.rows[:math.ceil(0.05 * n)]]
    assert (out / SUSPECTS).read_text().splitlines() == expected == result.suspects
    assert "top 5%" in result.rule and "no calibrated" in result.rule
    for t, r in zip(table, result.rows):
        assert int(t["suspect"]) == (r.path in expected)
        if r.regions:  # the largest region's box is inside the image and its mask is on disk
            x0, y0, x1, y1 = (int(t[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
            assert 0 <= x0 < x1 <= r.shape[1] and 0 <= y0 < y1 <= r.shape[0] and int(t["region_area"]) == r.area > 0
            mask = np.asarray(Image.open((out / MASKS / r.path).with_suffix(".png"))) > 0
            assert mask.shape == tuple(r.shape) and mask[y0:y1, x0:x1].sum() >= r.area
        else:
            assert t["box_x0"] == "" and not (out / MASKS / r.path).with_suffix(".png").exists()


def test_the_cli_takes_top_and_a_rerun_scores_nothing_again(dirty, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["audit", "--model", str(dirty["model"]), "--data", str(dirty["folder"]), "--out", str(out), "--top", "25",
            "--no-progress"]
    assert cli(argv) == 0
    n = len(dirty["names"])
    suspects = (out / SUSPECTS).read_text().splitlines()
    assert len(suspects) == math.ceil(0.25 * n)
    assert suspects == [r.path for r in dirty["result"].rows[:len(suspects)]]  # same model, same order as the API
    assert f"audited {n} image(s) ({n} scored now)" in capsys.readouterr().out
    before = (out / ROWS).read_bytes()
    assert cli(argv) == 0
    assert f"({0} scored now)" in capsys.readouterr().out and (out / ROWS).read_bytes() == before


def test_a_stopped_audit_resumes_where_it_stopped(dirty, tmp_path):
    scorer = Scorer.from_file(dirty["model"])
    real = scorer.score_all

    def stops_after_7(images):
        for k, res in enumerate(real(images)):
            if k == 7:
                raise KeyboardInterrupt
            yield res

    scorer.score_all = stops_after_7
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        audit(None, dirty["folder"], out, scorer=scorer)
    assert len((out / ROWS).read_text().splitlines()) == 1 + 7  # header + the images done
    scorer.score_all = real
    resumed = audit(None, dirty["folder"], out, scorer=scorer)
    assert resumed.scored_now == len(dirty["names"]) - 7
    want = {r.path: r.score for r in dirty["result"].rows}
    got = {r.path: r.score for r in resumed.rows}
    assert got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-5 for k in want)


def test_another_model_in_the_same_out_is_refused_and_the_audit_kept(dirty, gan_model_with_encoder, tmp_path):
    other = gan_model_with_encoder  # with an encoder its audit is one pass per tile, not a latent search per tile
    out = tmp_path / "kept"
    audit(dirty["model"], dirty["folder"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(OutputError, match="audit.jsonl: an audit of another model sha256"):
        audit(other, dirty["folder"], out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert cli(["audit", "--model", str(other), "--data", str(dirty["folder"]), "--out", str(out), "--no-progress"]) == EXIT_OUTPUT
    assert cli(["audit", "--model", str(other), "--data", str(dirty["folder"]), "--out", str(out), "--no-progress",
                "--overwrite"]) == 0


@pytest.mark.parametrize("argv, code, says", [
    (["--data", "{tmp}/nowhere"], EXIT_DATA, "nowhere: no such folder"),
    (["--data", "{tmp}/empty"], EXIT_DATA, "no images in this folder"),
    (["--top", "0"], EXIT_USAGE, "--top: 0.0 is not a percentage"),
])
def test_bad_input_is_one_line_with_its_exit_code(dirty, tmp_path, capsys, argv, code, says):
    (tmp_path / "empty").mkdir()
    base = {"--model": str(dirty["model"]), "--data": str(dirty["folder"]), "--out": str(tmp_path / "o")}
    for k in range(0, len(argv), 2):
        base[argv[k]] = argv[k + 1].format(tmp=tmp_path)
    assert cli(["audit", *[x for kv in base.items() for x in kv], "--no-progress"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "o").exists()  # nothing left behind


def test_shards_take_the_suspects_into_the_abnormal_set(dirty, tmp_path):
    folder, out = dirty["folder"], dirty["out"]
    listed = (out / SUSPECTS).read_text().splitlines()
    plain = write_shards(folder, None, None, tile=16, out=tmp_path / "plain", stride=16, channels=1)
    assert cli(["shards", "--normal", str(folder), "--tile", "16", "--out", str(tmp_path / "carved"),
                "--abnormal-masks-from-audit", str(out)]) == 0
    carved = json.loads((tmp_path / "carved" / "manifest.json").read_text())
    c, p = carved["counts"], plain["counts"]
    assert carved["inputs"]["abnormal_listed"] == len(listed)
    assert c["images_read_abnormal"] == len(listed) and c["images_read_normal"] == p["images_read_normal"] - len(listed)
    assert c["tiles_abnormal"] > 0 and c["tiles_normal"] + c["tiles_abnormal"] == p["tiles_normal"]
    with_masks = sum((out / MASKS / name).with_suffix(".png").exists() for name in listed)
    assert (c["tiles_abnormal_with_mask"] > 0) == (with_masks > 0)

    bad = tmp_path / "bad.txt"
    bad.write_text(f"# suspects\n{listed[0]}\nno/such.png\n")
    assert cli(["shards", "--normal", str(folder), "--tile", "16", "--out", str(tmp_path / "b"), "--abnormal-list", str(bad)]) == EXIT_DATA


def test_the_page_in_chromium_shows_every_row_and_saves_the_ticked_names(dirty):
    if CHROMIUM is None:
        pytest.skip("chromium not found on PATH (Debian's chromium package; CI installs it)")
    out, rows = dirty["out"], dirty["result"].rows
    url = (out / "index.html").as_uri()

    def saved() -> list[str]:
        href = b.evaluate("document.getElementById('download').href")
        assert href.startswith("data:text/plain;charset=utf-8,")
        return urllib.parse.unquote(href.split(",", 1)[1]).splitlines()

    with Browser() as b:
        load = b.load(url)
        assert load.errors == [] and load.requests == [url]
        names = b.evaluate("Array.from(document.querySelectorAll('#images tbody tr input.pick')).map(i => i.value)")
        assert names == [r.path for r in rows]  # highest first
        assert b.evaluate("Array.from(document.querySelectorAll('#images img')).every(i => i.complete && i.naturalWidth > 0)")
        assert b.evaluate("document.querySelectorAll('#images img').length") == len(rows)
        assert saved() == dirty["result"].suspects  # the suspects come ticked
        b.evaluate("document.getElementById('pick-none').click()")
        assert saved() == []
        for k in (4, 1, 9):  # ticking rows through the page's own checkboxes
            b.evaluate(f"document.querySelectorAll('input.pick')[{k}].click()")
        assert saved() == [rows[1].path, rows[4].path, rows[9].path]  # in page order
        assert b.evaluate("document.getElementById('picked').textContent") == f"3 of {len(rows)} selected"
        b.evaluate("document.getElementById('pick-suspects').click()")
        assert saved() == dirty["result"].suspects
