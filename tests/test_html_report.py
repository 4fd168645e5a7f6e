"""OUT/index.html of `nsgan score` and `nsgan evaluate`: rows, escaping, interrupted runs, and the page in a real browser.

The browser tests open the pages from file:// in headless Chromium (Debian's `chromium`; CI installs
it) over the DevTools protocol (tests/headless.py) and skip only where chromium is absent. They check
that a page loads without a console error, shows a row per image, filters rows by verdict in its
JavaScript, links to files that open, and draws a screenshot that is not blank; and that the error
check itself fails on pages with a broken script, a blocked script or a missing resource.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote_to_bytes

import numpy as np
import pytest

from nsgan.cli.main import main
from nsgan.common.errors import printable
from nsgan.models.model_file import update_metadata
from nsgan.share.html_page import CSP, JS, PAGE
from nsgan.cli.page import main as rebuild
from nsgan.data.imageio import write_png

from .headless import CHROMIUM, Browser
from .test_evaluate import make_category

FAST = ["--no-progress"]  # the encoder model scores in one pass per tile
ODD = "<img src=x onerror=alert(1)> & \"q\" 'x'.png"  # markup, quotes, an ampersand, spaces: all must stay text
NON_UTF8 = os.fsdecode(b"caf\xe9-\xff.png")  # undecodable bytes, as old shares hand them over
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not found on PATH (Debian's chromium package; CI installs it)")


# ------------------------------------------------------------------------------ helpers

class Rows(HTMLParser):
    """The rows of a page's #images table: (data-groups, [cell texts], [hrefs], [img srcs])."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.rows: list[dict] = []
        self._in_images = False
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._in_images = a.get("id") == "images"
        elif self._in_images and tag == "tr" and "data-groups" in a:
            self.rows.append({"groups": a["data-groups"].split(), "cells": [], "hrefs": [], "imgs": []})
        elif self.rows and self._in_images:
            if tag == "td":
                self._cell = []
            elif tag == "a":
                self.rows[-1]["hrefs"].append(a["href"])
            elif tag == "img":
                self.rows[-1]["imgs"].append(a["src"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_images = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def reports(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}


def make_folder(root: Path, names=("a.png", ODD, "sub/c d.png", NON_UTF8, "e.png")) -> Path:
    rng = np.random.default_rng(7)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_png(root / name, rng.random((24, 30, 1)).astype(np.float32))
    return root


def score(model: Path, image: Path, out: Path, *extra: str) -> int:
    return main(["score", "--model", str(model), "--image", str(image), "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def scored(gan_model_with_encoder, tmp_path_factory) -> dict[str, Path]:
    """Two real `nsgan score` runs of one small folder: uncalibrated, then calibrated so that 2 of 5 are anomalous."""
    root = tmp_path_factory.mktemp("html")
    src = make_folder(root / "src")
    assert score(gan_model_with_encoder, src, root / "uncal") == 0
    scores = sorted((r["score"] for r in reports(root / "uncal").values()), reverse=True)
    model = root / "calibrated.safetensors"
    shutil.copy(gan_model_with_encoder, model)
    update_metadata(model, thresholds={"image": (scores[1] + scores[2]) / 2, "pixel": 0.05})
    assert score(model, src, root / "cal") == 0
    return {"src": src, "uncal": root / "uncal", "cal": root / "cal", "model": model}


@pytest.fixture(scope="module")
def evaluated(model_file, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("html-eval")
    data = make_category(root / "cat", protocol={"pixel_masks": True})
    out = root / "out"
    assert main(["evaluate", "--model", str(model_file), "--data", str(data), "--out", str(out),
                 "--iterations", "2", "--restarts", "1", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium not found on PATH (Debian's chromium package; CI installs it)")
    with Browser() as b:
        yield b


def visible_rows(b: Browser) -> list[str]:
    return b.evaluate("Array.from(document.querySelectorAll('#images tbody tr')).filter(r => !r.hidden)"
                      ".map(r => r.getAttribute('data-groups'))")


def assert_not_blank(png: bytes) -> None:
    from PIL import Image

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
        assert min(rgb.size) > 100
        assert len(rgb.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 20  # text, badges and thumbnails, not one colour


# ------------------------------------------------------------------------------ the score page as written

def test_score_page_has_a_row_per_report_sorted_with_escaped_names_and_working_links(scored):
    out = scored["cal"]
    page = (out / PAGE).read_text(encoding="utf-8")
    reps = reports(out)
    rows = Rows(page).rows
    assert len(rows) == len(reps) == 5
    by_score = sorted(reps.values(), key=lambda r: -r["score"])
    assert [row["cells"][2] for row in rows] == [printable(r["image"]) for r in by_score]  # text exactly as named
    assert [row["groups"] for row in rows] == [["anomalous"]] * 2 + [["normal"]] * 3
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "\\xe9-\\xff" in page  # the undecodable bytes shown, not dropped
    for row in rows:
        assert len(row["imgs"]) == 1 and row["imgs"][0].startswith("data:image/jpeg;base64,")
        assert all(h.startswith("./") and "/" not in h[2:] for h in row["hrefs"])  # beside the page, nowhere else
        targets = [os.fsdecode(unquote_to_bytes(h[2:])) for h in row["hrefs"]]  # percent-encoded bytes of the name
        stem = targets[-1][: -len(".json")]
        assert targets == [f"{stem}.overlay.png", f"{stem}.map.tif", f"{stem}.overlay.png", f"{stem}.json"]
        assert all((out / t).is_file() for t in targets)
    assert "model sha256" in page and reps["a.json"]["model_sha256"] in page
    assert str(scored["model"]) in page and "calibrated" in page and "mode=encoder" in page


def test_uncalibrated_page_says_so_and_every_verdict_is_uncalibrated(scored):
    page = (scored["uncal"] / PAGE).read_text(encoding="utf-8")
    assert {g for row in Rows(page).rows for g in row["groups"]} == {"uncalibrated"}
    assert "not calibrated" in page and "map mean + 4·std" in page


def test_one_image_gets_a_one_row_page(gan_model_with_encoder, tmp_path):
    make_folder(tmp_path / "src", names=("only.png",))
    assert score(gan_model_with_encoder, tmp_path / "src" / "only.png", tmp_path / "out") == 0
    assert len(Rows((tmp_path / "out" / PAGE).read_text()).rows) == 1


def test_a_stopped_run_leaves_a_page_of_what_is_done_and_a_later_run_completes_it(gan_model_with_encoder, tmp_path, monkeypatch):
    from nsgan.score.scorer import Scorer

    src = make_folder(tmp_path / "src", names=("a.png", "b.png", "d.png"))
    (src / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # scored third: the run stops there
    out = tmp_path / "out"
    assert score(gan_model_with_encoder, src, out) == 3
    page = (out / PAGE).read_text()
    assert sorted(Path(r["cells"][2]).name for r in Rows(page).rows) == ["a.png", "b.png"]
    assert "stopped by an error (DataError) after 2 of 4" in page
    (tmp_path / "bad.txt").write_text(f"{src / 'c.png'}\n")
    assert score(gan_model_with_encoder, tmp_path / "bad.txt", out) == 3
    assert (out / PAGE).read_text() == page  # a run that wrote nothing leaves the page as it was

    (src / "c.png").unlink()
    (tmp_path / "rest.txt").write_text(f"{src / 'd.png'}\n")  # go on with what is left, into the same folder
    assert score(gan_model_with_encoder, tmp_path / "rest.txt", out) == 0
    page = (out / PAGE).read_text()
    assert sorted(Path(r["cells"][2]).name for r in Rows(page).rows) == ["a.png", "b.png", "d.png"]
    assert "This run was" not in page and "in progress" not in page

    calls = []
    real = Scorer.score_to_files

    def interrupted(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Scorer, "score_to_files", interrupted)
    assert score(gan_model_with_encoder, src, tmp_path / "out2") == 130
    page = (tmp_path / "out2" / PAGE).read_text()
    assert len(Rows(page).rows) == 1 and "interrupted after 1 of 3" in page


def test_a_users_own_index_html_is_not_replaced_without_overwrite(gan_model_with_encoder, tmp_path, capsys):
    make_folder(tmp_path / "src", names=("a.png",))
    out = tmp_path / "out"
    out.mkdir()
    (out / PAGE).write_text("<html>my notes</html>")
    assert score(gan_model_with_encoder, tmp_path / "src", out) == 5
    assert "index.html: exists and was not written by nsgan" in capsys.readouterr().err
    assert (out / PAGE).read_text() == "<html>my notes</html>" and not list(out.glob("*.json"))
    assert score(gan_model_with_encoder, tmp_path / "src", out, "--overwrite") == 0
    assert len(Rows((out / PAGE).read_text()).rows) == 1
    assert score(gan_model_with_encoder, tmp_path / "src", out, "--overwrite") == 0  # nsgan's own page is rewritten


def test_page_is_rebuilt_from_the_folder_and_tells_mixed_settings_apart(scored, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(scored["cal"], mixed)
    (mixed / PAGE).unlink()
    for f in scored["uncal"].glob("a.*"):  # one report of the uncalibrated run under another name
        shutil.copy(f, mixed / f.name.replace("a.", "a-uncal.", 1))
    (mixed / "broken.json").write_text('{"image": "x.png", "score": "NaN"}')
    (mixed / "notes.json").write_text('{"something": "else"}')  # not a report: ignored silently
    assert rebuild([str(mixed)]) == 0
    page = (mixed / PAGE).read_text()
    rows = Rows(page).rows
    assert len(rows) == 6 and "2 different models or settings" in page
    assert {row["cells"][-1] for row in rows} == {"1", "2"}
    assert "broken.json" in page and "notes.json" not in page
    assert rebuild([str(tmp_path / "nowhere")]) == 5
    assert "no such folder" in capsys.readouterr().err


def test_evaluate_page_has_metrics_figures_and_a_row_per_test_image(evaluated):
    page = (evaluated / PAGE).read_text()
    metrics = json.loads((evaluated / "metrics.json").read_text())
    rows = Rows(page).rows
    assert len(rows) == metrics["image"]["n_good"] + metrics["image"]["n_defective"] == 10
    assert sum("defective" in r["groups"] for r in rows) == 6
    assert f"{metrics['image']['auroc']:.4f}" in page and "AUPRO" in page and f"{metrics['pixel']['aupro']:.4f}" in page
    assert page.count('src="data:image/png;base64,') == 2  # roc.png and cases.png embedded
    assert metrics["model_sha256"] in page
    scores = [float(r["cells"][4]) for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_csp_admits_exactly_the_inline_script():
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CSP and "default-src 'none'" in CSP and "img-src data:" in CSP


# ------------------------------------------------------------------------------ in the browser

@needs_chromium
def test_score_page_in_chromium_loads_clean_shows_every_row_filters_and_links(scored, browser):
    out = scored["cal"]
    url = (out / PAGE).as_uri()
    load = browser.load(url)
    assert load.errors == []
    assert load.requests == [url]  # nothing fetched but the page: thumbnails are inline, no network
    names = browser.evaluate("Array.from(document.querySelectorAll('#images tbody tr td.name')).map(td => td.textContent)")
    assert sorted(names) == sorted(printable(r["image"]) for r in reports(out).values())
    assert browser.evaluate("Array.from(document.querySelectorAll('#images img')).every(i => i.complete && i.naturalWidth > 0)")
    assert visible_rows(browser) == ["anomalous"] * 2 + ["normal"] * 3
    assert_not_blank(browser.screenshot())

    browser.evaluate("document.querySelector('button[data-filter=\"anomalous\"]').click()")  # a click, through the page's JS
    assert visible_rows(browser) == ["anomalous"] * 2
    assert browser.evaluate("document.getElementById('shown').textContent") == "2 of 5 shown"
    assert browser.evaluate("location.hash") == "#filter=anomalous"
    browser.evaluate("document.querySelector('button[data-filter=\"uncalibrated\"]').click()")
    assert visible_rows(browser) == []

    load = browser.load(url + "?x#filter=normal")  # a link to the filtered view opens filtered
    assert load.errors == [] and visible_rows(browser) == ["normal"] * 3
    assert browser.evaluate("document.querySelector('button[aria-pressed=\"true\"]').getAttribute('data-filter')") == "normal"

    hrefs = browser.evaluate("Array.from(document.querySelectorAll('#images a')).map(a => a.href)")
    assert len(hrefs) == 5 * 4  # thumbnail, map, overlay, JSON
    for h in hrefs:  # PNG and JSON open in the tab; the TIFF map is a download (aborted in headless), not a missing file
        assert browser.navigate_error(h) == (None if not h.endswith(".tif") else "net::ERR_ABORTED"), h
    assert browser.navigate_error((out / "missing.map.tif").as_uri()) == "net::ERR_FILE_NOT_FOUND"


@needs_chromium
def test_evaluate_page_in_chromium_loads_clean_and_filters_by_label(evaluated, browser):
    url = (evaluated / PAGE).as_uri()
    load = browser.load(url)
    assert load.errors == [] and load.requests == [url]
    assert len(visible_rows(browser)) == 10
    assert browser.evaluate("Array.from(document.querySelectorAll('.figure img')).map(i => i.naturalWidth > 100)") == [True, True]
    browser.evaluate("document.querySelector('button[data-filter=\"defective\"]').click()")
    assert len(visible_rows(browser)) == 6
    assert_not_blank(browser.screenshot())


@needs_chromium
def test_the_console_check_fails_on_broken_pages(scored, browser, tmp_path):
    """The error check is only worth something if it fails: a broken line in the page's own script, a
    script the CSP blocks, console.error, a missing file and a syntax error must each be reported."""
    import base64
    import hashlib

    page = (scored["cal"] / PAGE).read_text(encoding="utf-8")
    broken_js = JS.replace('"use strict";', '"use strict";\n  nsganNoSuchFunction();', 1)
    new_hash = "'sha256-" + base64.b64encode(hashlib.sha256(broken_js.encode()).digest()).decode() + "'"
    old_hash = re.search(r"script-src ('sha256-[^']+')", page).group(1)
    cases = {
        "runtime": page.replace(JS, broken_js).replace(old_hash, new_hash),  # runs, then throws
        "blocked": page.replace(JS, broken_js),  # the CSP hash no longer matches: blocked
        "console": "<!DOCTYPE html><title>c</title><script>console.error('from the page')</script>",
        "missing": "<!DOCTYPE html><title>m</title><img src='no-such-file.png'>",
        "syntax": "<!DOCTYPE html><title>s</title><script>var x = ;</script>",
    }
    expected = {"runtime": "nsganNoSuchFunction is not defined", "blocked": "Content Security Policy",
                "console": "from the page", "missing": "ERR_FILE_NOT_FOUND", "syntax": "SyntaxError"}
    for name, text in cases.items():
        (tmp_path / f"{name}.html").write_text(text, encoding="utf-8")
        errors = browser.load((tmp_path / f"{name}.html").as_uri()).errors
        assert errors and any(expected[name] in e for e in errors), (name, errors)
    (tmp_path / "clean.html").write_text(page, encoding="utf-8")  # the same page untouched, elsewhere: clean
    assert browser.load((tmp_path / "clean.html").as_uri()).errors == []
