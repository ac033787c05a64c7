"""`ncodec` command line. Library errors become one line on stderr and an exit code:

1 internal error, 2 usage, 3 bad or corrupt input, 4 model missing or mismatched, 5 newer format/codec version,
6 output exists (use --force).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import click

EXIT_INTERNAL, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_MODEL, EXIT_VERSION, EXIT_EXISTS = 1, 2, 3, 4, 5, 6


def _exit_code(exc: BaseException) -> int:
    from ncodec import errors

    if isinstance(exc, errors.ModelMismatch):
        return EXIT_MODEL
    if isinstance(exc, FileExistsError):
        return EXIT_EXISTS
    if isinstance(exc, errors.UnsupportedVersion):
        return EXIT_VERSION
    if isinstance(exc, errors.UnknownCodec):
        return EXIT_USAGE
    if isinstance(exc, (errors.NcodecError, FileNotFoundError, IsADirectoryError, PermissionError)):
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL


def _fail(ctx: click.Context, exc: BaseException):
    if ctx.find_root().obj.get("debug"):
        raise exc
    msg = str(exc) or type(exc).__name__
    code = _exit_code(exc)
    if code == EXIT_INTERNAL:
        msg = f"internal error: {type(exc).__name__}: {msg} (run with --debug for details)"
    click.echo(f"ncodec: error: {msg.splitlines()[0]}", err=True)
    ctx.exit(code)


def _run(ctx, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except click.exceptions.Exit:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        _fail(ctx, exc)


def _check_output(ctx, out: str, force: bool, inputs: list[str]) -> None:
    if out == "-":
        return
    p = Path(out)
    for i in inputs:
        if i != "-" and Path(i).exists() and p.exists() and p.resolve() == Path(i).resolve():
            click.echo(f"ncodec: error: output {out} is also an input; choose another name", err=True)
            ctx.exit(EXIT_USAGE)
    if p.exists() and not force:
        click.echo(f"ncodec: error: {out} exists; use --force to overwrite it", err=True)
        ctx.exit(EXIT_EXISTS)
    if not p.parent.is_dir():
        click.echo(f"ncodec: error: folder {p.parent} does not exist", err=True)
        ctx.exit(EXIT_BAD_INPUT)


def _atomic_write(out: str, write_fn) -> None:
    """Write through a temporary file in the destination folder, then rename: no partial output on failure."""
    if out == "-":
        import io

        buf = io.BytesIO()
        write_fn(buf)
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return
    p = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="ncodec", prog_name="ncodec")
@click.pass_context
def main(ctx, debug):
    """ncodec: neural codecs with one versioned file format (.nc)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output .nc file ('-' for stdout).")
@click.option("--codec", default=None, help="Codec id (see `ncodec list`); default per media kind.")
@click.option("--quality", type=float, default=None, help="Quality 0..100 (codec scale).")
@click.option("--bpp", type=float, default=None, help="Target bits per pixel (images): largest rate that fits.")
@click.option("--bitrate", type=float, default=None, help="Target kbit/s (audio).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--frames", "frame_range", default=None, metavar="A:B",
              help="Video: encode only frames A..B-1 (either side may be empty).")
@click.option("--time-budget", type=float, default=None,
              help="Video: seconds of fitting (default: about 6 s per CIF-sized frame).")
@click.option("--epochs", type=int, default=None,
              help="Video: most fitting passes per group (default: nerv 5000, so the time budget ends it; "
                   "nirvana 900 per intra group, a third per inter group).")
@click.option("--fps", type=float, default=25.0, show_default=True, help="Video from a folder of frames: frame rate.")
@click.option("--plus", is_flag=True, help="Video (nerv/nirvana): NeRV++ blocks (bilinear skip + separable conv).")
@click.option("--prune", type=float, default=None,
              help="Video (nerv): zero this fraction of the smallest weights, then fine-tune (NeRV's pruning).")
@click.option("--redundancy", type=int, default=None, metavar="K",
              help="Image (vqgan): also code every index's cluster among K codewords (a ladder rung, e.g. 16) in "
                   "units of their own, so lost indices are recovered within their cluster (costs ~3.5 bits per "
                   "index at K = 16).")
@click.option("--search", type=click.Choice(["nearest", "mse", "ms-ssim"]), default=None,
              help="Image (vqgan): how the encoder picks each block's index: the codeword nearest its latent "
                   "(default), or among the 6 nearest the one whose decoded image has the least local error, "
                   "squared or MS-SSIM-like (~36 s per 768x512 image; on Kodak at K = 128 MS-SSIM +0.016 for 2 % "
                   "more bytes, past the next rung). The decoder does not depend on it.")
@click.option("--beam", type=int, default=None, metavar="N",
              help="Image (mcquic): paths the encoder's index search keeps (default 4; 1 = greedy, ~3x faster "
                   "encoding, ~3 % more bytes at the same PSNR). The decoder does not depend on it.")
