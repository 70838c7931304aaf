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

from .config import FACE_ENCODERS, FRAME_RATE
from .exceptions import FeatureTableError, ParameterError

__all__ = ["extract_features", "load_features", "read_sequences", "write_features",
           "META_COLUMNS",
           "AUDIO_TABLE", "VIDEO_TABLE", "SEQUENCE_COLUMNS", "feature_columns"]

META_COLUMNS = ["corpus", "actor", "group", "gender", "emotion", "split"]
AUDIO_TABLE = "audio_features.csv"
VIDEO_TABLE = "video_features.csv"
FRAME_TABLE = "face_frames.parquet"
DETECTION_TABLE = "face_detections.csv"
AUDIO_FRAME_TABLE = "audio_frames.parquet"
SEQUENCE_COLUMNS = {"audio": "audio_frames", "face": "face_frames"}
"""Object columns :func:`load_features` adds: one 2-D float32 array (frames × features)
per clip, or ``None`` where the clip has no such sequence."""
MODALITIES = ("audio", "face")


def extract_features(manifest, out_dir: str | os.PathLike, *, modalities="auto",
                     audio_set: str | None = None, face_encoders=FACE_ENCODERS,
                     fps: float = FRAME_RATE, vggface_weights: str | None = None,
                     n_jobs: int | None = -1, cache_dir=None,
                     backend: str = "loky", scheduler: str | None = None,
                     progress: bool = True, retry_failed: bool = False):
    """Extract per-clip features and write them under ``out_dir``.

    Parameters
    ----------
    manifest : pandas.DataFrame or CorpusScan
        From :func:`mer_pipeline.discover`. With the whole scan, unparsed
        files are listed in ``failures.csv`` (stage ``manifest``).
    out_dir : path
        Receives ``audio_features.csv`` and/or ``video_features.csv`` (with
        the frame-level face features in ``face_frames.parquet``, and one row
        per sampled frame in ``face_detections.csv``: clip_id, frame, time_s,
        status ``detected``/``whole``/``none``, the face box ``x, y, width,
        height`` in frame pixels, and whether the crop was eye-aligned), and
        ``failures.csv``.
    modalities : "auto" or sequence of {"audio", "face"}
        Which tables to write; ``"auto"``: audio when a clip has sound, face
        when a clip has video.
    audio_set : str or None
        Acoustic feature set (:func:`mer_pipeline.audio.available_sets`);
        ``None`` is the default set.
    face_encoders : sequence of str
        Frame encoders of the face stage (:data:`mer_pipeline.face.FRAME_ENCODERS`);
        default :data:`mer_pipeline.config.FACE_ENCODERS`.
    fps : float
        Frames sampled per second of video (stills are one frame).
    vggface_weights : path or None
        keras-vggface ResNet-50 weights for the ``vggface`` encoder (default
        ``$MER_VGGFACE_WEIGHTS``).
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

    manifest, scan_failures = split_scan(manifest)
    if isinstance(modalities, str) and modalities == "auto":
        modalities = [m for m, col in (("audio", "audio_path"), ("face", "video_path"))
                      if col in manifest.columns and (manifest[col] != "").any()] or ["audio"]
    if not modalities:
        raise ParameterError(f"no modality asked for; available: {', '.join(MODALITIES)}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ParameterError(f"unknown modality {unknown[0]!r}; available: {', '.join(MODALITIES)}")
    resolve_set(audio_set)  # fail early on a bad name
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = default_cache_dir(out) if cache_dir is None else cache_dir
    written, runs = [], []
    kw = dict(cache_dir=cache, n_jobs=n_jobs, backend=backend, scheduler=scheduler,
              progress=progress, retry_failed=retry_failed)

    def run_modality(task, path_col, desc, table_name, frame_name, prefix):
        run = map_clips(task, manifest[manifest[path_col] != ""], desc=desc, **kw)
        _to_table(run.values, manifest).to_csv(out / table_name, float_format="%.7g")
        written.extend([out / table_name, _write_frames(run.values, out / frame_name, prefix)])
        runs.append(run)

    if "audio" in modalities:
        run_modality(AudioFeatureExtractor(audio_set), "audio_path", "audio features",
                     AUDIO_TABLE, AUDIO_FRAME_TABLE, "audio__lld_")
    if "face" in modalities:
        from .face import FaceFeatureExtractor

        task = FaceFeatureExtractor(face_encoders, fps=fps,
                                    vggface_weights=None if vggface_weights is None
                                    else str(vggface_weights))
        task.build_encoders()  # fail early on an unknown encoder or missing weights
        run_modality(task, "video_path", "face features", VIDEO_TABLE, FRAME_TABLE, "face__")
        written.append(_write_detections(runs[-1].values, out / DETECTION_TABLE))
    run = runs[0]
    for other in runs[1:]:
        run.values = {**run.values, **other.values}
        run.n_computed += other.n_computed
        run.n_cached += other.n_cached
    run.failures = pd.concat([scan_failures] + [r.failures for r in runs], ignore_index=True)
    write_failures(run.failures, out / "failures.csv")
    return written, run


def _write_frames(values: dict, path: Path, prefix: str) -> Path:
    """Frame-level features of a run's values, long format: clip_id, frame, then features."""
    items = [(clip_id, v[2]["frame"], v[2]["features"], [f"{prefix}{n}" for n in v[2]["names"]])
             for clip_id, v in values.items() if len(v) > 2 and v[2] is not None]
    return _frames_to_parquet(items, path)


