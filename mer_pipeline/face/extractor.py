"""The per-clip task of the face stage: frames → face crops → encoders → pooled row."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .. import _schema
from ..config import FACE_ALIGN, FACE_CROP_SIZE, FACE_ENCODERS, FACE_MARGIN, FRAME_RATE
from ..exceptions import NoFaceError
from .crops import FaceCrops, face_crops
from .encoders import make_encoder

__all__ = ["FaceFeatureExtractor", "pool_frames", "clip_features", "POOL_STATS"]


#: The statistics :func:`pool_frames` computes by default (the video path's).
POOL_STATS = ("mean", "std", "max", "delta")


def pool_frames(features: np.ndarray, names: list[str], *, stats=POOL_STATS,
                segments: int = 0) -> dict:
    """Per-clip statistics of frame features.

    Parameters
    ----------
    features : np.ndarray, shape (n_frames, n_features)
    names : list of str
    stats : sequence of {"mean", "std", "max", "min", "p10", "p90", "delta"}
        ``delta`` is the mean absolute change between consecutive frames; ``p10``/``p90``
        the 10th/90th percentiles (robust to a few badly tracked frames).
    segments : int
        Also the mean over each of this many consecutive parts of the clip (onset,
        apex, offset for 3), named ``<feature>_seg<k>_mean``.

    Returns
    -------
    dict
        ``<feature>_<stat>`` → value. A one-frame clip (a still image) has std and
        change 0, and each segment its one frame.
    """
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    compute = {
        "mean": lambda: features.mean(axis=0),
        "std": lambda: features.std(axis=0),
        "max": lambda: features.max(axis=0),
        "min": lambda: features.min(axis=0),
        "p10": lambda: np.percentile(features, 10, axis=0),
        "p90": lambda: np.percentile(features, 90, axis=0),
        "delta": lambda: (np.abs(np.diff(features, axis=0)).mean(axis=0) if n > 1
                          else np.zeros(features.shape[1])),
    }
    out = {}
    for stat in stats:
        values = compute[stat]()
        out.update({f"{name}_{stat}": float(v) for name, v in zip(names, values)})
    for k, rows in enumerate(np.array_split(np.arange(n), segments) if segments else [], 1):
        values = features[rows].mean(axis=0) if len(rows) else features.mean(axis=0)
        out.update({f"{name}_seg{k}_mean": float(v) for name, v in zip(names, values)})
    return out


@contextmanager
def _single_threaded_opencv():
    """OpenCV on one thread for the duration (its thread pool is process-wide)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class FaceFeatureExtractor:
    """Per-clip task: frames at ``fps`` → eye-aligned face crops → encoders → pooled row.

    The value is a :class:`~mer_pipeline._schema.ClipFeatures`: the pooled row
    (named ``face__<feature>_<stat>``, plus the bookkeeping columns
    ``face_n_frames`` and ``face_fraction``, which are not features), the
    frame-level features (for attention pooling learned later) and one record
    per sampled frame (:meth:`FaceCrops.frame_records`: face found or not, box,
    aligned or not). A clip with no face in any frame yields a row flagged
    ``face_fraction = 0`` with NaN features, its frame records, and a failure
    record.

    Parameters
    ----------
    encoders : sequence of str
        Names in :data:`~mer_pipeline.face.FRAME_ENCODERS`.
    fps : float
        Frames sampled per second of video.
    size : int
        Side of the face crops.
    margin : float
        Margin around the detected box, as a fraction of its side.
    align : bool
        Eye-align the crops (see :func:`~mer_pipeline.face.face_crops`).
    vggface_weights : str or None
        Path of the keras-vggface ResNet-50 weights, for ``vggface``.
    """

    name = "face"
    modality = "face"
    path_column = "video_path"
    # 2: detection on frames scaled to a 240 px short side; 3: OpenCV grey;
    # 4: eye-aligned crops, mirrored-crop averaging, Procrustes landmarks, frame records;
    # 5: the value is a ClipFeatures
    version = "5"

    def __init__(self, encoders=FACE_ENCODERS, *, fps: float = FRAME_RATE,
                 size: int = FACE_CROP_SIZE, margin: float = FACE_MARGIN,
                 align: bool = FACE_ALIGN, vggface_weights: str | None = None):
        self.encoders = tuple(encoders)
        self.fps = fps
        self.size = size
        self.margin = margin
        self.align = align
        self.vggface_weights = vggface_weights

    def _weights(self, name: str) -> str | None:
        return self.vggface_weights if name == "vggface" else None

    def params(self) -> dict:
        """The settings that make the features (recorded in ``features.json``)."""
        params = {"encoders": list(self.encoders), "fps": float(self.fps), "size": self.size,
                  "margin": self.margin, "align": self.align}
        for enc in self.build_encoders(check=False):
            params.update(enc.params())
        return params

    @classmethod
    def from_params(cls, params: dict, *, vggface_weights: str | None = None
                    ) -> "FaceFeatureExtractor":
        """The extractor that recorded ``params`` (see :meth:`params`); weights files are
        given again (only their digest is recorded)."""
        return cls(params["encoders"], fps=params["fps"], size=params["size"],
                   margin=params["margin"], align=params["align"],
                   vggface_weights=vggface_weights)

    def inputs(self, row: dict) -> list[str]:
        return [row["video_path"]] if row.get("video_path") else []

    def build_encoders(self, *, check: bool = True) -> list:
        """The frame encoders; with ``check``, each is asked now whether it can run
        (unknown names, missing weights: a clear error before any work)."""
        encoders = [make_encoder(e, weights=self._weights(e)) for e in self.encoders]
        if check:
            for enc in encoders:
                enc.check()
        return encoders

    def encode_frames(self, frames: np.ndarray, encoders=None, *, track=None):
        """Face crops of sampled frames and their encoders' features.

        Parameters
        ----------
        frames : np.ndarray, shape (n, h, w, 3), uint8
        encoders : list or None
            From :meth:`build_encoders` (built here when ``None``; build once
            and pass them when calling often).
        track : array-like or None
            The face box of the frame before these (:attr:`FaceCrops.last_track` of the
            previous chunk), so chunks of a video are tracked as one pass would.

        Returns
        -------
        faces : FaceCrops
        feats : np.ndarray, shape (n_faces, n_features), or None when no frame has a face
        """
        encoders = self.build_encoders(check=False) if encoders is None else encoders
        rgb_size = max((enc.rgb_size or 0 for enc in encoders), default=0) or None
        faces = face_crops(frames, size=self.size, margin=self.margin, align=self.align,
                           rgb_size=rgb_size, require_face=False, track=track)
        feats = np.hstack([enc.encode_faces(faces) for enc in encoders]) if faces.n_faces \
            else None
        return faces, feats

    def __call__(self, clip_id: str, row: dict):
        from ..media import iter_frames
        from ..parallel import ClipOutcome

        outcome = ClipOutcome()
        path = row.get("video_path")
        if not path:
            return outcome
        encoders = self.build_encoders(check=False)
        names = [n for enc in encoders for n in enc.feature_names()]
        parts = []
        try:  # chunk by chunk: a long video's frames are never in memory together
            with _single_threaded_opencv():  # clips run in parallel: threads per clip only contend
                track = None
                for frames in iter_frames(path, fps=self.fps):
                    parts.append(self.encode_frames(frames, encoders, track=track))
                    track = parts[-1][0].last_track
        except Exception as exc:  # noqa: BLE001 - recorded per clip
            outcome.fail("video", path, exc)
            return outcome
        faces = FaceCrops.concat([f for f, _ in parts], keep_crops=False)
        chunks = [x for _, x in parts if x is not None]
        feats = np.vstack(chunks) if chunks else None
        records = faces.frame_records(None if faces.n_frames == 1 else self.fps)
        if feats is None:
            outcome.fail("face", path, NoFaceError.in_frames(faces.n_frames))
        outcome.value = clip_features(feats, faces.frame_index, faces.n_frames,
                                      faces.face_fraction, names, records)
        return outcome


