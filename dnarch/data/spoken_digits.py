"""Spoken digits: the words "zero".."nine" synthesised by espeak-ng, as raw waveforms (10 classes).

Each sample draws an accent, a speaker (an espeak-ng voice variant), a speed and a pitch from fixed
grids; every distinct (word, voice, speed, pitch) is rendered once. The cheap augmentations are then
applied per sample in numpy: a random gain, a random time shift in the window and Gaussian noise at a
random SNR. The test set is a speaker-independent split: its voice variants (``TEST_VARIANTS``) never
occur in training; accents and the speed and pitch grids are shared.

espeak-ng writes 16-bit 22,050 Hz audio; it is resampled with an FFT (band-limited) resampler written
here with numpy, so no resampling library is needed and the data do not depend on what is installed.
The data are cached by their parameters; another espeak-ng version may render slightly different audio,
so delete the cache file to regenerate it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from dnarch.data.base import DataBundle, DataError, cache_dir, from_arrays
from dnarch.files import atomic_path

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = (
    "en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)  # fmt: skip
TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m5", "m6", "f1", "f2", "f4", "Alex", "Andy", "Annie", "adam", "aunty",
    "caleb", "edward", "linda", "max", "paul", "quincy", "steph",
)  # fmt: skip
TEST_VARIANTS = ("m4", "m7", "f3", "f5", "Alicia", "belinda", "john", "travis")
SPEEDS = (120, 140, 160, 185, 210, 240)  # words per minute (-s); "seven" at 120 lasts about 0.7 s
PITCHES = (20, 35, 50, 65, 80)  # -p, 0..99
GAIN_DB = (-20.0, 0.0)  # uniform gain in dB after peak normalisation
SNR_DB = (5.0, 30.0)  # uniform signal-to-noise ratio in dB, over the word's active samples
_CACHE_VERSION = 1  # bump when the procedure changes, so old caches are not reused
_INSTALL = "spoken digits need espeak-ng, which is not on PATH: apt-get install espeak-ng"

_Render = tuple[int, str, int, int]  # (word index, voice, speed, pitch)


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono 16-bit PCM WAV bytes -> (samples (T,) float32 in [-1, 1), sample rate in Hz).

    espeak-ng's ``--stdout`` header cannot know the length, so the data chunk runs to the end."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError("espeak-ng did not write a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            fmt, channels, rate = struct.unpack_from("<HHI", data, pos + 8)
            (bits,) = struct.unpack_from("<H", data, pos + 22)
            if (fmt, channels, bits) != (1, 1, 16):
                raise DataError(f"espeak-ng wrote WAV format {fmt}, {channels} ch, {bits} bit")
        elif chunk == b"data" and rate:
            pcm = data[pos + 8 :]
            x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
            return x, rate
        pos += 8 + size + (size & 1)
    raise DataError("espeak-ng's WAV stream has no audio")


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Band-limited resampling of x (T,) from ``src`` to ``dst`` Hz by cropping or padding its
    spectrum; returns (round(T * dst / src),) float32. The signal is treated as periodic, so x should
    start and end near zero (speech with silence around it does)."""
    if src == dst:
        return x.astype(np.float32)
    n = len(x)
    m = max(1, round(n * dst / src))
    spec = np.fft.rfft(x.astype(np.float64))
    keep = np.zeros(m // 2 + 1, dtype=spec.dtype)
    k = min(len(spec), len(keep))
    keep[:k] = spec[:k]  # dropping the bins above the new Nyquist is the anti-aliasing filter
    return (np.fft.irfft(keep, m) * (m / n)).astype(np.float32)


def _render(exe: str, item: _Render, sample_rate: int) -> np.ndarray:
    """One word spoken by espeak-ng -> (T,) float32 at ``sample_rate``, silence trimmed, peak 1."""
    word, voice, speed, pitch = item
    args = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-z", "--stdout", WORDS[word]]
    try:
        out = subprocess.run(args, capture_output=True, check=True, timeout=60)
    except FileNotFoundError as err:
        raise DataError(_INSTALL) from err
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        msg = (getattr(err, "stderr", b"") or b"").decode(errors="replace").strip().splitlines()
        raise DataError(
            f"espeak-ng failed on {' '.join(args[1:])}: {msg[0] if msg else err}"
        ) from err
    x, rate = _parse_wav(out.stdout)
    # pad so that the FFT resampler's wrap-around lands in silence
    x = resample(np.pad(x, (0, rate // 20)), rate, sample_rate)
    if not x.any():
        raise DataError(f"espeak-ng rendered silence for {' '.join(args[1:])}")
    active = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())
    x = x[active[0] : active[-1] + 1]
    return x / np.abs(x).max()


def _draw(rng: np.random.Generator, n_per_class: int, variants: tuple[str, ...]) -> list[_Render]:
    """n_per_class renders per word, with voices, speeds and pitches drawn uniformly, in random order."""
    words = rng.permutation(np.repeat(np.arange(len(WORDS)), n_per_class))
    return [
        (int(w), f"{rng.choice(ACCENTS)}+{rng.choice(variants)}", int(rng.choice(SPEEDS)),
         int(rng.choice(PITCHES)))
        for w in words
    ]  # fmt: skip


def _augment(rng: np.random.Generator, clip: np.ndarray, length: int) -> np.ndarray:
    """clip (T,) peak 1 -> (length,): random gain, random position in the window, Gaussian noise."""
    clip = clip[:length] * 10 ** (rng.uniform(*GAIN_DB) / 20)
    out = np.zeros(length, dtype=np.float64)
    start = int(rng.integers(0, length - len(clip) + 1))
    out[start : start + len(clip)] = clip
    noise_power = np.mean(clip**2) / 10 ** (rng.uniform(*SNR_DB) / 10)
    out += rng.normal(0.0, np.sqrt(noise_power), length)
    return out.astype(np.float32)


def _generate(
    n_train: int, n_test: int, sample_rate: int, length: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train (N, 1, length) float32, y_train (N,) int64, x_test, y_test; see the module docstring."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(_INSTALL)
    rngs = [np.random.default_rng([seed, split]) for split in (0, 1)]
    plans = [_draw(rngs[0], n_train, TRAIN_VARIANTS), _draw(rngs[1], n_test, TEST_VARIANTS)]
    unique = sorted(set(plans[0] + plans[1]))
    # espeak-ng runs as its own process, so threads render in parallel
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        rendered = pool.map(lambda item: _render(exe, item, sample_rate), unique)
        bar = tqdm(rendered, total=len(unique), desc="espeak-ng", unit="word")
        clips = dict(zip(unique, bar, strict=True))
    out: list[np.ndarray] = []
    for rng, plan in zip(rngs, plans, strict=True):
        out.append(np.stack([_augment(rng, clips[item], length) for item in plan])[:, None])
        out.append(np.array([item[0] for item in plan], dtype=np.int64))
    return out[0], out[1], out[2], out[3]


def load_spoken_digits(
    n_per_class_train: int = 200,
    n_per_class_test: int = 50,
    sample_rate: int = 8000,
    length: int = 8000,
    seed: int = 0,
) -> DataBundle:
    """Spoken digits as waveforms x: (N, 1, length) float32 at ``sample_rate`` Hz and labels
    y: (N,) int64 in 0..9, with N = 10 * n_per_class per split (balanced, shuffled). The test set's
    speakers are unseen in training. Generated with espeak-ng on first use (about 2,500 short
    espeak-ng calls for the defaults) and cached as .npz under ``cache_dir()``."""
    if min(n_per_class_train, n_per_class_test, length) < 1 or sample_rate < 1000:
        raise DataError(
            "need n_per_class_train, n_per_class_test, length >= 1 and sample_rate >= 1000, got "
            f"{n_per_class_train}, {n_per_class_test}, {length}, {sample_rate}"
        )
    key = f"v{_CACHE_VERSION}-tr{n_per_class_train}-te{n_per_class_test}-sr{sample_rate}-L{length}-s{seed}"
    path = cache_dir() / f"spoken_digits-{key}.npz"
    if not path.exists():
        x_tr, y_tr, x_te, y_te = _generate(
            n_per_class_train, n_per_class_test, sample_rate, length, seed
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    with np.load(path, allow_pickle=False) as f:
        x_train, y_train, x_test, y_test = (
            f[k] for k in ("x_train", "y_train", "x_test", "y_test")
        )
    return from_arrays(x_train, y_train, x_test, y_test, name="spoken-digits", num_classes=10)
