"""Training across corpora whose label sets differ.

Corpora label different emotions: RAVDESS has *calm* and *disgust*, nEMO neither,
TurEV-DB only angry, calm, happy and sad. A softmax over the union of their labels
teaches each clip against every emotion it is not, so a Polish clip is taught "not
calm" only because nEMO never labels calm, and the model learns to tell *calm* by
the corpus rather than by the voice. Here each training clip's softmax runs over the
classes its own corpus labels (a partial-label, or masked, softmax): a clip is never
taught against an emotion its corpus does not have. Measured leave-one-corpus-out
over RAVDESS, nEMO and TurEV-DB (README, *Across corpora*).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .exceptions import ParameterError

__all__ = ["LabelSetLogisticRegression", "corpus_label_sets", "label_set_mask"]


def corpus_label_sets(corpora, codes, n_classes: int):
    """Which classes each training clip's corpus labels.

    Parameters
    ----------
    corpora : array-like of str or None
        Corpus name per clip (missing or empty: unknown).
    codes : array-like of int
        Class index per clip.
    n_classes : int

    Returns
    -------
    mask : np.ndarray of bool, shape (n_clips, n_classes), or None
        Row ``i``: the classes clip ``i`` is weighed against. ``None`` where every
        clip may take every class (one corpus, or all label the same classes).
        A clip of unknown corpus, or of a corpus with fewer than two classes (whose
        clips would teach nothing under a softmax of one class), takes all.
    sets : dict of str to list of int
        The classes of each corpus whose clips are restricted.
    """
    codes = np.asarray(codes)
    if corpora is None:
        return None, {}
    names = _names(corpora)
    sets = {}
    for name in pd.unique(names):
        have = np.unique(codes[names == name])
        if name and 2 <= len(have) < n_classes:
            sets[str(name)] = [int(c) for c in have]
    return (label_set_mask(names, sets, np.arange(n_classes)) if sets else None), sets


def label_set_mask(corpora, sets: dict, classes) -> np.ndarray:
    """Per clip, the classes of its corpus's label set (every class for a corpus not in
    ``sets``).

    Parameters
    ----------
    corpora : array-like of str
        Corpus name per clip.
    sets : dict of str to list
        Classes of each restricted corpus, as elements of ``classes``.
    classes : array-like

    Returns
    -------
    np.ndarray of bool, shape (n_clips, n_classes)
    """
    names, classes = _names(corpora), np.asarray(classes)
    mask = np.ones((len(names), len(classes)), dtype=bool)
    for name, have in sets.items():
        mask[names == name] = np.isin(classes, have)
    return mask


def _names(corpora) -> np.ndarray:
    return pd.Series(corpora, dtype=object).fillna("").astype(str).to_numpy()


def _masked_loss(theta, X, codes, allowed, C):
    """The objective of a label-set fit, and its gradient, at ``theta`` (W then b)."""
    n, d = X.shape
    k = allowed.shape[1]
    W, b = theta[:k * d].reshape(k, d), theta[k * d:]
    reg = 1.0 / (C * n)
    z = X @ W.T + b + np.where(allowed, 0.0, -np.inf)
    lse = logsumexp(z, axis=1, keepdims=True)
    value = float((lse[:, 0] - z[np.arange(n), codes]).mean() + 0.5 * reg * (W * W).sum())
    g = np.exp(z - lse)
    g[np.arange(n), codes] -= 1.0
    g /= n
    return value, np.concatenate([(g.T @ X + reg * W).ravel(), g.sum(axis=0)])


class LabelSetLogisticRegression(ClassifierMixin, BaseEstimator):
    """Multinomial L2 logistic regression whose clips may each have a label set.

    Without ``label_sets`` (or with every class allowed to every clip) it is
    scikit-learn's :class:`~sklearn.linear_model.LogisticRegression` (lbfgs), to the
    bit. With them, clip ``i``'s softmax runs over the classes ``label_sets[i]``
    allows, minimising the same objective otherwise (mean cross-entropy plus
    ``||W||² / (2 C n)``, intercepts unpenalised) by L-BFGS. Predictions are always
    over all classes.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 strength, as scikit-learn's.
    max_iter : int, default=5000

    Attributes
    ----------
    classes_ : np.ndarray
    coef_ : np.ndarray, shape (n_classes, n_features)
    intercept_ : np.ndarray, shape (n_classes,)
    restricted_ : bool
        Whether the fit used label sets.
    model_ : LogisticRegression or None
        scikit-learn's fitted model, where the fit used no label sets.
    n_iter_ : int
    """

    def __init__(self, C: float = 1.0, *, max_iter: int = 5000):
        self.C = C
        self.max_iter = max_iter

    def fit(self, X, y, label_sets=None):
        """Fit; ``label_sets``: bool array (n_samples, n_classes) over sorted classes."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        if label_sets is not None:
            label_sets = np.asarray(label_sets, dtype=bool)
            if label_sets.shape != (len(y), k):
                raise ParameterError(f"label_sets must have shape {(len(y), k)}, "
                                     f"got {label_sets.shape}")
            if not label_sets[np.arange(len(y)), codes].all():
                raise ParameterError("a clip's label set lacks its own label")
        if label_sets is None or label_sets.all():
            self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(X, y)
            self.coef_, self.intercept_ = self.model_.coef_, self.model_.intercept_
            self.n_iter_, self.restricted_ = int(np.max(self.model_.n_iter_)), False
            return self
        n, d = X.shape
        res = minimize(_masked_loss, np.zeros(k * (d + 1)), args=(X, codes, label_sets, self.C),
                       jac=True, method="L-BFGS-B",
                       # scikit-learn's lbfgs stopping rule (its tol=1e-4)
                       options={"maxiter": self.max_iter, "maxls": 50, "gtol": 1e-4,
                                "ftol": 64 * np.finfo(float).eps})
        self.coef_ = res.x[:k * d].reshape(k, d)
        self.intercept_ = res.x[k * d:]
        self.n_iter_, self.restricted_ = int(res.nit), True
        self.model_ = None
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.model_ is not None:
            return self.model_.decision_function(X)
        return X @ self.coef_.T + self.intercept_

    def predict_proba(self, X):
        check_is_fitted(self, "coef_")
        if self.model_ is not None:
            return self.model_.predict_proba(validate_data(self, X, dtype=np.float64,
                                                           reset=False))
        z = self.decision_function(X)
        return np.exp(z - logsumexp(z, axis=1, keepdims=True))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
