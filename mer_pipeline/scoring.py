"""Scoring with a trained model: feature CSVs or media files in, one row per clip out."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import FeatureTableError
from .features import META_COLUMNS, SEQUENCE_COLUMNS, feature_columns, load_features

__all__ = ["align_features", "predict_table", "score_inputs", "feature_set_of", "face_encoders_of",
           "modalities_used"]


def feature_set_of(columns) -> str:
    """The audio feature set a model's columns come from (``egemaps+compare+...``)."""
    parts = []
    for col in columns:
        if str(col).startswith("audio__"):
            part = str(col)[len("audio__"):].split("_", 1)[0]
            if part not in parts:
                parts.append(part)
    return "+".join(parts)


_ENCODER_PREFIX = {"expression": "face__expr_", "landmarks": "face__lmk_", "vggface": "face__vgg_"}


def face_encoders_of(columns) -> list[str]:
    """The face encoders a model's columns come from (``["expression", "landmarks"]``)."""
    return [enc for enc, prefix in _ENCODER_PREFIX.items()
            if any(str(c).startswith(prefix) for c in columns)]


def align_features(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Check a feature table against a model's columns and put them in its order.

    Missing feature columns are an error that lists them; extra ones are
    ignored with a warning.

    Raises
    ------
    FeatureTableError
    """
    have = set(table.columns)
    missing = [c for c in columns if c not in have]
    if missing:
        shown = ", ".join(missing[:10]) + (f" … ({len(missing)} in all)" if len(missing) > 10
                                           else "")
        raise FeatureTableError(f"the feature table lacks {len(missing)} column(s) the model "
                                f"needs: {shown}")
    wanted = set(columns)
    extra = [c for c in feature_columns(table) if c not in wanted]
    if extra:
        warnings.warn(f"ignoring {len(extra)} feature column(s) the model does not use "
                      f"(e.g. {extra[0]})", stacklevel=2)
    meta = [c for c in META_COLUMNS if c in table.columns]
    sequences = [c for c in SEQUENCE_COLUMNS.values() if c in table.columns]
    return table[meta + list(columns) + sequences]


def predict_table(model, table: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Predictions for a feature table: ``predicted``, ``proba_<class>``, ``modalities``.

    Parameters
    ----------
    model : fitted classifier with ``predict_proba`` and ``classes_``
    table : pandas.DataFrame
        Indexed by ``clip_id``.
    columns : list of str or None
        The model's feature columns (default: ``model.feature_names_in_``).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``clip_id``; probabilities sum to 1 per row.
    """
    columns = list(columns if columns is not None else model.feature_names_in_)
    X = align_features(table, columns)
    if "group" not in X.columns:
        X = X.assign(group="")
    proba = model.predict_proba(X)
    classes = [str(c) for c in model.classes_]
    out = pd.DataFrame(index=X.index.rename("clip_id"))
    out["predicted"] = np.asarray(classes)[np.argmax(proba, axis=1)]
    for j, c in enumerate(classes):
        out[f"proba_{c}"] = proba[:, j]
    out["modalities"] = modalities_used(model, X, columns)
    if "emotion" in table.columns and (table["emotion"].astype(str) != "").any():
        out.insert(0, "emotion", table["emotion"])
    return out


def modalities_used(model, X: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Per clip, the modalities its prediction used (``audio+face``, ``audio``, …).

    The model's own record where it keeps one
    (:meth:`~mer_pipeline.fusion.MultimodalEmotionClassifier.modalities_used`);
    otherwise the model's modalities of which the clip has at least one feature.
    """
    if hasattr(model, "modalities_used"):
        return model.modalities_used(X)
    mods = sorted({c.split("__", 1)[0] for c in columns if "__" in c})
    have = {m: X[[c for c in columns if c.startswith(f"{m}__")]].notna().any(axis=1).to_numpy()
            for m in mods}
    return np.array(["+".join(m for m in mods if have[m][i]) or "none" for i in range(len(X))],
                    dtype=object)


def _is_feature_csv(path: Path) -> bool:
    """A feature CSV, or a features folder written by ``mer features``."""
    from .features import AUDIO_TABLE, VIDEO_TABLE

    if path.is_dir():
        return (path / AUDIO_TABLE).is_file() or (path / VIDEO_TABLE).is_file()
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    header = pd.read_csv(path, nrows=0).columns
    return "clip_id" in header and any("__" in c for c in header)


def score_inputs(model_path: str | os.PathLike, inputs, *, out: str | os.PathLike | None = None,
                 trust: bool = False, cache_dir=None, n_jobs: int | None = -1,
                 backend: str = "loky", scheduler: str | None = None, progress: bool = True,
                 retry_failed: bool = False, vggface_weights: str | None = None):
    """Score feature CSVs and/or media files and folders with a saved model.

    Parameters
    ----------
    model_path : path
        A model saved by :func:`mer_pipeline.persistence.save_model` (checked
        by :func:`~mer_pipeline.persistence.load_model`).
    inputs : sequence of paths
        Feature CSVs (columns ``clip_id`` and ``<modality>__…``), features
        folders (``mer features`` output, frame tables included), or media files,
        folders and listings; media get their features extracted on the way,
        through the same per-clip cache as ``mer features``. Labels in the file
        names are kept (column ``emotion``) but not needed.
    out : path or None
        Write the predictions CSV here, and ``failures.csv`` beside it.
    trust : bool
        Passed to :func:`~mer_pipeline.persistence.load_model`.
    cache_dir, n_jobs, backend, scheduler, progress, retry_failed
        See :func:`mer_pipeline.parallel.map_clips`; the cache defaults to
        ``$MER_CACHE_DIR`` or ``features/.cache``.
    vggface_weights : path or None
        For a model trained on ``vggface`` face features (default
        ``$MER_VGGFACE_WEIGHTS``). The audio set and the face encoders are
        read from the model's columns.

    Returns
    -------
    predictions : pandas.DataFrame
        One row per clip: ``predicted``, ``proba_<class>`` per class,
        ``modalities``.
    failures : pandas.DataFrame
        Clips that could not be scored, with the stage and reason.
    """
    from .config import FEATURES_DIR
    from .corpus import discover
    from .features import extract_features
    from .parallel import FAILURE_COLUMNS, default_cache_dir, write_failures
    from .persistence import load_model

    model, meta = load_model(model_path, trust=trust)
    columns = meta.get("feature_columns") or list(model.feature_names_in_)
    inputs = [Path(p) for p in inputs]
    tables, failures = [], [pd.DataFrame(columns=FAILURE_COLUMNS)]
    media = [p for p in inputs if not _is_feature_csv(p)]
    for path in inputs:
        if path not in media:
            tables.append(load_features(path, required_meta=()))
    if media:
        scan = discover(media, require_labels=False)
        cache = cache_dir or default_cache_dir(FEATURES_DIR)
        modalities = [m for m in ("audio", "face") if any(c.startswith(f"{m}__") for c in columns)]
        with tempfile.TemporaryDirectory() as tmp:
            _, run = extract_features(scan, tmp, modalities=modalities,
                                      audio_set=feature_set_of(columns) or None,
                                      face_encoders=face_encoders_of(columns) or ("expression",),
                                      vggface_weights=vggface_weights,
                                      cache_dir=cache, n_jobs=n_jobs, backend=backend,
                                      scheduler=scheduler, progress=progress,
                                      retry_failed=retry_failed)
            table = load_features(tmp, required_meta=()) if run.values else None
        if table is not None:
            tables.append(table)
        failures.append(run.failures)
    if not tables:
        raise FeatureTableError("nothing to score: no clip yielded features "
                                "(see the failures listed)" if media else "no input given")
    table = pd.concat(tables)
    dup = table.index.duplicated()
    if dup.any():
        warnings.warn(f"{int(dup.sum())} clip id(s) appear twice; keeping the first",
                      stacklevel=2)
        table = table[~dup]
    predictions = predict_table(model, table, columns)
    fails = pd.concat(failures, ignore_index=True)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        predictions.to_csv(out, float_format="%.6f")
        write_failures(fails, out.parent / "failures.csv")
    return predictions, fails
