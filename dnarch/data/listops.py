"""ListOps (Nangia & Bowman 2018) as generated for Long Range Arena (Tay et al. 2021), written anew
from the published procedure in LRA's ``lra_benchmarks/data/listops.py``.

A sample is a random expression tree over the operators MAX, MIN, MED (median, rounded down) and SM
(sum modulo 10) with values 0-9, written in prefix form without parentheses, e.g.
``[MAX 2 9 [MIN 4 7 ] 0 ]``; the label is its value (10 classes). Every node below ``max_depth`` is an
operator with probability 0.25, else a value; an operator takes 2 to 10 arguments. Trees are kept when
``min_length < tokens < max_length`` (strict, as in LRA) and no sequence appears twice.

LRA uses ``max_length=2000, min_length=500``. ``load_listops`` defaults to ``max_length=512`` with the
minimum scaled by the same ratio (128), so a run fits a small machine; ``max_length=2000`` gives LRA's
setting. Inputs are one-hot (N, 16, L) float32, because dnarch's models take float channels;
``generate_listops`` gives the integer tokens (N, L) for users who want an embedding instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from dnarch.data.base import DataBundle, DataError, cache_dir, from_arrays
from dnarch.files import atomic_path

PAD, END = 0, 15
VOCAB = (
    "<pad>",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "[MIN",
    "[MAX",
    "[MED",
    "[SM",
    "]",
)
MIN, MAX, MED, SM = 11, 12, 13, 14
OPERATORS = (MIN, MAX, MED, SM)
VALUE_P = 0.25  # LRA: a node is an operator with this probability, else a value
MAX_DEPTH = 10
MAX_ARGS = 10
_CACHE_VERSION = 1  # bump when the procedure changes, so old caches are not reused


def _apply(op: int, args: list[int]) -> int:
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == SM:
        return sum(args) % 10
    if op == MED:  # int(np.median(args)) in LRA: the mean of the middle two, rounded down
        s = sorted(args)
        k = len(s) // 2
        return s[k] if len(s) % 2 else (s[k - 1] + s[k]) // 2
    raise ValueError(f"token {op} is not an operator")


def _uniforms(rng: np.random.Generator) -> Iterator[float]:
    """Endless uniforms in [0, 1), drawn from numpy in blocks (a numpy call per draw is slow)."""
    while True:
        yield from rng.random(1 << 16).tolist()


def _sample(u: Callable[[], float], limit: int) -> tuple[list[int], int] | None:
    """One random tree as prefix tokens and its value, or None once it reaches ``limit`` tokens: LRA
    would reject it anyway, so stopping early leaves the distribution of kept trees unchanged and
    saves building huge trees. Iterative, with a stack of open operators [op, args left, values]."""
    out: list[int] = []
    stack: list[list] = []
    while len(out) < limit:
        # a node's depth is len(stack) + 1; LRA forces a value at depth MAX_DEPTH
        if len(stack) + 1 >= MAX_DEPTH or u() > VALUE_P:
            v = int(u() * 10)
            out.append(v + 1)
            while stack:  # close every operator this value completes
                frame = stack[-1]
                frame[2].append(v)
                frame[1] -= 1
                if frame[1]:
                    break
                stack.pop()
                out.append(END)
                v = _apply(frame[0], frame[2])
            else:
                return (out, v) if len(out) < limit else None
        else:
            op = OPERATORS[int(u() * 4)]
            out.append(op)
            stack.append([op, 2 + int(u() * (MAX_ARGS - 1)), []])  # 2..MAX_ARGS arguments
    return None


def generate_listops(
    n: int,
    max_length: int = 512,
    min_length: int | None = None,
    seed: int = 0,
    *,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct ListOps sequences with ``min_length < tokens < max_length``, the same for a seed.

    min_length defaults to ``max_length // 4`` (LRA: 500 of 2000). Returns tokens: (n, max_length)
    int64, right-padded with 0 (vocabulary in ``VOCAB``), and labels: (n,) int64 in 0..9. About 1 ms
    per sample at max_length=512 (most trees are rejected for being too short or too long).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    min_length = max_length // 4 if min_length is None else min_length
    if not 0 <= min_length < max_length - 1 or max_length < 5:  # [OP v v ] has 4 tokens
        raise ValueError(
            f"need 0 <= min_length < max_length - 1 and max_length >= 5, got {min_length}, {max_length}"
        )
    u = _uniforms(np.random.default_rng(seed)).__next__
    seen: set[tuple[int, ...]] = set()
    tokens = np.zeros((n, max_length), dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    i = misses = 0
    with tqdm(total=n, desc="listops", disable=not progress, unit="seq") as bar:
        while i < n:
            # as in LRA, the root may be a bare value; the minimum length rejects it
            sample = _sample(u, max_length)
            if sample and len(sample[0]) > min_length and (key := tuple(sample[0])) not in seen:
                seen.add(key)
                tokens[i, : len(key)] = key
                labels[i] = sample[1]
                i += 1
                misses = 0
                bar.update()
                continue
            misses += 1
            if misses > 1_000_000:  # a tiny length window can hold fewer than n sequences
                raise ValueError(
                    f"found only {i} distinct sequences with {min_length} < length < {max_length}"
                )
    return tokens, labels


def evaluate_listops(tokens: np.ndarray | list[int]) -> int:
    """The value 0..9 of one token sequence (L,), padding ignored. Raises ValueError if malformed."""
    stack: list[list[int]] = [[]]
    for t in (int(t) for t in np.asarray(tokens).ravel()):
        if t == PAD:
            continue
        if 1 <= t <= 10:
            stack[-1].append(t - 1)
        elif t in OPERATORS:
            stack.append([t])
        elif t == END and len(stack) > 1:
            op, *args = stack.pop()
            if not args:
                raise ValueError("an operator without arguments")
            stack[-1].append(_apply(op, args))
        else:
            raise ValueError(f"unexpected token {t}")
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError("not a single complete expression")
    return stack[0][0]


def one_hot(tokens: np.ndarray) -> np.ndarray:
    """tokens (N, L) int -> (N, len(VOCAB), L) float32; padding is its own channel (0)."""
    x = np.zeros((tokens.shape[0], len(VOCAB), tokens.shape[1]), dtype=np.float32)
    np.put_along_axis(x, tokens[:, None, :], 1.0, axis=1)
    return x


def load_listops(
    n_train: int = 20_000, n_test: int = 2_000, max_length: int = 512, seed: int = 0
) -> DataBundle:
    """ListOps as one-hot inputs x: (N, 16, max_length) float32 and labels y: (N,) int64 in 0..9.

    Train and test are drawn together, so no sequence is in both. The integer tokens are cached as
    .npz under ``cache_dir()``; the one-hot array (4 bytes x 16 x max_length per sample, about 720 MB
    for the defaults) is built on load.
    """
    if n_train < 1 or n_test < 1:
        raise DataError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    name = f"listops-v{_CACHE_VERSION}-tr{n_train}-te{n_test}-L{max_length}-s{seed}.npz"
    path = cache_dir() / name
    if not path.exists():
        tokens, labels = generate_listops(n_train + n_test, max_length, seed=seed, progress=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, tokens=tokens.astype(np.uint8), labels=labels.astype(np.uint8))
    with np.load(path, allow_pickle=False) as f:
        tokens, labels = f["tokens"].astype(np.int64), f["labels"].astype(np.int64)
    return from_arrays(
        one_hot(tokens[:n_train]), labels[:n_train], one_hot(tokens[n_train:]), labels[n_train:],
        name="listops", num_classes=10,
    )  # fmt: skip
