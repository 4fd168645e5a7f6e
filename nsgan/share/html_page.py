"""The inspection page: OUT/index.html, one static file a person opens from disk (file://).

`nsgan score` writes it from the per-image JSON reports in its output folder, so the page covers
every report there (earlier runs into the same folder included) and can be rebuilt from the folder
alone: `python -m nsgan.cli.page OUT`. Rows are sorted by image score, highest first, with the
verdict, a thumbnail of the overlay, the region count and relative links to the map, overlay and
JSON; buttons filter the rows by verdict. `nsgan evaluate` writes a page of its own from
metrics.json, scores.csv, roc.png and cases.png (`write_evaluate_page`).

Self-contained: CSS and JS are inline, thumbnails and figures are data: URIs, and a
Content-Security-Policy admits nothing else (no network, no other script), so the page looks
the same when it is moved alone; only the links need the files beside it. Every string from a
file name or a report is escaped; links are percent-encoded from the file name's bytes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from nsgan import __version__
from nsgan.common.atomic import atomic_write_text
from nsgan.common.errors import OutputError, printable
from nsgan.common.outputs import output_paths
from nsgan.score.alarms import ALARMS, NOT_ALARMS_UNCALIBRATED

PAGE = "index.html"
GENERATOR = f"nsgan {__version__}"
MARKER = '<meta name="generator" content="nsgan">'  # how a page nsgan may replace is told from a user's own file
THUMB_SIDE = 160  # thumbnails: JPEG, longest side in pixels
THUMB_QUALITY = 80
VERDICTS = ("anomalous", "normal", "uncalibrated")  # the verdicts scoring writes, in filter order

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .4em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: middle; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.settings th { background: none; font-weight: 600; white-space: nowrap; }
.thumb img { display: block; max-width: 160px; max-height: 160px; }
.name { word-break: break-all; max-width: 32em; }
.badge { display: inline-block; padding: .1em .5em; border-radius: .8em; font-size: .9em; color: #fff; background: #777; }
.badge.anomalous { background: #c62828; }
.badge.normal { background: #2e7d32; }
.badge.good { background: #2e7d32; }
.badge.defective { background: #c62828; }
.badge.miss { background: #ef6c00; }
.warn { color: #b71c1c; }
.filters { margin: .8em 0; }
.filters button { font: inherit; padding: .25em .8em; margin-right: .3em; border: 1px solid #999; border-radius: .3em; background: #fff; cursor: pointer; }
.filters button[aria-pressed="true"] { background: #333; color: #fff; border-color: #333; }
.figure img { max-width: 100%; border: 1px solid #ddd; }
.muted { color: #666; }
"""

JS = """
(function () {
  "use strict";
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-groups]"));
  var buttons = Array.prototype.slice.call(document.querySelectorAll("button[data-filter]"));
  var shown = document.getElementById("shown");
  function current() {
    var m = /(?:^#|&)filter=([a-z]+)/.exec(window.location.hash);
    return m ? m[1] : "all";
  }
  function apply() {
    var f = current(), n = 0;
    rows.forEach(function (r) {
      var hide = f !== "all" && (" " + r.getAttribute("data-groups") + " ").indexOf(" " + f + " ") < 0;
      r.hidden = hide;
      if (!hide) { n += 1; }
    });
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-filter") === f));
    });
    shown.textContent = n + " of " + rows.length + " shown";
  }
  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      window.location.hash = "filter=" + b.getAttribute("data-filter");
      apply();
    });
  });
  window.addEventListener("hashchange", apply);
  apply();
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def csp_for(script: str) -> str:
    """Nothing but the page's own style and script, and data: images: no network, no injected script."""
    return (f"default-src 'none'; img-src data:; style-src {_csp_hash(CSS)}; script-src {_csp_hash(script)}; "
            "base-uri 'none'; form-action 'none'")


CSP = csp_for(JS)  # the score and evaluate pages


# ------------------------------------------------------------------------------ small pieces

def text(value: Any) -> str:
    """Any value as HTML text: undecodable file-name bytes shown as \\xNN, then escaped (quotes too)."""
    return html.escape(printable(str(value)), quote=True)


def href(name: str) -> str:
    """A relative link to the file `name` beside the page, percent-encoded from its bytes on disk."""
    return "./" + quote(os.fsencode(name), safe="")


def _num(v: Any, fmt: str = ".4g") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else text(v)


