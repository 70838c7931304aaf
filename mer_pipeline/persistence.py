"""Saving and loading trained models, with metadata and an integrity check.

A model is saved as two files: ``model.joblib`` (the fitted estimator) and
``model.joblib.json`` beside it (the metadata: package and library versions,
feature columns, classes, a summary of the training corpus including the
actors it saw, how its features were extracted (``provenance``: each
extractor's name, version and settings, from the features folder's
``features.json``), cross-validated metrics, and the SHA-256 of the
``.joblib`` file). Training itself is :func:`mer_pipeline.workflows.train_and_save`.

Loading a joblib file runs code from it, so :func:`load_model` checks the
artifact's SHA-256 against its metadata *before* unpickling and refuses a
file that does not match (a tampered or corrupted artifact), unless the
caller passes ``trust=True``. It also refuses an artifact written by another
version of this package or of scikit-learn, whose pickles are not portable.
Only load artifacts from sources you trust.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from . import _schema
from ._io import atomic_path, write_json
from ._version import __version__
from .exceptions import MerError

__all__ = ["ArtifactError", "save_model", "load_model", "read_metadata"]

FORMAT = 2  # 2: provenance (how the features were extracted)


class ArtifactError(MerError):
    """A model artifact that is missing, altered or from an incompatible version."""


def _versions() -> dict:
    import sklearn

    out = {"mer_pipeline": __version__, "scikit-learn": sklearn.__version__,
           "numpy": np.__version__, "pandas": pd.__version__, "joblib": joblib.__version__,
           "python": platform.python_version()}
    try:
        import xgboost

        out["xgboost"] = xgboost.__version__
    except ImportError:  # pragma: no cover - optional
        pass
    return out


def _sha256(path: Path) -> str:
    from .parallel import file_sha256

    return file_sha256(path)


def _training_summary(table: pd.DataFrame | None) -> dict:
    if table is None:
        return {}
    from .augment import originals

    recorded = originals(table)
    out = {"n_clips": int(recorded.sum())}
    if not recorded.all():  # augmented copies: trained on, counted apart
        out["augmented_rows"] = int((~recorded).sum())
        table = table[recorded]
    for col in ("corpus", "emotion"):
        if col in table.columns:
            out[f"{col}_counts"] = {str(k): int(v) for k, v in
                                    table[col].value_counts().sort_index().items()}
    if "group" in table.columns:
        out["actors"] = sorted(str(g) for g in table["group"].unique() if g)
    for col in ("face_subject",):  # e.g. the paired benchmark's face subjects
        if col in table.columns:
            out[f"{col}s"] = sorted(str(g) for g in table[col].unique() if g)
    for m in _schema.table_modalities(table):
        cols = _schema.feature_columns(table, m)
        out[f"clips_with_{m}"] = int(table[cols].notna().any(axis=1).sum())
    return out


def _model_provenance(provenance: dict | None, modalities) -> dict | None:
    """The part of a features folder's record a model keeps: how each of its
    modalities' features were extracted."""
    if not provenance:
        return None
    keep = ("extractor", "version", "params", "augment")
    mods = {m: {k: e[k] for k in keep if k in e}
            for m, e in (provenance.get("modalities") or {}).items() if m in modalities}
    return {"mer_pipeline": provenance.get("mer_pipeline"), "modalities": mods,
            "corpus": provenance.get("corpus")}