@click.option("--model", "model_id", default=None,
              help="Model id (rvq: e.g. a converted EnCodec checkpoint; pc: pc-image-v1, pc-digits-v1, also for sets; "
                   "walloc, mcquic, vqgan: an older or converted model; see `ncodec list`). Default: the newest (pc: "
                   "digits model for 28x28 grey items).")
@click.pass_context
def encode(ctx, inputs, output, codec, quality, bpp, bitrate, force, frame_range, time_budget, epochs, fps, plus,
           prune, redundancy, search, beam, model_id):
    """Encode a media file (image, audio or video; '-' reads stdin) into a .nc file.

    Video (a file PyAV reads: .mp4 .y4m .264 ..., or a folder of frames) is fitted, with progress and PSNR shown;
    an interrupted video encode resumes from OUTPUT.ckpt/ when run again with the same settings.

    Several images go into one multi-item file with a multi-item codec (pc: photos of any sizes, or 28x28 digit
    sets), e.g. `ncodec encode --codec pc photos/*.png -o photos.nc`; `ncodec decode photos.nc -o DIR` restores
    them with their names (`--item N`: one of them).
    """
    if sum(v is not None for v in (quality, bpp, bitrate)) > 1:
        raise click.UsageError("give at most one of --quality, --bpp and --bitrate")
    if len(inputs) > 1 and "-" in inputs:
        raise click.UsageError("'-' (stdin) cannot be combined with other inputs")
    if len(inputs) > 1 and codec is None:
        raise click.UsageError("several inputs go into one multi-item file: name a multi-item codec (--codec pc)")
    if len(inputs) > 1 and any(v is not None for v in (quality, bpp, bitrate)):
        raise click.UsageError("multi-item files are lossless: --quality/--bpp/--bitrate do not apply")
    _check_output(ctx, output, force, list(inputs))
    src = inputs[0]

    def work():
        import ncodec

        for i in inputs:
            if i != "-" and not Path(i).is_file() and not (len(inputs) == 1 and Path(i).is_dir()):
                raise FileNotFoundError(f"input {i} does not exist or is not a file")
        from ncodec.api import _is_video_name

        single_image = not (len(inputs) > 1 or (src != "-" and (Path(src).is_dir() or _is_video_name(src))))
        if redundancy is not None and not single_image:
            raise ncodec.BadInput("--redundancy applies to single images (vqgan)")
        if beam is not None and not single_image:
            raise ncodec.BadInput("--beam applies to single images (mcquic)")
        if search is not None and not single_image:
            raise ncodec.BadInput("--search applies to single images (vqgan)")
        if src != "-" and (Path(src).is_dir() or _is_video_name(src)):
            with _notes(src):
                return _encode_video(output, src, codec, quality, bpp, bitrate, frame_range, time_budget, epochs,
                                     fps, plus)
        if frame_range or time_budget is not None or epochs is not None or plus:
            raise ncodec.BadInput("--frames, --time-budget, --epochs and --plus apply to video inputs")
        if len(inputs) > 1:
            blob = ncodec.encode_items(list(inputs), codec=codec, model=model_id)
            _atomic_write(output, lambda f: f.write(blob))
            return blob
        data = sys.stdin.buffer.read() if src == "-" else src
        options = {k: v for k, v in (("model", model_id), ("redundancy", redundancy), ("beam", beam),
                                     ("search", search)) if v is not None}
        with _notes(src):
            blob = ncodec.encode(data, codec=codec, quality=quality, bpp=bpp, bitrate=bitrate,
                                 options=options or None)
        _atomic_write(output, lambda f: f.write(blob))
        return blob

    blob = _run(ctx, work)
    if output != "-":
        import ncodec

        inf = ncodec.info(blob)
        rate = f"{inf.bpp:.4f} bpp" if inf.bpp is not None else f"{inf.kbps:.2f} kbps"
        items = f", {inf.items} items" if inf.items > 1 else ""
        click.echo(f"{output}: {len(blob)} bytes{items}, {rate}, {inf.codec} {inf.rate_kind} {inf.rate_value:.2f}",
                   err=True)


@contextlib.contextmanager
def _notes(src: str):
    """Print each distinct ``ncodec.ConversionWarning`` raised inside as one ``note:`` line (other warnings
    pass through as usual)."""
    from ncodec.errors import ConversionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                if not issubclass(w.category, ConversionWarning):
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
                elif str(w.message) not in seen:
                    seen.add(str(w.message))
                    click.echo(f"note: {src}: {w.message}", err=True)


def _frame_range(text: str | None) -> tuple[int, int | None] | None:
    if text is None:
        return None
    import ncodec

    try:
        a, b = text.split(":")
        a, b = int(a or 0), (int(b) if b else None)
    except ValueError:
        raise ncodec.BadInput(f"--frames wants A:B (frame numbers), got {text!r}") from None
    if a < 0 or (b is not None and b <= a):
        raise ncodec.BadInput(f"--frames wants 0 <= A < B, got {text!r}")
    return a, b