def _settings(d: Any) -> str:
    """A settings dict as one line `key=value, ...` (escaped)."""
    if not isinstance(d, dict):
        return text(d) if d is not None else '<span class="muted">not recorded</span>'
    return text(", ".join(f"{k}={v}" for k, v in d.items()))


def _settings_table(pairs: list[tuple[str, str]]) -> str:
    """<table> of (label, already-escaped HTML) pairs."""
    body = "".join(f"<tr><th>{text(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="settings">{body}</table>'


def _filters(counts: dict[str, tuple[str, int]], total: int) -> str:
    """The filter buttons: "all" and one per group (data-groups value -> (label, rows)), for the page's JS."""
    buttons = [f'<button type="button" data-filter="all" aria-pressed="true">all ({total})</button>']
    buttons += [f'<button type="button" data-filter="{g}" aria-pressed="false">{text(label)} ({n})</button>'
                for g, (label, n) in counts.items()]
    return f'<div class="filters">{"".join(buttons)} <span id="shown" class="muted">{total} of {total} shown</span></div>'


def _page(title: str, body: str, script: str = JS) -> str:
    """A whole page in the house style; `script` is its one script (JS: the filter buttons), allowed by hash."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"{MARKER}\n<meta name=\"nsgan-version\" content=\"{text(__version__)}\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp_for(script)}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{text(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


def _now() -> str:
    return text(time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def thumbnail(path: Path, side: int = THUMB_SIDE) -> str | None:
    """A small JPEG data: URI of an image file (None if it cannot be read)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (side, side))  # JPEG: decode at a reduced size
            im = im.convert("RGB")
            im.thumbnail((side, side), Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=THUMB_QUALITY)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return data_uri(buf.getvalue(), "image/jpeg")


class Thumbnails:
    """Thumbnails by file, remade only when the file changes (a page rewritten after every image
    would otherwise decode every overlay again each time)."""

    def __init__(self):
        self._cache: dict[str, tuple[tuple[int, int], str | None]] = {}

    def get(self, path: Path) -> str | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(str(path))
        if hit is None or hit[0] != key:
            hit = (key, thumbnail(path))
            self._cache[str(path)] = hit
        return hit[1]


