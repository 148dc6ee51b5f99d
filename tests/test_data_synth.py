"""Generated datasets: ListOps (labels checked by an independent evaluator) and espeak-ng digits."""

import shutil
import statistics
import subprocess

import numpy as np
import pytest

from dnarch.data import DataError
from dnarch.data.listops import VOCAB, evaluate_listops, generate_listops, load_listops
from dnarch.data.spoken_digits import TEST_VARIANTS, TRAIN_VARIANTS, load_spoken_digits, resample

HAS_ESPEAK = shutil.which("espeak-ng") is not None


def _value(words: list[str]) -> int:
    """Recursive descent on the string form; consumes ``words`` from the front."""
    w = words.pop(0)
    if w.isdigit():
        return int(w)
    args = []
    while words[0] != "]":
        args.append(_value(words))
    words.pop(0)
    ops = {
        "[MIN": min,
        "[MAX": max,
        "[MED": lambda a: int(statistics.median(a)),
        "[SM": lambda a: sum(a) % 10,
    }
    return ops[w](args)


def _string(tokens: np.ndarray) -> str:
    return " ".join(VOCAB[t] for t in tokens if t != 0)


def test_listops_labels_lengths_and_determinism() -> None:
    tokens, labels = generate_listops(300, max_length=64, min_length=16, seed=3)
    assert tokens.shape == (300, 64) and labels.shape == (300,)
    lengths = (tokens > 0).sum(1)
    assert lengths.min() > 16 and lengths.max() < 64
    assert all((t[n:] == 0).all() for t, n in zip(tokens, lengths, strict=True))  # right-padded
    assert len({t.tobytes() for t in tokens}) == 300  # no sequence twice
    for t, y in zip(tokens, labels, strict=True):
        words = _string(t).split()
        assert _value(words) == y == evaluate_listops(t) and not words
    assert set(labels.tolist()) == set(range(10))
    again = generate_listops(300, max_length=64, min_length=16, seed=3)
    assert np.array_equal(again[0], tokens) and np.array_equal(again[1], labels)
    assert not np.array_equal(generate_listops(300, 64, 16, seed=4)[0], tokens)


def test_listops_evaluator_by_hand() -> None:
    enc = {w: i for i, w in enumerate(VOCAB)}
    for text, value in [
        ("[MED 3 4 ]", 3),
        ("[SM 7 8 [MAX 1 2 ] ]", 7),
        ("[MIN 5 [MED 9 1 8 ] ]", 5),
    ]:
        assert evaluate_listops([enc[w] for w in text.split()]) == value
    with pytest.raises(ValueError):
        evaluate_listops([enc["[MAX"], enc["3"]])


def test_listops_bundle_is_one_hot(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path))
    d = load_listops(n_train=20, n_test=5, max_length=64)
    assert tuple(d.x_train.shape) == (20, len(VOCAB), 64) and tuple(d.x_test.shape) == (5, 16, 64)
    assert d.num_classes == 10 and (d.x_train.sum(1) == 1).all()
    tokens, labels = generate_listops(25, max_length=64, seed=0)
    assert np.array_equal(d.x_train.argmax(1).numpy(), tokens[:20])
    assert np.array_equal(d.y_test.numpy(), labels[20:])
    assert len(list(tmp_path.glob("listops-*.npz"))) == 1


def test_resample_keeps_a_tone() -> None:
    t = np.arange(2205) / 22050
    y = resample(np.sin(2 * np.pi * 440 * t) * np.hanning(2205), 22050, 8000)  # (800,)
    assert (
        y.shape == (800,) and np.abs(np.fft.rfft(y)).argmax() == 44
    )  # 440 Hz in bins of 8000 / 800 Hz


def test_spoken_digits_split_holds_out_speakers() -> None:
    assert not set(TRAIN_VARIANTS) & set(TEST_VARIANTS)


@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed")
def test_spoken_digits_tiny_and_cached(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path))
    d = load_spoken_digits(n_per_class_train=2, n_per_class_test=1, length=2000)
    assert tuple(d.x_train.shape) == (20, 1, 2000) and tuple(d.x_test.shape) == (10, 1, 2000)
    assert d.num_classes == 10 and d.in_channels == 1
    assert sorted(d.y_train.tolist()) == sorted(list(range(10)) * 2)
    assert sorted(d.y_test.tolist()) == list(range(10))
    assert 0 < float(d.x_train.abs().max()) < 2

    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng was called although the data are cached")

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(subprocess, "run", no_espeak)
    again = load_spoken_digits(n_per_class_train=2, n_per_class_test=1, length=2000)
    assert (again.x_train == d.x_train).all() and (again.y_test == d.y_test).all()


def test_spoken_digits_without_espeak_says_how_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng") as err:
        load_spoken_digits(n_per_class_train=1, n_per_class_test=1, length=100)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing half-written
