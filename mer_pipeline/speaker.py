"""Per-speaker standardisation, as a scikit-learn transformer."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from ._schema import feature_columns
from .exceptions import ParameterError

__all__ = ["SpeakerNormalizer", "split_groups", "speaker_rows", "record_features",
           "check_features", "NO_GROUP", "ClassEffects", "SpeakerPrior", "skewed_batches",
           "reference_labels", "enrolled_rows"]

NO_GROUP = ("", "nan", "None")
"""Speaker ids that mean "unknown speaker": such clips get the population statistics."""


def speaker_rows(groups: np.ndarray, min_clips: int, valid: np.ndarray | None = None):
    """Row indices of each known speaker with at least ``min_clips`` (valid) rows.

    Parameters
    ----------
    groups : np.ndarray
        Speaker id per row.
    min_clips : int
    valid : np.ndarray of bool or None
        Rows that count (default: all).

    Yields
    ------
    np.ndarray of int
    """
    for g in pd.unique(groups):
        if g in NO_GROUP:
            continue
        rows = np.flatnonzero((groups == g) if valid is None else (groups == g) & valid)
        if len(rows) >= min_clips:
            yield rows


def skewed_batches(groups, labels, seed: int = 0) -> list[np.ndarray]:
    """Row indices of one-sided batches: each speaker's clips of 2-3 emotions.

    Each speaker's emotions are shuffled (a generator seeded by ``seed`` and the
    speaker id's CRC-32, so the rule never depends on the other speakers) and cut
    into groups of three while more than four remain, then of two (8 emotions:
    3, 3, 2; 7: 3, 2, 2; 3: 2, 1); a batch holds the speaker's clips of one group.

    Parameters
    ----------
    groups, labels : array-like
        Speaker id and emotion per row.
    seed : int

    Returns
    -------
    list of np.ndarray of int
    """
    import zlib

    groups, labels = np.asarray(groups).astype(str), np.asarray(labels).astype(str)
    batches = []
    for g in pd.unique(groups):
        rows = np.flatnonzero(groups == g)
        rng = np.random.default_rng([seed, zlib.crc32(g.encode())])
        emotions = list(rng.permutation(sorted(set(labels[rows]))))
        while emotions:
            take = 3 if len(emotions) > 4 else min(2, len(emotions))
            chunk, emotions = emotions[:take], emotions[take:]
            batches.append(rows[np.isin(labels[rows], chunk)])
    return batches


def record_features(est, values: np.ndarray, names) -> None:
    """Set ``n_features_in_`` and ``feature_names_in_`` (or drop it) as ``fit`` does."""
    est.n_features_in_ = values.shape[1]
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    elif hasattr(est, "feature_names_in_"):
        del est.feature_names_in_


def check_features(est, values: np.ndarray, names, *, check_names: bool = True) -> None:
    """Refuse input whose width (or feature names) differ from those seen in ``fit``."""
    if values.shape[1] != est.n_features_in_:
        raise ParameterError(f"X has {values.shape[1]} features, but {type(est).__name__} is "
                             f"expecting {est.n_features_in_} features as input")
    if check_names and names is not None and hasattr(est, "feature_names_in_") \
            and list(names) != list(est.feature_names_in_):
        missing = sorted(set(est.feature_names_in_) - set(names))
        raise ParameterError("feature names differ from those seen in fit"
                             + (f"; missing: {', '.join(missing[:5])}" if missing else ""))


def split_groups(X, group_col: str | None):
    """Feature matrix and speaker ids from a feature table or an array.

    Parameters
    ----------
    X : pandas.DataFrame or array-like
        A feature table (metadata columns allowed: only columns named
        ``<modality>__<feature>`` are features, unless none is) or a matrix.
    group_col : str or None
        Column holding the speaker id.

    Returns
    -------
    values : np.ndarray of float64, shape (n_clips, n_features)
    groups : np.ndarray of object or None
    names : list of str or None
    """
    if isinstance(X, pd.DataFrame):
        groups = None
        if group_col and group_col in X.columns:
            groups = X[group_col].astype(str).to_numpy()
        cols = feature_columns(X)
        if not cols:
            cols = [c for c in X.columns if c != group_col and pd.api.types.is_numeric_dtype(X[c])]
        part = X[cols]
        try:  # one conversion: check_array on a wide table checks each column's dtype (slow)
            part = part.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            pass  # non-numeric cells: check_array says which
        return _check(part), groups, [str(c) for c in cols]
    return _check(X), None, None


def _check(values) -> np.ndarray:
    # NaN is allowed (a feature an extractor could not compute); it becomes 0
    # after standardisation, i.e. the population or speaker mean. An infinite value is
    # treated the same way, for its clip alone (never a failed batch).
    arr = check_array(values, dtype=np.float64, ensure_all_finite=False, accept_sparse=False)
    finite = np.isfinite(arr)
    return arr if finite.all() else np.where(finite, arr, np.nan)


#: A value further than this many 5th-95th-percentile ranges outside that range of the training
#: clips is absurd (a corrupted cell, 1e300): it is treated as missing for its clip, so
#: it cannot move the statistics other clips of its speaker are normalised by.
ABSURD_RANGES = 1e4


def _bounds(values: np.ndarray):
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        # 5th-95th: a few absurd cells in a small training set cannot move them
        lo, hi, mid = np.nanpercentile(values, [5, 95, 50], axis=0)
    # a column constant over 90 % of the clips has no scale to judge by: no bound
    constant = np.nan_to_num(hi - lo) == 0
    span = np.maximum(np.nan_to_num(hi - lo), np.maximum(1e-3 * np.abs(np.nan_to_num(mid)),
                                                         1e-12))
    lo, hi = np.nan_to_num(lo, nan=-np.inf), np.nan_to_num(hi, nan=np.inf)
    return (np.where(constant, -np.inf, lo - ABSURD_RANGES * span),
            np.where(constant, np.inf, hi + ABSURD_RANGES * span))


def _clip_absurd(values: np.ndarray, bounds) -> np.ndarray:
    lo, hi = bounds
    bad = (values < lo) | (values > hi)
    return np.where(bad, np.nan, values) if bad.any() else values


class SpeakerNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Standardise each speaker's clips by that speaker's own statistics.

    Speaker normalisation removes much of what makes voices differ (pitch
    range, loudness, timbre) so that what is left is closer to the emotion.
    It is label-free: a speaker's mean and standard deviation come from all
    of that speaker's clips in the data being transformed, whatever their
    emotion. At prediction time a speaker with at least ``min_clips`` clips
    in the batch is normalised by its own statistics; a speaker seen fewer
    times (one clip, say) falls back to the training population's statistics
    (plain standardisation), which is the documented fallback.

    Parameters
    ----------
    group_col : str, default="group"
        Column of the feature table that holds the speaker id. Arrays (no
        column) and clips with an empty speaker id are standardised by the
        training statistics alone.
    min_clips : int, default=10
        Fewest clips of a speaker for its own statistics to be used.

    Attributes
    ----------
    mean_, scale_ : np.ndarray of shape (n_features,)
        Training population statistics (the fallback).
    bounds_ : tuple of np.ndarray
        Per feature, the range outside which a value is absurd (:data:`ABSURD_RANGES`
        5th-95th-percentile ranges beyond the training clips'; none for a column
        constant over 90 % of them): such a cell, like an
        infinite one, is missing for its clip alone.
    n_features_in_ : int
    feature_names_in_ : np.ndarray of str
        Feature names, when fitted on a feature table.

    Notes
    -----
    The speaker statistics reflect the mix of emotions in that speaker's
    clips: a speaker whose batch is mostly angry is normalised towards its
    angry mean. On balanced acted corpora (RAVDESS, CREMA-D) this costs
    nothing; for a deployment on one-sided batches, pass fewer clips per
    speaker or set ``min_clips`` high to use the population statistics.
    """

    def __init__(self, *, group_col: str = "group", min_clips: int = 10):
        self.group_col = group_col
        self.min_clips = min_clips

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X, y=None):
        """Learn the population statistics (the fallback) from ``X``."""
        if not isinstance(self.min_clips, (int, np.integer)) or self.min_clips < 2:
            raise ParameterError(f"min_clips must be an integer >= 2, got {self.min_clips!r}")
        values, _, names = split_groups(X, self.group_col)
        self._validate(values, reset=True, names=names)
        self.bounds_ = _bounds(values)
        values = _clip_absurd(values, self.bounds_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a feature missing everywhere
            self.mean_ = np.nanmean(values, axis=0)
        self.scale_ = _safe_std(values)
        return self

    def _validate(self, values, *, reset, names):
        if reset:
            record_features(self, values, names)
        else:
            check_features(self, values, names, check_names=False)

    def transform(self, X):
        """Standardise each speaker's rows; see the class docstring."""
        check_is_fitted(self, "mean_")
        values, groups, names = split_groups(X, self.group_col)
        self._validate(values, reset=False, names=names)
        values = _clip_absurd(values, getattr(self, "bounds_", (-np.inf, np.inf)))
        out = (values - self.mean_) / self.scale_
        if groups is not None:  # unknown speakers keep the population statistics
            for rows in speaker_rows(groups, self.min_clips):
                sub = values[rows]
                out[rows] = (sub - np.nanmean(sub, axis=0)) / _safe_std(sub)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _safe_std(values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        std = np.nanstd(values, axis=0)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return std


class ClassEffects:
    """How each emotion moves a speaker's features away from that speaker's mean.

    Fitted on speaker-grouped training clips: ``offsets[c]`` is the mean, over the
    clips of class ``c``, of the clip minus its speaker's mean (raw feature units);
    ``variance`` is the part of a speaker's feature variance the emotions make
    (``sum_c prior_c * offsets[c] ** 2``). With them a batch of one speaker whose
    emotions are one-sided can be normalised as if it were balanced: subtract the
    expected effect of each clip's (predicted) emotion before taking the speaker's
    mean, and add the emotions' variance back to the residual variance
    (class-aware normalisation, :meth:`speaker_stats`).

    Parameters
    ----------
    values : np.ndarray, shape (n_clips, n_features)
        Training clips, NaN-free.
    codes : np.ndarray of int
        Class index per clip.
    groups : np.ndarray
        Speaker id per clip.
    n_classes : int
    min_clips : int
        Fewest clips of a speaker for it to count.
    """

    def __init__(self, values, codes, groups, n_classes: int, min_clips: int):
        d = values.shape[1]
        sums, counts = np.zeros((n_classes, d)), np.zeros(n_classes)
        if groups is not None:
            for rows in speaker_rows(groups, min_clips):
                centred = values[rows] - values[rows].mean(axis=0)
                np.add.at(sums, codes[rows], centred)
                counts += np.bincount(codes[rows], minlength=n_classes)
        self.prior = counts / max(counts.sum(), 1)
        self.offsets = sums / np.maximum(counts, 1)[:, None]
        self.variance = (self.prior[:, None] * self.offsets ** 2).sum(axis=0)

    def speaker_stats(self, values: np.ndarray, proba: np.ndarray):
        """Mean and scale of one speaker as if its clips were balanced.

        Parameters
        ----------
        values : np.ndarray, shape (n_clips, n_features)
            The speaker's clips, NaN-free.
        proba : np.ndarray, shape (n_clips, n_classes)
            Current class probabilities of those clips.

        Returns
        -------
        mean, scale : np.ndarray of shape (n_features,)
        """
        residual = values - proba @ self.offsets
        scale = np.sqrt(residual.var(axis=0) + self.variance)
        return residual.mean(axis=0), np.where(scale > 1e-12, scale, 1.0)


class SpeakerPrior:
    """What a few clips of a speaker say about that speaker's statistics.

    Enrollment (:mod:`mer_pipeline.enrollment`) estimates a speaker's mean from a
    handful of reference clips. Those are too few to trust outright: the estimate is
    shrunk towards the population mean, feature by feature, by how much speakers
    differ there against how noisy a mean of ``k`` clips is (the normal-normal
    empirical-Bayes rule):

    ``weight = between / (between + interaction / n_emotions + noise / k)``

    where ``between`` is the variance of the speakers' means, ``noise`` the variance
    of a speaker's clips of one emotion around their mean and ``interaction`` how far
    a speaker's mean for one emotion departs from that speaker's mean plus the
    emotion's average effect (:class:`ClassEffects`): what references of
    ``n_emotions`` emotions cannot average away however many clips they hold. The
    scale is the population's typical within-speaker standard deviation (a scale
    from a few clips costs accuracy: measured in the README).

    Parameters
    ----------
    values : np.ndarray, shape (n_clips, n_features)
        Training clips, NaN-free.
    codes : np.ndarray of int
        Class index per clip.
    groups : np.ndarray or None
        Speaker id per clip.
    effects : ClassEffects
    min_clips : int
        Fewest clips of a speaker for it to count.

    Attributes
    ----------
    mean, scale, between, interaction, noise : np.ndarray of shape (n_features,)
    n_speakers : int
        Training speakers the statistics come from (0: enrollment falls back to
        the population statistics, weight 0).
    """

    def __init__(self, values, codes, groups, effects: ClassEffects, min_clips: int):
        d = values.shape[1]
        self.effects = effects
        self.mean = values.mean(axis=0) if len(values) else np.zeros(d)
        means, scales, cells, within, sizes = [], [], [], [], []
        for rows in speaker_rows(groups, min_clips) if groups is not None else ():
            sub, sub_codes = values[rows], codes[rows]
            mu = sub.mean(axis=0)
            means.append(mu)
            scales.append(_safe_std(sub))
            for c in np.unique(sub_codes):
                cell = sub[sub_codes == c]
                if len(cell) >= 2:
                    cells.append(cell.mean(axis=0) - mu - effects.offsets[c])
                    within.append(cell.var(axis=0, ddof=1))
                    sizes.append(len(cell))
        self.n_speakers = len(means)
        if self.n_speakers < 2 or not cells:
            self.scale = _safe_std(values) if len(values) else np.ones(d)
            self.between = np.zeros(d)
            self.interaction = self.noise = np.ones(d)
            return
        self.scale = np.mean(scales, axis=0)
        self.between = np.var(means, axis=0, ddof=1)
        self.noise = np.mean(within, axis=0)
        # a cell mean of n clips carries noise / n of its own: not interaction
        self.interaction = np.maximum(np.var(cells, axis=0, ddof=1)
                                      - self.noise * np.mean(1.0 / np.asarray(sizes)), 0.0)

    def weights(self, n_clips: int, n_emotions: int) -> np.ndarray:
        """Per feature, how far an enrolled mean of ``n_clips`` clips is trusted (0..1)."""
        if n_clips < 1 or self.n_speakers < 2:
            return np.zeros_like(self.mean)
        spread = self.between + self.interaction / max(n_emotions, 1) + self.noise / n_clips
        return np.where(spread > 0, self.between / np.where(spread > 0, spread, 1.0), 0.0)

    def speaker_stats(self, values: np.ndarray, proba: np.ndarray):
        """Mean and scale of a speaker from reference clips.

        Parameters
        ----------
        values : np.ndarray, shape (n_refs, n_features)
            The reference clips, NaN-free.
        proba : np.ndarray, shape (n_refs, n_classes)
            Their emotions: one-hot where labelled, predicted probabilities otherwise.

        Returns
        -------
        mean, scale : np.ndarray of shape (n_features,)
        weight : float
            The mean shrinkage weight (0: the population mean, 1: the references').
        """
        emotions = len(np.unique(np.argmax(proba, axis=1)))
        estimate = (values - proba @ self.effects.offsets).mean(axis=0)
        w = self.weights(len(values), emotions)
        return self.mean + w * (estimate - self.mean), self.scale, float(w.mean())


def reference_labels(profile, classes):
    """Which of a profile's reference clips carry a label among ``classes``, one-hot.

    A reference labelled ``""`` (or a profile with no labels) is unlabelled; one
    labelled with an emotion outside ``classes`` is treated as unlabelled, with a
    warning naming the emotion.

    Parameters
    ----------
    profile : SpeakerProfile
    classes : array-like of str
        The model's classes.

    Returns
    -------
    known : np.ndarray of bool, shape (n_refs,)
    onehot : np.ndarray, shape (n_refs, n_classes)
    """
    classes = np.asarray(classes).astype(str)
    n = len(profile.values)
    labels = np.asarray(profile.emotions if profile.emotions is not None else [""] * n).astype(str)
    known = np.isin(labels, classes)
    onehot = np.zeros((n, len(classes)))
    onehot[np.flatnonzero(known), np.searchsorted(classes, labels[known])] = 1.0
    odd = sorted(set(labels[~known]) - {""})
    if odd:
        warnings.warn(f"speaker profile {profile.speaker!r}: emotion(s) {', '.join(odd)} "
                      "unknown to the model; those references are treated as unlabelled",
                      stacklevel=3)
    return known, onehot


def enrolled_rows(groups: np.ndarray, outside: np.ndarray, profiles: dict):
    """The rows of each enrolled profile among the rows ``outside`` a batch.

    Rows are gathered by profile, not by speaker id: several ids may share one
    profile (each clip scored alone under its own id, as the ``enrolled``
    presentation does), and the profile's statistics are then estimated once.

    Parameters
    ----------
    groups : np.ndarray
        Speaker id per row.
    outside : np.ndarray of bool
        Rows that get no statistics of their own batch.
    profiles : dict of str to SpeakerProfile

    Yields
    ------
    (SpeakerProfile, np.ndarray of int)
    """
    found: dict = {}
    for i in np.flatnonzero(outside):
        profile = profiles.get(groups[i])
        if profile is not None:
            found.setdefault(id(profile), (profile, []))[1].append(i)
    for profile, rows in found.values():
        yield profile, np.asarray(rows)
