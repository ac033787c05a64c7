"""`ncodec bench image`: run codecs over a folder, cache per item, summarise, plot."""
from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import BadInput
from . import image as image_bench
from .metrics import bd_rate, ms_ssim, psnr, quality_at_rate

FIXED_BPP = (0.25, 0.5, 0.75, 1.0)


def list_images(folder: Path, limit: int | None) -> list[Path]:
    from ..media import IMAGE_EXT

    if not folder.is_dir():
        raise BadInput(f"benchmark data folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise BadInput(f"no images (.png .jpg ...) in {folder}")
    return files[:limit] if limit else files


def _model_tags(codecs: list[str], media: str) -> dict[str, str]:
    """Learned codecs: the SHA-256 prefix of the installed model, the codec version and its encoder settings, so
    cached rows of older weights, of an older bitstream or of another encoder search are redone."""
    from .. import zoo
    from ..registry import CODEC_MODULES

    from ..errors import ModelMismatch
    from ..registry import get_codec_class

    tags = {}
    for c in codecs:
        if c in CODEC_MODULES:
            cls = get_codec_class(c)
            try:
                tags[c] = f"{zoo.find(c, media).identity[:16]}-v{cls.version}"
            except ModelMismatch:  # codecs without weights (implicit video): their version
                tags[c] = f"{c}-v{cls.version}"
            if cls.encoder_settings():
                tags[c] += "-" + cls.encoder_settings().replace(" ", "")
    return tags


def _settings(codec: str, classical: dict) -> str:
    """The settings line of a codec in the results: a classical codec's, or ours with its encoder settings."""
    if codec in classical:
        return classical[codec]
    from ..registry import get_codec_class

    extra = get_codec_class(codec).encoder_settings()
    return f"ncodec{', encoder ' + extra if extra else ''}, bpp from the .nc file"


def _load_cache(path: Path, tags: dict[str, str]) -> dict:
    cache = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
                if r["codec"] in tags and r.get("model") != tags[r["codec"]]:
                    continue  # measured with other weights
                cache[(r["codec"], r["item"], r["rate"])] = r
            except (ValueError, KeyError):
                continue  # a torn last line from an interrupted run
    return cache


def _image_file_jobs(item) -> list[dict]:
    """All (codec, rate) runs of one image file (a unit of work for --jobs)."""
    from ..media import read_image

    f, pairs, tags, perc = item
    img = read_image(f)
    lp = fid = None
    if perc.get("lpips"):
        from .perceptual import lpips_model

        lp = lpips_model(perc["lpips"])
        ref_taps = lp.taps(img)  # the reference's features once, for every codec and rate
    if perc.get("fid"):
        from .perceptual import fid_model

        fid = fid_model(perc["fid"])
        ref = _fid_path(perc, None, None, f.name)
        if not ref.exists():
            _save_npy(ref, fid.features(img))
    rows = []
    for c, r in sorted(pairs):
        setup = image_bench.warm_up(c)  # once per process and codec, untimed (None after the first)
        nbytes, dec, te, td = image_bench.run_one(c, img, r)
        px = img.shape[0] * img.shape[1]
        row = {"codec": c, "item": f.name, "rate": r, "bytes": nbytes, "bpp": 8 * nbytes / px,
               "psnr": psnr(img, dec), "ms_ssim": ms_ssim(img, dec), "enc_s": te, "dec_s": td, "pixels": px,
               "model": tags.get(c)}
        if lp is not None:
            row["lpips"] = lp.distance(ref_taps, dec)
        if fid is not None:
            _save_npy(_fid_path(perc, c, r, f.name), fid.features(dec))
        row["perceptual"] = perc.get("tags")
        if setup is not None:
            row["setup_s"] = setup
        rows.append(row)
    return rows


def _fid_path(perc: dict, codec: str | None, rate, item: str) -> Path:
    """Where the FID patch features of one decoded image (codec None: of the reference image) are kept."""
    sub = "reference" if codec is None else f"{codec}@{rate:g}"
    return Path(perc["dir"]) / f"fid-{perc['tags']['fid']}" / sub / f"{item}.npy"


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def _perceptual_missing(row: dict, perc: dict) -> bool:
    """A cached row lacks a requested perceptual metric (or was measured with other weights)."""
    have = row.get("perceptual") or {}
    for k in ("lpips", "fid"):
        if perc.get(k) and have.get(k) != perc["tags"][k]:
            return True
    if perc.get("fid") and not (_fid_path(perc, row["codec"], row["rate"], row["item"]).exists()
                                and _fid_path(perc, None, None, row["item"]).exists()):
        return True
    return False


def _one_thread() -> None:
    """Worker initializer: torch, if the parent had already loaded it, computes on one thread."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _record(cf, cache, row, done, total, progress, setup: dict) -> int:
    if "setup_s" in row:  # the longest set-up of a codec over this run's processes
        setup[row["codec"]] = max(setup.get(row["codec"], 0.0), row["setup_s"])
    cf.write(json.dumps(row) + "\n")
    cf.flush()
    cache[(row["codec"], row["item"], row["rate"])] = row
    if progress:
        progress(done + 1, total, row)
    return done + 1


def run_image(codecs: list[str], data: Path, out: Path, limit: int | None = None, anchor: str = "webp",
              rates: list[float] | None = None, progress=None, command: str = "", jobs: int = 1,
              lpips_weights: str | None = None, fid_weights: str | None = None) -> dict:
    """Every codec x rate x image; LPIPS and FID too when their weights are given (see bench.perceptual)."""
    for c in codecs:
        if not image_bench.available(c):
            raise BadInput(f"codec {c!r} is not available here (known: {', '.join(image_bench.CLASSICAL)} and "
                           f"the registered ncodec codecs)")
    files = list_images(data, limit)
    out.mkdir(parents=True, exist_ok=True)
    tags = _model_tags(codecs, "image")
    cache = _load_cache(out / "cache.jsonl", tags)
    cache_path = out / "cache.jsonl"
    perc = _perceptual_setup(out, lpips_weights, fid_weights)
    planned = [(c, f, r) for c in codecs for f in files for r in image_bench.rates_for(c, rates)]
    todo = [j for j in planned if (j[0], j[1].name, j[2]) not in cache
            or _perceptual_missing(cache[(j[0], j[1].name, j[2])], perc)]
    by_file: dict[Path, list] = defaultdict(list)
    for c, f, r in todo:
        by_file[f].append((c, r))
    done, setup = 0, {}
    with open(cache_path, "a") as cf:
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor

            # one compute thread per worker: with torch's default (all cores, spinning OpenMP threads) in every
            # worker, the Kodak classical run took 10.5 min with --jobs 2 and 2.8 min with this (measured)
            saved = os.environ.get("OMP_NUM_THREADS")
            os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by the workers' OpenMP at their torch import
            try:
                with ProcessPoolExecutor(jobs, initializer=_one_thread) as ex:
                    results = ex.map(_image_file_jobs, [(f, p, tags, perc) for f, p in by_file.items()])
                    for file_rows in results:
                        for row in file_rows:
                            done = _record(cf, cache, row, done, len(todo), progress, setup)
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
        else:
            for f, p in sorted(by_file.items()):
                for row in _image_file_jobs((f, p, tags, perc)):
                    done = _record(cf, cache, row, done, len(todo), progress, setup)
    rows = [cache[(c, f.name, r)] for c, f, r in planned]
    summary = summarise(rows, codecs, anchor)
    if perc.get("fid"):
        _fid_summary(summary, rows, perc, [f.name for f in files])
    if perc.get("tags"):
        summary["perceptual_weights"] = {k: v for k, v in perc["tags"].items() if v}
    summary["settings"] = {c: _settings(c, image_bench.SETTINGS) for c in codecs}
    summary["data"] = str(data)
    summary["items"] = len(files)
    summary["command"] = command
    summary["machine"] = f"{platform.machine()}, {platform.python_version()}, {sys.platform}"
    summary["date"] = time.strftime("%Y-%m-%d")
    # seconds of each codec's untimed first round trip in this run (its once-per-process set-up; kept out of
    # enc_s / dec_s since stop 37)
    summary["setup_s"] = setup
    write_outputs(out, rows, summary)
    return summary


def _perceptual_setup(out: Path, lpips_weights: str | None, fid_weights: str | None) -> dict:
    """Load (and so check) the perceptual models up front: a bad weights file fails before any work."""
    if not (lpips_weights or fid_weights):
        return {}
    from .perceptual import fid_model, lpips_model, weights_tag

    if lpips_weights:
        lpips_model(str(lpips_weights))
    if fid_weights:
        fid_model(str(fid_weights))
    return {"lpips": lpips_weights and str(lpips_weights), "fid": fid_weights and str(fid_weights),
            "dir": str(out), "tags": {"lpips": weights_tag(lpips_weights), "fid": weights_tag(fid_weights)}}


def _fid_summary(summary: dict, rows: list[dict], perc: dict, items: list[str]) -> None:
    """FID of every (codec, rate) over all images' patches, against the reference patches."""
    from .perceptual import frechet_distance

    ref = np.concatenate([np.load(_fid_path(perc, None, None, i)) for i in items])
    for c, e in summary["codecs"].items():
        curve = []
        for r in sorted({row["rate"] for row in rows if row["codec"] == c}):
            sel = [row for row in rows if row["codec"] == c and row["rate"] == r]
            feats = np.concatenate([np.load(_fid_path(perc, c, r, row["item"])) for row in sel])
            curve.append({"rate": r, "bpp": float(np.mean([row["bpp"] for row in sel])),
                          "fid": frechet_distance(ref, feats), "patches": len(feats)})
        e["fid_curve"] = curve
        e["fid_at_bpp"] = {str(t): quality_at_rate([p["bpp"] for p in curve], [p["fid"] for p in curve], t)
                           for t in FIXED_BPP}


def summarise(rows: list[dict], codecs: list[str], anchor: str) -> dict:
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["codec"]][r["item"]].append(r)
    items = sorted({r["item"] for r in rows})
    result = {"anchor": anchor, "codecs": {}}
    for c in codecs:
        per_item = by[c]
        entry = {"psnr_at_bpp": {}, "ms_ssim_at_bpp": {}, "bd_rate_psnr": None, "bd_rate_ms_ssim": None}
        for t in FIXED_BPP:
            vals = [quality_at_rate([r["bpp"] for r in per_item[i]], [r["psnr"] for r in per_item[i]], t)
                    for i in items]
            entry["psnr_at_bpp"][str(t)] = float(np.mean(vals)) if vals and None not in vals else None
            vals = [quality_at_rate([r["bpp"] for r in per_item[i]], [r["ms_ssim"] or np.nan for r in per_item[i]], t)
                    for i in items]
            ok = vals and None not in vals and not np.any(np.isnan(vals))
            entry["ms_ssim_at_bpp"][str(t)] = float(np.mean(vals)) if ok else None
            if all(r.get("lpips") is not None for i in items for r in per_item[i]) and per_item:
                vals = [quality_at_rate([r["bpp"] for r in per_item[i]], [r["lpips"] for r in per_item[i]], t)
                        for i in items]
                entry.setdefault("lpips_at_bpp", {})[str(t)] = float(np.mean(vals)) if None not in vals else None
        if anchor in by and c != anchor:
            for key, metric in (("bd_rate_psnr", "psnr"), ("bd_rate_ms_ssim", "ms_ssim")):
                vals = []
                for i in items:
                    a, b = by[anchor][i], per_item[i]
                    if metric == "ms_ssim" and any(r["ms_ssim"] is None for r in a + b):
                        continue
                    v = bd_rate([r["bpp"] for r in a], [r[metric] for r in a], [r["bpp"] for r in b],
                                [r[metric] for r in b])
                    if v is not None:
                        vals.append(v)
                entry[key] = float(np.mean(vals)) if vals else None
                entry[key + "_items"] = len(vals)
        # mean curve: average bpp and quality per rate setting
        curve = defaultdict(list)
        for i in items:
            for r in per_item[i]:
                curve[r["rate"]].append(r)
        entry["curve"] = [{"rate": k, "bpp": float(np.mean([r["bpp"] for r in v])),
                           "psnr": float(np.mean([r["psnr"] for r in v])),
                           "ms_ssim": (float(np.mean([r["ms_ssim"] for r in v]))
                                       if all(r["ms_ssim"] is not None for r in v) else None)}
                          for k, v in sorted(curve.items())]
        mp = sum(r["pixels"] for r in rows if r["codec"] == c) / 1e6
        te = sum(r["enc_s"] for r in rows if r["codec"] == c)
        td = sum(r["dec_s"] for r in rows if r["codec"] == c)
        entry["encode_mp_s"] = mp / te if te else None
        entry["decode_mp_s"] = mp / td if td else None
        result["codecs"][c] = entry
    ref = result["codecs"].get(anchor, {})
    for c, e in result["codecs"].items():
        if ref.get("encode_mp_s") and e.get("encode_mp_s"):
            e["encode_speed_vs_anchor"] = e["encode_mp_s"] / ref["encode_mp_s"]
            e["decode_speed_vs_anchor"] = e["decode_mp_s"] / ref["decode_mp_s"]
    return result


