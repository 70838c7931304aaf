"""Honest evaluation: actor-independent cross-validation, reports and plots.

The honest protocol is grouped K-fold: no actor (speaker, face subject) has
clips in both the training and the test folds, and every fitted step (speaker
statistics, scaling, feature selection, PCA, the classifier) is refit inside
each fold. A random clip split leaks each speaker's voice into training and
inflates accuracy; it is computed only to be reported *beside* the honest
figure, labelled as optimistic. Evaluating a features folder end to end is
:func:`mer_pipeline.workflows.evaluate_features`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from .augment import originals, with_copies
from .exceptions import ParameterError
from .speaker import skewed_batches

__all__ = ["EvaluationResult", "cross_validate_model", "write_report", "PROTOCOLS",
           "PRESENTATIONS", "skewed_batches", "restrict_proba", "enrollment_references",
           "takes_profiles", "ENROLL_CLIPS", "ENROLL_EMOTION"]

PROTOCOLS = {
    "actor": "actor-independent (grouped K-fold: no actor in both train and test)",
    "subject": "subject-independent (grouped K-fold: no subject in both train and test)",
    "random": "OPTIMISTIC random stratified clip split (speakers leak across folds)",
    "corpus": "leave-one-corpus-out (trained on the other corpora, scored on the classes the "
              "held-out corpus shares with them)",
}

#: How a fold's test clips are shown to the fitted model. Speaker normalisation uses a
#: speaker's own statistics only when the batch holds enough of their clips, so the batch
#: a user scores changes the accuracy: each presentation is measured on the same fits.
PRESENTATIONS = {
    "balanced_batch": "each test speaker's clips scored together (all their emotions: the "
                      "speaker's own statistics are used)",
    "single_clip": "each test clip scored alone (no statistics of its speaker: what one clip "
                   "of a new speaker, a stream or `mer predict` gets)",
    "skewed_batch": "each test speaker's clips scored in one-sided batches of 2-3 emotions "
                    "(the speaker's emotions shuffled by a seeded rule and cut into groups of "
                    "3, 3, 2: every clip scored once)",
    "enrolled": "each test speaker enrolled with K reference clips of one emotion (default 4 "
                "of neutral, drawn by a seeded rule; not scored), then each of their other "
                "clips scored alone with that profile",
}
#: Defaults of the ``enrolled`` presentation: reference clips per speaker, and their emotion.
ENROLL_CLIPS = 4
ENROLL_EMOTION = "neutral"



@dataclass
class EvaluationResult:
    """Cross-validated figures of one protocol.

    Attributes
    ----------
    protocol : str
        ``actor``, ``subject``, ``corpus`` or ``random``.
    accuracy, macro_f1 : float
        Pooled over the out-of-fold predictions of all folds (with ``corpus``,
        of the clips scored: those of classes the training corpora share).
    folds : list of dict
        Per fold: ``accuracy``, ``macro_f1``, ``n_test``, ``test_groups``.
    classes : list of str
    predictions : pandas.DataFrame
        Out-of-fold ``emotion``, ``predicted``, ``fold`` and ``proba_<class>``
        per clip.
    comparison : EvaluationResult or None
        The optimistic random-split result computed beside an honest one.
    presentation : str
        How the test clips were shown (:data:`PRESENTATIONS`).
    presentations : dict
        Presentation → :class:`EvaluationResult` of the same fits shown otherwise
        (this result's own presentation included).
    dropped_classes : dict
        Clips left out by ``--classes``, by label.
    enrollment : dict or None
        For the ``enrolled`` presentation: reference ``clips`` per speaker and
        their ``emotion`` (the references are not among the scored clips).
    augmented_rows : int
        Augmented copies in the table (:mod:`mer_pipeline.augment`): each fold
        trained on those of its training clips; none scored.
    """

    protocol: str
    accuracy: float
    macro_f1: float
    folds: list
    classes: list
    predictions: pd.DataFrame
    n_groups: int = 0
    model: dict = field(default_factory=dict)
    comparison: "EvaluationResult | None" = None
    presentation: str = "balanced_batch"
    presentations: dict = field(default_factory=dict)
    enrollment: dict | None = None
    dropped_classes: dict = field(default_factory=dict)
    augmented_rows: int = 0

    def to_dict(self) -> dict:
        """The figures as JSON-ready data (what ``metrics.json`` holds)."""
        acc = [f["accuracy"] for f in self.folds]
        out = {
            "protocol": self.protocol,
            "protocol_description": PROTOCOLS[self.protocol],
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "fold_accuracy_mean": round(float(np.mean(acc)), 4),
            "fold_accuracy_std": round(float(np.std(acc)), 4),
            "n_folds": len(self.folds),
            "n_clips": int(len(self.predictions)),
            "n_groups": int(self.n_groups),
            "classes": list(self.classes),
            "folds": self.folds,
            "model": self.model,
            "presentation": self.presentation,
        }
        if self.presentations:
            out["presentations"] = {
                name: {"description": PRESENTATIONS[name], "accuracy": round(r.accuracy, 4),
                       "macro_f1": round(r.macro_f1, 4),
                       "fold_accuracy_std": round(float(np.std(
                           [f["accuracy"] for f in r.folds])), 4),
                       "n_clips": int(len(r.predictions)),
                       **({"references": r.enrollment} if r.enrollment else {})}
                for name, r in self.presentations.items()}
            lone, enrolled = (self.presentations.get(k) for k in ("single_clip", "enrolled"))
            if lone is not None and enrolled is not None:  # the same clips, scored alone
                same = lone.predictions.loc[enrolled.predictions.index]
                out["presentations"]["enrolled"]["single_clip_same_clips"] = round(float(
                    (same["predicted"] == same["emotion"]).mean()), 4)
        if self.dropped_classes:
            out["dropped_classes"] = dict(self.dropped_classes)
        if self.augmented_rows:
            out["augmented_training_rows"] = int(self.augmented_rows)
        if self.comparison is not None:
            out["optimistic_random_split"] = {
                k: v for k, v in self.comparison.to_dict().items() if k != "model"}
        return out

    def format(self) -> str:
        """A few lines for the terminal."""
        d = self.to_dict()
        lines = [f"protocol: {d['protocol_description']}",
                 f"  accuracy {d['accuracy']:.4f} (folds {d['fold_accuracy_mean']:.4f} ± "
                 f"{d['fold_accuracy_std']:.4f}), macro-F1 {d['macro_f1']:.4f}, "
                 f"{d['n_clips']} clips, {d['n_folds']} folds"
                 + (f", {d['n_groups']} groups" if d["n_groups"] else "")
                 + (f"; trained with {self.augmented_rows} augmented copies of training clips"
                    if self.augmented_rows else "")]
        for name, r in self.presentations.items():
            refs = (f"; references: {r.enrollment['clips']} × {r.enrollment['emotion']} per "
                    f"speaker, {len(r.predictions)} clips scored" if r.enrollment else "")
            lines.append(f"  {name:15s} accuracy {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}"
                         f"  ({PRESENTATIONS[name]}{refs})")
        if self.protocol == "corpus":
            lines.append(f"  mean over held-out corpora {d['fold_accuracy_mean']:.4f}; each:")
            for f in self.folds:
                lines.append(f"    {f['corpus']:12s} accuracy {f['accuracy']:.4f}, macro-F1 "
                             f"{f['macro_f1']:.4f} on {len(f['classes'])} classes "
                             f"(majority {f['majority']:.4f}, chance {f['chance']:.4f}), "
                             f"{f['n_test']} clips"
                             + (f"; left out: {', '.join(f'{k}={v}' for k, v in f['dropped'].items())}"
                                if f["dropped"] else ""))
        if self.dropped_classes:
            lines.append("  clips outside --classes left out: " + ", ".join(
                f"{k}={v}" for k, v in self.dropped_classes.items()))
        if self.comparison is not None:
            c = self.comparison
            lines.append(f"beside it, {PROTOCOLS['random']}:")
            lines.append(f"  accuracy {c.accuracy:.4f}, macro-F1 {c.macro_f1:.4f} "
                         "(not an estimate for unseen speakers)")
        return "\n".join(lines)


def _splits(protocol, y, groups, folds, seed):
    if protocol == "corpus":
        names = np.unique(groups if groups is not None else [])
        if groups is None or len(names) < 2 or np.any(pd.isna(groups)):
            raise ParameterError("leave-one-corpus-out needs clips of at least two corpora "
                                 f"(found {len(names)}); extract features of several corpora "
                                 "into one table (mer features A B ...)")
        return [(np.flatnonzero(groups != c), np.flatnonzero(groups == c)) for c in names]
    if protocol == "random":
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(cv.split(np.zeros(len(y)), y))
    if groups is None or np.any(pd.isna(groups)) or np.any(groups == ""):
        n = len(y) if groups is None else int(np.sum(pd.isna(groups) | (groups == "")))
        raise ParameterError(f"{n} clips have no actor/subject id, so a grouped split is "
                             "impossible; give a corpus whose names carry speaker ids (or a "
                             "listing with a subject column)")
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise ParameterError(f"{folds} folds need at least {folds} actors/subjects; "
                             f"the data has {n_groups} (fewer folds, or --folds 0 to train "
                             "without the cross-validated figures)")
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y, groups))


def _fit_fold(estimator, X, y, train, test, presentations, group_col, seed=0, restrict=None,
              enroll=(ENROLL_CLIPS, ENROLL_EMOTION)):
    model = clone(estimator).fit(X.iloc[train], y[train])
    X_test = X.iloc[test]
    has_groups = isinstance(X_test, pd.DataFrame) and group_col in X_test.columns
    probas = _fit_fold_probas(model, X_test, y[test], presentations, has_groups, group_col,
                              seed, enroll)
    if restrict is not None:  # decide among the classes the test set can hold
        keep = np.isin(np.asarray(model.classes_).astype(str), list(restrict))
        probas = {name: restrict_proba(proba, keep) for name, proba in probas.items()}
    return model.classes_, probas


def restrict_proba(proba: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Class probabilities renormalised over the classes ``keep`` marks (the others 0).

    Parameters
    ----------
    proba : ndarray of shape (n_clips, n_classes)
    keep : ndarray of bool, shape (n_classes,)

    Returns
    -------
    ndarray of the same shape; rows whose kept classes all had probability 0
    share it equally among them.
    """
    out = np.where(keep[None, :], np.asarray(proba, dtype=float), 0.0)
    total = out.sum(axis=1, keepdims=True)
    flat = np.where(keep, 1.0 / max(int(keep.sum()), 1), 0.0)[None, :]
    scored = np.isfinite(out).all(axis=1, keepdims=True)  # NaN rows (references) stay NaN
    return np.where(scored, np.where(total > 0, out / np.where(total > 0, total, 1.0), flat),
                    np.nan)


def takes_profiles(estimator) -> bool:
    """Whether ``estimator.predict_proba`` accepts enrolled speaker ``profiles``."""
    import inspect

    try:
        return "profiles" in inspect.signature(estimator.predict_proba).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def enrollment_references(groups, labels, n_clips: int = ENROLL_CLIPS,
                          emotion: str | None = ENROLL_EMOTION, seed: int = 0) -> dict:
    """Reference rows of each speaker for the ``enrolled`` presentation.

    Each speaker's clips of ``emotion`` (any emotion with ``None``) are shuffled by
    a generator seeded by ``seed`` and the speaker id's CRC-32 (so the rule never
    depends on the other speakers), and the first ``n_clips`` are the references.
    A speaker with none of that emotion gets no references (and their clips are
    not scored in that presentation).

    Parameters
    ----------
    groups, labels : array-like
        Speaker id and emotion per row.
    n_clips : int
    emotion : str or None
    seed : int

    Returns
    -------
    dict of str to np.ndarray of int
    """
    import zlib

    groups, labels = np.asarray(groups).astype(str), np.asarray(labels).astype(str)
    refs = {}
    for g in pd.unique(groups):
        rows = np.flatnonzero((groups == g) & ((labels == emotion) if emotion else True))
        rng = np.random.default_rng([seed, zlib.crc32(g.encode())])
        if len(rows):
            refs[g] = np.sort(rng.permutation(rows)[:n_clips])
    return refs


def _enrolled_proba(model, X_test, y_test, group_col, seed, enroll):
    """Each speaker enrolled with reference clips, the rest scored one clip at a time."""
    from .enrollment import enroll as make_profile

    n_clips, emotion = enroll
    groups = X_test[group_col].astype(str).to_numpy()
    refs = enrollment_references(groups, y_test, n_clips, emotion, seed)
    lone = np.array([f"{g}#{i}" for i, g in enumerate(groups)], dtype=object)
    profiles = {}
    for g, rows in refs.items():
        profile = make_profile(X_test.iloc[rows], g, emotion=emotion)
        if emotion is None:  # references of any emotion: labelled with what they are
            profile.emotions = [str(v) for v in np.asarray(y_test)[rows]]
        for i in np.flatnonzero(groups == g):
            profiles[lone[i]] = profile
    proba = model.predict_proba(X_test.assign(**{group_col: lone}), profiles=profiles)
    # references are not scored, nor the clips of a speaker with none (not enrolled)
    proba[~np.isin(lone, list(profiles))] = np.nan
    for rows in refs.values():
        proba[rows] = np.nan
    return proba


def _fit_fold_probas(model, X_test, y_test, presentations, has_groups, group_col, seed,
                     enroll=(ENROLL_CLIPS, ENROLL_EMOTION)):
    out = {}
    for name in presentations:
        if name == "enrolled" and has_groups:
            out[name] = _enrolled_proba(model, X_test, y_test, group_col, seed, enroll)
        elif name == "single_clip" and has_groups:
            # no speaker: what one clip gets
            out[name] = model.predict_proba(X_test.assign(**{group_col: ""}))
        elif name == "skewed_batch" and has_groups:
            proba = None
            for rows in skewed_batches(X_test[group_col], y_test, seed):
                part = model.predict_proba(X_test.iloc[rows])
                proba = np.zeros((len(y_test), part.shape[1])) if proba is None else proba
                proba[rows] = part
            out[name] = proba
        else:
            out[name] = model.predict_proba(X_test)
    return out


def cross_validate_model(estimator, X: pd.DataFrame, y, *, groups=None, protocol: str = "actor",
                         folds: int = 5, seed: int = 0, n_jobs: int | None = None,
                         presentations=("balanced_batch",), enroll_clips: int = ENROLL_CLIPS,
                         enroll_emotion: str | None = ENROLL_EMOTION) -> EvaluationResult:
    """Cross-validate an estimator under a named protocol.

    Parameters
    ----------
    estimator : classifier with ``predict_proba``
        Cloned and refit inside every fold.
    X : pandas.DataFrame
        Feature table (indexed by ``clip_id``).
    y : array-like of str
        Emotion labels.
    groups : array-like or None
        Actor/subject id per clip (required unless ``protocol="random"``); with
        ``protocol="corpus"``, the corpus of each clip.
    protocol : {"actor", "subject", "corpus", "random"}
        ``corpus``: leave-one-corpus-out; each held-out corpus is scored on the
        classes it shares with the training corpora (probabilities restricted to
        those, :func:`restrict_proba`; its other clips are left out, counted in
        the fold's ``dropped``), each fold recording ``corpus``, ``classes``,
        ``majority`` and ``chance``; ``folds`` is ignored.
    folds : int >= 2
    seed : int
        Shuffling seed of the fold assignment.
    n_jobs : int or None
        Folds fitted in parallel.
    presentations : sequence of str
        How the test clips are shown to each fold's model (:data:`PRESENTATIONS`):
        ``balanced_batch`` (all of a test speaker's clips together) and/or
        ``single_clip`` (each clip alone: the speaker column is blanked, so
        speaker normalisation falls back to the training population) and/or
        ``skewed_batch`` (each speaker's clips in batches of 2-3 emotions,
        :func:`skewed_batches`) and/or ``enrolled`` (each test speaker enrolled
        with reference clips, :func:`enrollment_references`, which are not
        scored; each other clip scored alone with the speaker's profile: needs an
        estimator whose ``predict_proba`` takes ``profiles``). The same
        fits serve every presentation; the result is the first one's, the others
        in ``result.presentations``.
    enroll_clips : int, default=4
        Reference clips per speaker of the ``enrolled`` presentation.
    enroll_emotion : str or None, default="neutral"
        Their emotion (``None``: any emotion, labelled).

    Returns
    -------
    EvaluationResult
    """
    if protocol not in PROTOCOLS:
        raise ParameterError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if folds < 2:
        raise ParameterError(f"folds must be >= 2, got {folds}")
    presentations = list(presentations)
    unknown = [p for p in presentations if p not in PRESENTATIONS]
    if unknown or not presentations:
        raise ParameterError(f"presentations must be among {', '.join(PRESENTATIONS)}; "
                             f"got {presentations!r}")
    if "enrolled" in presentations:
        if not takes_profiles(estimator):
            raise ParameterError(f"the enrolled presentation needs a model that takes speaker "
                                 f"profiles; {type(estimator).__name__} does not")
        if not isinstance(enroll_clips, (int, np.integer)) or enroll_clips < 1:
            raise ParameterError(f"enroll_clips must be a positive integer; got {enroll_clips!r}")
        if enroll_emotion is not None and enroll_emotion not in set(np.asarray(y).astype(str)):
            raise ParameterError(f"the enrolled presentation needs clips of {enroll_emotion!r} "
                                 "to enroll speakers with; there are none")
    y = np.asarray(y).astype(str)
    groups = None if groups is None else np.asarray(groups).astype(object)
    recorded = originals(X)
    if recorded.all():
        splits = _splits(protocol, y, groups, folds, seed)
    else:  # folds of the recordings; each trains on its clips' augmented copies too
        pos = np.flatnonzero(recorded)
        splits = [(with_copies(X, pos[tr]), pos[te]) for tr, te in _splits(
            protocol, y[pos], None if groups is None else groups[pos], folds, seed)]
    restrict = [None] * len(splits)
    extra = [{} for _ in splits]
    if protocol == "corpus":
        # a held-out corpus is scored on the classes it shares with the training corpora
        for k, (tr, te) in enumerate(splits):
            known = np.isin(y[te], np.unique(y[tr]))
            kept = te[known]
            shared = sorted(set(y[kept]))
            counts = pd.Series(y[kept]).value_counts()
            extra[k] = {"corpus": str(groups[te[0]]), "classes": shared,
                        "majority": round(float(counts.iloc[0] / len(kept)), 4)
                        if len(kept) else None,
                        "chance": round(1.0 / len(shared), 4) if shared else None,
                        "dropped": {str(c): int(n) for c, n in
                                    pd.Series(y[te][~known]).value_counts().sort_index().items()}}
            splits[k], restrict[k] = (tr, kept), shared
        splits_used = [(k, sp) for k, sp in enumerate(splits) if len(sp[1])]
        if not splits_used:
            raise ParameterError("no held-out corpus shares a class with the others")
    else:
        splits_used = list(enumerate(splits))
    params = estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}
    group_col = params.get("group_col", "group")
    enroll = (enroll_clips, enroll_emotion)
    outs = Parallel(n_jobs=n_jobs)(delayed(_fit_fold)(estimator, X, y, tr, te, presentations,
                                                      group_col, seed, restrict[k], enroll)
                                   for k, (tr, te) in splits_used)
    splits = [sp for _, sp in splits_used]
    extra = [extra[k] for k, _ in splits_used]
    tested = np.sort(np.concatenate([te for _, te in splits]))
    classes = sorted(set(y[tested]))
    model = {"class": type(estimator).__name__,
             **{k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))
                or v is None}}
    results = {}
    for name in presentations:
        proba = np.zeros((len(y), len(classes)))
        fold_of = np.zeros(len(y), dtype=int)
        scored = np.zeros(len(y), dtype=bool)
        per_fold = []
        for k, ((tr, te), (cls, probas)) in enumerate(zip(splits, outs)):
            idx = [classes.index(c) if c in classes else None for c in cls]
            cols = [j for j, i in enumerate(idx) if i is not None]
            part = probas[name]
            keep = np.isfinite(part).all(axis=1)  # enrolled: the references are not scored
            te, part = te[keep], part[keep]
            proba[np.ix_(te, [idx[j] for j in cols])] = part[:, cols]
            fold_of[te] = k
            scored[te] = True
            pred = np.asarray(classes)[np.argmax(proba[te], axis=1)]
            per_fold.append({
                "fold": k, "n_test": int(len(te)),
                "accuracy": round(float(accuracy_score(y[te], pred)), 4),
                "macro_f1": round(float(f1_score(y[te], pred, labels=sorted(set(y[te])),
                                                 average="macro", zero_division=0)), 4),
                "test_groups": sorted(set(groups[te].tolist())) if groups is not None else [],
                **extra[k],
            })
        shown = tested[scored[tested]]
        proba, fold_of, yt = proba[shown], fold_of[shown], y[shown]
        pred = np.asarray(classes)[np.argmax(proba, axis=1)]
        table = pd.DataFrame({"emotion": yt, "predicted": pred, "fold": fold_of},
                             index=X.index[shown])
        for j, c in enumerate(classes):
            table[f"proba_{c}"] = proba[:, j]
        results[name] = EvaluationResult(
            protocol=protocol, accuracy=float(accuracy_score(yt, pred)),
            macro_f1=float(f1_score(yt, pred, labels=sorted(set(yt)), average="macro",
                                    zero_division=0)),
            folds=per_fold, classes=classes, predictions=table,
            n_groups=0 if groups is None else len(np.unique(groups)), model=model,
            presentation=name, augmented_rows=int((~recorded).sum()),
            enrollment={"clips": int(enroll_clips), "emotion": enroll_emotion or "any"}
            if name == "enrolled" else None)
    main = results[presentations[0]]
    if len(presentations) > 1:
        main.presentations = results
    return main