def clip_features(feats: np.ndarray | None, frame_index: np.ndarray, n_frames: int,
                  face_fraction: float, names: list[str], records: list | None = None
                  ) -> _schema.ClipFeatures:
    """A clip's (or a window's) face value from its frames' encoder features.

    Parameters
    ----------
    feats : np.ndarray, shape (n_faces, n_features), or None
        One row per frame with a face (``None``: no face in any frame).
    frame_index : np.ndarray of int
        Which sampled frame each row comes from.
    n_frames : int
        Frames sampled (with or without a face).
    face_fraction : float
        Fraction of them with a face.
    names : list of str
        The encoders' feature names.
    records : list of dict or None
        Per-frame records (:meth:`FaceCrops.frame_records`).

    Returns
    -------
    ClipFeatures
        Pooled row (NaN features and ``face_fraction`` 0 when no face), bookkeeping
        columns, frame-level features.
    """
    bookkeeping = dict(zip(_schema.BOOKKEEPING_COLUMNS["face"],
                           (float(n_frames), float(face_fraction))))
    frame_table = None
    if feats is not None and len(feats):
        stats = pool_frames(feats, names)
        frame_table = _schema.FrameFeatures(frame=np.asarray(frame_index, dtype=np.int32),
                                            features=np.asarray(feats, dtype=np.float32),
                                            names=list(names))
    else:
        stats = {k: np.nan for k in pool_frames(np.zeros((1, len(names))), names)}
    pooled = {_schema.column("face", k): v for k, v in stats.items()}
    pooled.update(bookkeeping)
    return _schema.ClipFeatures(values=np.array(list(pooled.values()), np.float32),
                                names=tuple(pooled), frames=frame_table, records=records)