def write_outputs(out: Path, rows: list[dict], summary: dict) -> None:
    (out / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)
    (out / "results.md").write_text(markdown(summary))
    try:
        plot(out, summary)
    except ImportError:
        pass  # matplotlib is in the bench extra


def markdown(summary: dict) -> str:
    a = summary["anchor"]
    kind = "videos" if "max_frames" in summary else "images"
    lines = [f"Data: `{summary.get('data')}` ({summary.get('items')} {kind}). Command: `{summary.get('command')}`",
             "", f"| codec | PSNR@0.25 | PSNR@0.5 | PSNR@0.75 | PSNR@1.0 | MS-SSIM@0.5 | BD-rate vs {a} (PSNR) "
             f"| BD-rate vs {a} (MS-SSIM) | enc MP/s | dec MP/s |", "|---" * 10 + "|"]

    def f(v, d=2):
        return "-" if v is None else f"{v:.{d}f}"

    for c, e in summary["codecs"].items():
        p = e["psnr_at_bpp"]
        lines.append(f"| {c} | {f(p['0.25'])} | {f(p['0.5'])} | {f(p['0.75'])} | {f(p['1.0'])} | "
                     f"{f(e['ms_ssim_at_bpp']['0.5'], 4)} | {f(e.get('bd_rate_psnr'), 1)}% | "
                     f"{f(e.get('bd_rate_ms_ssim'), 1)}% | {f(e.get('encode_mp_s'))} | {f(e.get('decode_mp_s'))} |")
    if any("lpips_at_bpp" in e or "fid_at_bpp" in e for e in summary["codecs"].values()):
        w = summary.get("perceptual_weights", {})
        lines += ["", "Perceptual (lower is better; LPIPS per image interpolated over log-bpp and averaged; FID over "
                  "all images' 256x256 patches per rate setting, interpolated over the mean bpp). Weights: "
                  + ", ".join(f"{k} sha256 {v}..." for k, v in w.items()), "",
                  "| codec | LPIPS@0.25 | LPIPS@0.5 | LPIPS@1.0 | FID@0.25 | FID@0.5 | FID@1.0 |", "|---" * 7 + "|"]
        for c, e in summary["codecs"].items():
            lp, fd = e.get("lpips_at_bpp", {}), e.get("fid_at_bpp", {})
            lines.append(f"| {c} | " + " | ".join(f(lp.get(t), 4) for t in ("0.25", "0.5", "1.0")) + " | "
                         + " | ".join(f(fd.get(t), 1) for t in ("0.25", "0.5", "1.0")) + " |")
    lines += ["", "PSNR: RGB, 8-bit, interpolated per image over log-bpp, then averaged. BD-rate: pchip on log-rate "
              "over the overlapping quality range, per image, then averaged. bpp from whole files.", "",
              "Settings: " + "; ".join(f"{k}: {v}" for k, v in summary.get("settings", {}).items()), ""]
    return "\n".join(lines)