def write_report(result: EvaluationResult, out_dir: str | os.PathLike) -> Path:
    """Write the report into ``out_dir``.

    Files: ``metrics.json``, ``per_class_report.txt``, ``predictions.csv``,
    ``confusion_matrix.png``, ``roc_curves.png`` (with other presentations of the
    same fits, ``predictions_<presentation>.csv`` and its figures too); with a
    random-split comparison also ``predictions_random_split.csv``,
    ``confusion_matrix_random_split.png`` and ``roc_curves_random_split.png``
    (titled as optimistic).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = result.to_dict()
    y, pred = result.predictions["emotion"], result.predictions["predicted"]
    metrics["per_class"] = classification_report(y, pred, labels=result.classes,
                                                  output_dict=True, zero_division=0)
    proba = result.predictions[[f"proba_{c}" for c in result.classes]].to_numpy()
    try:
        metrics["roc_auc_ovr_macro"] = round(float(roc_auc_score(
            y, proba, labels=result.classes, multi_class="ovr", average="macro")), 4)
    except ValueError:
        metrics["roc_auc_ovr_macro"] = None
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    text = [f"Protocol: {PROTOCOLS[result.protocol]}", "",
            classification_report(y, pred, labels=result.classes, digits=3, zero_division=0)]
    if result.comparison is not None:
        c = result.comparison
        text += ["", f"Beside it, {PROTOCOLS['random']}:",
                 classification_report(c.predictions["emotion"], c.predictions["predicted"],
                                       labels=c.classes, digits=3, zero_division=0)]
    (out / "per_class_report.txt").write_text("\n".join(text))
    _write_figures(result, out, "")
    for name, other in result.presentations.items():
        if other is not result:
            _write_figures(other, out, f"_{name}")
    if result.comparison is not None:
        _write_figures(result.comparison, out, "_random_split")
    return out


def _write_figures(result: EvaluationResult, out: Path, suffix: str) -> None:
    y, pred = result.predictions["emotion"], result.predictions["predicted"]
    proba = result.predictions[[f"proba_{c}" for c in result.classes]].to_numpy()
    label = "OPTIMISTIC random clip split" if result.protocol == "random" \
        else f"{result.protocol}-grouped CV" + (
            f", {result.presentation.replace('_', ' ')}"
            if result.presentation != "balanced_batch" else "")
    result.predictions.to_csv(out / f"predictions{suffix}.csv")
    _plot_confusion(y, pred, result.classes, out / f"confusion_matrix{suffix}.png",
                    f"{label}: accuracy {result.accuracy:.3f}")
    _plot_roc(y, proba, result.classes, out / f"roc_curves{suffix}.png",
              f"{label}, one-vs-rest ROC")


def _plot_confusion(y, pred, classes, path, title):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = confusion_matrix(y, pred, labels=classes)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 * len(classes) + 2, 1.0 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_roc(y, proba, classes, path, title):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 6))
    y = np.asarray(y)
    for j, c in enumerate(classes):
        truth = (y == c).astype(int)
        if truth.min() == truth.max():
            continue
        fpr, tpr, _ = roc_curve(truth, proba[:, j])
        auc = roc_auc_score(truth, proba[:, j])
        ax.plot(fpr, tpr, label=f"{c} (AUC {auc:.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