def check_page(out_dir: str | Path, overwrite: bool) -> None:
    """OutputError if OUT/index.html exists and is not a page nsgan wrote (unless overwrite): a user's
    own index.html is never replaced silently; nsgan's page is rewritten on every run."""
    page = Path(out_dir) / PAGE
    if overwrite or not page.exists():
        return
    try:
        with open(page, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise OutputError(f"{page}: cannot read it to check who wrote it ({exc.strerror or exc})") from None
    if MARKER.encode() not in head:
        raise OutputError(f"{page}: exists and was not written by nsgan (use --overwrite to replace it)")


# ------------------------------------------------------------------------------ nsgan score

@dataclass
class ScoreRow:
    """One scored image as the page shows it; `stem` is the JSON report's name without `.json`."""

    stem: str
    report: dict
    map_file: str | None  # names beside the page, None when missing
    overlay_file: str | None
    json_file: str

    @property
    def score(self) -> float:
        return float(self.report["score"])

    @property
    def verdict(self) -> str:
        v = self.report["verdict"]
        return v if v in VERDICTS else "other"


def _is_report(d: Any) -> str | None:
    """Why `d` is not a per-image report of `nsgan score` (None: it is one)."""
    if not isinstance(d, dict):
        return "not a JSON object"
    for key in ("image", "score", "verdict", "thresholds"):
        if key not in d:
            return f"no {key!r}"
    s = d["score"]
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
        return f"score is {s!r}"
    if not isinstance(d["verdict"], str) or not isinstance(d["thresholds"], dict):
        return "verdict or thresholds of the wrong type"
    return None


def read_score_rows(out_dir: str | Path) -> tuple[list[ScoreRow], list[tuple[str, str]]]:
    """(rows sorted by score, highest first; [(file name, why)] for .json files that are not readable reports).

    Reports are the `<stem>.json` files directly in out_dir; map and overlay names follow from the
    stem (`nsgan.score.scorer.output_paths`), never from the report's content.
    """
    out_dir = Path(out_dir)
    rows, bad = [], []
    for path in sorted(out_dir.glob("*.json")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            report = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
        except (OSError, ValueError) as exc:
            bad.append((path.name, f"not readable JSON ({exc})"))
            continue
        why = _is_report(report)
        if why is not None:
            if isinstance(report, dict) and "image" in report:  # looks meant as a report: say why it is left out
                bad.append((path.name, why))
            continue
        stem = path.name[: -len(".json")]
        outs = output_paths(out_dir, stem)
        rows.append(ScoreRow(stem, report, outs["map"].name if outs["map"].is_file() else None,
                             outs["overlay"].name if outs["overlay"].is_file() else None, path.name))
    rows.sort(key=lambda r: (-r.score, r.stem))
    return rows, bad


def _settings_key(report: dict) -> str:
    """What must agree for two reports to share the page's header (model, thresholds, inversion, map, tiling)."""
    th = report.get("thresholds") or {}
    pixel_fixed = th.get("pixel_source") in ("calibrated", "given")
    return json.dumps({
        "model": report.get("model"), "sha256": report.get("model_sha256"),
        "image": th.get("image"), "image_source": th.get("image_source"),
        "pixel": th.get("pixel") if pixel_fixed else None, "pixel_source": th.get("pixel_source"),
        "warning": th.get("warning"), "alarms": th.get("alarms"), "search": report.get("search"), "map": report.get("map_settings"),
        "tiling": report.get("tiling"),
    }, sort_keys=True, default=str)


def _threshold_lines(th: dict) -> list[tuple[str, str]]:
    image = th.get("image")
    if isinstance(image, (int, float)):
        img = f"{_num(image)} ({text(th.get('image_source', 'calibrated'))})"
    else:
        img = '<span class="warn">none: the model is not calibrated, so every verdict is &quot;uncalibrated&quot;</span>'
    src = str(th.get("pixel_source", ""))
    if src in ("calibrated", "given"):
        pix = f"{_num(th.get('pixel'))} ({text(src)})"
    else:
        pix = f"{text(src or 'not recorded')} (each image's own, in its JSON)"
    lines = [("image threshold", img), ("pixel threshold", pix)]
    alarms = th.get("alarms")
    if isinstance(alarms, str) and alarms:
        cls = "" if alarms.startswith(ALARMS) else ' class="warn"'
        lines.append(("boxes", f"<span{cls}>{text(alarms)}</span>"))
    elif src not in ("calibrated", "given"):  # a report from before the alarm sentence: say it anyway
        lines.append(("boxes", f'<span class="warn">{text(NOT_ALARMS_UNCALIBRATED)}</span>'))
    if th.get("warning"):
        lines.append(("warning", f'<span class="warn">{text(th["warning"])}</span>'))
    return lines


def _settings_block(report: dict) -> str:
    pairs = [("model", text(report.get("model", "not recorded"))),
             ("model sha256", text(report["model_sha256"]) if report.get("model_sha256") else '<span class="muted">not recorded</span>')]
    pairs += _threshold_lines(report.get("thresholds") or {})
    pairs += [("inversion / search", _settings(report.get("search"))),
              ("map and image score", _settings(report.get("map_settings"))),
              ("tiling", _settings(report.get("tiling")))]
    return _settings_table(pairs)


def _score_row(rank: int, row: ScoreRow, thumbs: Thumbnails, out_dir: Path, group: int | None) -> str:
    r = row.report
    if row.overlay_file:
        uri = thumbs.get(out_dir / row.overlay_file)
        img = f'<img src="{uri}" alt="overlay of {text(r["image"])}">' if uri else "overlay unreadable"
        thumb = f'<a href="{href(row.overlay_file)}">{img}</a>'
    else:
        thumb = '<span class="muted">no overlay</span>'
    links = [f'<a href="{href(name)}">{label}</a>' if name else f'<span class="muted">no {label}</span>'
             for label, name in (("map", row.map_file), ("overlay", row.overlay_file), ("JSON", row.json_file))]
    regions = r.get("regions")
    n_regions = str(len(regions)) if isinstance(regions, list) else "?"
    shape = r.get("shape")
    size = f"{shape[1]}×{shape[0]}" if isinstance(shape, list) and len(shape) == 2 else "?"
    verdict = row.verdict
    cells = [f'<td class="num">{rank}</td>', f'<td class="thumb">{thumb}</td>', f'<td class="name">{text(r["image"])}</td>',
             f'<td class="num">{_num(row.score)}</td>', f'<td><span class="badge {verdict}">{text(r["verdict"])}</span></td>',
             f'<td class="num">{n_regions}</td>', f'<td class="num">{text(size)}</td>', f'<td>{" · ".join(links)}</td>']
    if group is not None:
        cells.append(f'<td class="num">{group}</td>')
    return f'<tr id="row-{rank}" data-groups="{verdict}">{"".join(cells)}</tr>'


def render_score_page(out_dir: str | Path, rows: list[ScoreRow], bad: list[tuple[str, str]],
                      thumbs: Thumbnails | None = None, status: str | None = None) -> str:
    """The HTML of the score page (see the module's docstring)."""
    out_dir = Path(out_dir)
    thumbs = thumbs or Thumbnails()
    groups: dict[str, int] = {}
    for row in rows:
        groups.setdefault(_settings_key(row.report), len(groups) + 1)
    firsts = {}
    for row in rows:
        firsts.setdefault(groups[_settings_key(row.report)], row.report)
    parts = [f"<h1>nsgan score: {text(out_dir.resolve().name)}</h1>",
             f'<p class="muted">{len(rows)} image(s), sorted by image score, highest first. Written by {text(GENERATOR)} '
             f"at {_now()} from the JSON reports in this folder.</p>"]
    if status:
        parts.append(f"<p><strong>{text(status)}</strong></p>")
    if len(groups) == 1:
        parts.append("<h2>Model and settings</h2>" + _settings_block(firsts[1]))
    elif groups:
        parts.append(f'<h2>Model and settings</h2><p class="warn">The reports in this folder were made with '
                     f"{len(groups)} different models or settings; the last column says which.</p>")
        for g, report in firsts.items():
            parts.append(f"<h2>Settings {g}</h2>" + _settings_block(report))
    if bad:
        items = "".join(f"<li>{text(name)}: {text(why)}</li>" for name, why in bad)
        parts.append(f'<h2>Left out</h2><ul class="warn">{items}</ul>')
    counts = {v: (v, sum(r.verdict == v for r in rows)) for v in (*VERDICTS, "other")}
    counts = {k: c for k, c in counts.items() if k in VERDICTS or c[1]}
    parts.append("<h2>Images</h2>" + _filters(counts, len(rows)))
    head = ["#", "overlay", "image", "score", "verdict", "regions", "size", "files"] + (["settings"] if len(groups) > 1 else [])
    body = "\n".join(_score_row(k, row, thumbs, out_dir, groups[_settings_key(row.report)] if len(groups) > 1 else None)
                     for k, row in enumerate(rows, start=1))
    parts.append(f'<table id="images"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>\n'
                 f"<tbody>\n{body}\n</tbody></table>")
    return _page(f"nsgan score: {out_dir.resolve().name}", "\n".join(parts))


def write_score_page(out_dir: str | Path, thumbs: Thumbnails | None = None, status: str | None = None) -> Path | None:
    """(Re)write OUT/index.html from the reports in out_dir; None (nothing written) when it holds no report."""
    out_dir = Path(out_dir)
    rows, bad = read_score_rows(out_dir)
    if not rows and not bad:
        return None
    return atomic_write_text(out_dir / PAGE, render_score_page(out_dir, rows, bad, thumbs, status))


class ScorePage:
    """The page of a running `nsgan score`: rewritten after an image when page writing has cost at most
    `share` of the time so far (every image for small folders, less often for thousands), and always
    at the end, also when the run stops early, so the page on disk is never far behind the reports."""

    def __init__(self, out_dir: str | Path, total: int, share: float = 0.1):
        self.out_dir, self.total, self.share = Path(out_dir), total, share
        self.thumbs = Thumbnails()
        self.done = 0
        self.next_at = 0.0

    def image_done(self) -> None:
        self.done += 1
        if time.monotonic() >= self.next_at:
            t0 = time.monotonic()
            self._write(f"Scoring in progress: {self.done} of {self.total} image(s) of this run done.")
            self.next_at = time.monotonic() + (time.monotonic() - t0) / self.share

    def finish(self, stopped_by: BaseException | None = None) -> Path | None:
        if stopped_by is None:
            return self._write(None)
        why = "interrupted" if isinstance(stopped_by, KeyboardInterrupt) else f"stopped by an error ({type(stopped_by).__name__})"
        return self._write(f"This run was {why} after {self.done} of {self.total} image(s); the rows are the reports "
                           "written so far.")

    def _write(self, status: str | None) -> Path | None:
        return write_score_page(self.out_dir, self.thumbs, status)
