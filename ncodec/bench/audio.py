"""Audio benchmark: learned codecs through the real container, Opus / MP3 / AAC through PyAV (FFmpeg).

Settings: opus = libopus in Ogg, VBR at the target bitrate, 48 kHz (resampled back); mp3 = libmp3lame CBR;
aac = FFmpeg's native AAC encoder in ADTS. kbps always from the bytes of the file written.
Metrics on the signal at its original rate (first channel pair averaged for stereo): SNR, SI-SDR, multi-
resolution log-mel L1 distance; for speech also PESQ-WB (16 kHz) and STOI.
"""
from __future__ import annotations

import io
import time

import numpy as np

CLASSICAL = {
    "opus": ("ogg", "libopus", 48000, [6, 8, 12, 16, 24, 32, 48, 64]),
    "mp3": ("mp3", "libmp3lame", None, [32, 48, 64, 96, 128]),
    "aac": ("adts", "aac", None, [24, 32, 48, 64, 96, 128]),
}
LEARNED_RATES = [0, 25, 50, 75, 100]  # quality settings of learned codecs, unless listed below
LEARNED_KBPS = {"rvq": [1, 1.5, 3, 6, 9, 12]}  # codecs whose bench setting is a nominal bitrate (kbps)


def rates_for(name: str) -> list[float]:
    return CLASSICAL[name][3] if name in CLASSICAL else LEARNED_KBPS.get(name, LEARNED_RATES)
SETTINGS = {"opus": "PyAV libopus (Ogg), 48 kHz, bit_rate = target", "mp3": "PyAV libmp3lame, bit_rate = target",
            "aac": "PyAV FFmpeg aac (ADTS), bit_rate = target"}


def _layout(ch: int) -> str:
    return "mono" if ch == 1 else "stereo"


def _resample(sig: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to:
        return sig
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, to)
    return resample_poly(sig, to // g, rate // g, axis=0).astype(np.float32)


def classical_round_trip(name: str, sig: np.ndarray, rate: int, kbps: float) -> tuple[int, np.ndarray]:
    import av

    fmt, codec, fixed_rate, _ = CLASSICAL[name]
    ch = sig.shape[1]
    enc_rate = fixed_rate or (rate if rate in (16000, 22050, 24000, 32000, 44100, 48000) else 48000)
    x = _resample(sig, rate, enc_rate)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        st = out.add_stream(codec, rate=enc_rate, layout=_layout(ch))
        st.bit_rate = int(kbps * 1000)
        frame_size = 960 if name == "opus" else 1152 if name == "mp3" else 1024
        sfmt = st.codec_context.format.name
        for i in range(0, len(x), frame_size):
            block = x[i : i + frame_size]
            if len(block) < frame_size:
                block = np.pad(block, ((0, frame_size - len(block)), (0, 0)))
            if sfmt.endswith("p"):
                arr = np.ascontiguousarray(block.T)
            else:
                arr = np.ascontiguousarray(block.reshape(1, -1))
            arr = _to_format(arr, sfmt)
            frame = av.AudioFrame.from_ndarray(arr, format=sfmt, layout=_layout(ch))
            frame.sample_rate = enc_rate
            frame.pts = i
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    data = buf.getvalue()
    chunks = []
    with av.open(io.BytesIO(data)) as inp:
        for frame in inp.decode(audio=0):
            a = frame.to_ndarray()
            if frame.format.is_planar:
                a = a.T
            else:
                a = a.reshape(-1, ch)
            if a.dtype.kind == "i":
                a = a.astype(np.float64) / (2.0 ** (8 * a.dtype.itemsize - 1))
            chunks.append(a.astype(np.float32))
    dec = _resample(np.concatenate(chunks), enc_rate, rate)
    return len(data), align(sig, dec)


def _to_format(arr: np.ndarray, sfmt: str) -> np.ndarray:
    base = sfmt.rstrip("p")
    if base in ("s16", "s32"):
        bits = int(base[1:])
        return np.round(np.clip(arr, -1, 1 - 2.0 ** (1 - bits)) * 2.0 ** (bits - 1)).astype(f"int{bits}")
    return arr.astype(np.float64 if base == "dbl" else np.float32)


def align(ref: np.ndarray, dec: np.ndarray, max_lag: int = 4000) -> np.ndarray:
    """Remove the codec delay (best lag by cross-correlation of the mono mix) and cut/pad to ref's length."""
    a, b = ref.mean(1), dec.mean(1)
    n = min(len(a), len(b), 1 << 17)
    from scipy.signal import correlate

    c = correlate(b[: n + max_lag], a[:n], mode="valid", method="fft")
    lag = int(np.argmax(c[: max_lag + 1])) if len(c) else 0
    out = dec[lag : lag + len(ref)]
    if len(out) < len(ref):
        out = np.pad(out, ((0, len(ref) - len(out)), (0, 0)))
    return out


def learned_round_trip(name: str, sig: np.ndarray, rate: int, setting: float) -> tuple[int, np.ndarray]:
    """Through the real container; ``setting`` is a nominal kbps for codecs in LEARNED_KBPS, else a quality."""
    import ncodec

    if name in LEARNED_KBPS:
        blob = ncodec.encode(sig, codec=name, bitrate=setting, sample_rate=rate)
    else:
        blob = ncodec.encode(sig, codec=name, quality=setting, sample_rate=rate)
    return len(blob), ncodec.decode(blob).data


# ------------------------------------------------------------------------------------------------ metrics


def snr(ref, deg) -> float:
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - deg) ** 2), 1e-20)))


