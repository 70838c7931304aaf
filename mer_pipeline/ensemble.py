"""The emotion classifier: speaker normalisation, then a blend of per-feature-set
linear models or the design's stacking ensemble (SVC + random forest + XGBoost
after PCA, meta SVC)."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier, StackingClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from . import _schema
from ._schema import feature_blocks
from .exceptions import ParameterError
from .labelsets import LabelSetLogisticRegression, corpus_label_sets, label_set_mask
from .speaker import (ClassEffects, SpeakerNormalizer, SpeakerPrior, _clip_absurd, _safe_std,
                      check_features, enrolled_rows, record_features, reference_labels,
                      skewed_batches, speaker_rows, split_groups)

__all__ = ["EmotionClassifier", "ProbabilityBlend", "MODELS", "ADAPTATIONS", "ADAPTATION_RULES",
           "feature_blocks", "SKEW_LIMIT", "speaker_skew"]

MODELS = ("blend", "stacking", "svc", "logreg", "rf", "xgb")
#: How a speaker's clips are handled at prediction time (``EmotionClassifier(adaptation=...)``).
ADAPTATIONS = ("auto", "batch", "switch", "class_aware")
#: What each fixed ``adaptation`` does: (a speaker with too few clips, a speaker with enough).
ADAPTATION_RULES = {"batch": ("population", "own"), "switch": ("fallback", "switch"),
                    "class_aware": ("fallback", "class_aware")}
#: ``"switch"``: a batch whose predicted emotion mix (most probable classes, after
#: class-aware normalisation) is further than this total variation distance from the training
#: mix is one-sided and keeps the class-aware statistics. Measured on whisper features,
#: actor-grouped 5-fold on the 20 RAVDESS actors: balanced speaker batches 0.13-0.28, batches
#: of 2-3 of the 8 emotions 0.31 and above; 0.25, 0.35 and 0.45 gave balanced/skewed
#: 83.6/79.1, 84.2/79.1 and 84.2/77.2 %.
SKEW_LIMIT = 0.35
#: Rounds of class-aware re-estimation (predict, re-normalise, predict again).
ADAPT_ROUNDS = 4
#: Speaker-grouped inner folds ``adaptation="auto"`` chooses its rules by.
INNER_FOLDS = 3


class ProbabilityBlend(ClassifierMixin, BaseEstimator):
    """Fit several classifiers on the same data and combine their probabilities.

    Parameters
    ----------
    estimators : list of (str, estimator)
    rule : {"arithmetic", "geometric"}, default="arithmetic"
        ``arithmetic``: the mean of the members' probabilities; ``geometric``:
        their renormalised product (mean log-probability, then softmax), which
        lets a confident member veto but is over-confident.
    """

    def __init__(self, estimators, *, rule: str = "arithmetic"):
        self.estimators = estimators
        self.rule = rule

    def fit(self, X, y, **fit_params):
        """Fit every member on ``X, y`` (``fit_params`` passed to each member's ``fit``)."""
        if self.rule not in ("geometric", "arithmetic"):
            raise ParameterError(f"rule must be geometric or arithmetic; got {self.rule!r}")
        self.estimators_ = [clone(est).fit(X, y, **fit_params) for _, est in self.estimators]
        self.classes_ = self.estimators_[0].classes_
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "estimators_")
        probas = [est.predict_proba(X) for est in self.estimators_]
        if self.rule == "arithmetic":
            return np.mean(probas, axis=0)
        logp = np.mean([np.log(np.clip(p, 1e-12, 1.0)) for p in probas], axis=0)
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class EmotionClassifier(ClassifierMixin, BaseEstimator):
    """Emotion classifier over a feature table, in the scikit-learn manner.

    Everything is fitted inside ``fit`` (so cross-validation never leaks):
    per-speaker standardisation (or plain standardisation), then the model.

    Models:

    ``"blend"`` (default, chosen by measurement on RAVDESS, see README)
        One L2 logistic regression per feature block (each feature set, e.g.
        eGeMAPS, ComParE, librosa, and one over all features), each on the
        ``select_k`` features of its block with the highest ANOVA F (fit on
        the training clips), their class probabilities combined by
        ``blend_rule``.
    ``"stacking"``
        The design's stacking ensemble: an RBF SVC, a random forest and
        XGBoost, each after PCA to at most ``pca_components`` components
        (never more than the data allows), whose out-of-fold class
        probabilities feed a meta SVC. With ``stack_linear=True`` the
        ``blend`` members join the base learners. The out-of-fold predictions
        come from speaker-grouped folds when speaker ids are given, so the
        meta-learner learns from the same kind of unseen-speaker predictions
        it will face.
    ``"svc"``, ``"logreg"``, ``"rf"``, ``"xgb"``
        One of the members alone (after PCA for svc, rf and xgb; the logreg
        is the ``blend`` member over all features).

    Parameters
    ----------
    model : {"blend", "stacking", "svc", "logreg", "rf", "xgb"}, default="blend"
    speaker_norm : bool, default=True
        Standardise each speaker by its own statistics
        (:class:`~mer_pipeline.speaker.SpeakerNormalizer`).
    group_col : str, default="group"
        Column of the feature table with the speaker id.
    corpus_col : str or None, default="corpus"
        Column of the feature table naming each clip's corpus. Trained on
        corpora that label different emotions (RAVDESS has *calm*, nEMO has
        not), each clip's softmax in the linear members (``blend``, ``logreg``)
        runs over the classes its own corpus labels, so no clip is taught
        against an emotion its corpus lacks
        (:class:`~mer_pipeline.labelsets.LabelSetLogisticRegression`; the
        restricted corpora in ``label_sets_``). ``None``, a table without the
        column, one corpus, or corpora that all label the same classes: every
        clip over every class. The other models ignore it.
    min_speaker_clips : int, default=10
        Fewest clips of a speaker for its own statistics to be used.
    adaptation : {"auto", "batch", "switch", "class_aware"}, default="auto"
        How speakers are handled at prediction time (with ``speaker_norm``); two
        rules, one for a speaker with fewer than ``min_speaker_clips`` clips in the
        batch (one clip, a stream) and one for a speaker with enough:

        - lone clips: ``"fallback"``, a second model the classifier trains without
          speaker normalisation; or ``"population"``, the speaker-normalised model
          fed the training population's statistics;
        - batches: ``"own"``, the batch's own mean and scale; ``"class_aware"``,
          statistics with each clip's expected emotion effect removed first
          (:class:`~mer_pipeline.speaker.ClassEffects`, re-estimated over
          :data:`ADAPT_ROUNDS` rounds of prediction starting from the fallback
          model's), which hold for a one-sided batch; or ``"switch"``, the own
          statistics when the class-aware predicted emotion mix looks like the
          training mix (:data:`SKEW_LIMIT`), the class-aware ones otherwise.

        ``"auto"`` chooses both rules by speaker-grouped inner cross-validation
        on the training data (:data:`INNER_FOLDS` folds: the lone-clip rule with
        the better single-clip accuracy; the batch rule with the best mean of
        balanced-batch and one-sided-batch accuracy, the batches of
        :func:`~mer_pipeline.speaker.skewed_batches`; with label sets, each inner
        clip judged among its own corpus's classes), recorded in
        ``adaptation_``; it costs about four times the fit of ``"batch"``. The
        fixed choices are :data:`ADAPTATION_RULES`; ``"batch"`` (population,
        own) is the behaviour before 0.4, with no second model.
    select_k : int, default=1000
        Features kept per block by the linear members (ANOVA F).
    logreg_C : float, default=0.01
        Inverse L2 strength of the linear members (and of the all-features one).
    block_C : tuple of (str, float), default=(("egemaps", 0.1), ("compare", 0.03), ("librosa", 0.03))
        Per-block overrides of ``logreg_C``, by feature-set name (the part after
        ``<modality>__``). Chosen by actor-grouped CV on the 20 RAVDESS actors
        of the benchmark; smaller blocks want weaker regularisation.
    block_k : tuple of (str, int or None), default=(("whisper", None),)
        Per-block overrides of ``select_k`` (``None``: keep every feature of the
        block). Whisper's pooled hidden states are all informative: ANOVA
        selection of 1,000 of its 2,304 cost 0.5 point actor-grouped on RAVDESS
        with speaker normalisation and 1 point without (README).
    blend_rule : {"arithmetic", "geometric"}, default="arithmetic"
        How the linear members' probabilities are combined. The geometric
        rule (a product of experts) scored the same within noise on RAVDESS
        but gives over-confident probabilities; the mean stays calibrated.
    pca_components : int or None, default=300
        Upper bound on PCA components before the SVC/forest/XGBoost members;
        ``None`` skips PCA.
    svc_C : float, default=10.0
    rf_n_estimators : int, default=300
    xgb_n_estimators : int, default=150
    xgb_max_depth : int, default=3
    xgb_learning_rate : float, default=0.15
    meta_C : float, default=1.0
        C of the meta SVC.
    stack_linear : bool, default=False
        Add the linear block members to the stacking's base learners.
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
    fallback_ : fitted classifier or None
        The model trained on population-standardised features (``adaptation``
        other than ``"batch"``): lone clips under the ``"fallback"`` rule, and the
        first predictions of the class-aware statistics.
    adaptation_ : dict
        The rules in use (``lone_clip``, ``batch``) and, for ``"auto"``, the inner
        cross-validation accuracies they were chosen by (``inner``).
    class_effects_ : ClassEffects or None
        Per-emotion offsets from a speaker's mean, for class-aware statistics.
    label_sets_ : dict of str to list of str
        The classes each corpus's training clips were weighed against, for the
        corpora whose label set is not every class (empty: none restricted).
    speaker_prior_ : SpeakerPrior or None
        How speakers' statistics vary in the training data: what enrolled
        reference clips (``predict_proba(X, profiles=...)``) are shrunk by.
    estimator_ : fitted scikit-learn classifier (over encoded labels)
    blocks_ : dict
        Feature block name → column indices.
    n_features_in_ : int
    feature_names_in_ : np.ndarray of str
        Feature columns seen in ``fit`` (when fit on a feature table).

    Examples
    --------
    >>> from mer_pipeline import EmotionClassifier, load_features  # doctest: +SKIP
    >>> table = load_features("features/")  # doctest: +SKIP
    >>> clf = EmotionClassifier().fit(table, table["emotion"])  # doctest: +SKIP
    >>> clf.predict_proba(table).shape  # doctest: +SKIP
    (1200, 8)
    """

    def __init__(self, *, model: str = "blend", speaker_norm: bool = True,
                 group_col: str = "group", corpus_col: str | None = "corpus",
                 min_speaker_clips: int = 10,
                 adaptation: str = "auto", select_k: int = 1000,
                 logreg_C: float = 0.01,
                 block_C: tuple = (("egemaps", 0.1), ("compare", 0.03), ("librosa", 0.03)),
                 block_k: tuple = (("whisper", None),), blend_rule: str = "arithmetic", pca_components: int | None = 300, svc_C: float = 10.0,
                 rf_n_estimators: int = 300, xgb_n_estimators: int = 150,
                 xgb_max_depth: int = 3, xgb_learning_rate: float = 0.15, meta_C: float = 1.0,
                 stack_linear: bool = False, stack_cv: int = 5,
                 random_state: int | None = 0, n_jobs: int | None = None):
        self.model = model
        self.speaker_norm = speaker_norm
        self.group_col = group_col
        self.corpus_col = corpus_col
        self.min_speaker_clips = min_speaker_clips
        self.adaptation = adaptation
        self.select_k = select_k
        self.logreg_C = logreg_C
        self.block_C = block_C
        self.block_k = block_k
        self.blend_rule = blend_rule
        self.pca_components = pca_components
        self.svc_C = svc_C
        self.rf_n_estimators = rf_n_estimators
        self.xgb_n_estimators = xgb_n_estimators
        self.xgb_max_depth = xgb_max_depth
        self.xgb_learning_rate = xgb_learning_rate
        self.meta_C = meta_C
        self.stack_linear = stack_linear
        self.stack_cv = stack_cv
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- building blocks -------------------------------------------------
    def _pca(self, n_samples, n_features):
        if self.pca_components is None:
            return "passthrough"
        # never more components than the training folds allow
        k = int(min(self.pca_components, n_features, max(1, int(n_samples * 0.75) - 1)))
        return PCA(n_components=k, random_state=self.random_state)

    def _linear(self, idx, C, k=-1):
        k = self.select_k if k == -1 else k
        select = SelectKBest(f_classif, k="all" if k is None else min(k, len(idx)))
        return make_pipeline(ColumnTransformer([("cols", "passthrough", list(idx))]), select,
                             LabelSetLogisticRegression(C=C, max_iter=5000))

    def _linear_members(self):
        overrides, ks = dict(self.block_C or ()), dict(self.block_k or ())
        members = []
        for name, idx in self.blocks_.items():
            part = _schema.strip_modality(name)
            C = overrides.get(part, self.logreg_C)
            member = name if part == name else f"{_schema.modality_of(name)}_{part}"
            members.append((f"lin_{member}", self._linear(idx, C, ks.get(part, -1))))
        if len(self.blocks_) > 1:
            members.append(("lin_all", self._linear(range(self.n_features_in_), self.logreg_C)))
        return members

    def _svc(self, C):
        # Platt-scaled probabilities (SVC(probability=True) is deprecated in scikit-learn 1.9)
        return CalibratedClassifierCV(
            SVC(C=C, kernel="rbf", gamma="scale", class_weight="balanced",
                random_state=self.random_state), method="sigmoid", cv=3, ensemble=False)

    def _xgb(self):
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=self.xgb_n_estimators, max_depth=self.xgb_max_depth,
                             learning_rate=self.xgb_learning_rate, subsample=0.8,
                             colsample_bytree=0.3, tree_method="hist",
                             random_state=self.random_state, n_jobs=self.n_jobs, verbosity=0)

    def _rf(self):
        return RandomForestClassifier(n_estimators=self.rf_n_estimators, max_features="sqrt",
                                      class_weight="balanced", random_state=self.random_state,
                                      n_jobs=self.n_jobs)

    def _classifier(self, Z, y, groups):
        n, d = Z.shape
        pca = self._pca(n, d)
        if self.model == "blend":
            members = self._linear_members()
            if len(members) == 1:
                return members[0][1]
            return ProbabilityBlend(members, rule=self.blend_rule)
        if self.model == "logreg":
            return self._linear(range(d), self.logreg_C)
        if self.model == "svc":
            return make_pipeline(pca, self._svc(self.svc_C))
        if self.model == "rf":
            return make_pipeline(pca, self._rf())
        if self.model == "xgb":
            return make_pipeline(pca, self._xgb())
        # stacking: out-of-fold probabilities from speaker-grouped folds where possible
        if groups is not None and len(np.unique(groups)) >= self.stack_cv:
            cv = list(GroupKFold(n_splits=self.stack_cv).split(Z, y, groups))
        else:
            cv = StratifiedKFold(n_splits=self.stack_cv, shuffle=True,
                                 random_state=self.random_state)
        bases = [("svc", make_pipeline(pca, self._svc(self.svc_C))),
                 ("rf", make_pipeline(clone(pca), self._rf())),
                 ("xgb", make_pipeline(clone(pca), self._xgb()))]
        if self.stack_linear:
            bases += self._linear_members()
        return StackingClassifier(estimators=bases, final_estimator=self._svc(self.meta_C),
                                  cv=cv, stack_method="predict_proba")

    def _check_params(self):
        if self.model not in MODELS:
            raise ParameterError(f"model must be one of {', '.join(MODELS)}; got {self.model!r}")
        if self.pca_components is not None and (
                not isinstance(self.pca_components, (int, np.integer)) or self.pca_components < 1):
            raise ParameterError(f"pca_components must be a positive integer or None; "
                                 f"got {self.pca_components!r}")
        if self.adaptation not in ADAPTATIONS:
            raise ParameterError(f"adaptation must be one of {', '.join(ADAPTATIONS)}; "
                                 f"got {self.adaptation!r}")
        if self.blend_rule not in ("geometric", "arithmetic"):
            raise ParameterError(f"blend_rule must be geometric or arithmetic; "
                                 f"got {self.blend_rule!r}")
        if not isinstance(self.select_k, (int, np.integer)) or self.select_k < 1:
            raise ParameterError(f"select_k must be a positive integer; got {self.select_k!r}")

    # -- scikit-learn API ------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X, y):
        """Fit on a feature table (or matrix) and its emotion labels."""
        self._check_params()
        if y is None:
            raise ValueError("EmotionClassifier requires y to be passed, but the target y is None")
        values, groups, names = split_groups(X, self.group_col)
        y = np.asarray(y)
        check_classification_targets(y)
        if len(y) != len(values):
            raise ParameterError(f"X has {len(values)} rows but y has {len(y)}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ParameterError("need at least two classes to fit, got "
                                 f"{len(self.classes_)} class")
        if self.speaker_norm:
            self.normalizer_ = SpeakerNormalizer(group_col=self.group_col,
                                                 min_clips=self.min_speaker_clips)
            Z = self.normalizer_.fit(X).transform(X)
        else:
            self.normalizer_ = StandardScaler()
            Z = np.nan_to_num(self.normalizer_.fit_transform(np.nan_to_num(values)))
        record_features(self, values, names)
        self.blocks_ = feature_blocks(names if names is not None
                                      else [f"x{i}" for i in range(values.shape[1])])
        with warnings.catch_warnings():
            # constant features (e.g. a ComParE functional on short clips) are expected;
            # ANOVA F gives them a NaN score and they are never selected
            warnings.filterwarnings("ignore", module=r"sklearn\.feature_selection.*")
            label_sets = self._label_sets(X, codes)
            self.estimator_ = self._fit_classifier(Z, codes, groups, label_sets)
            self.fallback_ = self.class_effects_ = self.speaker_prior_ = None
            self.adaptation_ = {"lone_clip": None, "batch": None}
            if self.speaker_norm:
                self.adaptation_ = dict(zip(("lone_clip", "batch"),
                                            ADAPTATION_RULES.get(self.adaptation,
                                                                 ("fallback", "switch"))))
                values = _clip_absurd(values, self.normalizer_.bounds_)
                filled = self._filled(values)
                self.class_effects_ = ClassEffects(filled, codes, groups, len(self.classes_),
                                                   self.min_speaker_clips)
                self.speaker_prior_ = SpeakerPrior(filled, codes, groups, self.class_effects_,
                                                   self.min_speaker_clips)
            if self.speaker_norm and self.adaptation != "batch":
                pop = self._population(values)
                self.fallback_ = self._fit_classifier(pop, codes, groups, label_sets)
        if self.speaker_norm and self.adaptation == "auto":
            self.adaptation_ = self._choose_rules(X, y, groups)
        return self

    def _label_sets(self, X, codes):
        """Each training clip's classes by its corpus (None: all), and ``label_sets_``."""
        self.label_sets_ = {}
        if self.model not in ("blend", "logreg") or not self.corpus_col \
                or not hasattr(X, "columns") or self.corpus_col not in X.columns:
            return None
        mask, sets = corpus_label_sets(X[self.corpus_col].to_numpy(), codes, len(self.classes_))
        self.label_sets_ = {name: [str(self.classes_[c]) for c in have]
                            for name, have in sets.items()}
        return mask

    def _own_classes(self, X):
        """Per clip of ``X``, the classes its corpus was trained on (``label_sets_``); None
        where no corpus was restricted."""
        sets = getattr(self, "label_sets_", None)
        if not sets or not hasattr(X, "columns") or self.corpus_col not in X.columns:
            return None
        return label_set_mask(X[self.corpus_col].to_numpy(), sets, self.classes_.astype(str))

    def _fit_classifier(self, Z, codes, groups, label_sets):
        est = self._classifier(Z, codes, groups)
        if label_sets is None:
            return est.fit(Z, codes)
        # the linear members' last step (make_pipeline names it after its class)
        return est.fit(Z, codes, labelsetlogisticregression__label_sets=label_sets)

    def _choose_rules(self, X, y, groups) -> dict:
        """The lone-clip and batch rules of ``adaptation="auto"``, by inner grouped CV."""
        known = np.zeros(len(y), dtype=bool)
        for rows in speaker_rows(groups, self.min_speaker_clips) if groups is not None else ():
            known[rows] = True
        speakers = np.unique(groups[known]) if known.any() else []
        default = {"lone_clip": "fallback", "batch": "switch",
                   "inner": f"too few speakers with {self.min_speaker_clips}+ clips for "
                            f"{INNER_FOLDS} inner folds: the fixed 'switch' rules"}
        if len(speakers) < INNER_FOLDS:
            return default
        y = np.asarray(y).astype(str)
        hits = {k: 0 for k in ("population", "fallback", "own", "switch", "class_aware")}
        shown = {"single": 0, "balanced": 0, "skewed": 0}
        skew_hits = {"own": 0, "switch": 0, "class_aware": 0}
        inner = clone(self).set_params(adaptation="switch")
        for fold in range(INNER_FOLDS):
            held = np.isin(groups, speakers[fold::INNER_FOLDS])
            model = clone(inner).fit(X.iloc[~held] if hasattr(X, "iloc") else X[~held],
                                     y[~held])
            if len(model.classes_) != len(self.classes_):
                return default | {"inner": "an inner fold lacked a class: the fixed rules"}
            Xh = X.iloc[held] if hasattr(X, "iloc") else X[held]
            values, g, _ = split_groups(Xh, self.group_col)
            values = _clip_absurd(values, model.normalizer_.bounds_)
            truth = np.searchsorted(self.classes_, y[held])
            # each held-out clip judged among its own corpus's classes (all without label
            # sets): that a corpus lacks an emotion is no evidence a model may be chosen by
            own = model._own_classes(Xh)

            def pick(p, rows=slice(None), own=own):
                return p.argmax(1) if own is None else np.where(own[rows], p, -1.0).argmax(1)
            pop = model._population(values)
            for rule, est in (("population", model.estimator_), ("fallback", model.fallback_)):
                hits[rule] += int((pick(est.predict_proba(pop)) == truth).sum())
            shown["single"] += len(truth)
            start = model.fallback_.predict_proba(pop)
            for name, batches in (("balanced", list(speaker_rows(g, self.min_speaker_clips))),
                                  ("skewed", skewed_batches(g, y[held], self.random_state or 0))):
                for rows in batches:
                    for rule in skew_hits:
                        proba = model._speaker_proba(values[rows], start[rows], rule)
                        n = int((pick(proba, rows) == truth[rows]).sum())
                        if name == "balanced":
                            hits[rule] += n
                        else:
                            skew_hits[rule] += n
                    shown[name] += len(rows)
        acc = {"single_clip": {r: hits[r] / shown["single"] for r in ("population", "fallback")},
               "balanced_batch": {r: hits[r] / max(shown["balanced"], 1) for r in skew_hits},
               "skewed_batch": {r: skew_hits[r] / max(shown["skewed"], 1) for r in skew_hits}}
        lone = max(("fallback", "population"), key=lambda r: acc["single_clip"][r])
        batch = max(("own", "switch", "class_aware"),  # ties: the first
                    key=lambda r: acc["balanced_batch"][r] + acc["skewed_batch"][r])
        return {"lone_clip": lone, "batch": batch,
                "inner": {k: {r: round(v, 4) for r, v in d.items()} for k, d in acc.items()}}

    def _population(self, values):
        n = self.normalizer_
        return np.nan_to_num((values - n.mean_) / n.scale_, nan=0.0, posinf=0.0, neginf=0.0)

    def _filled(self, values):
        return np.where(np.isnan(values), self.normalizer_.mean_, values)

    def _transform(self, X):
        check_is_fitted(self, "estimator_")
        values, _, names = split_groups(X, self.group_col)
        check_features(self, values, names)
        if self.speaker_norm:
            return self.normalizer_.transform(X)
        return np.nan_to_num(self.normalizer_.transform(np.nan_to_num(values)))

    def _speaker_proba(self, values, start, rule):
        """Probabilities of one speaker's clips (enough of them) under a batch rule."""
        if rule != "own":
            filled, proba = self._filled(values), start
            for _ in range(ADAPT_ROUNDS):
                mean, scale = self.class_effects_.speaker_stats(filled, proba)
                proba = self.estimator_.predict_proba(np.nan_to_num((values - mean) / scale))
            if rule == "class_aware" or speaker_skew(proba, self.class_effects_.prior) \
                    >= SKEW_LIMIT:
                return proba
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a feature missing everywhere
            own = (values - np.nanmean(values, axis=0)) / _safe_std(values)
        return self.estimator_.predict_proba(np.nan_to_num(own))

    def predict_proba(self, X, profiles=None):
        """Class probabilities, shape ``(n_clips, n_classes)``, columns as ``classes_``.

        With speaker normalisation, each clip is scored according to how many clips
        of its speaker the batch holds (see ``adaptation``).

        Parameters
        ----------
        X : pandas.DataFrame or array-like
        profiles : dict of str to SpeakerProfile, or None
            Enrolled speakers (:func:`mer_pipeline.enrollment.enroll`), by speaker
            id. A clip of an enrolled speaker that the batch holds too few clips of
            to use their own statistics is normalised by statistics estimated from
            the speaker's reference clips (:meth:`profile_stats`), and its
            probabilities are mixed with the lone-clip rule's by the estimate's mean
            shrinkage weight (few references: mostly the lone-clip rule). A speaker
            with enough clips in the batch keeps the batch rule.
        """
        check_is_fitted(self, "estimator_")
        if profiles and not self.speaker_norm:
            warnings.warn("speaker profiles have no effect on a model without speaker "
                          "normalisation", stacklevel=2)
            profiles = None
        if getattr(self, "fallback_", None) is None and not profiles:
            return self.estimator_.predict_proba(self._transform(X))
        values, groups, names = split_groups(X, self.group_col)
        check_features(self, values, names)
        values = _clip_absurd(values, self.normalizer_.bounds_)
        batches = list(speaker_rows(groups, self.min_speaker_clips)) if groups is not None else []
        if self.fallback_ is None:  # adaptation="batch": the population, or the batch's own
            proba = self.estimator_.predict_proba(self.normalizer_.transform(X))
        else:
            pop = self._population(values)
            start = self.fallback_.predict_proba(pop)
            lone = self.estimator_ if self.adaptation_["lone_clip"] == "population" \
                else self.fallback_
            proba = start.copy() if lone is self.fallback_ else lone.predict_proba(pop)
            for rows in batches:
                proba[rows] = self._speaker_proba(values[rows], start[rows],
                                                  self.adaptation_["batch"])
        if profiles and groups is not None:
            outside = np.ones(len(values), dtype=bool)
            for rows in batches:
                outside[rows] = False
            for profile, rows in enrolled_rows(groups, outside, profiles):
                mean, scale, weight = self.profile_stats(profile)
                enrolled = self.estimator_.predict_proba(
                    np.nan_to_num((values[rows] - mean) / scale))
                proba[rows] = weight * enrolled + (1.0 - weight) * proba[rows]
        return proba

    def profile_stats(self, profile):
        """A speaker's mean and scale from their enrolled reference clips.

        Labelled references have their emotion's expected effect removed
        (:class:`~mer_pipeline.speaker.ClassEffects`); unlabelled ones (or ones
        labelled with an emotion the model does not know) the effect of the
        emotion the model predicts, re-estimated over :data:`ADAPT_ROUNDS` rounds.
        The mean is shrunk towards the population's
        (:class:`~mer_pipeline.speaker.SpeakerPrior`).

        Parameters
        ----------
        profile : SpeakerProfile

        Returns
        -------
        mean, scale : np.ndarray of shape (n_features,)
        weight : float
            Mean shrinkage weight, 0..1.

        Raises
        ------
        ParameterError
            A model without speaker statistics (``speaker_norm=False``, or saved
            before enrollment existed), or a profile of other features.
        """
        check_is_fitted(self, "estimator_")
        if getattr(self, "speaker_prior_", None) is None:
            raise ParameterError("this model has no speaker statistics to enroll with (trained "
                                 "without speaker normalisation, or before enrollment existed: "
                                 "train it again)")
        if hasattr(self, "feature_names_in_"):
            ref = profile.features([str(c) for c in self.feature_names_in_])
        elif profile.values.shape[1] == self.n_features_in_:
            ref = np.asarray(profile.values, dtype=np.float64)
        else:
            raise ParameterError(f"speaker profile {profile.speaker!r} has "
                                 f"{profile.values.shape[1]} features, the model "
                                 f"{self.n_features_in_}")
        ref = self._filled(_clip_absurd(ref, self.normalizer_.bounds_))
        prior = self.speaker_prior_
        known, onehot = reference_labels(profile, self.classes_)
        proba = onehot
        if not known.all():
            lone = self.fallback_ if self.fallback_ is not None else self.estimator_
            guess = lone.predict_proba(self._population(ref))
            for _ in range(ADAPT_ROUNDS):
                proba = np.where(known[:, None], onehot, guess)
                mean, scale, _ = prior.speaker_stats(ref, proba)
                guess = self.estimator_.predict_proba(np.nan_to_num((ref - mean) / scale))
            proba = np.where(known[:, None], onehot, guess)
        return prior.speaker_stats(ref, proba)

    def profile_weight(self, profile) -> float:
        """How far this model trusts a profile's statistics: its mean shrinkage weight
        (0: the population's, 1: the references' own; :meth:`profile_stats`)."""
        return self.profile_stats(profile)[2]

    def predict(self, X, profiles=None):
        """Predicted emotion labels (``profiles``: see :meth:`predict_proba`)."""
        proba = self.predict_proba(X, profiles=profiles)
        return self.classes_[np.argmax(proba, axis=1)]


def speaker_skew(proba: np.ndarray, prior: np.ndarray) -> float:
    """Total variation distance between a batch's predicted emotion mix and ``prior``.

    The mix is that of the most probable classes (not the mean probabilities, which
    a strongly regularised model keeps near uniform).

    Parameters
    ----------
    proba : np.ndarray, shape (n_clips, n_classes)
    prior : np.ndarray, shape (n_classes,)

    Returns
    -------
    float
        0 for a batch predicted in the training proportions, 1 for one wholly of
        emotions the training data never had.
    """
    counts = np.bincount(np.argmax(proba, axis=1), minlength=proba.shape[1])
    return float(0.5 * np.abs(counts / max(len(proba), 1) - prior).sum())