def _write_detections(values: dict, path: Path) -> Path:
    """The face stage's per-frame records, one CSV row per sampled frame."""
    columns = ["clip_id", "frame", "time_s", "status", "x", "y", "width", "height", "aligned"]
    rows = [{"clip_id": clip_id, **record} for clip_id, v in values.items()
            if len(v) > 3 for record in v[3]]
    table = pd.DataFrame(rows, columns=columns)
    for col in ("x", "y", "width", "height"):
        table[col] = table[col].astype("Int64")
    table.to_csv(path, index=False, float_format="%.4g")
    return path


def _frames_to_parquet(items, path: Path) -> Path:
    """Write ``(clip_id, frame_index, features, column_names)`` items as one long table."""
    parts = []
    for clip_id, frame, features, columns in items:
        part = pd.DataFrame(features, columns=columns)
        part.insert(0, "frame", frame)
        part.insert(0, "clip_id", clip_id)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["clip_id", "frame"])
    table.to_parquet(path, index=False)
    return path


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
            table = pd.DataFrame({i: pd.Series(v[0], index=v[1]) for i, v in values.items()}).T
            table.index.name = "clip_id"
    meta = manifest.reindex(table.index)[[c for c in META_COLUMNS if c in manifest.columns]]
    return meta.join(table)