def _encode_video(output, src, codec, quality, bpp, bitrate, frame_range, time_budget, epochs, fps, plus,
                  prune=None) -> bytes:
    import ncodec

    if output == "-":
        raise ncodec.BadInput("video encodes need an output file (its checkpoint folder sits beside it)")
    ckpt = Path(output + ".ckpt")
    if (ckpt / "encode.json").exists():
        click.echo(f"resuming from {ckpt}", err=True)
    t0 = time.time()

    def progress(g, groups, epoch, epochs, psnr):
        if epoch == 1 or epoch % 10 == 0:
            click.echo(f"\rgroup {g + 1}/{groups} step {epoch}/{epochs} PSNR {psnr:.2f} dB "
                       f"({time.time() - t0:.0f} s)", err=True, nl=False)

    blob = ncodec.encode(src, codec=codec, quality=quality, bpp=bpp, bitrate=bitrate, media="video",
                         frames=_frame_range(frame_range), fps=fps,
                         options={"time_budget": time_budget, "progress": progress, "checkpoint": str(ckpt),
                                  "plus": plus, **({"epochs": epochs} if epochs else {}),
                                  **({"prune": prune} if prune else {})})
    click.echo("", err=True)
    _atomic_write(output, lambda f: f.write(blob))
    return blob


_IMAGE_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".webp": "WEBP"}
_AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


@main.command()
@click.argument("input")
@click.option("-o", "--output", required=True, help="Output file (.png .wav .flac ...; '-' for stdout).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--lenient", is_flag=True, help="Decode around damaged units instead of failing.")
@click.option("--item", "item", type=int, default=None,
              help="Multi-item files: decode only this item (0-based) into OUTPUT.")
@click.option("--start", type=float, default=None, help="Audio: first second to decode (only needed segments run).")
@click.option("--end", type=float, default=None, help="Audio: second to stop at.")
@click.option("--frames", "frame_range", default=None, metavar="A:B",
              help="Video: decode only frames A..B-1 (only the groups holding them run).")
@click.option("--drop-indices", type=float, default=None, metavar="F",
              help="vqgan (experiments): drop a fraction F of the indices at random before lost-index recovery.")
@click.option("--seed", type=int, default=None, help="Random seed of --drop-indices (default 0).")
@click.pass_context
def decode(ctx, input, output, force, lenient, item, start, end, frame_range, drop_indices, seed):
    """Decode a .nc file ('-' reads stdin). A multi-item file decodes into the folder OUTPUT, one file per
    item under its stored name (or one item with --item)."""

    def work():
        import ncodec
        from ncodec import api, container

        data = sys.stdin.buffer.read() if input == "-" else input
        head = api._read_bytes(data)
        header = container.read_header(head)
        if header.items > 1 and item is None:
            return _decode_set(head, output, force, lenient)
        _check_output(ctx, output, force, [input])
        if item is not None:
            (_, arr), = ncodec.decode_items(head, [item], strict=not lenient)
            from ncodec.media import write_image

            ext = Path(output).suffix.lower() if output != "-" else ".png"
            if ext not in _IMAGE_FORMATS:
                raise ncodec.BadInput(f"cannot write an image as {ext or 'no extension'}")
            _atomic_write(output, lambda f: write_image(f, arr, _IMAGE_FORMATS[ext]))
            return
        inf_media = header.media.name.lower()
        ext = Path(output).suffix.lower() if output != "-" else ""
        if frame_range is not None and inf_media != "video":
            raise ncodec.BadInput("--frames applies to video files")
        if (drop_indices is not None or seed is not None) and inf_media != "image":
            raise ncodec.BadInput("--drop-indices/--seed apply to vqgan image files")
        if inf_media == "video":
            return _decode_video(head, output, ext, frame_range, force)
        if inf_media == "image":
            fmt = _IMAGE_FORMATS.get(ext, "PNG" if output == "-" else None)
            if fmt is None:
                raise ncodec.BadInput(f"cannot write an image as {ext or 'no extension'}; use "
                                      f"{', '.join(sorted(_IMAGE_FORMATS))}")
        else:
            fmt = _AUDIO_FORMATS.get(ext, "WAV" if output == "-" else None)
            if fmt is None:
                raise ncodec.BadInput(f"cannot write audio as {ext or 'no extension'}; use .wav or .flac")
        if start is not None or end is not None:
            if inf_media != "audio":
                raise ncodec.BadInput("--start/--end apply to audio files")
            if (start or 0) < 0 or (end is not None and end <= (start or 0)):
                raise ncodec.BadInput("need 0 <= --start < --end (seconds)")
            import ncodec.audio
            from ncodec.media import write_audio

            rate = header.rate_num
            first = int(round((start or 0) * rate))
            if first >= header.shape[0]:
                raise ncodec.BadInput(f"--start {start:g} s is at or past the end of the audio "
                                      f"({header.shape[0] / rate:g} s)")
            part, _ = ncodec.audio.read(head, first,
                                        None if end is None else int(round(end * rate)), strict=not lenient)
            _atomic_write(output, lambda f: write_audio(f, part, rate, fmt))
            return
        _atomic_write(output, lambda f: api.decode_to(head, f, fmt, strict=not lenient, drop_indices=drop_indices,
                                                      seed=seed))

    _run(ctx, work)


