"""Face landmark tracks as a face source: read them, join them to clips, and turn each
clip's track into face features through the same geometry code as video frames.

Practitioners often hold per-frame landmarks of their videos rather than the videos
(the official RAVDESS landmark release, OpenFace 2 CSVs, dlib runs). Three layouts are
read, each from ``.csv``, ``.csv.gz`` or ``.parquet`` files, or folders of them:

- **long tables**, many recordings in one file: a file-name column (``fname``), a frame
  column (``frame_ct`` or ``frame``) and the 68 points as ``pt1.x, pt1.y … pt68.x,
  pt68.y`` (1-based) or ``x_0 … x_67, y_0 … y_67``;
- **OpenFace 2** ``FeatureExtraction`` CSVs, one per video named after it (``frame,
  face_id, timestamp, confidence, success, …, x_0 … x_67, y_0 … y_67, …, AU01_r …
  AU45_c``; OpenFace writes a space after each comma of the header). Frames with
  ``success = 0`` are failed frames; action-unit intensities and presences, head pose and
  gaze, when present, become extra face features. With several ``face_id`` the face
  with the most successful frames is kept;
- **plain per-clip tables** with ``frame`` and ``x_0 … x_67, y_0 … y_67``, named after
  their clip.

A track joins a clip by its recording: a name that a corpus parser reads (RAVDESS
``02-01-05-…-12``, video-only) joins the clip of the same recording (the audio
``03-01-05-…-12`` has the same clip id); any other name joins the clip whose media file
has that stem. Missing frames (gaps in the frame numbers, ``success = 0``) are recorded as
frames with no face, exactly as the video path records them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _schema
from ..exceptions import MerError, NoFaceError, ParameterError

__all__ = ["Track", "TrackError", "read_track_file", "find_track_files", "track_index",
           "attach_tracks", "load_track", "TrackFeatureExtractor", "TRACK_EXTENSIONS",
           "TRACK_FPS", "TRACK_POOL"]

#: Files read as tracks.
TRACK_EXTENSIONS = (".csv", ".csv.gz", ".parquet")
#: Frame rate assumed for tracks without timestamps (NTSC video: RAVDESS, most cameras).
TRACK_FPS = 29.97
#: Pooling of a track's per-frame geometry: robust percentiles instead of the extremes (a
#: few badly tracked frames move max and min), and the mean over each third of the clip
#: (onset, apex, offset). Chosen by actor-grouped CV on the shared RAVDESS tracks
#: (benchmarks/results/av.md: 82.1 % with the video path's mean/std/max/delta, 86.0 % so).
TRACK_POOL = {"stats": ("mean", "std", "p10", "p90", "delta"), "segments": 3}

_OPENFACE_EXTRA = re.compile(r"^(AU\d+_[rc]|pose_[RT][xyz]|gaze_(?:\d_[xyz]|angle_[xy]))$")


class TrackError(MerError):
    """A landmark track file that cannot be read (layout, columns, values)."""


@dataclass
class Track:
    """One recording's landmark track.

    Attributes
    ----------
    name : str
        The recording (a file name without extension).
    frame : np.ndarray of int, shape (n,)
        Frame number of each row, increasing.
    points : np.ndarray of float32, shape (n, 68, 2)
        dlib/iBUG 68 points in pixels.
    success : np.ndarray of bool, shape (n,)
        Whether the tracker found the face on that frame.
    fps : float or None
        Frame rate read from the file's timestamps (``None``: not recorded).
    extra : np.ndarray of float32, shape (n, k) or None
        OpenFace action units, head pose and gaze.
    extra_names : list of str
    """

    name: str
    frame: np.ndarray
    points: np.ndarray
    success: np.ndarray
    fps: float | None = None
    extra: np.ndarray | None = None
    extra_names: list | None = None


def _strip(name) -> str:
    return str(name).strip()


def _point_columns(columns) -> tuple[list, list] | None:
    """The x and y columns of the 68 points, in point order, or ``None``."""
    cols = set(columns)
    if {"pt1.x", "pt68.y"} <= cols:
        return [f"pt{i}.x" for i in range(1, 69)], [f"pt{i}.y" for i in range(1, 69)]
    if {"x_0", "x_67", "y_0", "y_67"} <= cols:
        return [f"x_{i}" for i in range(68)], [f"y_{i}" for i in range(68)]
    return None


def _stem(path: Path) -> str:
    name = path.name
    for ext in TRACK_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _read_table(path: Path, columns=None) -> pd.DataFrame:
    try:
        if path.name.lower().endswith(".parquet"):
            table = pd.read_parquet(path, columns=columns)
        else:
            table = pd.read_csv(path, skipinitialspace=True, usecols=columns)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise TrackError(f"{path}: cannot read it as a landmark track ({exc})") from None
    table.columns = [_strip(c) for c in table.columns]
    return table


def _layout(columns, path: Path) -> str:
    cols = set(columns)
    if _point_columns(cols) is None:
        raise TrackError(f"{path}: no 68-point landmark columns (pt1.x … pt68.y, or "
                         "x_0 … x_67 and y_0 … y_67)")
    if "fname" in cols:
        return "long"
    if "success" in cols or "face_id" in cols or "confidence" in cols:
        return "openface"
    if "frame" in cols:
        return "plain"
    raise TrackError(f"{path}: landmark columns but no frame column (frame or frame_ct) "
                     "and no file-name column (fname)")


def _numeric(table: pd.DataFrame, cols) -> np.ndarray:
    values = table[cols]
    if all(pd.api.types.is_numeric_dtype(t) for t in values.dtypes):
        return values.to_numpy(np.float64)
    return values.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)


def _track(name: str, table: pd.DataFrame, path: Path, arrays: dict | None = None) -> Track:
    """One recording's track from its rows (``arrays``: the columns already numeric)."""
    frame_col = "frame_ct" if "frame_ct" in table.columns else "frame"
    if arrays is None:
        xs, ys = _point_columns(table.columns)
        arrays = {"frame": pd.to_numeric(table[frame_col], errors="coerce").to_numpy(),
                  "x": _numeric(table, xs), "y": _numeric(table, ys)}
    order = np.argsort(arrays["frame"], kind="stable")
    frame = arrays["frame"][order]
    pts = np.stack([arrays["x"][order], arrays["y"][order]], axis=-1)
    if not np.isfinite(frame).all():
        raise TrackError(f"{path}: track {name}: frame numbers that are not numbers")
    table = table.iloc[order]
    success = np.isfinite(pts).all(axis=(1, 2))
    if "success" in table.columns:
        success &= pd.to_numeric(table["success"], errors="coerce").fillna(0).to_numpy() > 0
    fps = None
    if "timestamp" in table.columns and len(table) > 2:
        t = pd.to_numeric(table["timestamp"], errors="coerce").to_numpy()
        ok = np.isfinite(t) & np.isfinite(frame)
        if ok.sum() > 2 and np.ptp(t[ok]) > 0:  # over the whole track: timestamps are rounded
            fps = float(round(np.ptp(frame[ok]) / np.ptp(t[ok]), 3))
    extra_names = [c for c in table.columns if _OPENFACE_EXTRA.match(c)]
    extra = _numeric(table, extra_names).astype(np.float32) if extra_names else None
    frame = frame.astype(np.int64)
    keep = np.r_[True, np.diff(frame) > 0] if len(frame) else np.zeros(0, bool)
    return Track(name=name, frame=frame[keep],
                 points=np.nan_to_num(pts[keep]).astype(np.float32), success=success[keep],
                 fps=fps, extra=None if extra is None else extra[keep],
                 extra_names=extra_names or None)


