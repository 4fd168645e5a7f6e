"""The model card: a `README.md` beside every exported model, in Hugging Face's model-card format.

The card is made from the model file's own metadata and nothing else (training data counts from the
shards' manifest, the resolved config, images seen, γ and the penalty form, the encoder, calibrated
thresholds with the settings they hold for, evaluation figures), so it can be rewritten at any time
and always says what the file holds. It is rewritten by every command that changes the model file:
training's export, `nsgan train-encoder`, `nsgan calibrate` and `nsgan evaluate` (which stores its
headline figures in the metadata first, `record_evaluation`).

Layout: YAML front matter (`library_name: nsgan`, `tags`, and `metrics` / `model-index` once the
model has been evaluated), a marker comment, then Markdown. The marker tells nsgan's cards from a
README.md someone wrote: a README.md without it is never overwritten; the card then goes to
`MODEL_CARD.md` beside it (and if that too is someone else's, no card is written, with a warning).
Cards are written atomically, after the model file, so writing one can never damage the model.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from nsgan.common import atomic  # looked up when the card is written, so a stand-in for a full disk (tests) takes effect
from nsgan.common.errors import NsganError
from nsgan.models.losses import GanLossKind, Penalty
from nsgan.models.model_file import read_metadata, update_metadata
from nsgan.score.alarms import alarm_sentence
from nsgan.score.choices import Inversion, Residual
from nsgan.score.options import ScoreOptions, resolve_image_score, resolve_residual
from nsgan.score.postprocess import Calibration
from nsgan.score.search import SearchConfig

MARKER = "<!-- nsgan model card: generated from the model file's metadata; nsgan rewrites this file. -->"
MARKER_PREFIX = "<!-- nsgan model card"
CARD_NAMES = ("README.md", "MODEL_CARD.md")  # the first that is absent or nsgan's own is written
TAGS = ["anomaly-detection", "gan", "anogan", "progressive-gan", "industrial-inspection", "nsgan"]
MAX_EVALUATIONS = 20  # evaluation records kept in the metadata, one per data folder, newest last

PENALTY_FORMS = {
    Penalty.TILE: "`tile`: each labelled abnormal tile counts as a fake as a whole (the paper's form)",
    Penalty.PATCH_MASK: "`patch_mask`: D's patch logits at the patches that touch the defect mask count as fakes",
    Penalty.PATCH_MIL: "`patch_mil`: the least-real patch logits of each abnormal tile count as fakes (image labels only)",
}


# ------------------------------------------------------------------------------ where the card goes

def card_path(model_path: str | Path) -> Path | None:
    """README.md beside the model, or MODEL_CARD.md when README.md is someone else's; None when both are."""
    folder = Path(model_path).parent
    for name in CARD_NAMES:
        path = folder / name
        if not path.exists() or _is_ours(path):
            return path
    return None


def _is_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return MARKER_PREFIX in fh.read(1 << 16)
    except OSError:
        return False


def write_card(model_path: str | Path) -> Path | None:
    """Render the card from the model file's metadata and write it atomically; the path written (None: not ours to write)."""
    model_path = Path(model_path)
    meta = read_metadata(model_path)
    target = card_path(model_path)
    if target is None:
        return None
    atomic.atomic_write_text(target, render_card(meta, model_path.name, model_path.parent.name or "model"))
    return target


def refresh_card(model_path: str | Path, command: str) -> Path | None:
    """`write_card` for commands whose real output is the model file: a card that cannot be written is a one-line warning."""
    try:
        path = write_card(model_path)
    except (NsganError, OSError) as exc:
        print(f"nsgan {command}: warning: model card beside {model_path} not written ({exc}); the model file is complete",
              file=sys.stderr)
        return None
    if path is None:
        print(f"nsgan {command}: warning: {Path(model_path).parent} holds a README.md and a MODEL_CARD.md that nsgan did not "
              "write; no model card written", file=sys.stderr)
    elif path.name != CARD_NAMES[0]:
        print(f"nsgan {command}: {path.parent / CARD_NAMES[0]} was not written by nsgan and is kept; model card in {path}",
              file=sys.stderr)
    return path


# ------------------------------------------------------------------------------ evaluation records