def _decode_video(head: bytes, output: str, ext: str, frame_range, force: bool) -> None:
    """To .y4m / .mp4 (written through a temporary file) or, for a folder, one PNG per frame."""
    import ncodec.video
    from ncodec.media import write_image
    from ncodec.media.video import write_video

    a, b = _frame_range(frame_range) or (0, None)
    video = ncodec.video.open(head)
    if a >= len(video):
        raise ncodec.BadInput(f"--frames {frame_range}: the video has {len(video)} frames (0..{len(video) - 1})")
    if ext in (".y4m", ".mp4"):  # frames are decoded group by group while writing
        _atomic_write(output, lambda f: write_video(f, video.iter_frames(a, b), video.fps, ext[1:],
                                                    video.shape[1:3]))
        return
    if output == "-" or ext:
        raise ncodec.BadInput(f"cannot write video as {ext or 'stdout'}; use .y4m, .mp4 or a folder for PNG frames")
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in zip(range(*slice(a, b).indices(len(video))), video.iter_frames(a, b)):
        dest = folder / f"frame{i:06d}.png"
        if dest.exists() and not force:
            raise FileExistsError(f"{dest} exists; use --force to overwrite")
        _atomic_write(str(dest), lambda f, fr=frame: write_image(f, fr, "PNG"))


def _safe_item_name(name: str, index: int, used: set) -> str:
    """A file name for a stored item name: base name only (never a path), an image extension, unique."""
    base = Path(name.replace("\\", "/")).name.strip()
    if base in ("", ".", "..") or base.startswith("."):
        base = f"item{index:05d}"
    if Path(base).suffix.lower() not in _IMAGE_FORMATS:
        base += ".png"
    out, k = base, 1
    while out in used:
        out = f"{Path(base).stem}-{k}{Path(base).suffix}"
        k += 1
    used.add(out)
    return out


def _decode_set(head: bytes, folder: str, force: bool, lenient: bool) -> None:
    """All items of a multi-item file into ``folder`` (created if missing); no partial files on failure."""
    import ncodec
    from ncodec.media import write_image

    if folder == "-" or Path(folder).suffix.lower() in _IMAGE_FORMATS:
        raise ncodec.BadInput("this file holds several items: decode it into a folder (-o DIR) or pick one "
                              "with --item N")
    items = ncodec.decode_items(head, strict=not lenient)
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ncodec.BadInput(f"{folder} exists and is not a folder; a multi-item file decodes into a folder")
    used: set = set()
    targets = [(out / _safe_item_name(n, i, used), a) for i, (n, a) in enumerate(items)]
    clash = [str(t) for t, _ in targets if t.exists()]
    if clash and not force:
        raise FileExistsError(f"{clash[0]} exists; use --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for path, arr in targets:
        _atomic_write(str(path), lambda f, a=arr, p=path: write_image(f, a, _IMAGE_FORMATS[p.suffix.lower()]))
    click.echo(f"{len(targets)} items written to {folder}", err=True)


@main.command()
@click.argument("input")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def info(ctx, input, as_json):
    """Show what a .nc file holds (header only, no decoding)."""

    def work():
        import ncodec

        return ncodec.info(sys.stdin.buffer.read() if input == "-" else input)

    inf = _run(ctx, work)
    if as_json:
        click.echo(json.dumps(inf.to_dict(), indent=2))
        return
    for k, v in inf.to_dict().items():
        if k == "names" and v:
            v = ", ".join(v[:3]) + (f", ... ({len(v)} names)" if len(v) > 3 else "")
        if v not in (None, {}, ""):
            click.echo(f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}")


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json):
    """Installed codecs and models."""
    from ncodec import registry, zoo

    models = [{"id": c.id, "codec": c.codec, "media": c.media, "file": str(c.path),
               "rates": c.card.get("rates", {})} for c in zoo.cards().values()]
    codecs = [{"id": i, "default_for": [m for m, d in registry.DEFAULTS.items() if d == i]}
              for i in registry.codec_ids()]
    if as_json:
        click.echo(json.dumps({"codecs": codecs, "models": models}, indent=2))
        return
    click.echo("codecs:")
    for c in codecs:
        click.echo(f"  {c['id']:<12} default for: {', '.join(c['default_for']) or '-'}")
    click.echo("models:")
    for m in models:
        click.echo(f"  {m['id']:<20} {m['codec']:<10} {m['media']:<6} {m['rates']}")


@main.command()
@click.argument("kind", type=click.Choice(["image", "audio", "video", "lossless", "digits"]))
@click.option("--codecs", default=None,
              help="Comma-separated codecs: ncodec ids and jpeg, webp, avif, jxl, j2k (image), opus, mp3, aac "
                   "(audio), png, webp-ll, jxl-ll (lossless, digits). Default: all of the kind.")
@click.option("--data", required=True, type=click.Path(), help="Folder of media files (video: also one video file).")
@click.option("--limit", type=int, default=None, help="Use the first N files only (digits: N digits, default 200).")
@click.option("--first", type=int, default=8000, show_default=True,
              help="digits: index of the first MNIST test image (0..7999 train the shipped model).")
