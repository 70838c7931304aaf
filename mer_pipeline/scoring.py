"""Predictions of a trained model for a feature table: pure functions.

Scoring files and folders (feature tables or media) is
:func:`mer_pipeline.workflows.score_inputs`.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import _schema
from ._schema import META_COLUMNS, SEQUENCE_COLUMNS, feature_columns
from .exceptions import FeatureTableError

__all__ = ["align_features", "predict_table", "feature_set_of", "face_encoders_of",
           "modalities_used", "is_feature_input", "model_extractors"]


def feature_set_of(columns) -> str:
    """The audio feature set of a model's columns (``egemaps+compare+librosa``), read from
    the names: for models that record no extraction settings."""
    return "+".join(_schema.feature_sets(columns, "audio"))


def face_encoders_of(columns) -> list[str]:
    """The face encoders of a model's columns (``["expression", "landmarks"]``), read from
    the names: for models that record no extraction settings."""
    from .face.encoders import encoders_with_prefixes

    return encoders_with_prefixes(_schema.feature_sets(columns, "face"))


def model_extractors(meta: dict, columns, vggface_weights=None, whisper_model=None) -> dict:
    """The extractors that make a saved model's features, per modality it uses.

    Rebuilt from the extraction settings the model's metadata records
    (``provenance``, from the training table's ``features.json``), so media scored
    with the model get the features it was trained on.

    Parameters
    ----------
    meta : dict
        The model's metadata (:func:`mer_pipeline.persistence.read_metadata`).
    columns : list of str
        The model's feature columns.
    vggface_weights, whisper_model : str or path, optional
        Local weights for the extractors that take them.

    Returns
    -------
    dict of str to extraction task
        By modality (``"audio"``, ``"face"``).

    Warns
    -----
    UserWarning
        The model records no extraction settings for a modality (trained on a table
        without ``features.json``): that modality is extracted with the defaults of
        the feature sets its column names spell.
    """
    from .features import make_extractor

    recorded = ((meta.get("provenance") or {}).get("modalities")) or {}
    out = {}
    for modality in _schema.table_modalities(columns):
        entry = recorded.get(modality) or {}
        if entry.get("params") is not None:
            out[modality] = make_extractor(modality, params=entry["params"],
                                           extractor=entry.get("extractor"),
                                           vggface_weights=vggface_weights,
                                           whisper_model=whisper_model)
            continue
        warnings.warn(f"the model records no {modality} extraction settings (it was trained on "
                      "a table without features.json): extracting with the defaults for its "
                      "feature sets", stacklevel=3)
        out[modality] = make_extractor(modality, audio_set=feature_set_of(columns) or None,
                                       face_encoders=face_encoders_of(columns) or ("expression",),
                                       vggface_weights=vggface_weights,
                                       whisper_model=whisper_model)
    return out


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
    absent = [m for m in _schema.table_modalities(columns)
              if not feature_columns(table, m) and len(_schema.table_modalities(columns)) > 1]
    if absent:  # a whole modality missing: the clips lack it (predicted from what they have)
        warnings.warn(f"the input has no {' or '.join(absent)} features: each clip is "
                      f"predicted from the modalities it has", stacklevel=2)
        fill = [c for c in missing if _schema.modality_of(c) in absent]
        parts = [table, pd.DataFrame(np.nan, index=table.index, columns=fill)]
        for m in absent:  # no frames either
            if SEQUENCE_COLUMNS.get(m) and SEQUENCE_COLUMNS[m] not in table.columns:
                parts.append(pd.Series([None] * len(table), index=table.index, dtype=object,
                                       name=SEQUENCE_COLUMNS[m]))
        table = pd.concat(parts, axis=1)
        missing = [c for c in missing if c not in set(fill)]
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
    order = meta + list(columns) + sequences
    if table.columns.tolist() == order:
        return table  # already in the model's order: no copy
    return table[order]


def predict_table(model, table: pd.DataFrame, columns: list[str] | None = None, *,
                  classes=None, profiles=None) -> pd.DataFrame:
    """Predictions for a feature table: ``predicted``, ``proba_<class>``, ``modalities``.

    Parameters
    ----------
    model : fitted classifier with ``predict_proba`` and ``classes_``
    table : pandas.DataFrame
        Indexed by ``clip_id``.
    columns : list of str or None
        The model's feature columns (default: ``model.feature_names_in_``).
    classes : str, sequence of str or None
        Decide among these of the model's classes only (names or a preset,
        :func:`mer_pipeline.config.parse_classes`); the others get probability 0.
    profiles : dict of str to SpeakerProfile, or None
        Enrolled speakers, passed to the model's ``predict_proba`` (a model that
        takes none is refused).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``clip_id``; probabilities sum to 1 per row.

    Raises
    ------
    ParameterError
        If ``classes`` names a class the model does not know.
    """
    from .config import parse_classes
    from .evaluation import restrict_proba
    from .exceptions import ParameterError

    columns = list(columns if columns is not None else model.feature_names_in_)
    wanted = parse_classes(classes)
    known = [str(c) for c in model.classes_]
    if wanted is not None and set(wanted) - set(known):
        raise ParameterError(f"the model does not know class(es) "
                             f"{', '.join(sorted(set(wanted) - set(known)))}; it knows "
                             f"{', '.join(known)}")
    X = align_features(table, columns)
    if "group" not in X.columns:
        X = X.assign(group="")
    if profiles:
        from .evaluation import takes_profiles

        if not takes_profiles(model):
            raise ParameterError(f"{type(model).__name__} takes no speaker profiles")
        proba = model.predict_proba(X, profiles=profiles)
    else:
        proba = model.predict_proba(X)
    if wanted is not None:
        proba = restrict_proba(proba, np.isin(known, wanted))
    classes = known
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
    mods = sorted(_schema.table_modalities(columns))
    have = {m: X[feature_columns(columns, m)].notna().any(axis=1).to_numpy() for m in mods}
    return np.array(["+".join(m for m in mods if have[m][i]) or "none" for i in range(len(X))],
                    dtype=object)


def is_feature_input(path) -> bool:
    """A feature CSV, or a features folder written by ``mer features``."""
    path = Path(path)
    if path.is_dir():
        return any((path / name).is_file() for name in
                   (*_schema.TABLES.values(), _schema.PROVENANCE_FILE))
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    if ";" in first and "," not in first and feature_columns(first.strip().split(";")):
        raise FeatureTableError(f"{path} is separated by ';': feature tables are "
                                "comma-separated CSV (re-save it with ',')")
    header = pd.read_csv(path, nrows=0).columns
    # feature columns make it a feature table (load_features names a missing clip_id);
    # otherwise it is a listing of media
    return bool(feature_columns(header))
