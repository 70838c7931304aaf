"""Stage 2: per-clip feature tables under a features folder.

``extract_features`` writes one CSV per modality, one row per clip keyed by
``clip_id``: first the metadata columns (:data:`META_COLUMNS`), then the
feature columns, prefixed by modality (``audio__``). ``load_features`` reads
such a table back and checks its columns.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import FeatureTableError, ParameterError

__all__ = ["extract_features", "load_features", "META_COLUMNS", "AUDIO_TABLE",
           "feature_columns"]

META_COLUMNS = ["corpus", "actor", "group", "gender", "emotion", "split"]
AUDIO_TABLE = "audio_features.csv"
MODALITIES = ("audio",)


def extract_features(manifest, out_dir: str | os.PathLike, *, modalities=("audio",),
                     audio_set: str | None = None, n_jobs: int | None = -1, cache_dir=None,
                     backend: str = "loky", scheduler: str | None = None,
                     progress: bool = True, retry_failed: bool = False):
    """Extract per-clip features and write them under ``out_dir``.

    Parameters
    ----------
    manifest : pandas.DataFrame or CorpusScan
        From :func:`mer_pipeline.discover`. With the whole scan, unparsed
        files are listed in ``failures.csv`` (stage ``manifest``).
    out_dir : path
        Receives ``audio_features.csv`` and ``failures.csv``.
    modalities : sequence of str
        Which tables to write (``"audio"``).
    audio_set : str or None
        Acoustic feature set (:func:`mer_pipeline.audio.available_sets`);
        ``None`` is the default set.
    n_jobs, cache_dir, backend, scheduler, progress, retry_failed
        See :func:`mer_pipeline.parallel.map_clips`. The cache defaults to
        ``<out_dir>/.cache`` (or ``$MER_CACHE_DIR``).

    Returns
    -------
    written : list of Path
        The tables written.
    run : RunResult
        Failures and how many clips were computed or cached.
    """
    from .audio import AudioFeatureExtractor, resolve_set
    from .parallel import default_cache_dir, map_clips, split_scan, write_failures

    if not modalities:
        raise ParameterError(f"no modality asked for; available: {', '.join(MODALITIES)}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ParameterError(f"unknown modality {unknown[0]!r}; available: {', '.join(MODALITIES)}"
                             " (face features arrive with the face stage)")
    resolve_set(audio_set)  # fail early on a bad name
    manifest, scan_failures = split_scan(manifest)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = default_cache_dir(out) if cache_dir is None else cache_dir
    written = []
    run = None
    if "audio" in modalities:
        with_audio = manifest[manifest["audio_path"] != ""]
        run = map_clips(AudioFeatureExtractor(audio_set), with_audio, cache_dir=cache,
                        n_jobs=n_jobs, backend=backend, scheduler=scheduler, progress=progress,
                        retry_failed=retry_failed, desc="audio features")
        table = _to_table(run.values, manifest)
        path = out / AUDIO_TABLE
        table.to_csv(path, float_format="%.7g")
        written.append(path)
    run.failures = pd.concat([scan_failures, run.failures], ignore_index=True)
    write_failures(run.failures, out / "failures.csv")
    return written, run


def _to_table(values: dict, manifest: pd.DataFrame) -> pd.DataFrame:
    ids = list(values)
    if not ids:
        table = pd.DataFrame(index=pd.Index([], name="clip_id"))
    else:
        names = values[ids[0]][1]
        if all(values[i][1] == names for i in ids):
            data = np.vstack([values[i][0] for i in ids])
            table = pd.DataFrame(data, index=pd.Index(ids, name="clip_id"), columns=list(names))
        else:  # different columns (should not happen): align by name
            table = pd.DataFrame({i: pd.Series(v, index=n) for i, (v, n) in values.items()}).T
            table.index.name = "clip_id"
    meta = manifest.reindex(table.index)[[c for c in META_COLUMNS if c in manifest.columns]]
    return meta.join(table)


def feature_columns(table: pd.DataFrame, prefix: str | None = None) -> list[str]:
    """Feature columns of a table (those with a ``<modality>__`` prefix)."""
    return [c for c in table.columns if "__" in c and (prefix is None or c.startswith(prefix))]


def load_features(path: str | os.PathLike, *, required_meta=("emotion",)) -> pd.DataFrame:
    """Read a feature table (a CSV, or a folder holding ``audio_features.csv``).

    Raises
    ------
    FeatureTableError
        If the file is missing, has no ``clip_id`` or feature columns, or lacks
        a required metadata column.
    """
    path = Path(path)
    if path.is_dir():
        path = path / AUDIO_TABLE
    if not path.is_file():
        raise FeatureTableError(f"no feature table at {path} (run `mer features` first)")
    table = pd.read_csv(path, dtype={c: str for c in META_COLUMNS + ["clip_id"]},
                        keep_default_na=False, na_values={})
    if "clip_id" not in table.columns:
        raise FeatureTableError(f"{path}: no clip_id column")
    table = table.set_index("clip_id")
    missing = [c for c in required_meta if c not in table.columns]
    if missing:
        raise FeatureTableError(f"{path}: missing column(s) {', '.join(missing)}")
    cols = feature_columns(table)
    if not cols:
        raise FeatureTableError(f"{path}: no feature columns (named <modality>__<feature>)")
    table[cols] = table[cols].apply(pd.to_numeric, errors="coerce")
    return table
