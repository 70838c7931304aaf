"""Fusion of voice and face: :class:`MultimodalEmotionClassifier`.

The estimator takes the joined feature table that ``mer features`` writes
(``audio__*`` and ``face__*`` columns, the speaker column, and, where present,
the per-clip frame sequences ``audio_frames`` / ``face_frames`` that
:func:`mer_pipeline.features.load_features` attaches) and learns everything
inside ``fit``: per-modality speaker normalisation and PCA, attention pooling
over frames, the fusion, and the classifiers.

Fusion strategies (parameter ``fusion``):

``"late"`` (default, chosen by measurement: see the README's fusion benchmark)
    One classifier per modality (``estimator``, by default the blend of
    :class:`~mer_pipeline.ensemble.EmotionClassifier`); their out-of-fold
    log-probabilities, from speaker-grouped inner folds, feed a meta-learner
    (``meta_learner``: logistic regression, SVM, KNN or MLP).
``"concat"``
    The modalities' PCA components side by side, one ``estimator`` on top
    (e.g. the design's stacking ensemble, SVC + random forest + XGBoost →
    meta SVC: ``estimator=EmotionClassifier(model="stacking")``).
``"gated"``
    A network (PyTorch, CPU) that encodes each modality (its PCA vector plus
    a learned attention pooling over its frames) and mixes them with a gate
    computed per clip from both: a softmax over the modalities present.
``"cross_attention"``
    A network in which each modality's frame sequence (the audio's low-level
    descriptors at 25 frames/s, the face's per-frame embeddings at 3 frames/s)
    attends, with multi-head attention, over the other's, then is pooled by a
    learned attention over time.

Missing modality: a clip whose features for a modality are all missing (no
audio track, no video, no face found) is predicted from the modalities it
has. Each strategy learns to: ``late`` and ``concat`` add training copies with
one modality removed, the networks drop a modality at random while training.
:meth:`MultimodalEmotionClassifier.modalities_used` says which modalities
each clip's prediction used.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .ensemble import EmotionClassifier
from .exceptions import FeatureTableError, ParameterError
from .features import SEQUENCE_COLUMNS
from .speaker import (NO_GROUP, SpeakerNormalizer, check_features, record_features,
                      speaker_rows, split_groups)

__all__ = ["MultimodalEmotionClassifier", "FUSIONS", "FUSION_CHOICES", "META_LEARNERS",
           "build_estimator", "modality_blocks", "table_modalities"]

FUSIONS = ("late", "concat", "gated", "cross_attention")
META_LEARNERS = ("logreg", "svm", "knn", "mlp")


def modality_blocks(names) -> dict:
    """Column indices per modality: ``audio__x`` → ``audio``; unprefixed → ``features``."""
    blocks: dict = {}
    for i, name in enumerate(names):
        name = str(name)
        blocks.setdefault(name.split("__", 1)[0] if "__" in name else "features", []).append(i)
    return blocks


def _sequence_column(modality: str) -> str | None:
    return SEQUENCE_COLUMNS.get(modality)


class _SequenceScaler:
    """Per-speaker standardisation of frame sequences (the frame-level twin of
    :class:`SpeakerNormalizer`): a speaker with at least ``min_clips`` sequences
    in the batch is standardised by its own frame statistics, others by the
    training population's."""

    def __init__(self, min_clips: int, speaker_norm: bool):
        self.min_clips = min_clips
        self.speaker_norm = speaker_norm

    @staticmethod
    def _stats(seqs):
        frames = np.vstack(seqs).astype(np.float64)
        mean = np.nanmean(frames, axis=0)
        std = np.nanstd(frames, axis=0)
        return mean, np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)

    def fit(self, seqs):
        self.mean_, self.scale_ = self._stats([s for s in seqs if s is not None])
        return self

    def transform(self, seqs, groups):
        out = [None if s is None else (s - self.mean_) / self.scale_ for s in seqs]
        if self.speaker_norm and groups is not None:
            present = np.array([s is not None for s in seqs])
            for rows in speaker_rows(groups, self.min_clips, present):
                mean, scale = self._stats([seqs[i] for i in rows])
                for i in rows:
                    out[i] = (seqs[i] - mean) / scale
        return [None if s is None else np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)
                .astype(np.float32) for s in out]


