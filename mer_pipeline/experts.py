"""Several corpora in one model: a shared classifier plus one expert per training corpus.

Trained on several corpora, one classifier serves clips of none of them better (the README's
"Across corpora") but the clips of each of them worse than a classifier of that corpus alone:
RAVDESS actor-grouped fell from 84.2 % to 81.8 % with nEMO and TurEV-DB added. The corpora
differ in language, channel and acting, and one model has to split its capacity between
them. :class:`CorpusExperts` keeps both: the shared model for a clip of a corpus it has not
seen, and, for a clip of a training corpus (its ``corpus`` column), the expert of that corpus
mixed with the shared model (the shared model brings the other corpora's clips of the same
emotions: the mixture beat the expert alone on each of the three shared corpora).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from .exceptions import ParameterError

__all__ = ["CorpusExperts", "EXPERT_WEIGHT", "MIN_EXPERT_CLIPS"]

#: Weight of a corpus's expert in the mixture for that corpus's clips (the shared model
#: has the rest): chosen by speaker-grouped CV within each of the three shared corpora with
#: the other two added to training, in a linear probe (0.5 and 0.7 tried; README, "Across
#: corpora").
EXPERT_WEIGHT = 0.7
#: Fewest clips of a corpus for it to get an expert.
MIN_EXPERT_CLIPS = 100


class CorpusExperts(ClassifierMixin, BaseEstimator):
    """A shared classifier over all training corpora and an expert per corpus.

    ``predict_proba`` gives a clip of a training corpus
    ``expert_weight * expert + (1 - expert_weight) * shared`` (the expert's
    probabilities put on the shared model's classes, 0 for classes the corpus
    lacks), and any other clip the shared model's. A table of one corpus
    trains the shared model only. Speaker batches stay whole: the clips of one
    corpus are scored together by its expert (a speaker belongs to one corpus).

    Parameters
    ----------
    estimator : classifier or None
        Cloned for the shared model and each expert (default
        :class:`~mer_pipeline.ensemble.EmotionClassifier`).
    corpus_col : str, default="corpus"
        Column naming each clip's corpus (``mer features`` writes it; a clip
        without it, or of another corpus, gets the shared model alone).
    expert_weight : float in [0, 1], default=0.7
        :data:`EXPERT_WEIGHT`.
    min_corpus_clips : int, default=100
        A corpus with fewer training clips, or a single class, gets no expert.

    Attributes
    ----------
    shared_ : classifier
        Fitted on every training clip.
    experts_ : dict of str to classifier
        Corpus → its expert, fitted on that corpus's clips.
    classes_ : np.ndarray
        The shared model's classes.
    feature_names_in_, n_features_in_
        The shared model's.
    """

    def __init__(self, estimator=None, *, corpus_col: str = "corpus",
                 expert_weight: float = EXPERT_WEIGHT, min_corpus_clips: int = MIN_EXPERT_CLIPS):
        self.estimator = estimator
        self.corpus_col = corpus_col
        self.expert_weight = expert_weight
        self.min_corpus_clips = min_corpus_clips

    def _base(self):
        if self.estimator is not None:
            return self.estimator
        from .ensemble import EmotionClassifier

        return EmotionClassifier()

    def fit(self, X: pd.DataFrame, y):
        """Fit the shared model on every clip and an expert on each corpus's.

        Parameters
        ----------
        X : pandas.DataFrame
            The feature table, with the ``corpus_col`` column (without it: the
            shared model only).
        y : array-like of str
        """
        if not 0.0 <= float(self.expert_weight) <= 1.0:
            raise ParameterError(f"expert_weight must be in [0, 1]; got {self.expert_weight!r}")
        y = np.asarray(y)
        self.shared_ = clone(self._base()).fit(X, y)
        self.experts_ = {}
        corpora = self._corpora(X)
        if corpora is not None and len(pd.unique(corpora)) > 1 and self.expert_weight > 0:
            for name in sorted(pd.unique(corpora)):
                rows = corpora == name
                if rows.sum() >= self.min_corpus_clips and len(np.unique(y[rows])) > 1:
                    self.experts_[str(name)] = clone(self._base()).fit(X[rows], y[rows])
        self.classes_ = self.shared_.classes_
        for attr in ("feature_names_in_", "n_features_in_"):
            if hasattr(self.shared_, attr):
                setattr(self, attr, getattr(self.shared_, attr))
        return self

    def _corpora(self, X):
        if not isinstance(X, pd.DataFrame) or self.corpus_col not in X.columns:
            return None
        return X[self.corpus_col].astype(str).to_numpy()

    def predict_proba(self, X: pd.DataFrame, profiles=None) -> np.ndarray:
        """Class probabilities: the corpus's expert mixed with the shared model for clips
        of a training corpus, the shared model's for the others.

        Parameters
        ----------
        X : pandas.DataFrame
        profiles : dict or None
            Enrolled speaker profiles, passed to both models (only when given).

        Returns
        -------
        np.ndarray, shape (n_clips, n_classes)
        """
        kw = {} if profiles is None else {"profiles": profiles}
        proba = np.asarray(self.shared_.predict_proba(X, **kw), dtype=float)
        corpora = self._corpora(X)
        if corpora is None or not self.experts_:
            return proba
        w = float(self.expert_weight)
        known = list(self.classes_)
        for name, expert in self.experts_.items():
            rows = corpora == name
            if not rows.any():
                continue
            part = np.asarray(expert.predict_proba(X[rows], **kw), dtype=float)
            aligned = np.zeros((part.shape[0], len(self.classes_)))  # 0 for classes it lacks
            aligned[:, [known.index(c) for c in expert.classes_]] = part
            proba[rows] = w * aligned + (1 - w) * proba[rows]
        return proba

    def predict(self, X: pd.DataFrame, profiles=None) -> np.ndarray:
        """The most probable class of each clip (:meth:`predict_proba`)."""
        return self.classes_[np.argmax(self.predict_proba(X, profiles=profiles), axis=1)]

    def profile_stats(self, profile):
        """The shared model's statistics of an enrolled speaker (see its ``profile_stats``)."""
        return self.shared_.profile_stats(profile)

    def profile_weight(self, profile) -> float:
        """The shared model's trust in a profile (see its ``profile_weight``)."""
        return self.shared_.profile_weight(profile)

    def __getattr__(self, name):
        # a fitted model's other learned state (modalities_, sequences_, adaptation_, ...):
        # the shared model's; parameters and unfitted lookups fail as usual
        if name.endswith("_") and not name.startswith("_") and "shared_" in self.__dict__:
            return getattr(self.__dict__["shared_"], name)
        raise AttributeError(name)
