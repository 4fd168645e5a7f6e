"""The audit page (OUT/index.html of `nsgan audit`): the training images highest score first, each with
its overlay, a checkbox (ticked for the suspects) and a button that saves the ticked names as a text
file, the list `nsgan shards --abnormal-list` reads. Static: no server, the house page's CSP."""

from __future__ import annotations

from pathlib import Path

from nsgan.common.atomic import atomic_write_text
from nsgan.share.html_page import GENERATOR, PAGE, _now, _num, _page, _settings, _settings_table, data_uri, text

THUMBS = "thumbs"  # OUT's folder of overlay thumbnails, <row id>.jpg (nsgan.evaluate.audit writes them)

# Ticking rows rewrites the download link's data: URI (one relative path a line), so the file saved is
# exactly what is ticked; the counter says how many.
AUDIT_JS = """
(function () {
  "use strict";
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input.pick"));
  var link = document.getElementById("download");
  var count = document.getElementById("picked");
  function update() {
    var names = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    link.href = "data:text/plain;charset=utf-8," + encodeURIComponent(names.length ? names.join("\\n") + "\\n" : "");
    count.textContent = names.length + " of " + boxes.length + " selected";
  }
  function set(rule) {
    boxes.forEach(function (b) { b.checked = rule(b); });
    update();
  }
  boxes.forEach(function (b) { b.addEventListener("change", update); });
  document.getElementById("pick-suspects").addEventListener("click", function () {
    set(function (b) { return b.getAttribute("data-suspect") === "1"; });
  });
  document.getElementById("pick-none").addEventListener("click", function () { set(function () { return false; }); });
  update();
})();
"""


THUMBS_ON_PAGE = 500  # overlays embedded for the highest rows only: a page of 5,000 would weigh 25 MB


SAMPLE_WORDS = {
    "in-sample": "In-sample: these are the images the model's comparator was trained on, so it was taught that their "
                 "tiles are normal and the dirty ones rank lower than they should. An out-of-fold audit "
                 "(<code>nsgan audit --folds K</code>) scores each image with a comparator that never saw it.",
    "held-out": "This folder is not the one the model was trained on: its scores are out-of-sample.",
    "out-of-fold": "Out-of-fold: each image was scored by a comparator trained on the other folds only (column "
                   "<em>fold</em>); each fold's scores are robust z-scores within that fold, so the folds share one scale "
                   "(column <em>raw</em>: that comparator's own image score).",
}


def _row(rank: int, row, suspect: bool, out_dir: Path, crossfit: bool = False) -> str:
    thumb_file = out_dir / THUMBS / f"{row.id}.jpg"
    if rank > THUMBS_ON_PAGE:
        img = f'<a href="./{THUMBS}/{thumb_file.name}">overlay</a>'
    else:
        try:
            img = f'<img src="{data_uri(thumb_file.read_bytes(), "image/jpeg")}" alt="overlay of {text(row.path)}">'
        except OSError:
            img = '<span class="muted">no overlay</span>'
    box = text(", ".join(str(v) for v in row.box)) if row.box else '<span class="muted">none</span>'
    checked = " checked" if suspect else ""
    badge = '<span class="badge anomalous">suspect</span>' if suspect else ""
    return (f'<tr id="row-{rank}" data-groups="{"suspect" if suspect else "clear"}">'
            f'<td class="num">{rank}</td>'
            f'<td><input type="checkbox" class="pick" value="{text(row.path)}" data-suspect="{int(suspect)}"'
            f' aria-label="select {text(row.path)}"{checked}></td>'
            f'<td class="thumb">{img}</td><td class="name">{text(row.path)} {badge}</td>'
            f'<td class="num">{_num(row.score)}</td><td class="num">{row.regions}</td><td class="num">{box}</td>'
            f'<td class="num">{row.area}</td>'
            + (f'<td class="num">{row.fold}</td><td class="num">{_num(row.raw_score)}</td>' if crossfit else "")
            + "</tr>")


def render_audit_page(out_dir: str | Path, rows, suspects: set[str], rule: str, header: dict) -> str:
    out_dir = Path(out_dir)
    crossfit = header.get("crossfit")
    sample = SAMPLE_WORDS.get(header.get("sample"))
    parts = [f"<h1>nsgan audit: {text(Path(header.get('data', '')).name)}</h1>",
             f'<p class="muted">{len(rows)} training image(s), highest image score first. Written by {text(GENERATOR)} '
             f"at {_now()} from audit.jsonl in this folder.</p>",
             "<h2>Model and settings</h2>" + _settings_table([
                 ("data", text(header.get("data"))), ("model sha256", text(header.get("model_sha256"))),
                 ("map and image score", _settings(header.get("map_settings"))), ("tiling", _settings(header.get("tiling"))),
                 *([("cross-fitting", _settings(crossfit))] if crossfit else []),
                 ("suspects", text(f"{len(suspects)}: {rule}"))]),
             *([f'<p class="sample">{sample}</p>'] if sample else []),
             "<h2>Images</h2>",
             '<p>Tick the images that are defective and save the list; '
             "<code>nsgan shards --abnormal-list FILE</code> moves them into the abnormal set for the next training.</p>",
             '<div class="filters"><button type="button" id="pick-suspects">select the suspects</button>'
             '<button type="button" id="pick-none">select none</button> '
             '<a id="download" download="suspects.txt" href="data:text/plain;charset=utf-8,">save the selected names</a> '
             '<span id="picked" class="muted"></span></div>']
    head = ["#", "select", "overlay", "image", "score", "regions", "largest region (x0, y0, x1, y1)", "area",
            *(["fold", "raw"] if crossfit else [])]
    body = "\n".join(_row(k, r, r.path in suspects, out_dir, bool(crossfit)) for k, r in enumerate(rows, start=1))
    parts.append(f'<table id="images"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>\n'
                 f"<tbody>\n{body}\n</tbody></table>")
    return _page(f"nsgan audit: {Path(header.get('data', '')).name}", "\n".join(parts), script=AUDIT_JS)


def write_audit_page(out_dir: str | Path, rows, suspects: set[str], rule: str, header: dict) -> Path:
    return atomic_write_text(Path(out_dir) / PAGE, render_audit_page(out_dir, rows, suspects, rule, header))
