"""Workflows: what ``mer evaluate``, ``mer train`` and ``mer score`` (and the Makefile) run.

Each workflow goes from files to files through the library's functions:

- :func:`evaluate_features`: a features folder → actor-grouped CV report;
- :func:`train_and_save`: a features folder → a fitted model and its metadata
  (including how its features were extracted);
- :func:`score_inputs`: a model and feature tables or media → predictions;
  media are extracted with the settings the model recorded, and feature
  tables extracted with other settings are refused.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from . import _schema
from .exceptions import ParameterError
from .evaluation import (ENROLL_CLIPS, PRESENTATIONS, EvaluationResult, cross_validate_model,
                         takes_profiles, write_report)

__all__ = ["evaluate_features", "train_and_save", "score_inputs", "labelled_table",
           "input_features", "enroll_inputs"]


def labelled_table(features, classes=None) -> pd.DataFrame:
    """A feature table (loaded from a path, or given) with its unlabelled clips dropped.

    Parameters
    ----------
    features : path or pandas.DataFrame
    classes : str, sequence of str or None
        Keep only clips of these emotions (:func:`mer_pipeline.config.parse_classes`:
        names or a preset such as ``big4``). ``attrs["dropped_classes"]`` counts
        the clips left out, by label.

    Returns
    -------
    pandas.DataFrame
        Its provenance record stays in ``attrs``.
    """
    from .config import parse_classes
    from .features import load_features

    table = features if isinstance(features, pd.DataFrame) else load_features(features)
    provenance = table.attrs.get("provenance")
    table = table[table["emotion"].astype(str) != ""]
    dropped = {}
    wanted = parse_classes(classes)
    if wanted is not None:
        keep = table["emotion"].astype(str).isin(wanted)
        dropped = {str(k): int(v) for k, v in
                   table.loc[~keep, "emotion"].value_counts().sort_index().items()}
        missing = sorted(set(wanted) - set(table["emotion"].astype(str)))
        if not keep.any():
            raise ParameterError(f"no clip has one of the classes {', '.join(wanted)}")
        if missing:
            warnings.warn(f"no clip of class(es) {', '.join(missing)} in the table",
                          stacklevel=2)
        table = table[keep]
    table.attrs["provenance"] = provenance
    table.attrs["dropped_classes"] = dropped
    return table


def evaluate_features(features, *, cv: str = "actor", folds: int = 5, report_dir=None,
                      model: str | None = None, speaker_norm: bool = True,
                      random_comparison: bool = True, seed: int = 0,
                      n_jobs: int | None = None, estimator=None,
                      fusion: str = "auto", adaptation: str | None = None,
                      presentations=None, classes=None, enroll_clips: int | None = None,
                      enroll_emotion: str | None = "neutral",
                      corpus_experts: bool = True) -> EvaluationResult:
    """Cross-validate the package's classifier on a feature table and report.

    Parameters
    ----------
    features : path or pandas.DataFrame
        A features folder / CSV (see :func:`mer_pipeline.features.load_features`)
        or a loaded table.
    cv : {"actor", "subject", "corpus", "random"}
        ``actor``/``subject``: grouped folds on the ``group`` column (honest).
        ``corpus``: leave-one-corpus-out on the ``corpus`` column, each held-out
        corpus scored on the classes it shares with the others (the argmax is
        taken over those; its other clips are left out and counted), with its
        majority-class share and chance beside; ``folds`` is then the number of
        corpora. ``random``: the optimistic clip split alone.
    folds : int
    report_dir : path or None
        Where :func:`write_report` writes; ``None`` writes nothing.
    model, speaker_norm, fusion, adaptation
        Passed to :func:`mer_pipeline.fusion.build_estimator`: with audio and
        face features the multimodal estimator (``late`` fusion), otherwise
        :class:`~mer_pipeline.ensemble.EmotionClassifier` (``model=None``: its
        default).
    random_comparison : bool
        With a grouped protocol, also compute the random-split figure and
        report it beside the honest one.
    seed : int
    n_jobs : int or None
        Folds fitted in parallel.
    estimator : classifier or None
        Evaluate this estimator instead of building one.
    presentations : sequence of str
        How each fold's test clips are shown to its model
        (:data:`mer_pipeline.evaluation.PRESENTATIONS`), measured on the same
        fits. ``None`` (default): all four, the balanced batch per test speaker
        first (the headline figure); ``enrolled`` left out, with a warning, for a
        model that takes no speaker profiles or data without ``enroll_emotion``.
    classes : str, sequence of str or None
        Evaluate on these emotions only (:func:`labelled_table`).
    enroll_clips : int or None
        Reference clips per speaker of the ``enrolled`` presentation (default
        :data:`mer_pipeline.evaluation.ENROLL_CLIPS`).
    enroll_emotion : str or None, default="neutral"
        Their emotion (``None``: any).
    corpus_experts : bool, default=True
        On a table of several corpora, evaluate
        :class:`~mer_pipeline.experts.CorpusExperts` (what :func:`train_and_save`
        fits); never with ``cv="corpus"``, where no held-out clip reaches an expert.

    Returns
    -------
    EvaluationResult
    """
    from .fusion import build_estimator

    table = labelled_table(features, classes)
    if estimator is None:  # a held-out corpus never reaches a corpus expert: none fitted
        estimator = build_estimator(table, fusion=fusion, model=model,
                                    speaker_norm=speaker_norm, random_state=seed,
                                    adaptation=adaptation,
                                    corpus_experts=corpus_experts and cv != "corpus")
    if presentations is None:
        presentations = list(PRESENTATIONS)
        if not takes_profiles(estimator):
            warnings.warn(f"{type(estimator).__name__} takes no speaker profiles: the enrolled "
                          "presentation is left out", stacklevel=2)
            presentations.remove("enrolled")
        elif enroll_emotion is not None and enroll_emotion not in set(table["emotion"]):
            warnings.warn(f"no {enroll_emotion} clip to enroll speakers with: the enrolled "
                          "presentation is left out", stacklevel=2)
            presentations.remove("enrolled")
    key = "corpus" if cv == "corpus" else "group"
    groups = table[key].to_numpy() if key in table.columns else None
    y = table["emotion"].to_numpy()
    result = cross_validate_model(estimator, table, y, groups=groups, protocol=cv, folds=folds,
                                  seed=seed, n_jobs=n_jobs, presentations=presentations,
                                  enroll_clips=enroll_clips or ENROLL_CLIPS,
                                  enroll_emotion=enroll_emotion)
    result.dropped_classes = table.attrs.get("dropped_classes", {})
    if cv not in ("random", "corpus") and random_comparison:
        result.comparison = cross_validate_model(estimator, table, y, groups=groups,
                                                 protocol="random", folds=folds, seed=seed,
                                                 n_jobs=n_jobs)
    if report_dir is not None:
        write_report(result, report_dir)
    return result


def train_and_save(features, out: str | os.PathLike, *, model: str | None = None,
                   fusion: str = "auto", cv_folds: int | None = 5, seed: int = 0,
                   n_jobs: int | None = None, classes=None, **params):
    """Fit the package's classifier on a feature table and save it.

    With audio and face features the classifier is
    :class:`~mer_pipeline.fusion.MultimodalEmotionClassifier` (``late``
    fusion unless ``fusion`` says otherwise), otherwise
    :class:`~mer_pipeline.ensemble.EmotionClassifier`
    (:func:`mer_pipeline.fusion.build_estimator` decides). The features'
    provenance (``features.json``) is saved with the model.

    Parameters
    ----------
    features : path or pandas.DataFrame
        A features folder / CSV written by ``mer features``, or the table.
    out : path
        The ``.joblib`` artifact (metadata beside it).
    model : str or None
        ``EmotionClassifier(model=...)``; ``None`` for its default.
    fusion : {"auto", "none", "late", "concat", "gated", "cross_attention", "sequence"}
    cv_folds : int or None
        Run actor-grouped CV first and keep its figures in the metadata
        (``None`` or 0 skips it).
    seed : int
    n_jobs : int or None
        Folds fitted in parallel.
    classes : str, sequence of str or None
        Train on these emotions only (:func:`labelled_table`); the metadata
        records the clips left out.
    **params
        More hyper-parameters of the estimator, and ``corpus_experts``
        (:func:`mer_pipeline.fusion.build_estimator`: on a table of several
        corpora, :class:`~mer_pipeline.experts.CorpusExperts`, by default).

    Returns
    -------
    model : EmotionClassifier, MultimodalEmotionClassifier or CorpusExperts
    metadata : dict
    """
    from .fusion import build_estimator
    from .persistence import read_metadata, save_model

    table = labelled_table(features, classes)
    estimator = build_estimator(table, fusion=fusion, model=model, random_state=seed, **params)
    cv = None
    if cv_folds:
        result = cross_validate_model(estimator, table, table["emotion"],
                                      groups=table["group"], protocol="actor", folds=cv_folds,
                                      seed=seed, n_jobs=n_jobs)
        cv = {k: v for k, v in result.to_dict().items() if k != "model"}
    estimator.fit(table, table["emotion"])
    path = save_model(estimator, out, training_table=table, cv_metrics=cv,
                      provenance=table.attrs.get("provenance"),
                      extra={"dropped_classes": table.attrs["dropped_classes"]}
                      if table.attrs.get("dropped_classes") else None)
    return estimator, read_metadata(path)


def _unscorable(clips: pd.DataFrame, extractors) -> pd.DataFrame:
    """Failure rows for media clips that carry none of the modalities the model uses."""
    from .parallel import FAILURE_COLUMNS

    has = pd.Series(False, index=clips.index)
    for task in extractors.values():
        if task.path_column in clips.columns:
            has |= clips[task.path_column] != ""
    what = " or ".join("face track" if t.path_column == "face_track" else f"{m} stream"
                       for m, t in extractors.items())
    rows = [{"clip_id": cid, "path": r.get("audio_path") or r.get("video_path") or "",
             "stage": "score", "error": f"the clip has no {what}, the model's input"}
            for cid, r in clips[~has].iterrows()]
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def _nothing_to_score(failures: pd.DataFrame) -> str:
    lines = [f"  {r.clip_id or ''}{' ' if r.clip_id and r.path else ''}"
             f"{'(' + str(r.path) + ')' if r.path else ''} [{r.stage}]: {r.error}"
             for r in failures.head(10).itertuples()]
    more = f"\n  … {len(failures) - 10} more" if len(failures) > 10 else ""
    return "nothing to score: no clip yielded the features the model needs" + (
        ":\n" + "\n".join(lines) + more if lines else "")


def input_features(meta: dict, columns, inputs, *, cache_dir=None, n_jobs: int | None = -1,
                   backend: str = "loky", scheduler: str | None = None, progress: bool = True,
                   retry_failed: bool = False, vggface_weights: str | None = None,
                   face_tracks=None, whisper_model: str | None = None):
    """The feature table of feature CSVs/folders and media, with a model's settings.

    Parameters
    ----------
    meta : dict
        The model's metadata (:func:`~mer_pipeline.persistence.load_model`).
    columns : list of str
        The model's feature columns.
    inputs : sequence of paths
    cache_dir, n_jobs, backend, scheduler, progress, retry_failed, vggface_weights,
    face_tracks, whisper_model
        See :func:`score_inputs`.

    Returns
    -------
    table : pandas.DataFrame
        One row per clip that yielded features (duplicates dropped, with a warning).
    failures : pandas.DataFrame
    detections : pandas.DataFrame or None
        Per sampled frame, whether a face was found (media with faces only).

    Raises
    ------
    FeatureTableError
        If no clip yielded features, or a feature table was extracted otherwise.
    """
    from .augment import originals
    from .corpus import discover
    from .exceptions import FeatureTableError
    from .features import check_provenance, extract_features, load_features
    from .parallel import FAILURE_COLUMNS, default_cache_dir
    from .scoring import is_feature_input, model_extractors

    inputs = [Path(p) for p in inputs]
    tables, failures = [], [pd.DataFrame(columns=FAILURE_COLUMNS)]
    media = [p for p in inputs if not is_feature_input(p)]
    for path in inputs:
        if path not in media:
            table = load_features(path, required_meta=())
            check_provenance(meta.get("provenance"), table.attrs.get("provenance"),
                             source=str(path))
            recorded = originals(table)
            if not recorded.all():  # training copies are no clips to score (nor a batch's)
                warnings.warn(f"{path}: {int((~recorded).sum())} augmented training copies "
                              "left out; only the recordings are scored", stacklevel=2)
                table = table[recorded]
            tables.append(table)
    detections = None
    if media:
        scan = discover(media, require_labels=False)
        extractors = model_extractors(meta, columns, vggface_weights, whisper_model)
        clips = scan.clips
        if any(t.path_column == "face_track" for t in extractors.values()):
            if face_tracks is None:
                warnings.warn("the model's face features come from landmark tracks and no "
                              "tracks were given (--face-tracks): clips are predicted from "
                              "their other modalities", stacklevel=2)
                extractors = {m: t for m, t in extractors.items()
                              if t.path_column != "face_track"}
            else:
                from .face.tracks import attach_tracks, track_index

                index, problems = track_index(face_tracks)
                clips, _ = attach_tracks(clips, index)
                if len(problems):
                    failures.append(pd.DataFrame({"clip_id": "", "path": problems["path"],
                                                  "stage": "tracks",
                                                  "error": problems["reason"]}))
        if not extractors:
            raise FeatureTableError("the model's inputs cannot be extracted from these media")
        scan = type(scan)(clips=clips, unparsed=scan.unparsed)
        failures.append(_unscorable(clips, extractors))
        cache = cache_dir or default_cache_dir(None)
        with tempfile.TemporaryDirectory() as tmp:
            _, run = extract_features(scan, tmp, extractors=extractors,
                                      cache_dir=cache, n_jobs=n_jobs, backend=backend,
                                      scheduler=scheduler, progress=progress,
                                      retry_failed=retry_failed)
            ok = any(e["clips_with_features"] for e in run.modalities.values())
            table = load_features(tmp, required_meta=()) if ok else None
            found = Path(tmp) / _schema.DETECTION_TABLE
            detections = pd.read_csv(found) if found.is_file() else None
        if table is not None:
            tables.append(table)
        failures.append(run.failures)
    fails = pd.concat([f for f in failures if len(f)] or failures[:1], ignore_index=True)
    if not tables:
        raise FeatureTableError(_nothing_to_score(fails) if media else "no input given")
    table = pd.concat(tables)
    dup = table.index.duplicated()
    if dup.any():
        warnings.warn(f"{int(dup.sum())} clip id(s) appear twice; keeping the first",
                      stacklevel=2)
        table = table[~dup]
    return table, fails, detections


def score_inputs(model_path: str | os.PathLike, inputs, *, out: str | os.PathLike | None = None,
                 trust: bool = False, cache_dir=None, n_jobs: int | None = -1,
                 backend: str = "loky", scheduler: str | None = None, progress: bool = True,
                 retry_failed: bool = False, vggface_weights: str | None = None,
                 face_tracks=None, whisper_model: str | None = None, classes=None,
                 speakers=None, speaker: str | None = None):
    """Score feature CSVs and/or media files and folders with a saved model.

    Parameters
    ----------
    model_path : path
        A model saved by :func:`mer_pipeline.persistence.save_model` (checked
        by :func:`~mer_pipeline.persistence.load_model`).
    inputs : sequence of paths
        Feature CSVs (columns ``clip_id`` and ``<modality>__…``), features
        folders (``mer features`` output, frame tables included), or media files,
        folders and listings. Media get their features extracted on the way,
        through the same per-clip cache as ``mer features``, with the
        extractors' settings the model recorded (frame rate, encoders, audio
        set, …). Feature tables whose recorded settings differ from the
        model's are refused. Labels in the file names are kept (column
        ``emotion``) but not needed.
    out : path or None
        Write the predictions CSV here, ``failures.csv`` beside it, and, when
        faces were looked for in media, ``face_detections.csv`` (one row per
        sampled frame: time, face found or not, box).
    trust : bool
        Passed to :func:`~mer_pipeline.persistence.load_model`.
    cache_dir, n_jobs, backend, scheduler, progress, retry_failed
        See :func:`mer_pipeline.parallel.map_clips`; the cache defaults to
        ``$MER_CACHE_DIR``, else the user's cache folder (``~/.cache/mer_pipeline``),
        wherever the command runs.
    vggface_weights : path or None
        For a model trained on ``vggface`` face features (default
        ``$MER_VGGFACE_WEIGHTS``); its digest must match the one recorded.
    whisper_model : path or None
        Whisper weights, for a model trained on the ``whisper`` audio set with
        weights other than the installed package's (only their digest is recorded).
    face_tracks : path, sequence of paths or None
        Landmark tracks of the media's recordings, for a model whose face
        features came from tracks (:mod:`mer_pipeline.face.tracks`). Without
        them such a model predicts those clips from their audio, with a warning.
    classes : str, sequence of str or None
        Decide among these of the model's classes only (names or a preset,
        :func:`mer_pipeline.config.parse_classes`): the others' probabilities
        are 0 and the rest renormalised, e.g. to score a corpus with four
        emotions with a model that knows eight.
    speakers : path or None
        A folder of enrolled speaker profiles (:func:`enroll_inputs`): clips of
        an enrolled speaker that the inputs hold too few of for their own
        statistics are normalised by the profile's
        (:meth:`~mer_pipeline.ensemble.EmotionClassifier.predict_proba`).
        Profiles of features extracted otherwise than the model's are refused.
    speaker : str or None
        The speaker of every input clip (otherwise read from the file names or
        the table's ``group`` column); with ``speakers``, their profile must be
        there.

    Returns
    -------
    predictions : pandas.DataFrame
        One row per clip: ``predicted``, ``proba_<class>`` per class,
        ``modalities``.
    failures : pandas.DataFrame
        Clips that could not be scored, with the stage and reason.

    Raises
    ------
    FeatureTableError
        If no clip could be scored (the message lists why, clip by clip), or
        a feature table was extracted with other settings than the model's.
    """
    from .exceptions import ParameterError
    from .parallel import write_failures
    from .persistence import load_model
    from .scoring import predict_table

    model, meta = load_model(model_path, trust=trust)
    columns = meta.get("feature_columns") or list(model.feature_names_in_)
    if out is not None and Path(out).is_dir():
        raise ParameterError(f"--out {out} is a folder; give the predictions file "
                             f"(e.g. {Path(out) / 'predictions.csv'})")
    profiles = None
    if speakers is not None:
        from .enrollment import load_profiles

        profiles = load_profiles(speakers, provenance=meta.get("provenance"), speaker=speaker)
    table, fails, detections = input_features(
        meta, columns, inputs, cache_dir=cache_dir, n_jobs=n_jobs, backend=backend,
        scheduler=scheduler, progress=progress, retry_failed=retry_failed,
        vggface_weights=vggface_weights, face_tracks=face_tracks, whisper_model=whisper_model)
    if speaker is not None:
        table = table.assign(group=str(speaker))
    if profiles:
        known = table["group"].astype(str).isin(list(profiles)) if "group" in table.columns \
            else pd.Series(False, index=table.index)
        if not known.any():
            seen = sorted(set(table["group"].astype(str))) if "group" in table.columns else []
            warnings.warn(f"none of the {len(table)} clips is of an enrolled speaker ("
                          f"{', '.join(sorted(profiles))}); their speakers: "
                          f"{', '.join(seen[:5]) or 'unknown'} (--speaker names them)",
                          stacklevel=2)
    predictions = predict_table(model, table, columns, classes=classes,
                                profiles=profiles)
    if out is not None:
        from ._io import atomic_path

        out = Path(out)
        with atomic_path(out) as tmp_out:
            predictions.to_csv(tmp_out, float_format="%.6f")
        write_failures(fails, out.parent / "failures.csv")
        if detections is not None:
            with atomic_path(out.parent / _schema.DETECTION_TABLE) as tmp_out:
                detections.to_csv(tmp_out, index=False)
    return predictions, fails


def enroll_inputs(model_path: str | os.PathLike, inputs, speaker: str, out: str | os.PathLike,
                  *, emotion: str | None = None, labelled: bool = True, trust: bool = False,
                  cache_dir=None, n_jobs: int | None = -1, progress: bool = True,
                  vggface_weights: str | None = None, face_tracks=None,
                  whisper_model: str | None = None, append: bool = False):
    """Enroll a speaker from reference clips: write their profile for a model.

    The clips' features are extracted with the model's settings (or read from
    feature tables, which must match them), and stored with their provenance as
    ``<out>/<speaker>.profile.npz`` (:mod:`mer_pipeline.enrollment`); the model is
    checked to be able to use it (``profile_weight`` of either model).

    Parameters
    ----------
    model_path : path
    inputs : sequence of paths
        Reference clips of the speaker: media, folders, listings or feature tables.
    speaker : str
        The id later clips of the speaker carry (``mer score --speaker``, or their
        ``group`` from the file names).
    out : path
        The profiles folder.
    emotion : str or None
        The emotion of every reference clip (e.g. ``"neutral"``); ``None``: the
        labels in the file names where every clip has one, else unlabelled.
    labelled : bool, default=True
        ``False`` ignores the labels in the file names.
    trust, cache_dir, n_jobs, progress, vggface_weights, face_tracks, whisper_model
        See :func:`score_inputs`.
    append : bool, default=False
        Add the clips to the speaker's stored profile (if any) instead of replacing
        it (:func:`~mer_pipeline.enrollment.merge_profiles`): more references,
        of more emotions, are trusted more.

    Returns
    -------
    profile : SpeakerProfile
    path : pathlib.Path
        The profile written.
    failures : pandas.DataFrame
        Reference clips that yielded no features.
    summary : dict
        ``clips``, ``emotions`` (or ``"unlabelled"``) and ``weight``: how far the
        model trusts the profile's statistics (0: not at all, 1: fully).
    """
    from .enrollment import enroll, load_profile, merge_profiles, profile_name, save_profile
    from .persistence import load_model

    model, meta = load_model(model_path, trust=trust)
    if not hasattr(model, "profile_weight"):  # before any extraction
        raise ParameterError(f"{type(model).__name__} takes no speaker profiles")
    columns = meta.get("feature_columns") or list(model.feature_names_in_)
    table, fails, _ = input_features(meta, columns, inputs, cache_dir=cache_dir,
                                     n_jobs=n_jobs, progress=progress,
                                     vggface_weights=vggface_weights, face_tracks=face_tracks,
                                     whisper_model=whisper_model)
    provenance = table.attrs.get("provenance") or meta.get("provenance")
    features = set(_schema.feature_columns(table))
    keep = [c for c in table.columns if c not in features] + [c for c in columns if c in features]
    profile = enroll(table[keep], speaker, emotion=emotion, labelled=labelled)
    profile.provenance = provenance
    stored = Path(out) / profile_name(profile.speaker)
    if append and stored.is_file():
        profile = merge_profiles(load_profile(stored), profile)
    weight = model.profile_weight(profile)
    path = save_profile(profile, out)
    summary = {"clips": profile.n_clips, "weight": round(weight, 3),
               "emotions": "unlabelled" if profile.emotions is None else
               dict(pd.Series(profile.emotions).value_counts().sort_index())}
    return profile, path, fails, summary