@click.option("--rates", default=None, help="Comma-separated rate settings overriding each codec's sweep.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder (results, plots, cache).")
@click.option("--anchor", default=None, help="Anchor codec (default: webp for images, opus for audio).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (image kind: one image per task; other kinds run serially).")
@click.option("--lpips-weights", default=None, envvar="NCODEC_LPIPS_WEIGHTS", type=click.Path(),
              help="image: also LPIPS (AlexNet, v0.1) from this safetensors file (see docs/benchmarks.md).")
@click.option("--fid-weights", default=None, envvar="NCODEC_FID_WEIGHTS", type=click.Path(),
              help="image: also FID over 256x256 patches, pytorch-fid's Inception in safetensors.")
@click.pass_context
def bench(ctx, kind, codecs, data, limit, first, rates, out_dir, anchor, jobs, lpips_weights, fid_weights):
    """Rate-distortion benchmark against classical codecs (resumable: per-item results are cached).

    `digits` stores MNIST test digits (--data: the folder of t10k-images-idx3-ubyte.gz) with pc as one
    multi-item file and with PNG / WebP / JPEG XL lossless one file per digit and as one tiled image.
    """

    default_codecs = {"image": "walloc,jpeg,webp,avif,jxl,j2k", "audio": "walloc,opus,mp3,aac",
                      "video": "x264,x265,svtav1", "lossless": "pc,png,webp-ll,jxl-ll",
                      "digits": "pc,png,webp-ll,jxl-ll"}[kind]
    anchor = anchor or {"image": "webp", "audio": "opus", "video": "x264", "lossless": "png", "digits": "png"}[kind]
    if kind == "digits":
        def digits_work():
            from ncodec.bench.digits import run_digits

            names = [c.strip() for c in (codecs or default_codecs).split(",") if c.strip()]
            return run_digits(names, Path(data), Path(out_dir), first, limit or 200, "ncodec " + " ".join(sys.argv[1:]),
                              lambda i, n, r: click.echo(f"[{i}/{n}] {r['codec']}: {r['bits_per_dim']:.3f} bits/dim "
                                                         f"exact={r['exact']}", err=True))

        summary = _run(ctx, digits_work)
        from ncodec.bench.digits import digits_markdown

        click.echo(digits_markdown(summary))
        return

    def work():
        from ncodec.bench.run import run_audio, run_image, run_lossless, run_video

        names = [c.strip() for c in (codecs or default_codecs).split(",") if c.strip()]
        if anchor not in names:
            names.append(anchor)
        rate_list = [float(r) for r in rates.split(",")] if rates else None

        def progress(i, n, row):
            if kind == "lossless":
                msg = f"{row['bpp']:.3f} bpp exact={row['exact']}"
            elif kind in ("image", "video"):
                msg = f"{row['bpp']:.3f} bpp {row['psnr']:.2f} dB"
            else:
                msg = f"{row['kbps']:.2f} kbps SNR {row['snr']:.2f} dB"
            click.echo(f"[{i}/{n}] {row['codec']:<7} {row['item']:<14} rate {row['rate']:<6} {msg}", err=True)

        cmd = "ncodec " + " ".join(sys.argv[1:])
        if kind == "image":
            return run_image(names, Path(data), Path(out_dir), limit, anchor, rate_list, progress, cmd, jobs,
                             lpips_weights=lpips_weights, fid_weights=fid_weights)
        if lpips_weights or fid_weights:
            from ncodec.errors import BadInput

            raise BadInput("--lpips-weights and --fid-weights are for `ncodec bench image`")
        run = {"audio": run_audio, "video": run_video, "lossless": run_lossless}[kind]
        return run(names, Path(data), Path(out_dir), limit, anchor, rate_list, progress, cmd, jobs)

    summary = _run(ctx, work)
    from ncodec.bench.run import audio_markdown, lossless_markdown, markdown

    click.echo({"image": markdown, "audio": audio_markdown, "video": markdown,
                "lossless": lossless_markdown}[kind](summary))


@main.command("convert-weights")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The .safetensors file to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.pass_context
def convert_weights(ctx, inputs, output, force):
    """Merge torch checkpoints (.pth, read as tensors only) into one safetensors file.

    For official weights ncodec can use, e.g. LPIPS: `ncodec convert-weights alexnet-owt-7be5be79.pth alex.pth
    -o lpips-alex.safetensors`; FID: `ncodec convert-weights pt_inception-2015-12-05-6726825d.pth -o fid.safetensors`.
    """

    def work():
        from ncodec.bench.perceptual import convert_checkpoint

        _check_output(ctx, output, force, list(inputs))
        data, n = convert_checkpoint(list(inputs), log=lambda m: click.echo(m, err=True))
        _atomic_write(output, lambda f: f.write(data))
        click.echo(f"wrote {n} tensors to {output}", err=True)

    _run(ctx, work)