def read_track_file(path: str | os.PathLike) -> dict:
    """Read a track file: recording name → :class:`Track`.

    Raises
    ------
    TrackError
        If the file is not one of the layouts the module docstring lists.
    """
    path = Path(path)
    table = _read_table(path)
    layout = _layout(table.columns, path)
    if layout == "long":  # many recordings: make the columns numeric once, then split
        xs, ys = _point_columns(table.columns)
        frame_col = "frame_ct" if "frame_ct" in table.columns else "frame"
        names = table["fname"].astype(str).to_numpy()
        cols = {"frame": pd.to_numeric(table[frame_col], errors="coerce").to_numpy(),
                "x": _numeric(table, xs), "y": _numeric(table, ys)}
        # the rest (success, timestamps, extras) travels per track; the points do not
        rest = table[[c for c in table.columns if c in ("success", "timestamp", frame_col)
                      or _OPENFACE_EXTRA.match(c)]]
        rest = rest.loc[:, ~rest.columns.duplicated()]
        out = {}
        for name in sorted(set(names)):
            rows = np.flatnonzero(names == name)
            out[name] = _track(name, rest.iloc[rows], path,
                               {k: v[rows] for k, v in cols.items()})
        return out
    if layout == "openface" and "face_id" in table.columns and table["face_id"].nunique() > 1:
        ok = table["success"] if "success" in table.columns else pd.Series(1, index=table.index)
        best = ok.groupby(table["face_id"]).sum().idxmax()
        table = table[table["face_id"] == best]
    name = _stem(path)
    return {name: _track(name, table, path)}