class MultimodalEmotionClassifier(ClassifierMixin, BaseEstimator):
    """Emotion classifier that fuses voice and face, in the scikit-learn manner.

    Parameters
    ----------
    fusion : {"late", "concat", "gated", "cross_attention"}, default="late"
        How the modalities are fused (see the module docstring).
    estimator : classifier or None, default=None
        The classifier of each modality (``late``) or of the fused features
        (``concat``); ``None`` is :class:`~mer_pipeline.ensemble.EmotionClassifier`
        with its defaults (the per-feature-set blend). Its ``speaker_norm`` is
        switched off: normalisation happens here, once. Its parameters are
        reachable as ``estimator__<name>`` (e.g. in a grid search).
    meta_learner : {"logreg", "svm", "knn", "mlp"}, default="logreg"
        The decision-level learner of ``late`` fusion.
    meta_C : float, default=1.0
        Inverse regularisation of the logistic / SVM meta-learner.
    speaker_norm : bool, default=True
        Standardise each speaker's (or face subject's) features and frames by
        its own statistics (:class:`~mer_pipeline.speaker.SpeakerNormalizer`).
    group_col : str, default="group"
        Column of the feature table with the speaker id.
    min_speaker_clips : int, default=10
        Fewest clips of a speaker for its own statistics to be used.
    pca_components : int or None, default=300
        Upper bound on each modality's PCA components (``concat`` and the
        networks), never more than the data allows (clips, rank); ``None``
        skips PCA.
    frame_components : int, default=64
        PCA components of each face frame before the networks' attention.
    inner_cv : int, default=5
        Folds (speaker-grouped where speakers are known) for the out-of-fold
        predictions the ``late`` meta-learner is fit on.
    missing_augment : bool, default=True
        ``late`` and ``concat``: add training copies of the clips that have
        every modality with one modality removed, so the model has seen each
        modality alone.
    use_sequences : bool, default=True
        Networks: use the frame sequences of the table (``audio_frames``,
        ``face_frames``) where it has them; otherwise each modality is a
        sequence of one vector.
    net_evidence : bool, default=True
        Networks: each modality's input holds, beside its PCA components, the
        out-of-fold log-probabilities of that modality's own ``estimator``
        (the ``late`` fusion's evidence), so the network fuses evidence the
        per-feature-set classifiers extract well from few clips, and learns on
        top of it the per-clip gate or the attention over frames.
    hidden_size : int, default=128
    n_heads : int, default=4
        Attention heads of ``cross_attention``.
    epochs : int, default=30
    batch_size : int, default=64
    learning_rate : float, default=1e-3
    weight_decay : float, default=1e-2
    dropout : float, default=0.3
    modality_dropout : float, default=0.25
        Networks: the chance, per training clip and epoch, that one of its
        modalities is hidden.
    random_state : int, default=0
        Seeds PCA, the folds and the networks (fits are deterministic on CPU).
    n_jobs : int or None, default=None
        Threads for the estimators that take them.

    Attributes
    ----------
    classes_ : np.ndarray
    modalities_ : list of str
        Modalities found in the training columns (``audio``, ``face``; a plain
        matrix is one modality, ``features``).
    blocks_ : dict
        Modality → column indices.
    normalizers_ : dict
        Modality → fitted :class:`SpeakerNormalizer` or ``StandardScaler``.
    pcas_ : dict
        Modality → fitted PCA (or ``None``).
    estimators_ : dict
        ``late``: modality → fitted classifier; ``concat``: ``{"fused": …}``.
    meta_ : fitted meta-learner (``late``)
    net_ : torch.nn.Module (``gated``, ``cross_attention``)
    sequences_ : dict
        Modality → whether the networks used its frame sequence.
    prior_ : np.ndarray
        Training class frequencies, returned for a clip with no modality.
    n_features_in_ : int
    feature_names_in_ : np.ndarray of str

    Notes
    -----
    The design's stacking ensemble (SVC + random forest + XGBoost → meta SVC)
    is ``estimator=EmotionClassifier(model="stacking")``. The networks are
    their own classifiers: stacking tree ensembles on embeddings a network
    learned from the same labels would teach the meta-learner from
    over-fitted inputs.

    Examples
    --------
    >>> from mer_pipeline import MultimodalEmotionClassifier, load_features  # doctest: +SKIP
    >>> table = load_features("features/")  # doctest: +SKIP
    >>> clf = MultimodalEmotionClassifier(fusion="gated").fit(table, table["emotion"])  # doctest: +SKIP
    >>> clf.modalities_used(table)[:2]  # doctest: +SKIP
    array(['audio+face', 'audio+face'], dtype=object)
    """

    def __init__(self, *, fusion: str = "late", estimator=None, meta_learner: str = "logreg",
                 meta_C: float = 1.0, speaker_norm: bool = True, group_col: str = "group",
                 min_speaker_clips: int = 10, pca_components: int | None = 300,
                 frame_components: int = 64, inner_cv: int = 5, missing_augment: bool = True,
                 use_sequences: bool = True, net_evidence: bool = True, hidden_size: int = 128, n_heads: int = 4,
                 epochs: int = 30, batch_size: int = 64, learning_rate: float = 1e-3,
                 weight_decay: float = 1e-2, dropout: float = 0.3,
                 modality_dropout: float = 0.25, random_state: int | None = 0,
                 n_jobs: int | None = None):
        self.fusion = fusion
        self.estimator = estimator
        self.meta_learner = meta_learner
        self.meta_C = meta_C
        self.speaker_norm = speaker_norm
        self.group_col = group_col
        self.min_speaker_clips = min_speaker_clips
        self.pca_components = pca_components
        self.frame_components = frame_components
        self.inner_cv = inner_cv
        self.missing_augment = missing_augment
        self.use_sequences = use_sequences
        self.net_evidence = net_evidence
        self.hidden_size = hidden_size
        self.n_heads = n_heads
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.modality_dropout = modality_dropout
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- checks ----------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _check_params(self):
        if self.fusion not in FUSIONS:
            raise ParameterError(f"fusion must be one of {', '.join(FUSIONS)}; "
                                 f"got {self.fusion!r}")
        if self.meta_learner not in META_LEARNERS:
            raise ParameterError(f"meta_learner must be one of {', '.join(META_LEARNERS)}; "
                                 f"got {self.meta_learner!r}")
        if self.pca_components is not None and (
                not isinstance(self.pca_components, (int, np.integer)) or self.pca_components < 1):
            raise ParameterError(f"pca_components must be a positive integer or None; "
                                 f"got {self.pca_components!r}")
        for name in ("frame_components", "inner_cv", "hidden_size", "n_heads", "epochs",
                     "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < (2 if name == "inner_cv"
                                                                    else 1):
                raise ParameterError(f"{name} must be a positive integer; got {value!r}")
        if self.hidden_size % self.n_heads:
            raise ParameterError(f"hidden_size ({self.hidden_size}) must be a multiple of "
                                 f"n_heads ({self.n_heads})")
        if not 0 <= self.modality_dropout < 1 or not 0 <= self.dropout < 1:
            raise ParameterError("dropout and modality_dropout must be in [0, 1)")

    # -- per-modality preprocessing --------------------------------------
    def _split(self, X, *, fit: bool):
        values, groups, names = split_groups(X, self.group_col)
        if fit:
            record_features(self, values, names)
            self.blocks_ = modality_blocks(names if names is not None
                                           else [f"x{i}" for i in range(values.shape[1])])
            self.modalities_ = list(self.blocks_)
        else:
            check_is_fitted(self, "modalities_")
            check_features(self, values, names)
        if groups is not None and np.isin(groups, NO_GROUP).all():
            groups = None
        avail = np.column_stack([np.isfinite(values[:, self.blocks_[m]]).any(axis=1)
                                 for m in self.modalities_])
        return values, groups, avail

    def _frame(self, values, groups, m):
        frame = pd.DataFrame(values[:, self.blocks_[m]],
                             columns=self._names(m, len(self.blocks_[m])))
        if groups is not None:
            frame[self.group_col] = groups
        return frame

    def _normalise(self, values, groups, avail, *, fit: bool) -> dict:
        """Modality → standardised matrix (rows without the modality are 0)."""
        out = {}
        if fit:
            self.normalizers_ = {}
        for j, m in enumerate(self.modalities_):
            rows = avail[:, j]
            raw = values[:, self.blocks_[m]]
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                # a speaker with none of this modality has empty statistics: expected
                warnings.simplefilter("ignore", RuntimeWarning)
                if self.speaker_norm:
                    frame = self._frame(values, groups, m)
                    if fit:
                        self.normalizers_[m] = SpeakerNormalizer(
                            group_col=self.group_col, min_clips=self.min_speaker_clips
                        ).fit(frame[rows])
                    z = self.normalizers_[m].transform(frame)
                else:
                    if fit:
                        self.normalizers_[m] = StandardScaler().fit(np.nan_to_num(raw[rows]))
                    z = np.nan_to_num(self.normalizers_[m].transform(np.nan_to_num(raw)))
            z[~rows] = 0.0
            out[m] = z
        return out

    def _reduce(self, Z: dict, avail, *, fit: bool) -> dict:
        """Modality → PCA components (rows without the modality are 0).

        One PCA per modality. (A PCA per feature set was measured on the paired
        benchmark: concat fell from 86.1 % to 79.4 % with the blend head and
        from 83.2 % to 56.2 % with the stacking head, gated rose from 91.9 %
        to 92.6 %; so per modality it stays.)
        """
        if fit:
            self.pcas_, self.reduced_names_ = {}, {}
        out = {}
        for j, m in enumerate(self.modalities_):
            z = Z[m]
            if fit:
                rows = avail[:, j]
                k = None if self.pca_components is None else int(
                    min(self.pca_components, z.shape[1], max(1, rows.sum() - 1)))
                self.pcas_[m] = None if k is None else _pca(z[rows], k, self.random_state)
                n = z.shape[1] if self.pcas_[m] is None else self.pcas_[m].n_components_
                self.reduced_names_[m] = [f"{m}__pca_{i:03d}" for i in range(n)]
            pca = self.pcas_[m]
            r = z if pca is None else pca.transform(z)
            if pca is not None:
                r = r / np.sqrt(np.maximum(pca.explained_variance_[0], 1e-12))
            r[~avail[:, j]] = 0.0
            out[m] = r.astype(np.float64)
        return out

    # -- fit ---------------------------------------------------------------
    def fit(self, X, y):
        """Fit on a feature table (or matrix) and its emotion labels.

        Parameters
        ----------
        X : pandas.DataFrame or array-like of shape (n_clips, n_features)
            A table from :func:`~mer_pipeline.features.load_features`
            (features named ``<modality>__…``; metadata, the speaker column
            and the frame-sequence columns are allowed) or a matrix. A
            modality whose values are all NaN in a row is missing there.
        y : array-like of shape (n_clips,)
            Emotion labels.

        Returns
        -------
        self
        """
        self._check_params()
        if y is None:
            raise ValueError("MultimodalEmotionClassifier requires y to be passed, "
                             "but the target y is None")
        values, groups, avail = self._split(X, fit=True)
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        if len(y) != len(values):
            raise ParameterError(f"X has {len(values)} rows but y has {len(y)}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ParameterError(f"need at least two classes to fit, got "
                                 f"{len(self.classes_)} class")
        if not avail.any(axis=1).all():
            raise ParameterError(f"{int((~avail.any(axis=1)).sum())} training clip(s) have no "
                                 "feature of any modality (all NaN)")
        self.prior_ = np.bincount(codes, minlength=len(self.classes_)) / len(codes)
        Z = self._normalise(values, groups, avail, fit=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"sklearn\.feature_selection.*")
            if self.fusion == "late":
                self._fit_late(Z, codes, groups, avail)
            elif self.fusion == "concat":
                self._fit_concat(Z, codes, groups, avail)
            else:
                self._fit_net(X, Z, codes, groups, avail)
        return self

    def _base(self):
        est = EmotionClassifier() if self.estimator is None else clone(self.estimator)
        params = est.get_params(deep=False)
        if "speaker_norm" in params:
            est.set_params(speaker_norm=False)
        if "random_state" in params and params["random_state"] is None:
            est.set_params(random_state=self.random_state)
        return est

    def _table(self, z, names, groups):
        frame = pd.DataFrame(z, columns=names)
        frame[self.group_col] = groups if groups is not None else ""
        return frame

    def _names(self, m, n):
        if hasattr(self, "feature_names_in_") and n == len(self.blocks_[m]):
            return [str(c) for c in self.feature_names_in_[self.blocks_[m]]]
        return [f"{m}__x_{i}" for i in range(n)]  # one feature block, as a table would be

    def _inner_folds(self, n, codes, groups):
        if groups is not None and len(np.unique(groups)) >= self.inner_cv:
            return list(GroupKFold(n_splits=self.inner_cv).split(np.zeros(n), codes, groups))
        k = int(min(self.inner_cv, np.bincount(codes).min())) if len(codes) else 0
        if k < 2:
            raise ParameterError("too few clips per class for the inner folds of late fusion")
        return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=self.random_state)
                    .split(np.zeros(n), codes))

    def _meta_features(self, logps: dict, avail) -> np.ndarray:
        parts = []
        for j, m in enumerate(self.modalities_):
            lp = np.where(avail[:, [j]], logps[m], 0.0)
            parts += [lp, avail[:, [j]].astype(np.float64)]
        return np.hstack(parts)

    def _meta(self):
        if self.meta_learner == "logreg":
            return LogisticRegression(C=self.meta_C, max_iter=5000)
        if self.meta_learner == "svm":
            return CalibratedClassifierCV(SVC(C=self.meta_C, kernel="rbf", gamma="scale",
                                              random_state=self.random_state),
                                          method="sigmoid", cv=3, ensemble=False)
        if self.meta_learner == "knn":
            return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15,
                                                                        weights="distance"))
        return MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-2, max_iter=2000,
                             random_state=self.random_state)

    def _augment_masks(self, avail):
        """Availability patterns to train on: the real one, plus (``missing_augment``)
        each single modality of the clips that have all of them."""
        masks = [avail]
        if self.missing_augment and len(self.modalities_) > 1:
            full = avail.all(axis=1)
            for j in range(len(self.modalities_)):
                only = np.zeros_like(avail)
                only[:, j] = True
                masks.append(np.where(full[:, None], only, avail)[full])
        return masks

    def _evidence(self, Z, codes, groups, avail) -> dict:
        """Fit one ``estimator`` per modality; return its out-of-fold log-probabilities.

        The out-of-fold predictions come from ``inner_cv`` speaker-grouped folds
        of the training clips, so what the fusion learns from looks like what
        it will see on unseen speakers.
        """
        n = len(codes)
        folds = self._inner_folds(n, codes, groups)
        self.estimators_ = {}
        oof = {}
        for j, m in enumerate(self.modalities_):
            names = self._names(m, Z[m].shape[1])
            table = self._table(Z[m], names, groups)
            rows = np.flatnonzero(avail[:, j])
            lp = np.zeros((n, len(self.classes_)))
            for train, test in folds:
                tr, te = np.intersect1d(train, rows), np.intersect1d(test, rows)
                if len(te) == 0:
                    continue
                est = self._base().fit(table.iloc[tr], codes[tr])
                lp[te] = _log_proba(est, table.iloc[te], len(self.classes_))
            oof[m] = lp
            self.estimators_[m] = self._base().fit(table.iloc[rows], codes[rows])
        return oof

    def _evidence_predict(self, Z, groups, avail) -> dict:
        n, k = len(avail), len(self.classes_)
        logps = {}
        for j, m in enumerate(self.modalities_):
            lp = np.zeros((n, k))
            rows = np.flatnonzero(avail[:, j])
            if len(rows):
                table = self._table(Z[m][rows], self._names(m, Z[m].shape[1]),
                                    None if groups is None else groups[rows])
                lp[rows] = _log_proba(self.estimators_[m], table, k)
            logps[m] = lp
        return logps

    def _fit_late(self, Z, codes, groups, avail):
        oof = self._evidence(Z, codes, groups, avail)
        full = avail.all(axis=1)
        F, t = [], []
        for k, mask in enumerate(self._augment_masks(avail)):
            sel = slice(None) if k == 0 else full
            F.append(self._meta_features({m: oof[m][sel] for m in oof}, mask))
            t.append(codes[sel])
        self.meta_ = self._meta().fit(np.vstack(F), np.concatenate(t))

    def _fit_concat(self, Z, codes, groups, avail):
        R = self._reduce(Z, avail, fit=True)
        names = [n for m in self.modalities_ for n in self.reduced_names_[m]]
        full = avail.all(axis=1)
        parts, t, g = [], [], []
        for k, mask in enumerate(self._augment_masks(avail)):
            sel = np.ones(len(codes), bool) if k == 0 else full
            parts.append(np.hstack([np.where(mask[:, [j]], R[m][sel], 0.0)
                                    for j, m in enumerate(self.modalities_)]))
            t.append(codes[sel])
            g.append(groups[sel] if groups is not None else np.full(sel.sum(), ""))
        table = self._table(np.vstack(parts), names, np.concatenate(g))
        self.estimators_ = {"fused": self._base().fit(table, np.concatenate(t))}
        self.fused_names_ = names

    # -- networks ----------------------------------------------------------
    def _sequences(self, X, *, fit: bool) -> dict:
        """Modality → list of frame arrays (or None per clip) when the networks use them."""
        out = {}
        for m in self.modalities_:
            col = _sequence_column(m)
            use = (self.use_sequences and isinstance(X, pd.DataFrame) and col is not None
                   and col in X.columns)
            if fit:
                self.sequences_[m] = bool(use and any(s is not None for s in X[col]))
            elif self.sequences_.get(m) and not use:
                raise FeatureTableError(
                    f"this model attends over the {m} frame sequences, but the table has no "
                    f"{col!r} column: load the features folder with load_features(folder) "
                    f"(it reads {m}_frames.parquet beside the CSV)")
            if self.sequences_.get(m):
                out[m] = [s if isinstance(s, np.ndarray) and len(s) else None for s in X[col]]
        return out

    def _tokens(self, X, R, groups, avail, *, fit: bool):
        """Per modality: padded token array (n, T, d) and mask (n, T) of real frames."""
        n = len(avail)
        if fit:
            self.sequences_, self.seq_scalers_, self.frame_pcas_ = {}, {}, {}
        seqs = self._sequences(X, fit=fit)
        tokens = {}
        for j, m in enumerate(self.modalities_):
            if m not in seqs:  # one token: the modality's vector
                tokens[m] = (R[m][:, None, :].astype(np.float32), avail[:, [j]].copy())
                continue
            raw = seqs[m]
            if fit:
                self.seq_scalers_[m] = _SequenceScaler(self.min_speaker_clips,
                                                       self.speaker_norm).fit(raw)
            scaled = self.seq_scalers_[m].transform(raw, groups)
            if fit:
                frames = np.vstack([s for s in scaled if s is not None])
                k = int(min(self.frame_components, frames.shape[1], max(1, len(frames) - 1)))
                pca = None
                if frames.shape[1] > self.frame_components:
                    pca = _pca(frames, k, self.random_state)
                self.frame_pcas_[m] = pca
            pca = self.frame_pcas_[m]
            if fit:
                width = next(s.shape[1] for s in scaled if s is not None)
                self.frame_dims_ = {**getattr(self, "frame_dims_", {}),
                                    m: pca.n_components_ if pca is not None else width}
                self.frame_widths_ = {**getattr(self, "frame_widths_", {}), m: width}
            dim = self.frame_dims_[m]
            bad = [i for i, s in enumerate(scaled) if s is not None
                   and s.shape[1] != self.frame_widths_[m]]
            if bad:
                raise FeatureTableError(f"{m} frames of clip {bad[0]} have {scaled[bad[0]].shape[1]}"
                                        f" features; the model was fit on "
                                        f"{self.frame_widths_[m]}")
            lengths = [0 if s is None or not avail[i, j] else len(s) for i, s in enumerate(scaled)]
            T = max(1, max(lengths))
            arr = np.zeros((n, T, dim), np.float32)
            mask = np.zeros((n, T), bool)
            for i, s in enumerate(scaled):
                if lengths[i]:
                    v = s if pca is None else pca.transform(s)
                    if pca is not None:
                        v = v / np.sqrt(np.maximum(pca.explained_variance_[0], 1e-12))
                    arr[i, :lengths[i]] = v
                    mask[i, :lengths[i]] = True
            tokens[m] = (arr, mask)
        return tokens

    def _net_inputs(self, X, Z, groups, avail, *, fit: bool, evidence=None):
        R = self._reduce(Z, avail, fit=fit)
        tokens = self._tokens(X, R, groups, avail, fit=fit)
        if self.net_evidence:
            if evidence is None:
                evidence = self._evidence_predict(Z, groups, avail)
            # log-probabilities of the modality's own classifier, centred, beside its PCA
            R = {m: np.hstack([np.where(avail[:, [j]], evidence[m] - evidence[m].mean(
                axis=1, keepdims=True), 0.0), R[m]]) for j, m in enumerate(self.modalities_)}
        return R, tokens

    def _fit_net(self, X, Z, codes, groups, avail):
        import torch

        evidence = self._evidence(Z, codes, groups, avail) if self.net_evidence else None
        R, tokens = self._net_inputs(X, Z, groups, avail, fit=True, evidence=evidence)
        dims = [(R[m].shape[1], tokens[m][0].shape[2]) for m in self.modalities_]
        seed = 0 if self.random_state is None else int(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _build_net(self.fusion, dims, len(self.classes_), self.hidden_size,
                             self.n_heads, self.dropout)
            _train(net, R, tokens, avail, codes, self.modalities_, epochs=self.epochs,
                   batch_size=self.batch_size, lr=self.learning_rate,
                   weight_decay=self.weight_decay, modality_dropout=self.modality_dropout,
                   seed=seed)
        self.net_ = net.eval()

    # -- predict -----------------------------------------------------------
    def _predict_log_proba_available(self, X):
        check_is_fitted(self, ["classes_", "modalities_"])
        values, groups, avail = self._split(X, fit=False)
        Z = self._normalise(values, groups, avail, fit=False)
        n, k = len(values), len(self.classes_)
        any_ = avail.any(axis=1)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"sklearn\.feature_selection.*")
            if self.fusion == "late":
                logps = self._evidence_predict(Z, groups, avail)
                proba = _proba_in(self.meta_, self._meta_features(logps, avail), k)
            elif self.fusion == "concat":
                R = self._reduce(Z, avail, fit=False)
                fused = np.hstack([R[m] for m in self.modalities_])
                table = self._table(fused, self.fused_names_, groups)
                proba = _proba_in(self.estimators_["fused"], table, k)
            else:
                R, tokens = self._net_inputs(X, Z, groups, avail, fit=False)
                proba = _net_proba(self.net_, R, tokens, avail, self.modalities_)
        proba[~any_] = self.prior_
        return proba, avail

    def predict_proba(self, X):
        """Class probabilities, shape ``(n_clips, n_classes)``, columns as ``classes_``.

        A clip with no modality at all gets the training class frequencies
        (and ``"none"`` from :meth:`modalities_used`).
        """
        return self._predict_log_proba_available(X)[0]

    def predict(self, X):
        """Predicted emotion labels."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def modalities_used(self, X) -> np.ndarray:
        """Which modalities each clip's prediction used, e.g. ``"audio+face"``, ``"audio"``.

        A modality counts as used for a clip when the model was trained on it
        and the clip has at least one of its features; ``"none"`` when the
        clip has none (its prediction is the class prior).
        """
        check_is_fitted(self, ["classes_", "modalities_"])
        _, _, avail = self._split(X, fit=False)
        return np.array(["+".join(m for j, m in enumerate(self.modalities_) if row[j]) or "none"
                         for row in avail], dtype=object)


def _pca(z, k, random_state):
    """PCA with at most ``k`` components, and no more than the data's rank.

    Components with (numerically) no variance are dropped: with repeated rows
    (one face image paired with several clips, a still seen in many frames)
    the rank is below ``k``, and a classifier that standardises its inputs
    would blow those null directions up into noise.
    """
    pca = PCA(n_components=k, random_state=random_state).fit(z)
    keep = int(np.sum(pca.explained_variance_ > 1e-6 * pca.explained_variance_[0]))
    if 0 < keep < pca.n_components_:
        pca = PCA(n_components=keep, random_state=random_state).fit(z)
    return pca


def _proba_in(est, X, k):
    """A classifier's probabilities over all ``k`` encoded classes (some may be absent)."""
    p = est.predict_proba(X)
    out = np.zeros((p.shape[0], k))
    out[:, np.asarray(est.classes_, dtype=int)] = p
    return out