def _check_model_target(out_dir: str, model_id: str, force: bool) -> None:
    """An export's target: an existing model folder without a model of that id (unless --force)."""
    from ncodec.errors import BadInput
    from ncodec.zoo import check_new_model

    if not Path(out_dir).is_dir():
        raise BadInput(f"folder {out_dir} does not exist")
    check_new_model(Path(out_dir), model_id, force)


@main.command("convert-vqgan")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", "out_dir", default="models", show_default=True, type=click.Path(),
              help="Model folder to write <id>.safetensors and <id>.json into (use it as $NCODEC_MODELS).")
@click.option("--id", "model_id", default="taming-vqgan-f16", show_default=True, help="Model id for the card.")
@click.option("--data", default=None, type=click.Path(),
              help="Image folder to count index frequencies on; without, uniform tables.")
@click.option("--force", is_flag=True, help="Overwrite an existing model of that id.")
@click.pass_context
def convert_vqgan(ctx, checkpoint, out_dir, model_id, data, force):
    """Use an official taming-transformers VQGAN checkpoint (e.g. vqgan_imagenet_f16_1024 last.ckpt) as a vqgan
    model: its network as released, a k-means ladder of its codebook, tables counted on --data.

    Then: `ncodec encode photo.png -o p.nc --codec vqgan --model taming-vqgan-f16 --quality 100`.
    """

    def work():
        from ncodec.errors import BadInput
        from ncodec.train.vqgan import convert_taming

        _check_model_target(out_dir, model_id, force)
        if data is not None and not Path(data).is_dir():
            raise BadInput(f"--data {data} is not a folder")
        card = convert_taming(checkpoint, Path(out_dir), model_id, data, log=lambda m: click.echo(m, err=True),
                              overwrite=force)
        click.echo(f"wrote {card['id']} (codebook {card['config']['codebook_size']}, rungs "
                   f"{card['config']['rungs']}) to {out_dir}", err=True)

    _run(ctx, work)


@main.command("convert-encodec")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", "out_dir", default="models", show_default=True, type=click.Path(),
              help="Model folder to write <id>.safetensors and <id>.json into (use it as $NCODEC_MODELS).")
@click.option("--id", "model_id", default="encodec-24khz", show_default=True, help="Model id for the card.")
@click.option("--data", "folders", multiple=True, type=click.Path(),
              help="Audio folders to count code frequencies on (repeatable); without, uniform tables.")
@click.option("--force", is_flag=True, help="Overwrite an existing model of that id.")
@click.pass_context
def convert_encodec(ctx, checkpoint, out_dir, model_id, folders, force):
    """Use an official EnCodec 24 kHz checkpoint (encodec_24khz-d7cc33bc.th) as an rvq model.

    Then: `ncodec encode speech.wav -o s.nc --codec rvq --model encodec-24khz --bitrate 6`.
    """

    def work():
        from ncodec.train.rvq import convert_encodec as convert

        _check_model_target(out_dir, model_id, force)
        card = convert(checkpoint, Path(out_dir), model_id, [Path(f) for f in folders] or None,
                       log=lambda m: click.echo(m, err=True), overwrite=force)
        click.echo(f"wrote {card['id']} ({card['config']['n_q']} codebooks of {card['config']['codebook_size']}, "
                   f"{card['config']['rate']} Hz) to {out_dir}", err=True)

    _run(ctx, work)


# the id each recipe exports under unless --model-id names another (all shipped: an export must name a new id or
# use --force)
TRAIN_EXPORT_IDS = {"walloc-image": "walloc-image-v2", "walloc-audio": "walloc-audio-v2",
                    "walloc-context": "walloc-image-v3", "walloc-decoder": "walloc-image-v4",
                    "pc-digits": "pc-digits-v1", "pc-digits-context": "pc-digits-v2", "pc-image": "pc-image-v2",
                    "rvq": "rvq-audio-v1", "mcquic": "mcquic-image-v1", "mcquic-decoder": "mcquic-image-v3",
                    "vqgan": "vqgan-image-v1"}


@main.command()
@click.argument("recipe", type=click.Choice(["walloc-image", "walloc-audio", "walloc-context", "walloc-decoder", "pc-digits",
                                             "pc-digits-context", "pc-image", "rvq", "mcquic", "mcquic-decoder",
                                             "vqgan"]))
@click.option("--run", "run_dir", default=None, help="Checkpoint folder (default: runs/RECIPE).")
@click.option("--steps", default=None, type=int,
              help="Training steps (walloc 20000, rvq 9000 by default) or EM passes (pc-digits 7, pc-image 3, "
                   "pc-digits-context 1).")
@click.option("--hidden", default=None, type=int, help="pc: hidden states per variable (digits 16, image and "
              "digits-context 32).")
@click.option("--cond-steps", default=None, type=int,
              help="pc-image / pc-digits-context: Adam steps on the conditional likelihood after EM (batches of "
                   "4000 rows; default 2400 / 3000).")
