"""The feature schema: table and column names, and the per-clip result type.

The one module that knows how feature columns are named. Every other module
asks it (``feature_columns``, ``modality_of``, ``column``, …) instead of
parsing a name itself; a test holds the package to that.

A feature column is ``<modality>__<set>_<feature>``: the modality (``audio``,
``face``), two underscores, then the feature, whose first ``_``-separated part
names the feature set or frame encoder it comes from (``audio__egemaps_F0…``,
``face__expr_prob_happy_mean``). Metadata columns (:data:`META_COLUMNS`), the
bookkeeping columns of a modality (``face_n_frames``, ``face_fraction``) and
the frame-sequence columns (``audio_frames``, ``face_frames``) are not
features.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

__all__ = [
    "MODALITIES", "META_COLUMNS", "AUGMENT_COLUMN", "SEQUENCE_COLUMNS", "BOOKKEEPING_COLUMNS", "TABLES",
    "FRAME_TABLES", "DETECTION_TABLE", "FAILURES_TABLE", "PROVENANCE_FILE",
    "column", "prefix", "parse_column", "modality_of", "feature_set_of", "is_feature",
    "feature_columns", "non_feature_columns", "table_modalities", "modality_blocks",
    "feature_blocks", "feature_sets", "strip_modality", "FrameFeatures", "ClipFeatures",
]

#: The modalities, in the order tables and models list them.
MODALITIES: tuple[str, ...] = ("audio", "face")

#: Metadata columns of every feature table (after ``clip_id``), in this order.
META_COLUMNS: list[str] = ["corpus", "actor", "group", "gender", "emotion", "split"]

#: Metadata column of an augmented training copy (:mod:`mer_pipeline.augment`): the clip id
#: of the recording it was made from (empty for a recording). Written only by tables that
#: hold copies.
AUGMENT_COLUMN = "augment_of"

_SEP = "__"

#: Modality → the object column :func:`mer_pipeline.features.load_features` adds: one
#: 2-D float32 array (frames × features) per clip, or ``None`` where the clip has none.
SEQUENCE_COLUMNS: dict[str, str] = {"audio": "audio_frames", "face": "face_frames"}

#: Modality → columns it writes beside its features that are not features.
BOOKKEEPING_COLUMNS: dict[str, tuple[str, ...]] = {
    "audio": (), "face": ("face_n_frames", "face_fraction")}

#: Modality → its clip table in a features folder.
TABLES: dict[str, str] = {"audio": "audio_features.csv", "face": "video_features.csv"}
#: Modality → its frame table (long format: clip_id, frame, features).
FRAME_TABLES: dict[str, str] = {"audio": "audio_frames.parquet", "face": "face_frames.parquet"}
DETECTION_TABLE = "face_detections.csv"
FAILURES_TABLE = "failures.csv"
#: The record of how a features folder was made (extractors, their settings, the corpus).
PROVENANCE_FILE = "features.json"


def prefix(modality: str) -> str:
    """The prefix of a modality's feature columns: ``"audio"`` → ``"audio__"``."""
    return f"{modality}{_SEP}"


def column(modality: str, feature: str) -> str:
    """A feature column's name: ``column("audio", "egemaps_x")`` → ``"audio__egemaps_x"``."""
    return f"{modality}{_SEP}{feature}"


def parse_column(name) -> tuple[str, str] | None:
    """``(modality, feature)`` of a feature column, ``None`` for any other column."""
    return _parse(str(name))


@lru_cache(maxsize=1 << 16)
def _parse(name: str) -> tuple[str, str] | None:  # tables have thousands of columns, asked often
    if _SEP not in name:
        return None
    modality, feature = name.split(_SEP, 1)
    if not modality or not feature:
        return None
    return modality, feature


def is_feature(name) -> bool:
    """Whether a column is a feature column (named ``<modality>__<feature>``)."""
    return parse_column(name) is not None


