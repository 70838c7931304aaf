"""Augmented training copies of clips: the audio perturbed (speed, channel, gain, noise).

A model trained on one or two corpora learns their microphones, rooms and loudness along
with the emotions; scored on another corpus it reads a new channel as a new emotion (the
README's "Across corpora"). Training on perturbed copies of each clip as well teaches it
that those differences carry no emotion: one copy per clip lifted the leave-one-corpus-out
mean over RAVDESS, nEMO and TurEV-DB by about 3 points at no cost within RAVDESS
(``make bench-corpora``).

``mer features --augment N`` (:func:`mer_pipeline.features.extract_features` with
``augment=N``) writes N perturbed copies of every clip's audio features beside the
originals, in the same table, each copy a row ``<clip_id>~aug<k>`` whose
:data:`AUGMENT_COLUMN` names its source clip (empty for a recording). Copies inherit the
source's labels and speaker group; they are **training rows only**:

- :func:`mer_pipeline.evaluation.cross_validate_model` splits the recordings and adds to
  each training fold the copies of its training clips (:func:`with_copies`), never a copy
  of a test clip; copies are never scored;
- :func:`mer_pipeline.workflows.train_and_save` fits on recordings and copies;
- scoring a feature table drops its copies (:func:`originals`).

The perturbation (:func:`perturb`, recipe :data:`RECIPE`) is drawn per clip and copy from a
generator seeded by ``(copy, crc32(clip_id))``: the same clip's k-th copy is the same on
every run and machine, and its features are cached like any clip's.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy.signal import lfilter, resample_poly

from ._schema import AUGMENT_COLUMN

__all__ = ["AUGMENT_COLUMN", "RECIPE", "SPEEDS", "perturb", "copy_id", "AugmentedAudio",
           "originals", "with_copies", "n_copies"]

#: Name and version of the perturbation recipe (recorded with the features; a new recipe
#: is a new name, so cached copies of another recipe are never reused).
RECIPE = "speed-eq-gain-noise/1"
#: Speed factors drawn from (tempo and pitch together, by resampling): up/down ratios.
SPEEDS: dict[float, tuple[int, int]] = {0.9: (10, 9), 0.95: (20, 19), 1.0: (1, 1),
                                        1.05: (20, 21), 1.1: (10, 11)}
_SEP = "~aug"


def perturb(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One random perturbation of a signal: another speaker's tempo, another channel.

    In order: a speed factor drawn from :data:`SPEEDS` (resampling, so tempo and pitch
    move together by up to 10 %); two peaking-EQ biquads (centre 150-5000 Hz, gain
    +-8 dB, Q 0.5-2: a microphone's or room's colouring); a gain of -12 to +6 dB; white
    noise at 10-35 dB SNR; clipped to [-1, 1].

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio in [-1, 1].
    sr : int
        Its sample rate.
    rng : numpy.random.Generator
        Draws every choice (seed it for a reproducible copy).

    Returns
    -------
    np.ndarray of float32
        The perturbed signal, at the same rate (its length changes with the speed).
    """
    y = np.asarray(y, dtype=np.float64)
    factor = list(SPEEDS)[rng.integers(len(SPEEDS))]
    if factor != 1.0:
        up, down = SPEEDS[factor]
        y = resample_poly(y, up, down)
    for _ in range(2):  # peaking EQ (Audio EQ Cookbook)
        f0 = min(rng.uniform(150, 5000), 0.45 * sr)
        gain, q = rng.uniform(-8, 8), rng.uniform(0.5, 2)
        a_ = 10 ** (gain / 40)
        w0 = 2 * np.pi * f0 / sr
        alpha = np.sin(w0) / (2 * q)
        b = np.array([1 + alpha * a_, -2 * np.cos(w0), 1 - alpha * a_])
        a = np.array([1 + alpha / a_, -2 * np.cos(w0), 1 - alpha / a_])
        y = lfilter(b / a[0], a / a[0], y)
    y = y * 10 ** (rng.uniform(-12, 6) / 20)
    snr = rng.uniform(10, 35)
    power = float(np.mean(y ** 2)) + 1e-12
    y = y + rng.standard_normal(len(y)) * np.sqrt(power / 10 ** (snr / 10))
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def copy_id(clip_id: str, copy: int) -> str:
    """The row id of a clip's ``copy``-th augmented copy: ``<clip_id>~aug<copy>``."""
    return f"{clip_id}{_SEP}{int(copy)}"


def _rng(clip_id: str, copy: int) -> np.random.Generator:
    return np.random.default_rng([int(copy), zlib.crc32(str(clip_id).encode())])


class AugmentedAudio:
    """Per-clip task: an audio extractor's features of one perturbed copy of the clip.

    Run by :func:`mer_pipeline.parallel.map_clips` like the extractor itself (cached per
    clip, failures recorded per clip).

    Parameters
    ----------
    extractor : AudioFeatureExtractor
        Computes the features of the perturbed signal (with its own settings).
    copy : int >= 1
        Which copy: seeds the perturbation with the clip id.
    """

    modality = "audio"
    path_column = "audio_path"
    version = "1"

    def __init__(self, extractor, copy: int):
        self.extractor = extractor
        self.copy = int(copy)

    @property
    def name(self) -> str:
        return f"{self.extractor.name}_augmented"

    def params(self) -> dict:
        return {**self.extractor.params(), "extractor_version": str(self.extractor.version),
                "augment": {"recipe": RECIPE, "copy": self.copy}}

    def inputs(self, row: dict) -> list[str]:
        return self.extractor.inputs(row)

    def __call__(self, clip_id: str, row: dict):
        rng = _rng(clip_id, self.copy)
        return self.extractor.extract(row, transform=lambda y, sr: perturb(y, sr, rng))


def originals(table: pd.DataFrame) -> np.ndarray:
    """Boolean mask of a table's recordings (rows that are not augmented copies)."""
    if not isinstance(table, pd.DataFrame) or AUGMENT_COLUMN not in table.columns:
        return np.ones(len(table), dtype=bool)
    source = table[AUGMENT_COLUMN]
    return (source.isna() | (source.astype(str) == "")).to_numpy()


def n_copies(table: pd.DataFrame) -> int:
    """How many rows of a table are augmented copies."""
    return int(len(table) - originals(table).sum())


def with_copies(table: pd.DataFrame, rows) -> np.ndarray:
    """Positions ``rows`` of a table's recordings plus those of their augmented copies.

    Parameters
    ----------
    table : pandas.DataFrame
        Indexed by clip id; copies name their source in :data:`AUGMENT_COLUMN`.
    rows : array-like of int
        Positions of recordings (a training fold).

    Returns
    -------
    np.ndarray of int
        ``rows`` then the positions of every copy whose source is among them.
    """
    rows = np.asarray(rows, dtype=int)
    is_copy = ~originals(table)
    if not is_copy.any():
        return rows
    chosen = set(table.index[rows].astype(str))
    copies = np.flatnonzero(is_copy)
    sources = table[AUGMENT_COLUMN].to_numpy()[copies].astype(str)
    return np.concatenate([rows, copies[np.isin(sources, list(chosen))]])