@click.option("--data", default=None, help="Corpus folder (default: $NCODEC_CORPUS or ../shared/corpus).")
@click.option("--batch", default=None, type=int, help="Batch size (default: 8 images, 16 audio crops).")
@click.option("--crop", default=None, type=int, help="Crop size (default: 128 px images, 16384 samples audio).")
@click.option("--lr", default=None, type=float, help="Learning rate (default: walloc 3e-4, rvq 6e-4).")
@click.option("--extra", multiple=True, help="rvq: more audio folders to train on (repeatable), e.g. Debian's "
              "wesnoth-1.16-music unpacked (see docs/training.md).")
@click.option("--groups", default=1, show_default=True, help="rvq: 1 residual VQ, G > 1 group-residual VQ.")
@click.option("--head-frames", default=1, show_default=True,
              help="rvq: STFT frames the decoder predicts per 20 ms latent frame (iSTFT size 1280 / H); with "
                   "--init, a new decoder head on the model's networks.")
@click.option("--head", type=click.Choice(["complex", "magnitude"]), default="complex", show_default=True,
              help="rvq: 'complex' predicts magnitude and phase (rvq-audio-v1); 'magnitude' codes log-magnitude "
                   "STFT frames and reconstructs the phase at decode time (rvq-audio-v2; sizes in "
                   "ncodec.train.rvq.MAGNITUDE_CONFIG; unused codes re-seeded every 200 steps).")
@click.option("--focus-db", default=0.0, show_default=True,
              help="rvq --head magnitude: focus the log-magnitude loss on the bins within this many dB of each "
                   "frame's peak (0: every bin alike).")
@click.option("--ste-after", default=None, type=int,
              help="walloc: step from which the rate term uses rounded symbols instead of noise (default: never).")
@click.option("--lambda-scale", default=1.0, show_default=True,
              help="walloc: multiply the rate-distortion lambda ladder (lower = lower rates).")
@click.option("--export", "export_to", default=None, help="After training, write weights + card here.")
@click.option("--init", default=None, type=click.Path(),
              help="rvq: start a new run from an installed model's id (e.g. rvq-audio-v3) or a model's "
                   ".safetensors, .safetensors.xz or .safetensors.planes.xz file; walloc-image / walloc-audio: from an installed model's id (e.g. "
                   "walloc-image-v3; its z density is re-learned first, networks frozen for 2000 steps); mcquic: from an installed model's id (e.g. "
                   "mcquic-image-v1).")
@click.option("--base", default=None,
              help="walloc-context / walloc-decoder / mcquic-decoder: the installed image model to start from "
                   "(default walloc-image-v2 / walloc-image-v3 / mcquic-image-v2).")
@click.option("--model-id", default=None,
              help="Id of the model written to --export (default: the recipe's shipped id, see docs/training.md; "
                   "walloc-context writes to models unless --export names a folder). A model of that id already in "
                   "the folder is refused before training starts, unless --force.")
@click.option("--force", is_flag=True, help="Let --export replace a model of the same id (files naming the old "
              "weights will no longer decode).")
@click.option("--fine-stages", default=None, type=int,
              help="mcquic: residual codebooks per group at 1/8 (default 4; with --init, stages beyond the model's "
                   "are added and seeded from the data).")
@click.option("--int8", is_flag=True,
              help="mcquic --export: store the networks' weight matrices and kernels as 8-bit integers with a step "
                   "per output channel (half of fp16's bytes; mcquic-image-v3).")
@click.option("--res-blocks", default=None, type=int,
              help="walloc-decoder / mcquic-decoder: residual blocks of the fine-tuned decoder (default: the base "
                   "model's; more blocks start as the identity).")