def si_sdr(ref, deg) -> float:
    r, d = ref.mean(1).astype(np.float64), deg.mean(1).astype(np.float64)
    alpha = np.dot(d, r) / max(np.dot(r, r), 1e-20)
    t = alpha * r
    return float(10 * np.log10(np.sum(t**2) / max(np.sum((d - t) ** 2), 1e-20)))


def _mel_fb(n_fft: int, n_mels: int, rate: int) -> np.ndarray:
    def hz2mel(f):
        return 2595 * np.log10(1 + f / 700)

    pts = 700 * (10 ** (np.linspace(hz2mel(0), hz2mel(rate / 2), n_mels + 2) / 2595) - 1)
    bins = np.fft.rfftfreq(n_fft, 1 / rate)
    fb = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[m] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    return fb


def mel_distance(ref, deg, rate: int) -> float:
    """Mean over STFT sizes 512/1024/2048 of the L1 distance of log10 mel spectrograms (64 mels)."""
    from scipy.signal import stft

    r, d = ref.mean(1), deg.mean(1)
    out = []
    for n in (512, 1024, 2048):
        fb = _mel_fb(n, 64, rate)
        _, _, sr_ = stft(r, nperseg=n, noverlap=3 * n // 4)
        _, _, sd_ = stft(d, nperseg=n, noverlap=3 * n // 4)
        mr = np.log10(fb @ np.abs(sr_) ** 2 + 1e-5)
        md = np.log10(fb @ np.abs(sd_) ** 2 + 1e-5)
        out.append(np.mean(np.abs(mr - md)))
    return float(np.mean(out))


def speech_metrics(ref, deg, rate: int) -> dict:
    r16 = _resample(ref.mean(1, keepdims=True), rate, 16000)[:, 0]
    d16 = _resample(deg.mean(1, keepdims=True), rate, 16000)[:, 0]
    res = {}
    try:
        from pesq import pesq

        res["pesq_wb"] = float(pesq(16000, r16, d16, "wb"))
    except Exception:  # pesq raises on silence / too-short input
        res["pesq_wb"] = None
    try:
        from pystoi import stoi

        res["stoi"] = float(stoi(r16, d16, 16000))
    except Exception:
        res["stoi"] = None
    return res


def warm_up(name: str) -> float:
    """One untimed round trip on a second of quiet noise (16 kHz, mono, the codec's middle setting), so that what a
    process does once per codec (imports, loading and checking a model, compiled-code caches, library set-up)
    does not land in the first file's ``codec_s``. Returns its seconds (reported apart as set-up)."""
    sig = (np.random.default_rng(0).standard_normal((16000, 1)) * 0.01).astype(np.float32)
    settings = rates_for(name)
    t0 = time.perf_counter()
    if name in CLASSICAL:
        classical_round_trip(name, sig, 16000, settings[len(settings) // 2])
    else:
        learned_round_trip(name, sig, 16000, settings[len(settings) // 2])
    return time.perf_counter() - t0


def run_one(name: str, sig: np.ndarray, rate: int, setting: float, speech: bool) -> dict:
    t0 = time.perf_counter()
    if name in CLASSICAL:
        nbytes, dec = classical_round_trip(name, sig, rate, setting)
    else:
        nbytes, dec = learned_round_trip(name, sig, rate, setting)
    elapsed = time.perf_counter() - t0
    seconds = len(sig) / rate
    row = {"bytes": nbytes, "kbps": 8 * nbytes / seconds / 1000, "snr": snr(sig, dec), "si_sdr": si_sdr(sig, dec),
           "mel": mel_distance(sig, dec, rate), "codec_s": elapsed, "seconds": seconds}
    if speech:
        row.update(speech_metrics(sig, dec, rate))
    return row