def modality_of(name) -> str | None:
    """The modality of a feature column (``None`` for other columns)."""
    parsed = parse_column(name)
    return None if parsed is None else parsed[0]


def feature_set_of(name) -> str | None:
    """The feature set (audio) or encoder prefix (face) of a feature column:
    ``audio__egemaps_F0`` → ``egemaps``, ``face__expr_prob_happy_mean`` → ``expr``."""
    parsed = parse_column(name)
    return None if parsed is None else parsed[1].split("_", 1)[0]


def strip_modality(name) -> str:
    """A feature column's name without its modality: ``audio__egemaps_x`` → ``egemaps_x``."""
    parsed = parse_column(name)
    return str(name) if parsed is None else parsed[1]


def _columns(table) -> list:
    if isinstance(table, pd.DataFrame):
        return table.columns.tolist()  # in bulk: iterating an Arrow-backed index is slow
    return list(table)


def feature_columns(table, modality: str | None = None) -> list[str]:
    """Feature columns of a table (or of a list of names), optionally of one modality."""
    return [c for c in _columns(table) if is_feature(c)
            and (modality is None or modality_of(c) == modality)]


def non_feature_columns(table) -> list[str]:
    """Columns that are neither features nor frame sequences nor bookkeeping."""
    skip = set(SEQUENCE_COLUMNS.values()) | {c for cols in BOOKKEEPING_COLUMNS.values()
                                             for c in cols}
    return [c for c in _columns(table) if not is_feature(c) and c not in skip]


def table_modalities(table) -> list[str]:
    """Modalities with feature columns in a table (or list of names), in :data:`MODALITIES` order."""
    found = {modality_of(c) for c in _columns(table)} - {None}
    return [m for m in MODALITIES if m in found] + sorted(found - set(MODALITIES))


def modality_blocks(names) -> dict:
    """Column indices per modality: ``audio__x`` → ``audio``; unprefixed → ``features``."""
    blocks: dict = {}
    for i, name in enumerate(names):
        blocks.setdefault(modality_of(name) or "features", []).append(i)
    return blocks


def feature_blocks(names) -> dict:
    """Group feature names into blocks by their set: ``audio__compare_x`` → ``audio__compare``.

    Names without a ``<modality>__<set>_`` form go to one block ``features``.
    """
    blocks: dict = {}
    for i, name in enumerate(names):
        parsed = parse_column(name)
        key = "features" if parsed is None else column(parsed[0], feature_set_of(name))
        blocks.setdefault(key, []).append(i)
    return blocks


def feature_sets(names, modality: str) -> list[str]:
    """The feature sets (in order of first appearance) of one modality's columns."""
    out: list[str] = []
    for name in names:
        if modality_of(name) == modality:
            part = feature_set_of(name)
            if part not in out:
                out.append(part)
    return out


@dataclass
class FrameFeatures:
    """One clip's frame-level features.

    Attributes
    ----------
    frame : np.ndarray of int32, shape (n_frames,)
        Index of each row's frame (in the sampled sequence).
    features : np.ndarray of float32, shape (n_frames, n_features)
    names : list of str
        Feature names, without the modality (``mfcc01``, ``expr_prob_happy``).
    """

    frame: np.ndarray
    features: np.ndarray
    names: list


@dataclass
class ClipFeatures:
    """What a feature extractor yields for one clip.

    Attributes
    ----------
    values : np.ndarray of float32, shape (n_columns,)
        The clip's row.
    names : tuple of str
        Its column names (feature columns ``<modality>__…`` and the modality's
        bookkeeping columns), in the order of ``values``.
    frames : FrameFeatures or None
        Frame-level features (for attention over frames), if any.
    records : list of dict or None
        One record per sampled frame (the face stage: frame, time, status, box).
    """

    values: np.ndarray
    names: tuple
    frames: FrameFeatures | None = None
    records: list | None = field(default=None)

    @property
    def row(self) -> pd.Series:
        """The row as a Series named by column."""
        return pd.Series(self.values, index=list(self.names), dtype=float)