def _log_proba(est, X, k):
    return np.log(np.clip(_proba_in(est, X, k), 1e-6, 1.0))


# -- the networks: PyTorch is imported only when one is asked for ------------
def _build_net(fusion, dims, n_classes, hidden, heads, dropout):
    from ._nets import FusionNet

    return FusionNet(fusion, dims, n_classes, hidden, heads, dropout)


def _batch(R, tokens, avail, modalities, idx):
    import torch

    vecs = [torch.from_numpy(R[m][idx].astype(np.float32)) for m in modalities]
    toks = [torch.from_numpy(tokens[m][0][idx]) for m in modalities]
    masks = [torch.from_numpy(tokens[m][1][idx]) for m in modalities]
    return vecs, toks, masks, torch.from_numpy(avail[idx].astype(np.float32))


def _train(net, R, tokens, avail, codes, modalities, *, epochs, batch_size, lr, weight_decay,
           modality_dropout, seed):
    import torch

    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * int(np.ceil(len(codes) / batch_size)))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    y = torch.from_numpy(codes.astype(np.int64))
    k = len(modalities)
    net.train()
    for _ in range(epochs):
        order = rng.permutation(len(codes))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            vecs, toks, masks, av = _batch(R, tokens, avail, modalities, idx)
            if k > 1 and modality_dropout > 0:
                # hide one modality of some clips that have them all
                full = (av.sum(1) == k).numpy()
                hide = full & (rng.random(len(idx)) < modality_dropout)
                which = rng.integers(0, k, len(idx))
                for j in range(k):
                    rows = torch.from_numpy(hide & (which == j))
                    av[rows, j] = 0.0
                    masks[j][rows] = False
                    vecs[j][rows] = 0.0
            loss = loss_fn(net(vecs, toks, masks, av), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()


def _net_proba(net, R, tokens, avail, modalities, batch_size=256):
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(avail), batch_size):
            idx = np.arange(start, min(start + batch_size, len(avail)))
            logits = net(*_batch(R, tokens, avail, modalities, idx))
            out.append(torch.softmax(logits, dim=1).numpy().astype(np.float64))
    return np.vstack(out) if out else np.zeros((0, 0))