def plot(out: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for c, e in summary["codecs"].items():
        cv = e["curve"]
        axes[0].plot([p["bpp"] for p in cv], [p["psnr"] for p in cv], marker=".", label=c)
        if all(p["ms_ssim"] is not None for p in cv):
            axes[1].plot([p["bpp"] for p in cv], [p["ms_ssim"] for p in cv], marker=".", label=c)
    for ax, yl in zip(axes, ("RGB PSNR (dB)", "MS-SSIM")):
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(yl)
        ax.set_xlim(0, 2.0)
        ax.grid(alpha=0.3)
        if ax.lines:  # no MS-SSIM curve (video): no legend to draw
            ax.legend()
    axes[0].set_ylim(22, 42)
    axes[1].set_ylim(0.85, 1.0)
    fig.suptitle(f"{summary.get('data')} ({summary.get('items')} images), mean curves")
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=110)
    fig.savefig(out / "rd.svg")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ audio

FIXED_KBPS = (1.5, 3.0, 6.0, 12.0, 24.0, 48.0)
AUDIO_METRICS = ("snr", "si_sdr", "mel", "pesq_wb", "stoi")


def list_audio(folder: Path, limit: int | None) -> list[Path]:
    from ..media import AUDIO_EXT

    if not folder.is_dir():
        raise BadInput(f"benchmark data folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXT)
    if not files:
        raise BadInput(f"no audio files (.wav .flac ...) under {folder}")
    return files[:limit] if limit else files


def run_audio(codecs: list[str], data: Path, out: Path, limit: int | None = None, anchor: str = "opus",
              rates: list[float] | None = None, progress=None, command: str = "", jobs: int = 1) -> dict:
    import soundfile as sf

    from . import audio as ab

    files = list_audio(data, limit)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "cache.jsonl"
    tags = _model_tags([c for c in codecs if c not in ab.CLASSICAL], "audio")
    cache = _load_cache(cache_path, tags)
    names = {f: str(f.relative_to(data)) for f in files}
    jobs = [(c, f, r) for c in codecs for f in files
            for r in (rates or ab.rates_for(c))]
    todo = [j for j in jobs if (j[0], names[j[1]], j[2]) not in cache]
    # once per process and codec, untimed: rows time the codec's work on the file, not its set-up (at stop 35
    # rvq's first music row took 1.6 s against 0.3-0.4 s for the same file's others)
    setup = {c: ab.warm_up(c) for c in sorted({j[0] for j in todo})}
    with open(cache_path, "a") as cf:
        for i, (c, f, r) in enumerate(sorted(todo, key=lambda j: (str(j[1]), j[0], j[2]))):
            sig, sr = sf.read(f, dtype="float32", always_2d=True)
            speech = "speech" in f.parts
            row = {"codec": c, "item": names[f], "rate": r, "sample_rate": sr, "speech": speech, "model": tags.get(c)}
            row.update(ab.run_one(c, sig, sr, r, speech))
            cf.write(json.dumps(row) + "\n")
            cf.flush()
            cache[(c, names[f], r)] = row
            if progress:
                progress(i + 1, len(todo), row)
    rows = [cache[(c, names[f], r)] for c, f, r in jobs]
    summary = {"anchor": anchor, "codecs": {}, "data": str(data), "items": len(files), "command": command,
               "settings": {c: ab.SETTINGS.get(c, "ncodec, kbps from the .nc file") for c in codecs},
               "date": time.strftime("%Y-%m-%d"), "setup_s": setup}
    for group in ("speech", "music"):
        items = sorted({r["item"] for r in rows if r["speech"] == (group == "speech")})
        if not items:
            continue
        for c in codecs:
            per = defaultdict(list)
            for r in rows:
                if r["codec"] == c and r["item"] in items:
                    per[r["item"]].append(r)
            e = summary["codecs"].setdefault(c, {})
            g = e.setdefault(group, {"at_kbps": {}})
            for t in FIXED_KBPS:
                vals = {}
                for m in AUDIO_METRICS:
                    v = [quality_at_rate([r["kbps"] for r in per[i]], [r.get(m) if r.get(m) is not None else np.nan
                                                                      for r in per[i]], t) for i in items]
                    ok = [x for x in v if x is not None and not np.isnan(x)]
                    vals[m] = float(np.mean(ok)) if ok else None
                    vals["files"] = len(ok) if m == "snr" else vals.get("files")
                g["at_kbps"][str(t)] = vals
            g["kbps_range"] = [float(min(r["kbps"] for i in items for r in per[i])),
                               float(max(r["kbps"] for i in items for r in per[i]))]
            realtime = sum(r["seconds"] for i in items for r in per[i]) / sum(r["codec_s"] for i in items for r in per[i])
            g["encode_plus_decode_x_realtime"] = float(realtime)
    write_audio_outputs(out, rows, summary)
    return summary


def write_audio_outputs(out: Path, rows: list[dict], summary: dict) -> None:
    (out / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    keys = sorted({k for r in rows for k in r})
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "results.md").write_text(audio_markdown(summary))


def audio_markdown(summary: dict) -> str:
    def f(v, d=2):
        return "-" if v is None else f"{v:.{d}f}"

    lines = [f"Data: `{summary['data']}` ({summary['items']} files). Command: `{summary['command']}`", ""]
    for group in ("speech", "music"):
        lines += [f"### {group}", "", "| codec | kbps | files | SNR dB | SI-SDR dB | mel dist | PESQ-WB | STOI |",
                  "|---|---|---|---|---|---|---|---|"]
        for c, e in summary["codecs"].items():
            g = e.get(group)
            if not g:
                continue
            for t, v in g["at_kbps"].items():
                if all(x is None for x in v.values()):
                    continue
                lines.append(f"| {c} | {t} | {v.get('files')} | {f(v['snr'])} | {f(v['si_sdr'])} | {f(v['mel'], 3)} | "
                             f"{f(v['pesq_wb'])} | {f(v['stoi'], 3)} |")
        lines.append("")
    lines += ["| codec | " + " | ".join(f"{g} x real time" for g in ("speech", "music")) + " |",
              "|---|---|---|"]
    for c, e in summary["codecs"].items():
        lines.append(f"| {c} | " + " | ".join(f(e[g].get("encode_plus_decode_x_realtime"), 1) if g in e else "-"
                                             for g in ("speech", "music")) + " |")
    setup = summary.get("setup_s") or {}
    lines += ["", "Speed: seconds of audio per second of encode + decode (whole files, every setting), one process "
              "on the machine's threads; each codec's once-per-process set-up (a warm-up round trip before the "
              "first timed file) is left out" + ("" if not setup else ": " + ", ".join(
                  f"{c} {s:.2f} s" for c, s in setup.items()) + " in this run") + ". Rows from the cache keep "
              "the timing of the run that made them.", "",
              "Metrics interpolated per file over log-kbps at each listed rate, averaged over the files whose "
              "measured range covers that rate (`files`); kbps from whole files.", "",
              "Settings: " + "; ".join(f"{k}: {v}" for k, v in summary.get("settings", {}).items()), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ lossless


def run_lossless(codecs: list[str], data: Path, out: Path, limit: int | None = None, anchor: str = "png",
                 rates=None, progress=None, command: str = "", jobs: int = 1) -> dict:
    from ..media import read_image
    from . import lossless as lb

    files = list_images(data, limit)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (c, f) in enumerate([(c, f) for f in files for c in codecs]):
        row = {"codec": c, "item": f.name, "rate": 0}
        row.update(lb.run_one(c, read_image(f)))
        rows.append(row)
        if progress:
            progress(i + 1, len(files) * len(codecs), row)
    summary = {"anchor": anchor, "codecs": {}, "data": str(data), "items": len(files), "command": command,
               "settings": {c: lb.SETTINGS.get(c, "ncodec") for c in codecs}, "date": time.strftime("%Y-%m-%d")}
    for c in codecs:
        rs = [r for r in rows if r["codec"] == c]
        px = sum(r["pixels"] for r in rs)
        models = sorted({r["model"] for r in rs if r["model"]})
        if models:
            summary["settings"][c] = f"ncodec, model {', '.join(models)}"
        summary["codecs"][c] = {
            "bpp": 8 * sum(r["bytes"] for r in rs) / px, "all_exact": all(r["exact"] for r in rs),
            "encode_mp_s": px / 1e6 / sum(r["enc_s"] for r in rs), "decode_mp_s": px / 1e6 / sum(r["dec_s"] for r in rs)}
    (out / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    (out / "results.md").write_text(lossless_markdown(summary))
    return summary


def lossless_markdown(summary: dict) -> str:
    lines = [f"Data: `{summary['data']}` ({summary['items']} images). Command: `{summary['command']}`", "",
             "| codec | bits per pixel | exact | enc MP/s | dec MP/s |", "|---|---|---|---|---|"]
    for c, e in summary["codecs"].items():
        lines.append(f"| {c} | {e['bpp']:.3f} | {e['all_exact']} | {e['encode_mp_s']:.2f} | {e['decode_mp_s']:.2f} |")
    lines += ["", "Settings: " + "; ".join(f"{k}: {v}" for k, v in summary["settings"].items()), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ video

VIDEO_EXT = {".mp4", ".mkv", ".y4m", ".avi", ".mov", ".webm", ".264", ".h264"}


def run_video(codecs: list[str], data: Path, out: Path, limit: int | None = None, anchor: str = "x264",
              rates: list[float] | None = None, progress=None, command: str = "", jobs: int = 1,
              max_frames: int = 60) -> dict:
    from . import video as vb

    if data.is_file() and data.suffix.lower() in VIDEO_EXT:  # one video
        files = [data]
    elif not data.is_dir():
        raise BadInput(f"benchmark data folder {data} does not exist")
    else:
        files = sorted(p for p in data.iterdir() if p.suffix.lower() in VIDEO_EXT)[: limit or None]
    if not files:
        raise BadInput(f"no video files (.mp4 .y4m .mkv ...) in {data}")
    for c in codecs:
        if c not in vb.CODECS and c not in vb.LEARNED:
            raise BadInput(f"unknown video codec {c!r}; known: {', '.join(list(vb.CODECS) + list(vb.LEARNED))}")
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "cache.jsonl"  # learned video codecs fit for minutes: an interrupted run resumes
    tags = _model_tags([c for c in codecs if c in vb.LEARNED], "video")
    cache = _load_cache(cache_path, tags)
    rows, k = [], 0
    total = sum(len(rates or vb.rates_for(c)) for c in codecs) * len(files)
    with open(cache_path, "a") as cf:
        for f in files:
            frames = None
            for c in codecs:
                for r in rates or vb.rates_for(c):
                    key = (c, f"{f.name}@{max_frames}", r)
                    if key in cache:
                        row = cache[key]
                    else:
                        if frames is None:
                            frames, fps = vb.read_frames(f, max_frames)
                        row = {"codec": c, "item": key[1], "rate": r, "ms_ssim": None, "model": tags.get(c)}
                        row.update(vb.run_one(c, frames, fps, r))
                        cf.write(json.dumps(row) + "\n")
                        cf.flush()
                    rows.append(row)
                    k += 1
                    if progress:
                        progress(k, total, row)
    summary = summarise(rows, codecs, anchor)
    summary.update({"data": str(data), "items": len(files), "command": command, "max_frames": max_frames,
                    "settings": {c: vb.SETTINGS[c] for c in codecs}, "date": time.strftime("%Y-%m-%d")})
    write_outputs(out, rows, summary)
    return summary