@click.pass_context
def train(ctx, recipe, run_dir, steps, hidden, cond_steps, data, batch, crop, lr, ste_after, lambda_scale, extra,
          groups, head_frames, head, export_to, init, base, model_id, res_blocks, fine_stages, force, focus_db,
          int8):
    """Train (or resume) a model recipe; checkpoints go to --run.

    walloc-context fits the integer causal context model of an image model (no network training: same pixels,
    fewer bytes) and writes the base model plus the context model as a new model. walloc-decoder and
    mcquic-decoder fine-tune only the synthesis of an image model on the latents its encoder writes (same bytes,
    other pixels)."""

    if int8 and (recipe != "mcquic" or not export_to):
        raise click.UsageError("--int8 is how `ncodec train mcquic --export` stores its networks")
    run_dir = run_dir or f"runs/{recipe}"
    if recipe == "walloc-context":
        export_to = export_to or "models"
    model_id = model_id or ("rvq-audio-v2" if recipe == "rvq" and head == "magnitude" else TRAIN_EXPORT_IDS[recipe])

    def work():
        if export_to:  # checked before any training: an export never silently replaces an installed model
            from ncodec.zoo import check_new_model

            check_new_model(Path(export_to), model_id, force)
        if recipe in ("pc-digits", "pc-digits-context", "pc-image"):
            from ncodec.train import pc

            log = lambda m: click.echo(m, err=True)  # noqa: E731
            if recipe == "pc-digits":
                pc.train(Path(run_dir), steps or 7, data, hidden=hidden or 16, batch=batch or 250, log=log)
            elif recipe == "pc-digits-context":
                pc.train_digits_context(Path(run_dir), steps or 1, data, hidden=hidden or 32, batch=batch or 4000,
                                        log=log, cond_steps=3000 if cond_steps is None else cond_steps)
            else:
                pc.train_image(Path(run_dir), steps or 3, data, hidden=hidden or 32, batch=batch or 2000, log=log,
                               cond_steps=2400 if cond_steps is None else cond_steps)
            if export_to:
                export = {"pc-digits": pc.export, "pc-digits-context": pc.export_digits_context,
                          "pc-image": pc.export_image}[recipe]
                card = export(Path(run_dir), Path(export_to), model_id, overwrite=force)
                click.echo(f"exported {card['id']} ({card['sha256'][:16]}...) to {export_to}", err=True)
            return
        if recipe == "rvq":
            from ncodec.train import rvq

            log = lambda m: click.echo(m, err=True)  # noqa: E731
            rvq.train(Path(run_dir), steps or 9000, data, batch=batch or 16, crop=crop or 16000, lr=lr or 6e-4,
                      extra=extra, log=log, init=init, reseed_every=200 if head == "magnitude" else 0,
                      focus_db=focus_db,
                      config={"groups": groups, "n_q": 24 // groups,
                              **(rvq.MAGNITUDE_CONFIG if head == "magnitude" else
                                 {"head_frames": head_frames, "n_fft": 1280 // head_frames})})
            if export_to:
                card = rvq.export(Path(run_dir), Path(export_to), model_id, data=data, extra=extra, log=log,
                                  overwrite=force)
                click.echo(f"exported {card['id']} ({card['sha256'][:16]}...) to {export_to}", err=True)
            return
        if recipe == "mcquic":
            from ncodec.train import mcquic

            log = lambda m: click.echo(m, err=True)  # noqa: E731
            mcquic.train(Path(run_dir), steps or 15000, data, batch=batch or 16, crop=crop or 128, lr=lr or 5e-4,
                         log=log, init=init, config={"fine_stages": fine_stages} if fine_stages else None)
            if export_to:
                card = mcquic.export(Path(run_dir), Path(export_to), model_id=model_id, data=data, log=log,
                                     overwrite=force, int8=int8)
                click.echo(f"exported {card['id']} ({card['sha256'][:16]}...) to {export_to}", err=True)
            return
        if recipe == "mcquic-decoder":
            from ncodec.train import mcquic

            log = lambda m: click.echo(m, err=True)  # noqa: E731
            mcquic.train_decoder(Path(run_dir), base or "mcquic-image-v2", steps or 14000, data, batch=batch or 12,
                                 crop=crop or 192, lr=lr or 2e-4, n_res=res_blocks, log=log)
            if export_to:
                card = mcquic.export_decoder(Path(run_dir), Path(export_to), model_id, log=log, overwrite=force)
                click.echo(f"exported {card['id']} ({card['sha256'][:16]}...) to {export_to}", err=True)
            return
        if recipe == "vqgan":
            from ncodec.train import vqgan

            log = lambda m: click.echo(m, err=True)  # noqa: E731
            run = Path(run_dir)
            vqgan.train(run, steps or 6000, data, batch=batch or 16, crop=crop or 128, lr=lr or 4e-4, log=log)
            vqgan.ladder(run, data, log=log)
            vqgan.train_transformer(run, data, log=log)
            if export_to:
                card = vqgan.export(run, Path(export_to), model_id, data=data, log=log, overwrite=force)
                click.echo(f"exported {card['id']} ({card['sha256'][:16]}...) to {export_to}", err=True)
            return
        from ncodec.train import walloc

        log = lambda m: click.echo(m, err=True)  # noqa: E731
        if recipe == "walloc-context":
            card = walloc.fit_context(base or "walloc-image-v2", data, Path(export_to), model_id, log=log,
                                      overwrite=force)
            click.echo(f"exported {card['id']} ({card['sha256'][:16]}...) to {export_to}", err=True)
            return
        if recipe == "walloc-decoder":
            walloc.train_decoder(Path(run_dir), base or "walloc-image-v3", steps or 14000, data, batch=batch or 6,
                                 crop=crop or 192, lr=lr or 2e-4, n_res=res_blocks, log=log)
            if export_to:
                card = walloc.export_decoder(Path(run_dir), Path(export_to), model_id, log=log, overwrite=force)
                click.echo(f"exported {card['id']} ({card['sha256'][:16]}...) to {export_to}", err=True)
            return
        steps_ = steps or 20000
        audio = recipe == "walloc-audio"
        walloc.train(Path(run_dir), steps_, data, batch=batch or (16 if audio else 8), crop=crop or (16384 if audio else 128),
                     lr=lr or 3e-4,
                     log=log, recipe=recipe, ste_after=ste_after, lambda_scale=lambda_scale, init=init)
        if export_to:
            card = walloc.export(Path(run_dir), Path(export_to), model_id=model_id, overwrite=force)
            click.echo(f"exported {card['id']} ({card['sha256'][:16]}...) to {export_to}", err=True)

    _run(ctx, work)


if __name__ == "__main__":  # pragma: no cover
    main()
