"""Summary, Bjontegaard deltas, markdown and RD plot of ``bench/eval_kodak.py``'s figures.

``summarize`` turns the per-image rows (``kodak_eval.ImageLevel``) and sweeps into per-level
means, BD figures and mean sweep curves; ``markdown_report`` and ``plot_rd`` render them;
``write_markdown`` writes the report and keeps any tail section that other tools append to it
(from a ``TAIL_MARKERS`` line on, e.g. ``bench/default_fixed_point_cost.py``'s).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from kodak_anchors import ANCHORS, PillowCodec, SweepPoint

#: A report section that starts with one of these is another tool's: kept when rewriting.
TAIL_MARKERS = ("<!-- fixed-point cost: begin",)


def bd_metrics(r_anchor: Sequence[float], p_anchor: Sequence[float],
               r_test: Sequence[float], p_test: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Bjontegaard deltas of a test curve against an anchor curve, (bpp, PSNR dB) points.

    BD-rate (percent; negative = the test needs fewer bits for the same PSNR): log-rate fitted as
    a polynomial in PSNR, averaged over the common PSNR interval. BD-PSNR (dB; positive = the
    test is better): PSNR fitted in log-rate over the common log-rate interval. Polynomial degree
    min(3, points - 1). ``None`` where fewer than 2 points or the intervals do not overlap.
    """
    ra, pa, rt, pt = (np.asarray(v, dtype=np.float64) for v in (r_anchor, p_anchor, r_test, p_test))
    n = min(len(ra), len(rt))
    if n < 2 or len(ra) != len(pa) or len(rt) != len(pt):
        return None, None
    la, lt = np.log(ra), np.log(rt)

    def avg_diff(xa: np.ndarray, ya: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> Optional[float]:
        lo, hi = max(xa.min(), xt.min()), min(xa.max(), xt.max())
        if not hi > lo:
            return None
        ia = np.polyint(np.polyfit(xa, ya, min(3, len(xa) - 1)))
        it = np.polyint(np.polyfit(xt, yt, min(3, len(xt) - 1)))
        return float(((np.polyval(it, hi) - np.polyval(it, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))) / (hi - lo))

    d_log = avg_diff(pa, la, pt, lt)
    bd_rate = None if d_log is None else 100.0 * (math.exp(d_log) - 1.0)
    bd_psnr = avg_diff(la, pa, lt, pt)
    return bd_rate, bd_psnr


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean, ``None`` when empty or any value is ``None``."""
    return float(np.mean(values)) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def summarize(rows: Sequence[Any], levels: Sequence[float], anchors: Sequence[PillowCodec] = ANCHORS,
              sweeps: Optional[Sequence[Mapping[str, Sequence[SweepPoint]]]] = None) -> dict[str, Any]:
    """Per-level means, BD figures and mean sweep curves of the rows from ``evaluate_image``
    (any number of images) and, optionally, their sweeps (one mapping anchor -> points per image).

    Returns ``{"levels": [per-level dict], "bd": {anchor: {...}}, "sweeps": {anchor: [...]}}``:
    per level ``n``, ``bpp``, ``psnr``, ``msssim`` (model means over all images) and per anchor
    ``matched``, ``psnr``, ``msssim`` (means over the matched images), ``d_psnr``, ``d_msssim``
    (mean of model - anchor over the matched images); per anchor ``bd_rate_pct``, ``bd_psnr_db``
    over the images matched at every level, ``mean_d_psnr`` (mean of the per-level ``d_psnr``)
    and ``images``; per anchor and sweep quality ``q``, ``n`` (images) and the mean ``bpp`` and
    ``psnr``.
    """
    per_level = []
    for lv in levels:
        sel = [r for r in rows if r.level == float(lv)]
        entry: dict[str, Any] = {
            "level": float(lv), "n": len(sel),
            "bpp": float(np.mean([r.bpp for r in sel])) if sel else None,
            "psnr": float(np.mean([r.psnr for r in sel])) if sel else None,
            "msssim": _mean([r.msssim for r in sel]),
            "encode_s": float(np.mean([r.encode_s for r in sel])) if sel else None,
            "decode_s": float(np.mean([r.decode_s for r in sel])) if sel else None,
            "anchors": {},
        }
        for a in anchors:
            m = [r for r in sel if r.anchors[a.name].matched]
            entry["anchors"][a.name] = {
                "matched": len(m),
                "psnr": float(np.mean([r.anchors[a.name].psnr for r in m])) if m else None,
                "msssim": _mean([r.anchors[a.name].msssim for r in m]),
                "d_psnr": float(np.mean([r.psnr - r.anchors[a.name].psnr for r in m])) if m else None,
                "d_msssim": _mean([None if r.msssim is None or r.anchors[a.name].msssim is None
                                   else r.msssim - r.anchors[a.name].msssim for r in m]),
            }
        per_level.append(entry)
    bd: dict[str, Any] = {}
    images = sorted({r.image for r in rows})
    for a in anchors:
        # images matched at every level, so that both curves average the same images
        wanted = {float(lv) for lv in levels}
        full = [im for im in images
                if all(r.anchors[a.name].matched for r in rows if r.image == im and r.level in wanted)]
        pts_m, pts_a = [], []
        for lv in levels:
            sel = [r for r in rows if r.level == float(lv) and r.image in full]
            if sel:
                pts_m.append((np.mean([r.bpp for r in sel]), np.mean([r.psnr for r in sel])))
                pts_a.append((np.mean([r.bpp for r in sel]), np.mean([r.anchors[a.name].psnr for r in sel])))
        rate, dpsnr = bd_metrics([p[0] for p in pts_a], [p[1] for p in pts_a],
                                 [p[0] for p in pts_m], [p[1] for p in pts_m]) if pts_m else (None, None)
        ds = [e["anchors"][a.name]["d_psnr"] for e in per_level if e["anchors"][a.name]["d_psnr"] is not None]
        bd[a.name] = {"bd_rate_pct": rate, "bd_psnr_db": dpsnr,
                      "mean_d_psnr": float(np.mean(ds)) if ds else None, "images": len(full)}
    curves: dict[str, list[dict[str, Any]]] = {}
    for a in anchors:
        by_q: dict[int, list[SweepPoint]] = {}
        for per_image in sweeps or ():
            for sp in per_image.get(a.name, ()):
                by_q.setdefault(sp.q, []).append(sp)
        curves[a.name] = [{"q": q, "n": len(pts), "bpp": float(np.mean([p.bpp for p in pts])),
                           "psnr": float(np.mean([p.psnr for p in pts]))} for q, pts in sorted(by_q.items())]
    return {"levels": per_level, "bd": bd, "sweeps": curves}


# ----------------------------------------------------------------------------- markdown

def _f(v: Optional[float], fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def verdict(summary: dict[str, Any], anchor: str = "JPEG") -> str:
    """One honest sentence: does the model beat ``anchor`` in PSNR at every level, and by how much."""
    ds = [(e["level"], e["anchors"][anchor]["d_psnr"]) for e in summary["levels"]
          if e["anchors"][anchor]["d_psnr"] is not None]
    if not ds:
        return f"No level could be matched against {anchor}."
    worse = [(lv, d) for lv, d in ds if d <= 0]
    lo, hi = min(d for _, d in ds), max(d for _, d in ds)
    if not worse:
        return (f"The model beats {anchor} in PSNR at matched bpp at all {len(ds)} levels, "
                f"by {lo:+.2f} to {hi:+.2f} dB.")
    if len(worse) == len(ds):
        return (f"**The model falls short of {anchor}** in PSNR at matched bpp at every level: "
                f"it is {-hi:.2f} to {-lo:.2f} dB below it.")
    names = ", ".join(f"{lv:g}" for lv, _ in worse)
    return (f"**The model falls short of {anchor} at level(s) {names}**: PSNR differences at matched "
            f"bpp range from {lo:+.2f} to {hi:+.2f} dB.")


def _join_names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _anchor_lines(anchors: Sequence[PillowCodec], meta: dict[str, Any]) -> list[str]:
    """The Method section's anchor list: settings, matching method and its cost per image."""
    stats = meta.get("anchor_stats", {})
    out = []
    for a in anchors:
        s = stats.get(a.name)
        how = ("size monotone in quality: search seeded by the sweep grid" if a.monotone else
               "size **not** monotone in quality: every quality encoded, bracket on the Pareto frontier")
        cost = ""
        if s:
            cost = (f"; {s['encoded_per_image']:.1f} qualities encoded per image, {s['encode_s_per_image']:.2f} s "
                    f"of encoding per image; size decreases from one encoded quality to the next: "
                    f"{s['inversions']} over {s['images']} image(s)")
        out.append(f"  - {a.describe()} ({how}; sweep qualities {', '.join(str(q) for q in a.grid())}{cost}).")
    for key, reason in meta.get("skipped", []):
        out.append(f"  - **{key}: skipped**, {reason}.")
    return out


def markdown_report(summary: dict[str, Any], meta: dict[str, Any], png_name: Optional[str],
                    anchors: Sequence[PillowCodec] = ANCHORS, rows: Optional[Sequence[Any]] = None) -> str:
    """The report as markdown: verdicts, mean table, BD figures, plot, method, per-image table
    (with ``rows``), command, model, machine and library versions."""
    names = [a.name for a in anchors]
    with_msssim = not all(e["msssim"] is None for e in summary["levels"])
    title = _join_names(names) if names else "no anchor"
    lines = [
        f"# Default model on Kodak: rate-distortion against {title}",
        "",
        f"Generated by `bench/eval_kodak.py` on {meta['date']} over {meta['n_images']} image(s) "
        f"and {len(summary['levels'])} level(s).",
        "",
    ]
    if "JPEG" in names:
        lines += ["Target (issue 7): higher PSNR than JPEG at matched bpp across the model's range.", ""]
    for n in names:
        lines += [verdict(summary, n), ""]
    for key, reason in meta.get("skipped", []):
        lines += [f"Anchor `{key}` skipped: {reason}.", ""]
    head = ["level", "bpp", "model PSNR"] + (["model MS-SSIM"] if with_msssim else [])
    for n in names:
        head += [f"{n} PSNR"] + ([f"{n} MS-SSIM"] if with_msssim else []) + [f"Δ PSNR vs {n}"]
    lines += ["Means over the images at matched file size (PSNR in dB; Δ = model − anchor, mean of per-image "
              "differences):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    partial = False
    for e in summary["levels"]:
        cells = [f"{e['level']:g}", _f(e["bpp"], ".4f"), _f(e["psnr"], ".2f")]
        cells += [_f(e["msssim"], ".4f")] if with_msssim else []
        for n in names:
            a = e["anchors"][n]
            mark = ""
            if a["matched"] < e["n"]:
                partial = True
                mark = f" ({a['matched']}/{e['n']})"
            cells += [_f(a["psnr"], ".2f") + mark] + ([_f(a["msssim"], ".4f")] if with_msssim else [])
            cells += [_f(a["d_psnr"], "+.2f")]
        lines.append("| " + " | ".join(cells) + " |")
    if partial:
        lines += ["", "(k/n): the anchor could reach the model's file size on only k of the n images at "
                      "that level (its smallest file was larger, or its largest smaller); its means and Δ "
                      "are over those k images."]
    lines += ["", "Bjøntegaard deltas of the model against each anchor (on the per-level mean curves):", "",
              "| anchor | BD-rate (model vs anchor) | BD-PSNR (model − anchor) | mean Δ PSNR at matched bpp | images |",
              "|---|---|---|---|---|"]
    for n in names:
        b = summary["bd"][n]
        lines.append(f"| {n} | {_f(b['bd_rate_pct'], '+.1f')} % | {_f(b['bd_psnr_db'], '+.2f')} dB | "
                     f"{_f(b['mean_d_psnr'], '+.2f')} dB | {b['images']} |")
    lines += ["", "Signs: **BD-rate** is the model's change in bits for the same PSNR, in percent of the "
                  "anchor's: negative = the model needs fewer bits (better), positive = more bits (worse). "
                  "**BD-PSNR** is the model's PSNR minus the anchor's at the same bit rate: positive = the "
                  "model is better. `n/a`: fewer than two levels, or the curves' PSNR (rate) ranges do not "
                  "overlap. images: those the anchor matched at every level (the curves average them).", ""]
    if png_name:
        lines += [f"![RD curves]({png_name})", "",
                  "The model's curve joins its per-level means (markers, labelled by level); in the PSNR "
                  "panel each anchor's curve joins its own quality sweep (mean bpp and PSNR over the images "
                  "at each sweep quality), in the MS-SSIM panel (when measured) its per-level means at "
                  "matched bpp; drawn over the model's bpp range.", ""]
    weights = meta.get("weights")
    model_src = (f"`load_default_codec_from('{weights}')` (the default model's files in that folder)" if weights
                 else "`cod_fast.load_model()` (the installed `DefaultCodec`)")
    lines += [
        "## Method",
        "",
        f"- Model: {model_src}, "
        f"`encode(image, quality=level{', rdoq=False' if meta.get('rdoq') is False else ''}"
        f"{', refine=' + str(meta['refine']) if meta.get('refine') else ''})`; "
        "bpp = 8 × (bytes of the container file, header and CRCs included) / (H × W); decoded with "
        "`decode`. Container overhead (file minus section payloads): "
        f"{meta['overhead_bytes']} bytes per file.",
        "- PSNR: RGB, 8-bit, 10·log10(255² / MSE) with the MSE over all pixels and channels; MS-SSIM: "
        "`cod_fast.metrics.ms_ssim` (5 scales, 11×11 Gaussian window, on RGB, data range 255). Both "
        "per image, then averaged." + ("" if with_msssim else " **MS-SSIM was skipped in this run (`--no-msssim`).**"),
        "- Matched file size: for each image and level, the two anchor files that bracket the model's "
        "file size; the anchor's PSNR and MS-SSIM are **linearly interpolated in bpp between those two "
        "files at exactly the model's bpp** (so all codecs share the bpp column). Where the size grows "
        "with quality (JPEG, WebP, AVIF, HEIC: full scans of Kodak found at most a few decreases of under "
        "0.4 %), bisection finds the largest quality whose file is no larger than the model's and "
        "the next quality up; where it does not (JPEG XL: at quality 19 the file is 2-17 % smaller "
        "than at 18 and 0.3-3 dB better), every quality is encoded and the bracket is "
        "taken on the Pareto frontier of (bytes, PSNR) (a file is dropped when a file no larger has at "
        "least its PSNR): the best PSNR the encoder offers within the budget, whatever its quality setting.",
        "- Anchors (chroma 4:2:0 for JPEG, WebP, AVIF and HEIC, JPEG XL's own XYB; one encoder thread):",
        *_anchor_lines(anchors, meta),
        "- BD figures: Bjøntegaard's method with a polynomial of degree min(3, levels − 1), log-rate vs "
        "PSNR (BD-rate) and PSNR vs log-rate (BD-PSNR), on the per-level means over the images that "
        "the anchor matched at every level.",
        "",
    ]
    if rows:
        lines += _per_image_table(rows, names)
    jobs = meta.get("jobs", 1)
    versions = meta.get("versions", {})
    lines += [
        "## Run",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- Date (UTC): {meta['date']}; wall time {meta['wall_s'] / 60:.1f} min "
        f"({meta['n_images']} images × {len(summary['levels'])} levels, "
        + ("one process" if jobs == 1 else f"{jobs} worker processes") + f", {meta['threads']} torch thread(s) each).",
        f"- Model: `{meta.get('weights_file', 'cod_fast/weights/default.safetensors')}`, sha256 `{meta['sha256']}` "
        f"(from default.json{'' if meta['sha256_ok'] else '; **the file on disk hashes differently**'}), "
        f"training step {meta['step']}, {meta['parameters']} parameters, fingerprint `{meta['fingerprint']}`.",
        f"- Images: {meta['data']} ({', '.join(meta['images'][:3])}{', …' if len(meta['images']) > 3 else ''}).",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores shared with other jobs (load average at start "
        f"{meta['load_start']}, at end {meta['load_end']}); torch {meta['torch']}. Mean model times per image "
        f"(loaded machine, indicative only): encode {meta['encode_s']:.2f} s, decode {meta['decode_s']:.2f} s.",
        "- Libraries: Pillow " + str(versions.get("pillow", meta.get("pillow", "?"))) + "; "
        + "; ".join(f"{k}: {v}" for k, v in versions.items() if k != "pillow") + ".",
    ]
    return "\n".join(lines) + "\n"


def _per_image_table(rows: Sequence[Any], names: Sequence[str]) -> list[str]:
    """The per-image section: one line per image and level, each anchor's PSNR at the model's bpp."""
    head = ["image", "level", "bpp", "model PSNR"] + [f"{n} PSNR" for n in names]
    out = ["## Per image", "",
           "PSNR (dB) of each anchor at the model's bpp on that image (— : the anchor cannot reach that bpp: "
           "its smallest file is larger, or its largest smaller):", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (r.image, r.level)):
        cells = [r.image, f"{r.level:g}", f"{r.bpp:.4f}", f"{r.psnr:.2f}"]
        cells += [f"{r.anchors[n].psnr:.2f}" if r.anchors[n].matched else "—" for n in names]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def preserved_tail(text: str) -> str:
    """The part of an existing report that other tools own: from the first ``TAIL_MARKERS`` line
    to the end ("" when there is none)."""
    starts = [i for i in (text.find(m) for m in TAIL_MARKERS) if i >= 0]
    return text[min(starts):] if starts else ""


def write_markdown(path: Path, md: str) -> None:
    """Write ``md`` to ``path``, followed by the tail section of the file already there (if any)."""
    tail = preserved_tail(path.read_text(encoding="utf-8")) if path.exists() else ""
    path.write_text(md + ("\n" + tail if tail else ""), encoding="utf-8")


# ----------------------------------------------------------------------------- plot

def _window(levels: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """The plot's bpp range: the model's, widened by 30 % on each side (in log terms, roughly)."""
    bpps = [e["bpp"] for e in levels if e["bpp"] is not None]
    return (min(bpps) / 1.3, max(bpps) * 1.3) if bpps else (0.0, 1.0)


def _clip(pts: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """The points of a sweep (in quality order) inside [lo, hi] and their neighbours just outside
    (so that the drawn line reaches the plot's edges)."""
    keep = [i for i, p in enumerate(pts) if lo <= p[0] <= hi]
    if not keep:
        return []
    idx = sorted({*keep, max(keep[0] - 1, 0), min(keep[-1] + 1, len(pts) - 1)})
    return [pts[i] for i in idx]


def plot_rd(summary: dict[str, Any], path: Path, title: str, anchors: Sequence[PillowCodec] = ANCHORS) -> None:
    """Two panels (bpp vs PSNR, bpp vs MS-SSIM; one without MS-SSIM) over the model's bpp range:
    the model's per-level means (markers); in the PSNR panel each anchor's own quality sweep (mean
    bpp and PSNR over the images at each sweep quality; its matched per-level points where the
    summary has no sweep), in the MS-SSIM panel each anchor's matched per-level points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = summary["levels"]
    with_msssim = all(e["msssim"] is not None for e in levels)
    fig, axes = plt.subplots(1, 2 if with_msssim else 1, figsize=(12 if with_msssim else 7, 5), dpi=110,
                             squeeze=False)
    axes = axes[0]
    lo, hi = _window(levels)
    styles = ("s--", "^--", "v-.", "d-.", "P:", "X:")
    colors = [f"C{i + 1}" for i in range(len(anchors))]
    Series = list[tuple[str, list[tuple[float, float]], str, str]]

    def matched(a: PillowCodec, key: str) -> list[tuple[float, float]]:
        return [(e["bpp"], e["anchors"][a.name][key]) for e in levels if e["anchors"][a.name][key] is not None]

    psnr_series: Series = [("cod_fast default", [(e["bpp"], e["psnr"]) for e in levels], "o-", "C0")]
    ssim_series: Series = [("cod_fast default", [(e["bpp"], e["msssim"]) for e in levels], "o-", "C0")]
    for a, style, color in zip(anchors, styles * 2, colors):
        sweep = summary.get("sweeps", {}).get(a.name) or []
        if sweep:
            pts = _clip([(s["bpp"], s["psnr"]) for s in sweep], lo, hi)
            psnr_series.append((f"{a.name} (quality sweep)", pts, "." + style[1:], color))
        else:
            psnr_series.append((f"{a.name} (at matched bpp)", matched(a, "psnr"), style, color))
        ssim_series.append((f"{a.name} (at matched bpp)", matched(a, "msssim"), style, color))
    panels = [(axes[0], psnr_series, 1, "PSNR (dB, RGB)")]
    if with_msssim:
        panels.append((axes[1], ssim_series, 2, "MS-SSIM (RGB)"))
    for ax, series, k, label in panels:
        visible: list[float] = []
        for name, pts, style, color in series:
            if pts:
                main = name.startswith("cod_fast")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=name,
                        lw=2.0 if main else 1.2, ms=7 if main else 5)
                visible += [float(p[1]) for p in pts if lo <= p[0] <= hi]
        for e in levels:
            ax.annotate(f"{e['level']:g}", (e["bpp"], e["psnr"] if k == 1 else e["msssim"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set_xlim(lo, hi)
        if visible:
            pad = 0.05 * (max(visible) - min(visible) or 1.0)
            ax.set_ylim(min(visible) - pad, max(visible) + pad)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