def write_features(table: pd.DataFrame, out_dir: str | os.PathLike, *,
                   frame_names: dict | None = None) -> list[Path]:
    """Write a (joined) feature table as a features folder, the way ``mer features`` does.

    The inverse of :func:`load_features`: ``audio__`` columns go to
    ``audio_features.csv``, ``face__`` columns (and the face bookkeeping
    columns) to ``video_features.csv``, the sequence columns to
    ``audio_frames.parquet`` / ``face_frames.parquet``; metadata, and any other
    column without a ``<modality>__`` prefix (a benchmark's ``face_subject``),
    to both CSVs. Useful for tables built in Python (a paired benchmark, a subset).

    Parameters
    ----------
    table : pandas.DataFrame
        Indexed by ``clip_id``.
    out_dir : path
    frame_names : dict or None
        Sequence column → names of its frame features (default ``f000``, …).

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bookkeeping = ["face_n_frames", "face_fraction"]
    skip = set(META_COLUMNS) | set(SEQUENCE_COLUMNS.values()) | set(bookkeeping)
    # metadata first, then other non-feature columns (e.g. a benchmark's face_subject)
    meta = ([c for c in META_COLUMNS if c in table.columns]
            + [c for c in table.columns if "__" not in str(c) and c not in skip])
    written = []
    for modality, name, extra in (("audio", AUDIO_TABLE, []),
                                  ("face", VIDEO_TABLE, bookkeeping)):
        cols = [c for c in table.columns if str(c).startswith(f"{modality}__")]
        if not cols:
            continue
        rows = table[cols].notna().any(axis=1)
        keep = meta + cols + [c for c in extra if c in table.columns]
        table.loc[rows, keep].rename_axis("clip_id").to_csv(out / name, float_format="%.7g")
        written.append(out / name)
        seq_col = SEQUENCE_COLUMNS[modality]
        if seq_col in table.columns:
            path = out / (AUDIO_FRAME_TABLE if modality == "audio" else FRAME_TABLE)
            items = []
            for clip_id, seq in table.loc[rows, seq_col].items():
                if seq is None or not len(seq):
                    continue
                names = (frame_names or {}).get(seq_col) or [
                    f"f{i:03d}" for i in range(seq.shape[1])]
                items.append((clip_id, np.arange(len(seq), dtype=np.int32),
                              np.asarray(seq, np.float32), [f"{modality}__{n}" for n in names]))
            if items:
                written.append(_frames_to_parquet(items, path))
    return written


def feature_columns(table: pd.DataFrame, prefix: str | None = None) -> list[str]:
    """Feature columns of a table (those with a ``<modality>__`` prefix)."""
    return [c for c in table.columns if "__" in c and (prefix is None or c.startswith(prefix))]


def load_features(path: str | os.PathLike, *, required_meta=("emotion",),
                  sequences: bool = True) -> pd.DataFrame:
    """Read a feature table: a CSV, or a folder written by ``mer features``.

    A folder's ``audio_features.csv`` and ``video_features.csv`` are joined on
    ``clip_id`` when both exist (a clip missing from one has NaN there).

    Parameters
    ----------
    path : path
        A feature CSV or a features folder.
    required_meta : sequence of str
        Metadata columns that must be present.
    sequences : bool, default=True
        Where the frame tables (``audio_frames.parquet``,
        ``face_frames.parquet``) lie beside the CSVs, add the object columns
        ``audio_frames`` and ``face_frames``: per clip a float32 array
        (frames × features), or ``None``. They feed the learned attention of
        :class:`~mer_pipeline.fusion.MultimodalEmotionClassifier`; other
        models ignore them.

    Raises
    ------
    FeatureTableError
        If the file is missing, has no ``clip_id`` or feature columns, or lacks
        a required metadata column.
    """
    path = Path(path)
    if path.is_dir():
        tables = [path / name for name in (AUDIO_TABLE, VIDEO_TABLE) if (path / name).is_file()]
        if not tables:
            raise FeatureTableError(f"no feature table in {path} (run `mer features` first)")
        if len(tables) == 1:
            return load_features(tables[0], required_meta=required_meta, sequences=sequences)
        audio = load_features(tables[0], required_meta=required_meta, sequences=sequences)
        video = load_features(tables[1], required_meta=required_meta, sequences=sequences)
        extra = [c for c in video.columns if c not in audio.columns]
        joined = audio.join(video[extra], how="outer")
        skip = set(feature_columns(audio)) | set(SEQUENCE_COLUMNS.values())
        meta = [c for c in audio.columns if c not in skip]
        joined[meta] = joined[meta].fillna(video[meta].reindex(joined.index))
        for col in SEQUENCE_COLUMNS.values():  # a clip absent from one table: None, not NaN
            if col in joined.columns:
                joined[col] = pd.Series([v if isinstance(v, np.ndarray) else None
                                         for v in joined[col]], index=joined.index, dtype=object)
        return joined
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
    table = table.copy()  # one block per dtype again (the assignment fragments it)
    if sequences:
        frames = {AUDIO_TABLE: (AUDIO_FRAME_TABLE, "audio"),
                  VIDEO_TABLE: (FRAME_TABLE, "face")}.get(path.name)
        if frames and (path.parent / frames[0]).is_file():
            seq = read_sequences(path.parent / frames[0], table.index)
            table = table.assign(**{SEQUENCE_COLUMNS[frames[1]]: seq})
    return table


def read_sequences(path: str | os.PathLike, clip_ids=None) -> pd.Series:
    """Read a frame table (Parquet, long format) as one array per clip.

    Parameters
    ----------
    path : path
        ``audio_frames.parquet`` or ``face_frames.parquet``.
    clip_ids : sequence of str or None
        Clips to return, in this order (``None`` where a clip has no frames);
        default: all clips in the file.

    Returns
    -------
    pandas.Series of object
        Indexed by ``clip_id``; each value a float32 array of shape
        ``(n_frames, n_features)``, frames in time order. The feature names are
        in ``series.attrs["names"]``.
    """
    frame = pd.read_parquet(path)
    if "clip_id" not in frame.columns:
        raise FeatureTableError(f"{path}: no clip_id column")
    names = [c for c in frame.columns if "__" in c]
    frame = frame.sort_values(["clip_id", "frame"], kind="stable")
    values = frame[names].to_numpy(dtype=np.float32)
    ids = frame["clip_id"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
    ends = np.r_[starts[1:], len(ids)]
    arrays = {ids[a]: values[a:b] for a, b in zip(starts, ends)}
    index = pd.Index(list(arrays) if clip_ids is None else list(clip_ids), name="clip_id")
    series = pd.Series([arrays.get(i) for i in index], index=index, dtype=object)
    series.attrs["names"] = [n.split("__", 1)[1] for n in names]
    return series
