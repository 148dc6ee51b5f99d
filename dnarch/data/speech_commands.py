"""Google Speech Commands (Warden 2018), v0.02 or v0.01, from its standard layout on disk::

    <root>/<word>/<speaker>_nohash_<n>.wav      16 kHz 16-bit PCM mono, at most one second
    <root>/validation_list.txt                  paths relative to <root>, one a line
    <root>/testing_list.txt
    <root>/_background_noise_/                  ignored, as is every folder starting with "_"

Test = the files in testing_list.txt; train = the files in neither list. The validation files are
left out of both, so that train is exactly the dataset's official training partition and accuracies
compare with published ones; ``DataBundle`` has no validation split to put them in.

Looked for, in order, in: the folder the user names, else ``$DNARCH_DATA/speech-commands``,
torchaudio's ``$DNARCH_DATA/SpeechCommands/speech_commands_v0.0{2,1}``, ``$DNARCH_DATA`` and
``cache_dir()/speech-commands``. Decoded audio is cached as .npz under ``cache_dir()``.
"""

from __future__ import annotations

import hashlib
import wave
from pathlib import Path

import numpy as np

from dnarch.data.base import DataBundle, DataError, cache_dir, from_arrays, search_folders
from dnarch.files import atomic_path

SAMPLE_RATE = 16_000  # Hz; every clip is padded or cropped to one second
TEN_WORDS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
_NAME = "speech-commands"
_LISTS = ("validation_list.txt", "testing_list.txt")
_HOW_TO_GET = (
    "download http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz and extract it "
    f"into $DNARCH_DATA/{_NAME}"
)
_CACHE_VERSION = 1  # bump when the cached arrays change meaning


def load_speech_commands(root: str | Path | None = None, subset: str = "all") -> DataBundle:
    """Speech Commands keyword classification. ``subset="all"``: every word folder (35 classes in
    v0.02, 30 in v0.01); ``subset="10"``: yes, no, up, down, left, right, on, off, stop, go.
    Classes are the word names sorted alphabetically; samples are ordered by relative path.
    x: (N, 1, 16000) float32 in [-1, 1], zero-padded or cropped to one second; y: (N,) int64."""
    if subset not in ("all", "10"):
        raise DataError(f"subset must be 'all' or '10', got {subset!r}")
    candidates = (
        [Path(root)]
        if root is not None
        else search_folders(
            _NAME,
            tuple(f"SpeechCommands/speech_commands_v0.0{v}" for v in (2, 1)),  # torchaudio
        )
    )
    folder = next((c for c in candidates if all((c / n).is_file() for n in _LISTS)), None)
    if folder is None:
        where = ", ".join(str(c) for c in candidates)
        raise DataError(
            f"Speech Commands (with {' and '.join(_LISTS)}) not found in {where}; {_HOW_TO_GET}"
        )
    classes = _classes(folder, subset)
    files = sorted(f"{w}/{p.name}" for w in classes for p in (folder / w).glob("*.wav"))
    validation, testing = (_read_list(folder / n) for n in _LISTS)
    train = [f for f in files if f not in validation and f not in testing]
    test = [f for f in files if f in testing]
    if not train or not test:
        raise DataError(f"{folder}: {len(train)} train and {len(test)} test files; need both")

    key = f"{_CACHE_VERSION}|{folder.resolve()}|{subset}|{len(files)}"
    path = cache_dir() / f"{_NAME}-{subset}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    arrays = _read_cache(path)
    if arrays is None:
        label = {w: i for i, w in enumerate(classes)}
        arrays = {
            "pcm_train": _decode(folder, train), "y_train": _labels(train, label),
            "pcm_test": _decode(folder, test), "y_test": _labels(test, label),
        }  # fmt: skip
        _write_cache(path, arrays)
    x_train, x_test = _to_float(arrays["pcm_train"]), _to_float(arrays["pcm_test"])
    name = _NAME if subset == "all" else f"{_NAME}-10"
    return from_arrays(
        x_train, arrays["y_train"], x_test, arrays["y_test"], name=name, num_classes=len(classes)
    )


def read_wav(path: Path) -> np.ndarray:
    """(16000,) int16: a 16 kHz 16-bit mono PCM file's first second, zero-padded at the end."""
    try:
        with wave.open(str(path), "rb") as w:
            fmt = (w.getframerate(), w.getsampwidth(), w.getnchannels())
            if fmt != (SAMPLE_RATE, 2, 1):
                raise DataError(
                    f"{path}: {fmt[0]} Hz, {8 * fmt[1]}-bit, {fmt[2]} channel(s); "
                    f"expected {SAMPLE_RATE} Hz 16-bit mono PCM"
                )
            raw = w.readframes(SAMPLE_RATE)  # cropped to one second here
    except (wave.Error, EOFError, OSError) as err:
        raise DataError(f"cannot read {path} as a WAV file: {err}") from err
    out = np.zeros(SAMPLE_RATE, dtype=np.int16)
    pcm = np.frombuffer(raw, dtype="<i2")
    out[: len(pcm)] = pcm
    return out


def _classes(folder: Path, subset: str) -> list[str]:
    """Word folders that hold .wav files, sorted; folders starting with "_" or "." are not words."""
    words = sorted(
        d.name
        for d in folder.iterdir()
        if d.is_dir() and d.name[0] not in "_." and any(d.glob("*.wav"))
    )
    if subset == "all":
        if len(words) < 2:
            raise DataError(f"{folder} holds {len(words)} word folders with .wav files; need >= 2")
        return words
    missing = [w for w in TEN_WORDS if w not in words]
    if missing:
        raise DataError(f"{folder} lacks word folders {', '.join(missing)} for the 10-word subset")
    return list(TEN_WORDS)


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _labels(files: list[str], label: dict[str, int]) -> np.ndarray:
    return np.array([label[f.split("/", 1)[0]] for f in files], dtype=np.int64)


def _decode(folder: Path, files: list[str]) -> np.ndarray:
    """(N, 16000) int16 PCM of ``files`` (relative to ``folder``)."""
    out = np.empty((len(files), SAMPLE_RATE), dtype=np.int16)
    for i, f in enumerate(files):
        out[i] = read_wav(folder / f)
    return out


def _to_float(pcm: np.ndarray) -> np.ndarray:
    """(N, 16000) int16 -> (N, 1, 16000) float32 in [-1, 1)."""
    x = pcm.astype(np.float32)
    x *= 1.0 / 32768
    return x[:, None, :]


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if absent or unreadable (then they are decoded again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("pcm_train", "y_train", "pcm_test", "y_test")}
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically: a reader sees the old file or the whole new one, never a partial write.
    PCM is stored as int16, half the size of float32 and lossless."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # stubs match **kwds to allow_pickle