def save_model(model, path: str | os.PathLike, *, training_table: pd.DataFrame | None = None,
               cv_metrics: dict | None = None, provenance: dict | None = None,
               extra: dict | None = None) -> Path:
    """Write a fitted model and its metadata.

    Parameters
    ----------
    model : fitted estimator
        Must have ``classes_``; ``feature_names_in_`` is recorded when present.
    path : path
        The ``.joblib`` file; the metadata goes to ``<path>.json``.
    training_table : pandas.DataFrame or None
        The feature table the model was fit on (for the corpus summary).
    cv_metrics : dict or None
        Cross-validated figures to keep with the model.
    provenance : dict or None
        How the training features were extracted (a features folder's
        ``features.json``, :func:`mer_pipeline.features.read_provenance`);
        default: ``training_table.attrs["provenance"]``. Scoring rebuilds the
        extractors from it and refuses features extracted otherwise.
    extra : dict or None
        More metadata (e.g. the feature set name).

    Returns
    -------
    Path
        The ``.joblib`` path.
    """
    path = Path(path)
    if path.is_dir():
        from .exceptions import ParameterError

        raise ParameterError(f"{path} is a folder; give the model file (e.g. {path}/model.joblib)")
    with atomic_path(path) as tmp:
        joblib.dump(model, tmp, compress=3)
    names = getattr(model, "feature_names_in_", None)
    if provenance is None and training_table is not None:
        provenance = training_table.attrs.get("provenance")
    modalities = list(getattr(model, "modalities_", []) or _schema.table_modalities(
        [] if names is None else names))
    meta = {
        "format": FORMAT,
        "artifact": path.name,
        "sha256": _sha256(path),
        "versions": _versions(),
        "estimator": type(model).__name__,
        "params": {k: v for k, v in model.get_params(deep=True).items()
                   if isinstance(v, (str, int, float, bool)) or v is None},
        "modalities": modalities,
        "frame_sequences": sorted(m for m, used in getattr(model, "sequences_", {}).items()
                                  if used),
        "classes": [str(c) for c in model.classes_],
        "feature_columns": [str(n) for n in names] if names is not None else None,
        "n_features": int(getattr(model, "n_features_in_", 0)),
        "training": _training_summary(training_table),
        "provenance": _model_provenance(provenance, modalities),
        "cv_metrics": cv_metrics,
        **({"corpus_experts": sorted(model.experts_)} if getattr(model, "experts_", None)
           else {}),
        # the classes each restricted corpus's clips were weighed against (labelsets)
        **({"label_sets": model.label_sets_} if getattr(model, "label_sets_", None) else {}),
        **(extra or {}),
    }
    write_json(str(path) + ".json", meta)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata saved beside a model artifact."""
    meta_path = Path(str(path) + ".json")
    if not Path(path).is_file():
        raise ArtifactError(f"no model artifact at {path} (train one with `mer train`)")
    if not meta_path.is_file():
        raise ArtifactError(f"{path} has no metadata file {meta_path.name}; it was not written by "
                            "mer_pipeline.save_model and will not be loaded")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_path} is not valid JSON ({exc})") from None


def load_model(path: str | os.PathLike, *, trust: bool = False):
    """Load a model saved by :func:`save_model`, after checking it.

    Parameters
    ----------
    path : path
        The ``.joblib`` file.
    trust : bool, default=False
        Load even if the hash or the versions do not match (joblib runs code
        from the file: only for artifacts from a source you trust).

    Returns
    -------
    model : fitted estimator
    metadata : dict

    Raises
    ------
    ArtifactError
        If the artifact is missing, its SHA-256 differs from the metadata's,
        or it was written by another version of mer_pipeline or scikit-learn.
    """
    path = Path(path)
    meta = read_metadata(path)
    if not trust:
        digest = _sha256(path)
        if digest != meta.get("sha256"):
            raise ArtifactError(
                f"{path} does not match its metadata (SHA-256 {digest[:12]}… != "
                f"{str(meta.get('sha256'))[:12]}…): the file was altered or corrupted; refusing "
                "to load it (joblib runs code on load). Pass trust=True / --trust only for a "
                "file from a source you trust.")
        now = _versions()
        for lib in ("mer_pipeline", "scikit-learn"):
            saved = meta.get("versions", {}).get(lib)
            if saved != now[lib]:
                raise ArtifactError(f"{path} was written with {lib} {saved}, this is {now[lib]}: "
                                    "retrain the model (or pass trust=True / --trust at your "
                                    "own risk)")
    try:
        model = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - a damaged artifact under trust=True
        raise ArtifactError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    return model, meta