def evaluation_record(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an `nsgan evaluate` metrics dict, as stored in the model's metadata."""
    px = metrics.get("pixel") or {}
    image = metrics["image"]
    return {
        "data": metrics["data"],
        "image_auroc": image.get("auroc"),
        "image_f1": image.get("f1"),
        "pixel_auroc": px.get("pixel_auroc"),
        "aupro": px.get("aupro"),
        "aupro_max_fpr": px.get("aupro_max_fpr"),
        "n_good": image.get("n_good"),
        "n_defective": image.get("n_defective"),
        "search": metrics.get("search"),
        "map_settings": metrics.get("map_settings"),
        "tiling": metrics.get("tiling"),
    }


def record_evaluation(model_path: str | Path, metrics: dict[str, Any]) -> None:
    """Store an evaluation's headline figures in the model file (one record per data folder, the newest wins)."""
    record = evaluation_record(metrics)
    kept = [e for e in (read_metadata(model_path).get("evaluations") or []) if isinstance(e, dict) and e.get("data") != record["data"]]
    update_metadata(model_path, evaluations=[*kept, record][-MAX_EVALUATIONS:])


# ------------------------------------------------------------------------------ rendering

def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "–"


def _g(x: Any) -> str:
    return f"{x:.4g}" if _finite(x) else "–"


def front_matter(meta: dict[str, Any], name: str) -> dict[str, Any]:
    """The YAML header the Hugging Face Hub reads: library, tags, and model-index results once evaluated."""
    tags = list(TAGS)
    if meta.get("encoder"):
        tags.insert(3, "f-anogan")
    fm: dict[str, Any] = {"library_name": "nsgan", "tags": tags}
    results = []
    for ev in _evaluations(meta):
        figures = [("roc_auc", "Image AUROC", ev.get("image_auroc")), ("roc_auc", "Pixel AUROC", ev.get("pixel_auroc")),
                   ("aupro", f"AUPRO (FPR ≤ {_g(ev.get('aupro_max_fpr'))})", ev.get("aupro"))]
        metrics = [{"type": t, "name": n, "value": round(float(v), 4)} for t, n, v in figures if _finite(v)]
        if metrics:
            dataset = Path(str(ev.get("data", "data"))).name or "data"
            results.append({"task": {"type": "anomaly-detection", "name": "Anomaly detection"},
                            "dataset": {"name": dataset, "type": dataset}, "metrics": metrics})
    if results:
        fm["metrics"] = sorted({m["type"] for r in results for m in r["metrics"]})
        fm["model-index"] = [{"name": name, "results": results}]
    return fm


def render_card(meta: dict[str, Any], file_name: str = "model.safetensors", name: str = "model") -> str:
    """The whole card (front matter, marker, Markdown) for a model file's decoded metadata."""
    header = yaml.safe_dump(front_matter(meta, name), sort_keys=False, allow_unicode=True)
    parts = [f"---\n{header}---\n", MARKER, "", *_intro(meta, file_name, name), *_data(meta), *_training(meta),
             *_sample_quality(meta), *_encoder(meta, file_name), *_comparator(meta, file_name), *_thresholds(meta, file_name), *_evaluation(meta, file_name),
             *_usage(meta, file_name), *_config(meta)]
    return "\n".join(parts).rstrip() + "\n"


def _evaluations(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in (meta.get("evaluations") or []) if isinstance(e, dict)]


def _intro(meta: dict[str, Any], file_name: str, name: str) -> list[str]:
    ch = meta.get("channels")
    kind = {1: "gray", 3: "RGB"}.get(ch, f"{ch}-channel")
    return [
        f"# {name}",
        "",
        f"An nsgan anomaly-detection model for {meta.get('resolution')}-px {kind} tiles: a "
        "progressive-growing GAN trained on normal material, with the known abnormal tiles shown to its discriminator as "
        "one more kind of fake (weight γ; Kimura & Yanagihara 2018). An image is scored tile by tile by inverting the "
        "generator (AnoGAN's latent search, or the f-AnoGAN encoder when one is stored); the residuals make a "
        "per-pixel anomaly map, and its maximum is the image score.",
        "",
        f"`{file_name}` holds the EMA generator, the discriminator{', the encoder' if meta.get('encoder') else ''}"
        f"{' and the comparator C (a learned defect map read beside the reconstruction)' if meta.get('comparator') else ''} "
        f"(safetensors, no pickle) and everything this card says, in its metadata (nsgan {meta.get('nsgan_version', '?')}).",
        "",
    ]


def _data(meta: dict[str, Any]) -> list[str]:
    data = meta.get("data") or {}
    out = ["## Training data", ""]
    man = data.get("manifest")
    if not data:
        return out + ["Not recorded (a model file exported before nsgan recorded its data).", ""]
    if man:
        c = man.get("counts") or {}
        ch = man.get("channels")
        stride = f", stride {man['stride']} px" if man.get("stride") else (", random crops" if man.get("random_crops") else "")
        rows = [
            ("normal tiles", f"{c.get('tiles_normal', '–')}"
             + (f" ({c['tiles_normal_from_defective']} of them from defective images, outside their masks)" if c.get("tiles_normal_from_defective") else "")),
            ("abnormal tiles", f"{c.get('tiles_abnormal', '–')}"
             + (f" ({c['tiles_abnormal_with_mask']} with a defect mask)" if c.get("tiles_abnormal_with_mask") else "")),
            ("tile size", f"{man.get('tile')} px{stride}"),
            ("channels", f"{ch} ({ {1: 'gray', 3: 'RGB'}.get(ch, '?') })"),
            ("source images read", f"{c.get('images_read_normal', '–')} normal, {c.get('images_read_abnormal', '–')} abnormal; "
                                   f"{c.get('images_skipped', 0)} skipped"),
        ]
        if man.get("abnormal_centred"):
            rows.append(("abnormal tiles cut", f"centred on each defect, {man['abnormal_centred']} per mask component"))
        out += ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
    else:
        out += ["No shard manifest was found beside the shards at training time, so tile counts are not known."]
    used = [f"normal `{data.get('normal')}`"] + ([f"abnormal `{data['abnormal']}`"] if data.get("abnormal") else [])
    return out + ["", f"Shards used: {', '.join(used)}.", ""]


def _gamma_words(gamma: float, meta: dict[str, Any]) -> str:
    """γ and what it shapes (issue 27): it acts on G and D, so it reaches detection only through a map that reads G."""
    if gamma == 0:
        return "0 (plain AnoGAN training)"
    cmp = meta.get("comparator") or {}
    reference = (cmp.get("network") or {}).get("reference")
    if cmp and resolve_residual("auto", True) == Residual.COMPARATOR and reference != "reconstruction":
        return (f"{gamma:g}: shapes G and D only. This model's default map (C reading "
                f"{REFERENCE_WORDS.get(reference, str(reference))}) reads neither, so γ does not change what "
                "`nsgan score` reports by default")
    return f"{gamma:g}: shapes G (and D), which this model's default map reads through G(E(x))"


def _training(meta: dict[str, Any]) -> list[str]:
    cfg = meta.get("config") or {}
    loss, model, train = cfg.get("loss") or {}, cfg.get("model") or {}, meta.get("trained_with") or {}
    seen = meta.get("images_seen")
    gamma = meta.get("gamma", loss.get("gamma"))
    rows = [("images seen", f"{seen:,} ({seen / 1000:g} kimg)" if isinstance(seen, int) else "–")]
    if gamma is not None:
        rows.append(("γ (abnormal penalty)", _gamma_words(gamma, meta)))
    if loss:
        form = PENALTY_FORMS.get(loss.get("penalty", Penalty.TILE), loss.get("penalty"))
        rows.append(("penalty form", form + (f", patch grid {model.get('patch_grid')}×{model.get('patch_grid')}" if model.get("patch_grid") else "")
                     + (f", k = {loss.get('mil_k')}" if loss.get("penalty") == Penalty.PATCH_MIL else "")))
        kind = loss.get("kind", GanLossKind.NSGAN)
        lazy = f", every {loss['r1_every']} D steps" if loss.get("r1_every", 1) != 1 else ""
        rows.append(("loss", "non-saturating GAN + R1 (r1_gamma " + f"{loss.get('r1_gamma', '–')}{lazy})" if kind == GanLossKind.NSGAN
                     else f"WGAN-GP (λ {loss.get('gp_lambda', '–')}) + drift {loss.get('drift', '–')}"))
    rows.append(("networks", f"{meta.get('resolution')} px, latent {meta.get('latent_dim')}"
                 + (f", fmap_base {model.get('fmap_base')}, fmap_max {model.get('fmap_max')}" if model else "")))
    if train:
        n = train.get("world_size", "?")
        rows.append(("trained with", f"{n} process{'' if n == 1 else 'es'}, mixed precision {train.get('mixed_precision', '?')}"))
    return ["## Training", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]


def _sample_quality(meta: dict[str, Any]) -> list[str]:
    """The last measurement training made of G's samples (nsgan/models/sample_quality.py)."""
    q = meta.get("sample_quality")
    if not isinstance(q, dict):
        return ["## Sample quality", "", "Not measured (`quality.samples` was 0, or the model predates the measurement).", ""]
    levels = [k[len("swd_ratio_"):-2] for k in q if k.startswith("swd_ratio_") and k.endswith("px")]
    rows = [f"| {lv} px | {_g(q.get(f'swd_{lv}px'))} | {_g(q.get(f'swd_real_{lv}px'))} | {_fmt(q.get(f'swd_ratio_{lv}px'), 2)}× |" for lv in levels]
    where = {"end": "at the end of training", "phase_end": "at the end of a schedule phase", "checkpoint": "at a periodic state"}
    return ["## Sample quality", "",
            f"Last measured at **{_g(q.get('kimg'))} kimg** ({where.get(q.get('at'), q.get('at', '?'))}, {q.get('resolution', '?')} px, "
            f"α {_g(q.get('alpha'))}): {q.get('samples', '?')} samples of the EMA generator against twice as many fixed normal tiles. "
            "PGGAN's sliced Wasserstein distance (×10³) per Laplacian-pyramid level, beside the same distance between two halves "
            "of the reals (what a generator that draws the material exactly would score with this many samples):", "",
            "| level | SWD ×10³ | real vs real | ratio |", "|---|---|---|---|", *rows, "",
            f"Spread across z: per-pixel std of the samples is **{_fmt(q.get('diversity'), 2)}×** that of the reals "
            "(0: one image whatever z; 1: as varied as the material).", ""]


def _encoder(meta: dict[str, Any], file_name: str) -> list[str]:
    enc = meta.get("encoder")
    if not enc:
        return ["## Encoder", "", "None stored: scoring inverts each tile by AnoGAN's latent search (hundreds of steps per tile). "
                f"Add one with `nsgan train-encoder --model {file_name} encoder.kimg=N`.", ""]
    ec = enc.get("config") or {}
    kimg = enc.get("kimg")
    settings = ", ".join(f"{k} {ec[k]:g}" for k in ("kappa", "ziz", "lr") if _finite(ec.get(k)))
    return ["## Encoder", "",
            f"Stored: an f-AnoGAN izi_f encoder trained for {_g(kimg)} kimg ({enc.get('images_seen', '–')} normal tiles"
            + (f"; {settings}" if settings else "") + "), with G and D frozen"
            + (f"; denoising: {ec['denoise']:.0%} of each batch had defects painted on and was mapped to its clean tile, so "
               "G(E(x)) erases a defect rather than redraw it" if _finite(ec.get("denoise")) and ec["denoise"] > 0 else "")
            + ". `nsgan score` uses it by default: one pass per tile "
            "(`--inversion refine` adds a few search steps from E(x), `--inversion search` ignores it).", ""]


REFERENCE_WORDS = {"reconstruction": "x beside its reconstruction G(E(x)) and their difference",
                   "blur": "x beside a Gaussian blur of x and their difference", "none": "x alone"}


def _comparator(meta: dict[str, Any], file_name: str) -> list[str]:
    cmp = meta.get("comparator")
    if not cmp:
        return ["## Comparator", "", "None stored: the map is a fixed residual of x and G(E(x)). Add a learned one with "
                f"`nsgan train-comparator --model {file_name} comparator.kimg=N`.", ""]

    net, cc, on = cmp.get("network") or {}, cmp.get("config") or {}, cmp.get("trained_on") or {}
    painted = ", ".join(on.get("kinds") or []) + (" and Perlin blobs" if on.get("blob") else "")
    lab = on.get("labelled") or {}
    rows = [("reads", REFERENCE_WORDS.get(net.get("reference"), str(net.get("reference")))),
            ("network", f"{len(net.get('dilations') or [])} dilated 3×3 layers (dilations {net.get('dilations')}), width "
                        f"{net.get('width')}, receptive field {cmp.get('receptive_field', '–')} px, "
                        f"{_g((cmp.get('flops_per_tile') or 0) / 1e9)} GFLOP per tile"
                        + (f" ({_g(cmp['flops_per_tile'] / cmp['reconstruction_flops_per_tile'])}× E + G's "
                           f"{_g(cmp['reconstruction_flops_per_tile'] / 1e9)})"
                           if _finite(cmp.get("flops_per_tile")) and _finite(cmp.get("reconstruction_flops_per_tile"))
                           and cmp["reconstruction_flops_per_tile"] > 0 else "")),
            ("trained", f"{_g(cmp.get('kimg'))} kimg ({cmp.get('images_seen', '–')} tiles), loss {cc.get('loss', '–')}, "
                        f"{cmp.get('world_size', '?')} process(es), G, D and E frozen"),
            ("painted defects", (f"{painted} on {_g(on.get('paint_fraction'))} of the normal tiles" if painted else "none")),
            ("labelled defects", (f"{lab.get('masked_tiles', 0)} masked tiles of {lab.get('masked_images', 0)} images, "
                                  f"{lab.get('bags', 0)} image-labelled images (multiple-instance loss)" if lab else "none")),
            ("digest", f"`{str(cmp.get('digest', ''))[:16]}`, for G and E `{cmp.get('basis_digest', '–')}`")]
    if cmp.get("denoise"):
        rows.insert(-1, ("left out of the normal side", _denoised(cmp["denoise"])))
    if on.get("gan_normals"):
        rows.insert(-1, ("G's samples", f"{_g(on['gan_normals'])} of the normal tiles drawn by the frozen G (before painting)"))
    default = resolve_residual("auto", True)
    use = ("`nsgan score` uses its map by default (`--residual auto`)." if default == Residual.COMPARATOR else
           f"`nsgan score --residual comparator` uses its map; the default (`auto`) is still the `{default}` residual.")
    return ["## Comparator", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "", use, ""]


def _denoised(d: dict[str, Any]) -> str:
    """The comparator.denoise row: how many normal images an out-of-fold C found defective, by what rule, which."""
    if d.get("skipped"):
        return f"none: comparator.denoise {d.get('mode')} did not run ({d['skipped']})"
    names = [str(n) for n in d.get("excluded") or []]
    shown = ", ".join(f"`{n}`" for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"{d.get('excluded_images', len(names))} of {d.get('images', '?')} normal images ({d.get('mode')}: robust z > "
            f"{_g(d.get('z'))} out-of-fold, {d.get('folds')} folds of {_g(d.get('fold_kimg'))} kimg)"
            + (f": {shown}" if names else "") + f"; list `{d.get('list_file', '–')}`")


def _thresholds(meta: dict[str, Any], file_name: str) -> list[str]:
    th = meta.get("thresholds")
    if not th:
        return ["## Thresholds", "", "Not calibrated: verdicts say `uncalibrated`, and the boxes scoring draws are not alarms "
                "(each marks only where that image's own map is highest). Set thresholds from held-out images with "
                f"`nsgan calibrate --model {file_name} --normal GOOD_DIR [--abnormal DEFECT_DIR --masks MASK_DIR]`, "
                "and add `--false-regions-per-mp R` to make the boxes alarms at a stated false-alarm rate.", ""]
    rows = [("image threshold", f"{_g(th.get('image'))}: {th.get('image_method', '')}"
             + (f" (F1 {_fmt(th['image_f1'], 3)})" if _finite(th.get("image_f1")) else "")),
            ("pixel threshold", f"{_g(th.get('pixel'))}: {th.get('pixel_method', '')}"
             + (f" (F1 {_fmt(th['pixel_f1'], 3)})" if _finite(th.get("pixel_f1")) else ""))]
    rows.append(("regions", alarm_sentence(Calibration.from_dict(th).alarm, "calibrated")))
    out = ["## Thresholds", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
           "Calibrated with these settings; scores (and so the thresholds) depend on them, and scoring with others makes "
           "`nsgan score` warn:", ""]
    out += _settings_lines(th.get("search"), th.get("map"), th.get("stride"))
    return out + [""]


def _settings_lines(search: dict | None, map_settings: dict | None, stride: Any) -> list[str]:
    lines = []
    s = search or {}
    if s:
        mode = s.get("mode")
        if mode == Inversion.ENCODER:
            lines.append("- inversion: `encoder` (z = E(x), one pass)")
        else:
            lines.append(f"- inversion: `{mode}`, {s.get('iterations')} steps, λ {s.get('lam')}, lr {s.get('lr')}"
                         + (f", {s.get('restarts')} starts" if mode == Inversion.SEARCH else "") + f", patience {s.get('patience')}, "
                         f"{s.get('precision')}, seed {s.get('seed')}")
    if map_settings:
        lines.append(f"- map: residual `{map_settings.get('residual')}`, smoothing σ {map_settings.get('map_sigma')} px, "
                     f"image score `{map_settings.get('image_score')}`"
                     + (f", test-time views `{map_settings['tta']}` averaged" if map_settings.get("tta") else ""))
    if stride is not None:
        lines.append(f"- tile stride: {stride} px")
    return lines


def _evaluation(meta: dict[str, Any], file_name: str) -> list[str]:
    evs = _evaluations(meta)
    if not evs:
        return ["## Evaluation", "", f"Not evaluated yet: `nsgan evaluate --model {file_name} --data CATEGORY_DIR --out eval/` "
                "(test/good, test/<defect type>, ground_truth/<defect type>) stores its figures here.", ""]
    out = ["## Evaluation", "", "From `nsgan evaluate` (figures stored in the model file's metadata):", "",
           "| data | images (good / defective) | image AUROC | pixel AUROC | AUPRO | inversion |", "|---|---|---|---|---|---|"]
    for ev in evs:
        s = ev.get("search") or {}
        inv = s.get("mode", "?") + (f" {s.get('iterations')} steps" if s.get("mode") in (Inversion.SEARCH, Inversion.REFINE) else "")
        aupro = _fmt(ev.get("aupro")) + (f" (FPR ≤ {_g(ev['aupro_max_fpr'])})" if _finite(ev.get("aupro")) and _finite(ev.get("aupro_max_fpr")) else "")
        out.append(f"| `{ev.get('data')}` | {ev.get('n_good', '–')} / {ev.get('n_defective', '–')} | {_fmt(ev.get('image_auroc'))} | "
                   f"{_fmt(ev.get('pixel_auroc'))} | {aupro} | {inv} |")
    out.append("")
    for ev in evs:
        tiling = ev.get("tiling") or {}
        out += [f"Settings for `{ev.get('data')}`:", "", *_settings_lines(ev.get("search"), ev.get("map_settings"), tiling.get("stride")), ""]
    return out


# ------------------------------------------------------------------------------ how to score with it

SEARCH_FLAGS = {"iterations": "--iterations", "lr": "--lr", "lam": "--lam", "restarts": "--restarts", "patience": "--patience",
                "precision": "--precision", "seed": "--seed"}
MAP_FLAGS = {"residual": "--residual", "map_sigma": "--map-sigma", "image_score": "--image-score", "tta": "--tta"}


def calibration_settings(meta: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The `nsgan score` flags and ScoreOptions fields that reproduce the calibration's settings, where they differ from
    the defaults (empty when uncalibrated or calibrated with the defaults)."""
    th = meta.get("thresholds") or {}
    flags: list[str] = []
    fields: dict[str, Any] = {}
    search = th.get("search") or {}
    if search.get("mode"):
        default = SearchConfig().resolved(bool(meta.get("encoder")))
        mode = search["mode"]
        same_mode = SearchConfig(mode=mode).to_dict()
        changed = {k: search[k] for k in SEARCH_FLAGS if k in search and search[k] != same_mode.get(k)}
        if mode == Inversion.ENCODER:
            changed = {k: v for k, v in changed.items() if k not in ("iterations", "restarts")}
        if mode != default.mode:
            flags += ["--inversion", mode]
        for k, v in changed.items():
            flags += [SEARCH_FLAGS[k], str(v)]
        if mode != default.mode or changed:
            fields["search"] = {"mode": mode, **changed}

    dm = ScoreOptions()
    dm = replace(dm, residual=resolve_residual(dm.residual, bool(meta.get("comparator"))))
    # what `auto` gives for the residual the flags below leave in force (the calibration's, where it names one)
    dm = replace(dm, image_score=resolve_image_score(dm.image_score, (th.get("map") or {}).get("residual") or dm.residual))
    for k, flag in MAP_FLAGS.items():
        v = (th.get("map") or {}).get(k)
        if v is not None and v != getattr(dm, k):
            flags += [flag, f"{v:g}" if isinstance(v, float) else str(v)]
            fields[k] = v
    stride = th.get("stride")
    if isinstance(stride, int) and stride != int(meta.get("resolution", 0)):  # scoring's default stride is the tile
        flags += ["--stride", str(stride)]
        fields["stride"] = stride
    return flags, fields


def _python_options(fields: dict[str, Any]) -> str:
    parts = [f"{k}={v!r}" for k, v in fields.items() if k != "search"]
    if "search" in fields:
        parts.insert(0, "search=SearchConfig(" + ", ".join(f"{k}={v!r}" for k, v in fields["search"].items()) + ")")
    return "ScoreOptions(" + ", ".join(parts) + ")"


def _usage(meta: dict[str, Any], file_name: str) -> list[str]:
    flags, fields = calibration_settings(meta)
    cli = f"nsgan score --model {file_name} --image IMAGE --out scores/" + (" " + " ".join(flags) if flags else "")
    py = ["from nsgan import Scorer"]
    call = 'Scorer.from_pretrained("PATH_OR_REPO_ID")'
    if fields:
        py = ["from nsgan import ScoreOptions, Scorer" + (", SearchConfig" if "search" in fields else "")]
        call = f'Scorer.from_pretrained("PATH_OR_REPO_ID", {_python_options(fields)})'
    note = ["", "The flags are the calibration's settings, for which the thresholds hold."] if flags else []
    return ["## Use", "",
            "Score an image, a folder of images or a .txt list (writes `<name>.map.tif`, `.overlay.png` and `.json` per image):",
            "", "```bash", cli, "```", *note, "",
            "From Python, with this folder (or the Hugging Face Hub repo id it was uploaded to) as `PATH_OR_REPO_ID`:", "",
            "```python", *py, f"scorer = {call}", 'result = scorer.score("part.png")   # or an (H, W, C) float array in [0, 1]',
            "result.score, result.verdict, result.map, result.regions", "```", ""]


def _config(meta: dict[str, Any]) -> list[str]:
    cfg = meta.get("config")
    if not cfg:
        return ["## Config", "", "Not stored in the model file.", ""]
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True).rstrip()
    out = ["## Config", "", "The resolved training config (as YAML it is a config file for `nsgan train --config`):", "",
           "```yaml", text, "```", ""]
    enc = (meta.get("encoder") or {}).get("config")
    if enc and enc != cfg.get("encoder"):  # trained later by `nsgan train-encoder`, with settings of its own
        out += ["The encoder's settings:", "", "```yaml", yaml.safe_dump({"encoder": enc}, sort_keys=False).rstrip(), "```", ""]
    cmp = (meta.get("comparator") or {}).get("config")
    if cmp and cmp != cfg.get("comparator"):  # trained later by `nsgan train-comparator`
        out += ["The comparator's settings:", "", "```yaml", yaml.safe_dump({"comparator": cmp}, sort_keys=False).rstrip(), "```", ""]
    return out


__all__ = ["write_card", "refresh_card", "render_card", "front_matter", "card_path", "record_evaluation", "evaluation_record",
           "calibration_settings", "MARKER"]
