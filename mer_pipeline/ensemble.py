"""The emotion classifier: speaker normalisation, scaling, PCA and a stacking ensemble."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier, StackingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .exceptions import ParameterError
from .speaker import SpeakerNormalizer, split_groups

__all__ = ["EmotionClassifier", "MODELS"]

MODELS = ("stacking", "svc", "logreg", "rf", "xgb")


class EmotionClassifier(ClassifierMixin, BaseEstimator):
    """Emotion classifier over a feature table, in the scikit-learn manner.

    Inside ``fit`` only (so cross-validation never leaks): per-speaker
    standardisation (or plain standardisation), PCA to at most
    ``pca_components`` components (never more than the data allows), and the
    classifier. The default classifier is the design's stacking ensemble:
    an RBF SVC, a random forest and XGBoost, whose out-of-fold class
    probabilities feed a meta SVC. The out-of-fold predictions come from
    speaker-grouped folds when speaker ids are given, so the meta-learner is
    trained on the same kind of unseen-speaker predictions it will face.

    Parameters
    ----------
    model : {"stacking", "svc", "logreg", "rf", "xgb"}, default="stacking"
        The classifier after PCA.
    speaker_norm : bool, default=True
        Standardise each speaker by its own statistics
        (:class:`~mer_pipeline.speaker.SpeakerNormalizer`).
    group_col : str, default="group"
        Column of the feature table with the speaker id.
    min_speaker_clips : int, default=10
        Fewest clips of a speaker for its own statistics to be used.
    pca_components : int or None, default=300
        Upper bound on PCA components; ``None`` skips PCA.
    svc_C : float, default=10.0
        C of the base SVC (and of the ``svc`` model).
    logreg_C : float, default=0.05
        C of the ``logreg`` model.
    rf_n_estimators : int, default=500
    xgb_n_estimators : int, default=300
    xgb_max_depth : int, default=3
    xgb_learning_rate : float, default=0.1
    meta_C : float, default=1.0
        C of the meta SVC.
    stack_cv : int, default=5
        Folds for the out-of-fold predictions the meta-learner is fit on.
    random_state : int, default=0
    n_jobs : int or None, default=None
        Threads for the forest and XGBoost.

    Attributes
    ----------
    classes_ : np.ndarray
        Class labels, sorted.
    normalizer_ : SpeakerNormalizer or StandardScaler
    pca_ : PCA or None
    estimator_ : fitted classifier
    n_features_in_ : int
    feature_names_in_ : np.ndarray of str
        Feature columns seen in ``fit`` (when fit on a feature table).

    Examples
    --------
    >>> from mer_pipeline import EmotionClassifier, load_features  # doctest: +SKIP
    >>> table = load_features("features/")  # doctest: +SKIP
    >>> clf = EmotionClassifier().fit(table, table["emotion"])  # doctest: +SKIP
    """

    def __init__(self, *, model: str = "stacking", speaker_norm: bool = True,
                 group_col: str = "group", min_speaker_clips: int = 10,
                 pca_components: int | None = 300, svc_C: float = 10.0,
                 logreg_C: float = 0.05, rf_n_estimators: int = 500,
                 xgb_n_estimators: int = 300, xgb_max_depth: int = 3,
                 xgb_learning_rate: float = 0.1, meta_C: float = 1.0, stack_cv: int = 5,
                 random_state: int | None = 0, n_jobs: int | None = None):
        self.model = model
        self.speaker_norm = speaker_norm
        self.group_col = group_col
        self.min_speaker_clips = min_speaker_clips
        self.pca_components = pca_components
        self.svc_C = svc_C
        self.logreg_C = logreg_C
        self.rf_n_estimators = rf_n_estimators
        self.xgb_n_estimators = xgb_n_estimators
        self.xgb_max_depth = xgb_max_depth
        self.xgb_learning_rate = xgb_learning_rate
        self.meta_C = meta_C
        self.stack_cv = stack_cv
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- building blocks -------------------------------------------------
    def _svc(self, C):
        return SVC(C=C, kernel="rbf", gamma="scale", probability=True,
                   class_weight="balanced", random_state=self.random_state)

    def _xgb(self):
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=self.xgb_n_estimators, max_depth=self.xgb_max_depth,
                             learning_rate=self.xgb_learning_rate, subsample=0.8,
                             colsample_bytree=0.5, tree_method="hist",
                             random_state=self.random_state, n_jobs=self.n_jobs, verbosity=0)

    def _rf(self):
        return RandomForestClassifier(n_estimators=self.rf_n_estimators, max_features="sqrt",
                                      class_weight="balanced", random_state=self.random_state,
                                      n_jobs=self.n_jobs)

    def _classifier(self, Z, y, groups):
        if self.model == "svc":
            return self._svc(self.svc_C)
        if self.model == "logreg":
            return LogisticRegression(C=self.logreg_C, max_iter=5000, class_weight="balanced")
        if self.model == "rf":
            return self._rf()
        if self.model == "xgb":
            return self._xgb()
        # stacking: out-of-fold probabilities from speaker-grouped folds where possible
        if groups is not None and len(np.unique(groups)) >= self.stack_cv:
            cv = list(GroupKFold(n_splits=self.stack_cv).split(Z, y, groups))
        else:
            cv = StratifiedKFold(n_splits=self.stack_cv, shuffle=True,
                                 random_state=self.random_state)
        return StackingClassifier(
            estimators=[("svc", self._svc(self.svc_C)), ("rf", self._rf()),
                        ("xgb", self._xgb())],
            final_estimator=self._svc(self.meta_C), cv=cv, stack_method="predict_proba",
            n_jobs=None)

    def _check_params(self):
        if self.model not in MODELS:
            raise ParameterError(f"model must be one of {', '.join(MODELS)}; got {self.model!r}")
        if self.pca_components is not None and (
                not isinstance(self.pca_components, (int, np.integer)) or self.pca_components < 1):
            raise ParameterError(f"pca_components must be a positive integer or None; "
                                 f"got {self.pca_components!r}")

    # -- scikit-learn API ------------------------------------------------
    def fit(self, X, y):
        """Fit on a feature table (or matrix) and its emotion labels."""
        self._check_params()
        values, groups, names = split_groups(X, self.group_col)
        y = np.asarray(y)
        check_classification_targets(y)
        if len(y) != len(values):
            raise ParameterError(f"X has {len(values)} rows but y has {len(y)}")
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        if len(self.classes_) < 2:
            raise ParameterError("need at least two classes to fit, got "
                                 f"{len(self.classes_)}")
        codes = self._encoder.transform(y)
        if self.speaker_norm:
            self.normalizer_ = SpeakerNormalizer(group_col=self.group_col,
                                                 min_clips=self.min_speaker_clips)
            Z = self.normalizer_.fit(X).transform(X)
        else:
            self.normalizer_ = StandardScaler()
            Z = np.nan_to_num(self.normalizer_.fit_transform(np.nan_to_num(values)))
        self.n_features_in_ = values.shape[1]
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        self.pca_ = None
        if self.pca_components is not None:
            k = int(min(self.pca_components, Z.shape[0] - 1, Z.shape[1]))
            if k >= 1:
                self.pca_ = PCA(n_components=k, random_state=self.random_state)
                Z = self.pca_.fit_transform(Z)
        self.estimator_ = self._classifier(Z, codes, groups).fit(Z, codes)
        return self

    def _transform(self, X):
        check_is_fitted(self, "estimator_")
        values, _, names = split_groups(X, self.group_col)
        if values.shape[1] != self.n_features_in_:
            raise ParameterError(f"X has {values.shape[1]} features, but EmotionClassifier is "
                                 f"expecting {self.n_features_in_} features as input")
        if names is not None and hasattr(self, "feature_names_in_") \
                and list(names) != list(self.feature_names_in_):
            missing = sorted(set(self.feature_names_in_) - set(names))
            raise ParameterError("feature names differ from those seen in fit"
                                 + (f"; missing: {', '.join(missing[:5])}" if missing else ""))
        if self.speaker_norm:
            Z = self.normalizer_.transform(X)
        else:
            Z = np.nan_to_num(self.normalizer_.transform(np.nan_to_num(values)))
        return self.pca_.transform(Z) if self.pca_ is not None else Z

    def predict_proba(self, X):
        """Class probabilities, shape ``(n_clips, n_classes)``, columns as ``classes_``."""
        return self.estimator_.predict_proba(self._transform(X))

    def predict(self, X):
        """Predicted emotion labels."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