FUSION_CHOICES = ("auto", "none") + FUSIONS


def table_modalities(table) -> list[str]:
    """Modalities with feature columns in a table: ``["audio", "face"]``, …"""
    cols = table.columns if isinstance(table, pd.DataFrame) else table
    return [m for m in ("audio", "face") if any(str(c).startswith(f"{m}__") for c in cols)]


def build_estimator(table=None, *, fusion: str = "auto", model: str | None = None,
                    speaker_norm: bool = True, random_state: int | None = 0, **params):
    """The estimator ``mer evaluate`` and ``mer train`` fit: one place decides.

    Parameters
    ----------
    table : pandas.DataFrame or None
        The feature table (only its columns are looked at, for ``"auto"``).
    fusion : {"auto", "none", "late", "concat", "gated", "cross_attention"}
        ``"auto"``: :class:`MultimodalEmotionClassifier` with ``late`` fusion
        when the table has audio and face features, otherwise
        :class:`~mer_pipeline.ensemble.EmotionClassifier`. ``"none"``:
        ``EmotionClassifier`` over all columns, whatever the modalities.
    model : str or None
        ``EmotionClassifier(model=...)``: the classifier itself, or each
        modality's classifier (``late``) / the fused one (``concat``) inside
        the multimodal estimator; ``None`` keeps the default (``blend``).
    speaker_norm : bool
    random_state : int or None
    **params
        More :class:`MultimodalEmotionClassifier` (or ``EmotionClassifier``)
        hyper-parameters.

    Returns
    -------
    estimator (unfitted)
    """
    if fusion not in FUSION_CHOICES:
        raise ParameterError(f"fusion must be one of {', '.join(FUSION_CHOICES)}; "
                             f"got {fusion!r}")
    kw = {} if model is None else {"model": model}
    if fusion == "auto":
        fusion = "late" if table is not None and len(table_modalities(table)) > 1 else "none"
    if fusion == "none":
        return EmotionClassifier(speaker_norm=speaker_norm, random_state=random_state,
                                 **kw, **params)
    inner = EmotionClassifier(random_state=random_state, **kw) if kw else None
    return MultimodalEmotionClassifier(fusion=fusion, estimator=inner,
                                       speaker_norm=speaker_norm, random_state=random_state,
                                       **params)