@lru_cache(maxsize=64)
def _cached_file(path: str, size: int, mtime_ns: int) -> dict:
    return read_track_file(path)


def load_track(path: str | os.PathLike, name: str) -> Track:
    """One recording's track from a file (files are parsed once per process).

    Raises
    ------
    TrackError
        If the file cannot be read or holds no track of that name.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise TrackError(f"{path}: {exc.strerror or exc}") from None
    tracks = _cached_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if name not in tracks:
        raise TrackError(f"{path}: no track named {name!r}")
    return tracks[name]


def find_track_files(paths) -> list[Path]:
    """The track files among ``paths`` (files, or folders searched recursively)."""
    out = []
    for p in [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                          and f.name.lower().endswith(TRACK_EXTENSIONS))
        elif p.is_file():
            out.append(p)
        else:
            raise ParameterError(f"no such track file or folder: {p}")
    return out


def track_index(paths) -> tuple[dict, pd.DataFrame]:
    """Recording name → track file, over files and folders of tracks.

    Only the names are read here (the points are read by the workers).

    Returns
    -------
    index : dict
        Recording name → path of the file holding its track.
    problems : pandas.DataFrame
        Files that could not be read (``path``, ``reason``): recorded, not fatal.
    """
    index, problems = {}, []
    for path in find_track_files(paths):
        try:
            head = _read_table(path, None).columns if path.name.lower().endswith(".parquet") \
                else pd.read_csv(path, nrows=0, skipinitialspace=True).columns
            head = [_strip(c) for c in head]
            layout = _layout(head, path)
            if layout == "long":
                names = _read_table(path, ["fname"])["fname"].astype(str).unique()
            else:
                names = [_stem(path)]
        except TrackError as exc:
            problems.append({"path": str(path), "reason": str(exc)})
            continue
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            problems.append({"path": str(path), "reason": f"cannot read it ({exc})"})
            continue
        for name in names:
            index.setdefault(str(name), str(path))
    return index, pd.DataFrame(problems, columns=["path", "reason"])


def _clip_of_name(name: str) -> str | None:
    """The clip id a corpus parser gives a recording name (``None`` if none reads it)."""
    from ..corpus import parse_filename

    try:
        return parse_filename(Path(name + ".mp4"))["clip_id"]
    except ParameterError:
        return None


def attach_tracks(manifest: pd.DataFrame, index: dict) -> tuple[pd.DataFrame, list]:
    """Join tracks to the clips of a manifest (columns ``face_track``, ``face_track_key``).

    Returns
    -------
    manifest : pandas.DataFrame
        A copy with the two columns (empty where a clip has no track).
    unmatched : list of str
        Track names that joined no clip.
    """
    out = manifest.copy()
    out["face_track"] = ""
    out["face_track_key"] = ""
    by_stem: dict = {}
    for col in ("audio_path", "video_path"):
        if col in out.columns:
            for clip_id, path in out[col].items():
                if path:
                    by_stem.setdefault(Path(path).stem, clip_id)
    unmatched = []
    for name, path in index.items():
        clip = _clip_of_name(name)
        if clip is None or clip not in out.index:
            clip = by_stem.get(name)
        if clip is None or clip not in out.index:
            unmatched.append(name)
            continue
        if not out.at[clip, "face_track"]:
            out.at[clip, "face_track"] = path
            out.at[clip, "face_track_key"] = name
    return out, unmatched


class TrackFeatureExtractor:
    """Per-clip task of the face stage for landmark tracks: track → per-frame geometry
    (the ``landmarks`` encoder, the same code as for video) → pooled row, dynamics,
    frame sequence and per-frame records.

    The value is a :class:`~mer_pipeline._schema.ClipFeatures` with the same kind of
    columns as :class:`~mer_pipeline.face.FaceFeatureExtractor` writes: the landmark
    geometry pooled over the frames (:data:`TRACK_POOL`: ``face__lmk_…_{mean,std,p10,p90,
    delta}`` and the mean over each third of the clip, ``…_seg{1,2,3}_mean``), the shape
    and head dynamics (``face__dyn_…``, see :func:`~mer_pipeline.face.dynamics.shape_dynamics`),
    OpenFace's action units, pose and gaze when the file has them (``face__au_…``,
    ``face__pose_…``, ``face__gaze_…``), and the bookkeeping columns. The frame sequence
    (for attention over frames and the sequence models) is the per-frame geometry averaged
    to ``sequence_fps``.

    Parameters
    ----------
    fps : float
        Frame rate of tracks whose file records no timestamps.
    sequence_fps : float
        Rate of the frame sequence written to ``face_frames.parquet``.
    dynamics : bool
        Add the dynamics features.
    """

    name = "face_tracks"
    modality = "face"
    path_column = "face_track"
    version = "1"

    def __init__(self, *, fps: float = TRACK_FPS, sequence_fps: float = 10.0,
                 dynamics: bool = True):
        self.fps = fps
        self.sequence_fps = sequence_fps
        self.dynamics = dynamics

    def params(self) -> dict:
        """The settings that make the features (recorded in ``features.json``)."""
        if not self.fps > 0 or not self.sequence_fps > 0:
            raise ParameterError("fps and sequence_fps must be > 0")
        return {"source": "tracks", "encoders": ["landmarks"], "fps": float(self.fps),
                "sequence_fps": float(self.sequence_fps), "dynamics": bool(self.dynamics)}

    @classmethod
    def from_params(cls, params: dict) -> "TrackFeatureExtractor":
        return cls(fps=params["fps"], sequence_fps=params["sequence_fps"],
                   dynamics=params["dynamics"])

    def inputs(self, row: dict) -> list[str]:
        return [row["face_track"]] if row.get("face_track") else []

    def fingerprint(self, row: dict) -> str:
        """Which track of the file is this clip's (part of the cache key)."""
        return str(row.get("face_track_key", ""))

    def __call__(self, clip_id: str, row: dict):
        from ..parallel import ClipOutcome

        outcome = ClipOutcome()
        path = row.get("face_track")
        if not path:
            return outcome
        try:
            track = load_track(path, row["face_track_key"])
            outcome.value = self.features(track)
        except Exception as exc:  # noqa: BLE001 - recorded per clip
            outcome.fail("face", path, exc)
            return outcome
        if not np.isfinite(outcome.value.values).any():
            outcome.fail("face", path, NoFaceError(f"no tracked face in any of "
                                                   f"{len(outcome.value.records)} frame(s)"))
        return outcome

    def features(self, track: Track) -> _schema.ClipFeatures:
        """The clip's features from its track (see the class docstring)."""
        from .crops import FaceCrops
        from .dynamics import shape_dynamics
        from .geometry import batch_similarity
        from .encoders import LandmarkEncoder
        from .extractor import pool_frames

        fps = track.fps or self.fps
        start = int(track.frame[0]) if len(track.frame) else 0
        n_frames = int(track.frame[-1]) - start + 1 if len(track.frame) else 0
        ok = track.success
        index = (track.frame[ok] - start).astype(int)
        status = ["none"] * n_frames
        for i in index:
            status[i] = "tracked"
        pts = track.points[ok]
        lo, hi = (pts.min(axis=1), pts.max(axis=1)) if len(pts) else (np.zeros((0, 2)),) * 2
        faces = FaceCrops(crops=np.zeros((len(pts), 0, 0), np.uint8), frame_index=index,
                          status=status,
                          boxes=np.round(np.hstack([lo, hi - lo])).astype(int).reshape(-1, 4),
                          landmarks=pts, aligned=np.zeros(len(pts), bool))
        records = faces.frame_records(fps)
        for r, i in zip(records, range(n_frames)):
            r["frame"] = start + i
        encoder = LandmarkEncoder()
        names = encoder.feature_names()
        # one Procrustes pass serves the geometry (as encode_faces computes it) and dynamics
        similarity = batch_similarity(pts.astype(np.float64)) if len(pts) else None
        geometry = encoder.encode_shapes(similarity[0]) if len(pts) else \
            np.empty((0, len(names)), np.float32)
        extra_names = [self._extra_name(n) for n in (track.extra_names or [])]
        bookkeeping = dict(zip(_schema.BOOKKEEPING_COLUMNS["face"],
                               (float(n_frames), faces.face_fraction)))
        if len(pts) == 0:
            stats = {k: np.nan for k in pool_frames(np.zeros((1, len(names))), names,
                                                    **TRACK_POOL)}
            if self.dynamics:
                stats.update({k: np.nan for k in shape_dynamics(
                    np.zeros((3, 68, 2)), np.arange(3), fps)})
            stats.update({k: np.nan for k in pool_frames(np.zeros((1, len(extra_names))),
                                                         extra_names, **TRACK_POOL)})
            frames = None
        else:
            stats = pool_frames(geometry, names, **TRACK_POOL)
            if self.dynamics:
                stats.update(shape_dynamics(pts, index, fps, similarity=similarity))
            if extra_names:
                stats.update(pool_frames(np.nan_to_num(track.extra[ok]), extra_names,
                                         **TRACK_POOL))
            frames = self._sequence(geometry, index, fps, names)
        row = {_schema.column("face", k): v for k, v in stats.items()}
        row.update(bookkeeping)
        return _schema.ClipFeatures(values=np.array(list(row.values()), np.float32),
                                    names=tuple(row), frames=frames, records=records)

    @staticmethod
    def _extra_name(name: str) -> str:
        if name.startswith("AU"):
            return f"au_{name}"
        return name  # pose_Rx, gaze_angle_x: already prefixed by what they are

    def _sequence(self, geometry, index, fps, names) -> _schema.FrameFeatures:
        """The per-frame geometry averaged over windows of ``fps / sequence_fps`` frames."""
        step = max(1.0, fps / self.sequence_fps)
        bins = np.floor(index / step).astype(int)  # increasing: the frames are in order
        starts = np.flatnonzero(np.r_[True, np.diff(bins) > 0])
        sums = np.add.reduceat(geometry.astype(np.float64), starts, axis=0)
        counts = np.diff(np.r_[starts, len(bins)])[:, None]
        return _schema.FrameFeatures(frame=bins[starts].astype(np.int32),
                                     features=(sums / counts).astype(np.float32), names=names)
