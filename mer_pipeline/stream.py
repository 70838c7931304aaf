"""Emotion over time: sliding windows over a long recording or a live source.

A recording (or a camera and a microphone, a URL, a pipe) is decoded
incrementally by :class:`~mer_pipeline.media.MediaStream` and cut into windows
of ``window`` seconds every ``hop`` seconds. Each window gets the features a
clip of that length would get, by the model's own extractors with the settings
it recorded (so a window of a whole clip scores as the clip does), and a
prediction. Memory does not grow with the recording: only the current window's
audio and the sampled frames' face encodings are held, each frame encoded once
however many windows it falls in.

Speaker adaptation: the windows of one recording or stream are one speaker's
clips (group = the recording), and the speaker's statistics come from at most
``history`` windows, so memory stays bounded however long the recording.
:func:`score_timeline` scores a recording in consecutive blocks of ``history``
windows, each block one batch (the model's batch rule over it; a rest shorter
than half a block is scored with the end of the block before it as context),
or with ``causal=True`` each window with the ``history`` windows before it, as
a live stream must and as :class:`LiveScorer` does. A recording with several speakers: give a ``history``
of the span one speaker talks.

Smoothing: windows overlap and emotions last longer than a hop, so a label
track is also given, smoothed by a hidden Markov model over the classes whose
emission is the window's probabilities and which stays in its class from one
window to the next with probability ``1 - hop / smooth`` (an expected
dwell time of ``smooth`` seconds), switching to any other class equally
likely otherwise: Viterbi decoding for a recording (``smoothed``), forward
filtering (causal) for a live stream. ``smooth=0`` turns it off.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import _schema
from .config import HOP_S, SMOOTH_S, STREAM_HISTORY, WINDOW_S
from .exceptions import MediaError, MerError, NoFaceError, ParameterError

__all__ = ["WindowFeatures", "window_features", "score_timeline", "LiveScorer",
           "viterbi_smooth", "forward_smooth", "TIMELINE_COLUMNS"]

#: The leading columns of a timeline (then ``proba_<class>`` per class, ``modalities``,
#: ``smoothed``).
TIMELINE_COLUMNS = ["clip_id", "start_s", "end_s", "predicted"]
#: Windows between returns of freed heap memory to the system (:func:`_trim_heap`).
TRIM_EVERY = 60
_EPS = 1e-6


def _check_windows(window: float, hop: float) -> None:
    for name, value in (("window", window), ("hop", hop)):
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ParameterError(f"{name} must be a positive number of seconds, got {value!r}")
    if hop > window:
        raise ParameterError(f"hop ({hop} s) must not exceed the window ({window} s): "
                             "parts of the recording would be in no window")


@dataclass
class WindowFeatures:
    """One window's features, per modality.

    Attributes
    ----------
    start_s, end_s : float
        The window in source time (seconds from the stream's start).
    values : dict
        Modality → :class:`~mer_pipeline._schema.ClipFeatures` (absent where the
        window has none of it).
    errors : dict
        Modality → why it has none (silent audio, no face in any frame).
    box : tuple or None
        The last face box seen in the window (``x, y, width, height``, frame pixels).
    """

    start_s: float
    end_s: float
    values: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    box: tuple | None = None


class _AudioBuffer:
    """The most recent audio: samples from ``start`` (in samples since the stream began)."""

    def __init__(self, sr: int):
        self.sr = sr
        self.data = np.empty(0, np.float32)
        self.start = 0

    @property
    def end_s(self) -> float:
        return (self.start + len(self.data)) / self.sr

    def add(self, y: np.ndarray) -> None:
        self.data = np.concatenate([self.data, y])

    def segment(self, start_s: float, end_s: float) -> np.ndarray:
        a = int(round(start_s * self.sr)) - self.start
        b = int(round(end_s * self.sr)) - self.start
        return self.data[max(a, 0):max(b, 0)]

    def drop_before(self, t: float) -> None:
        cut = int(round(t * self.sr)) - self.start
        if cut > 0:
            self.data = self.data[cut:].copy()
            self.start += cut


class _FaceFrames:
    """Face encodings of the sampled frames, each computed once (windows overlap)."""

    def __init__(self, task, fps: float):
        self.task = task
        self.fps = fps
        self.encoders = task.build_encoders()
        self.names = [n for enc in self.encoders for n in enc.feature_names()]
        self.pending: list = []  # (index, time, frame) not yet encoded
        self.done: list = []     # (index, time, feature row or None, box or None)
        self.track = None        # the last encoded frame's face box

    def add(self, frame: np.ndarray, t: float) -> None:
        index = int(round(t * self.fps))
        self.pending.append((index, t, frame))

    def _encode(self) -> None:
        if not self.pending:
            return
        frames = np.stack([f for _, _, f in self.pending])
        faces, feats = self.task.encode_frames(frames, self.encoders, track=self.track)
        self.track = faces.last_track  # the next frames are searched around it first
        at = {int(i): k for k, i in enumerate(faces.frame_index)}
        for j, (index, t, _) in enumerate(self.pending):
            k = at.get(j)
            self.done.append((index, t, None if k is None else feats[k],
                              None if k is None else tuple(int(v) for v in faces.boxes[k])))
        self.pending = []

    def window(self, start_s: float, end_s: float):
        """The window's face value and last box (``None`` value when it has no frame)."""
        from .face.extractor import clip_features

        self._encode()
        rows = [r for r in self.done if start_s - _EPS <= r[1] < end_s - _EPS]
        if not rows:
            return None, None
        with_face = [r for r in rows if r[2] is not None]
        feats = np.vstack([r[2] for r in with_face]) if with_face else None
        index = np.array([r[0] - rows[0][0] for r in with_face], dtype=np.int32)
        boxes = [r[3] for r in with_face]
        value = clip_features(feats, index, len(rows), len(with_face) / len(rows), self.names)
        return value, (boxes[-1] if boxes else None)

    def drop_before(self, t: float) -> None:
        self.done = [r for r in self.done if r[1] >= t - _EPS]


def window_features(stream, tasks: dict, *, window: float = WINDOW_S, hop: float = HOP_S,
                    audio_frames: bool = True):
    """Cut a decoded stream into windows and compute each window's features.

    Parameters
    ----------
    stream : MediaStream
        Started or not; read to its end (or until the caller stops).
    tasks : dict
        Modality → the extractor (``audio``: an
        :class:`~mer_pipeline.audio.AudioFeatureExtractor`, ``face``: a
        :class:`~mer_pipeline.face.FaceFeatureExtractor`).
    window, hop : float
        Window length and step in seconds. Windows start at 0, hop, 2·hop, …
        and are given once every stream the source has reaches their end. A
        recording shorter than one window gives one window over all of it.
    audio_frames : bool
        Also compute each window's audio low-level-descriptor sequence (only
        models with sequence fusion use it).

    Yields
    ------
    WindowFeatures
    """
    from .audio import resolve_set
    from .parallel import single_threaded

    _check_windows(window, hop)
    source = stream.source
    audio_task = tasks.get("audio") if source.audio else None
    face_task = tasks.get("face") if source.video else None
    audio = _AudioBuffer(stream.sr) if audio_task is not None else None
    faces = _FaceFrames(face_task, stream.fps) if face_task is not None else None
    clock = {"audio": 0.0, "video": 0.0}
    k = 0

    pool = ThreadPoolExecutor(1) if audio is not None and faces is not None else None

    def audio_value(seg):
        try:
            return audio_task.from_signal(seg, stream.sr, frames=audio_frames), None
        except MediaError as exc:  # silent or too short: recorded per window
            return None, str(exc).rsplit(": <signal>", 1)[0]

    if audio is not None and "whisper" in resolve_set(audio_task.feature_set):
        import torch  # noqa: F401 - loaded now, so that single_threaded() holds it to one thread

    def make(start: float, end: float) -> WindowFeatures:
        # one thread per library, as per-clip extraction runs: the same features as a clip's,
        # and the audio thread and the face work do not contend for the cores
        with single_threaded():
            return _make(start, end)

    def _make(start: float, end: float) -> WindowFeatures:
        win = WindowFeatures(start_s=round(start, 6), end_s=round(end, 6))
        job = value = error = None
        if audio is not None:  # in a thread beside the face work (both release the GIL)
            seg = audio.segment(start, end)
            if pool is not None:
                job = pool.submit(audio_value, seg)
            else:
                value, error = audio_value(seg)
        if faces is not None:
            face, win.box = faces.window(start, end)
            if face is None:
                win.errors["face"] = "no frame in the window"
            else:
                win.values["face"] = face
                if face.frames is None:
                    n = int(face.row[_schema.BOOKKEEPING_COLUMNS["face"][0]])
                    win.errors["face"] = str(NoFaceError.in_frames(n))
        if job is not None:
            value, error = job.result()
        if audio is not None:
            if value is not None:
                win.values["audio"] = value
            else:
                win.errors["audio"] = error
        return win

    active = [m for m, on in (("audio", audio is not None), ("video", faces is not None)) if on]
    if not active:
        raise MediaError(source.name, "the source has none of the streams the model's "
                                      "features need")
    try:
        for chunk in stream:
            if chunk.kind == "audio" and audio is not None:
                audio.add(chunk.data)
                clock["audio"] = audio.end_s
            elif chunk.kind == "video" and faces is not None:
                faces.add(chunk.data, chunk.start_s)
                clock["video"] = chunk.start_s + 1.0 / stream.fps
            else:
                continue
            ready = min(clock[m] for m in active)
            while k * hop + window <= ready + _EPS:
                yield make(k * hop, k * hop + window)
                k += 1
                if audio is not None:
                    audio.drop_before(k * hop)
                if faces is not None:
                    faces.drop_before(k * hop)
        duration = max(clock[m] for m in active)
        if k == 0 and duration > 0:  # shorter than a window: one window over all of it
            yield make(0.0, duration)
    finally:
        if pool is not None:
            pool.shutdown(wait=False)


# --- smoothing ----------------------------------------------------------------------------

def _stay(hop: float, smooth: float) -> float:
    return 0.0 if not smooth else float(np.clip(1.0 - hop / smooth, 0.0, 1.0 - 1e-6))


def _transitions(n: int, stay: float) -> np.ndarray:
    if n == 1:
        return np.ones((1, 1))
    t = np.full((n, n), (1.0 - stay) / (n - 1))
    np.fill_diagonal(t, stay)
    return t


def _emissions(proba: np.ndarray) -> np.ndarray:
    """Probabilities as emissions: a window without a prediction (NaN) is uninformative."""
    proba = np.asarray(proba, dtype=float)
    out = np.where(np.isnan(proba).any(axis=1, keepdims=True), 1.0, proba)
    return np.clip(out, 1e-9, None)


def viterbi_smooth(proba: np.ndarray, *, hop: float = HOP_S, smooth: float = SMOOTH_S
                   ) -> np.ndarray:
    """The most probable class sequence of a recording's windows (offline smoothing).

    Parameters
    ----------
    proba : np.ndarray, shape (n_windows, n_classes)
        Window probabilities in time order (a row of NaN: no prediction there).
    hop : float
        Seconds between windows.
    smooth : float
        Expected dwell time in a class, in seconds (0: no smoothing, the argmax).

    Returns
    -------
    np.ndarray of int, shape (n_windows,)
        Class index per window.
    """
    proba = np.asarray(proba, dtype=float)
    if not len(proba):
        return np.zeros(0, dtype=int)
    emit = np.log(_emissions(proba))
    stay = _stay(hop, smooth)
    if stay == 0.0:
        return np.argmax(emit, axis=1)
    logt = np.log(_transitions(proba.shape[1], stay))
    score = emit[0] - np.log(proba.shape[1])
    back = np.zeros(proba.shape, dtype=int)
    for t in range(1, len(proba)):
        cand = score[:, None] + logt
        back[t] = np.argmax(cand, axis=0)
        score = cand[back[t], np.arange(proba.shape[1])] + emit[t]
    path = np.zeros(len(proba), dtype=int)
    path[-1] = int(np.argmax(score))
    for t in range(len(proba) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def forward_smooth(proba: np.ndarray, *, hop: float = HOP_S, smooth: float = SMOOTH_S,
                   prior: np.ndarray | None = None) -> np.ndarray:
    """Causal smoothing: each window's class posterior given the windows so far.

    Parameters
    ----------
    proba : np.ndarray, shape (n_windows, n_classes)
    hop, smooth : float
        See :func:`viterbi_smooth`.
    prior : np.ndarray or None
        The posterior before the first window (default uniform).

    Returns
    -------
    np.ndarray, shape (n_windows, n_classes)
        Rows sum to 1.
    """
    proba = np.asarray(proba, dtype=float)
    n = proba.shape[1]
    trans = _transitions(n, _stay(hop, smooth))
    belief = np.full(n, 1.0 / n) if prior is None else np.asarray(prior, float)
    out = np.empty_like(proba)
    for t, e in enumerate(_emissions(proba)):
        belief = (belief @ trans) * e if smooth else e.copy()
        belief /= belief.sum()
        out[t] = belief
    return out


# --- scoring ------------------------------------------------------------------------------

class _WindowModel:
    """A saved model and its extractors, applied to windows."""

    def __init__(self, model_path, *, trust=False, vggface_weights=None, whisper_model=None,
                 classes=None, speakers=None, speaker=None):
        from .persistence import load_model
        from .scoring import model_extractors

        self.model, self.meta = load_model(model_path, trust=trust)
        self.profiles, self.speaker = None, None if speaker is None else str(speaker)
        if speakers is not None:
            from .enrollment import load_profiles

            if speaker is None:
                raise ParameterError("windows of a recording or stream carry no speaker id: "
                                     "give --speaker ID with --speakers")
            self.profiles = load_profiles(speakers, provenance=self.meta.get("provenance"),
                                          speaker=self.speaker)
        self.columns = self.meta.get("feature_columns") or list(self.model.feature_names_in_)
        tasks = model_extractors(self.meta, self.columns, vggface_weights, whisper_model)
        if any(getattr(t, "name", "") == "face_tracks" for t in tasks.values()):
            warnings.warn("the model's face features come from landmark tracks, which a "
                          "stream does not have: windows are predicted from their other "
                          "modalities", stacklevel=3)
            tasks = {m: t for m, t in tasks.items() if getattr(t, "name", "") != "face_tracks"}
        if not tasks:
            raise ParameterError("the model's inputs cannot be computed from a media stream")
        self.tasks = tasks
        self.classes = classes
        self.class_names = [str(c) for c in self.model.classes_]
        mods = _schema.table_modalities(self.columns)
        used = getattr(self.model, "sequences_", None) or {}  # the fusion networks' record
        self.sequences = [_schema.SEQUENCE_COLUMNS[m] for m in mods
                          if m in _schema.SEQUENCE_COLUMNS and used.get(m)]
        self.audio_frames = bool(used.get("audio"))
        self._position = {c: i for i, c in enumerate(self.columns)}
        face = tasks.get("face")
        self.fps = float(face.fps) if face is not None else None
        audio = tasks.get("audio")
        self.sr = int(audio.sample_rate) if audio is not None else None

    def warm_up(self) -> None:
        """Run each extractor once on synthetic input, so the first live window does not pay
        for loading weights and first-call set-up."""
        from .parallel import single_threaded

        with single_threaded():
            if "audio" in self.tasks:
                rng = np.random.default_rng(0)
                noise = (0.05 * rng.standard_normal(self.sr)).astype(np.float32)
                self.tasks["audio"].from_signal(noise, self.sr, frames=self.audio_frames)
            if "face" in self.tasks:
                task = self.tasks["face"]
                task.encode_frames(np.zeros((1, 240, 320, 3), np.uint8), task.build_encoders())

    def open(self, source=None, *, realtime=False, camera=None, mic=None, frames=False):
        """A :class:`MediaStream` of ``source`` reading the streams the model uses (and the
        video for display when ``frames``)."""
        from .config import FRAME_RATE, SAMPLE_RATE
        from .media import MediaStream, open_source

        src = open_source(source, realtime=realtime, camera=camera, mic=mic,
                          audio="audio" in self.tasks, video=frames or "face" in self.tasks)
        return MediaStream(src, sr=self.sr or SAMPLE_RATE, fps=self.fps or FRAME_RATE)

    def row(self, win: WindowFeatures, group: str) -> tuple:
        """A window as ``(group, values in the order of the model's columns, {sequence
        column: frames})``: compact, so a long history is cheap to hold and stack."""
        group = self.speaker or group
        values = np.full(len(self._position), np.nan, dtype=np.float32)
        sequences = {}
        for modality, value in win.values.items():
            at = [self._position.get(n, -1) for n in value.names]
            keep = np.asarray(at) >= 0
            values[np.asarray(at)[keep]] = np.asarray(value.values)[keep]
            seq = _schema.SEQUENCE_COLUMNS.get(modality)
            if seq in self.sequences and value.frames is not None:
                sequences[seq] = value.frames.features
        return group, values, sequences

    def predict_last(self, rows) -> pd.DataFrame:
        """The last row's prediction, with the rows before it as its speaker's history
        (causal scoring: a live stream, ``score_timeline(causal=True)``)."""
        rows = list(rows)
        return self.predict(rows, list(range(len(rows)))).iloc[[-1]]

    def predict(self, rows: list, index: list) -> pd.DataFrame:
        """Predictions for rows made by :meth:`row` (windows with no usable modality: an
        empty ``predicted``, NaN probabilities, modalities ``none``)."""
        from .scoring import predict_table

        idx = pd.Index(index, name="clip_id")
        values = np.vstack([r[1] for r in rows])
        has = ~np.isnan(values).all(axis=1)
        keep = slice(None) if has.all() else has  # no copy in the usual case
        # in the model's column order (group first), so that no step on the way copies it
        table = pd.DataFrame(values[keep].astype(np.float64), index=idx[keep],
                             columns=self.columns)
        del values
        table.insert(0, "group", [r[0] for r, k in zip(rows, has) if k])  # a new block
        for seq in self.sequences:
            table[seq] = pd.Series([r[2].get(seq) for r, k in zip(rows, has) if k],
                                   index=table.index, dtype=object)
        out = pd.DataFrame(index=idx)
        for c in self.class_names:
            out[f"proba_{c}"] = np.nan
        out.insert(0, "predicted", "")
        out["modalities"] = "none"
        if has.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # modality absent in some windows
                pred = predict_table(self.model, table, self.columns, classes=self.classes,
                                     profiles=self.profiles)
            del table
            out.loc[has, pred.columns] = pred.to_numpy()
        return out


def _trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc keeps it, and a long run's resident
    size would creep up by fragments); a no-op where there is no glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _timeline_rows(clip_id: str, wins: list, pred: pd.DataFrame) -> pd.DataFrame:
    out = pred.reset_index(drop=True)
    out.insert(0, "end_s", [w.end_s for w in wins])
    out.insert(0, "start_s", [w.start_s for w in wins])
    out.insert(0, "clip_id", clip_id)
    notes = ["; ".join(f"{m}: {e}" for m, e in w.errors.items()) for w in wins]
    out["note"] = notes
    return out


def _media_inputs(inputs) -> list[Path]:
    from .config import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS

    files = []
    for p in (Path(x) for x in inputs):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file()
                            and q.suffix.lower() in AUDIO_EXTENSIONS | VIDEO_EXTENSIONS)
        else:
            files.append(p)
    return files


def score_timeline(model_path: str | os.PathLike, inputs, *, window: float = WINDOW_S,
                   hop: float = HOP_S, smooth: float = SMOOTH_S,
                   history: int = STREAM_HISTORY, causal: bool = False,
                   out: str | os.PathLike | None = None, classes=None, trust: bool = False,
                   vggface_weights: str | None = None, whisper_model: str | None = None,
                   progress: bool = True, speakers=None, speaker: str | None = None):
    """Emotion over time in long recordings: one row per window.

    Parameters
    ----------
    model_path : path
        A model saved by :func:`mer_pipeline.persistence.save_model`.
    inputs : sequence of paths
        Media files (audio, video or both), or folders of them.
    window, hop : float
        Window length and step, in seconds (defaults :data:`~mer_pipeline.config.WINDOW_S`,
        :data:`~mer_pipeline.config.HOP_S`).
    smooth : float
        Expected dwell time in an emotion (seconds) of the smoothed track
        (``smoothed``; :func:`viterbi_smooth`); 0: no smoothing.
    history : int >= 1
        The most windows one speaker's statistics come from (default
        :data:`~mer_pipeline.config.STREAM_HISTORY`, two minutes at the default hop):
        the recording is scored in consecutive blocks of this many windows, each
        block one batch of its speaker (a rest shorter than half a block is scored
        with the end of the block before it; a recording shorter than a block is
        one batch). At most ``history`` windows' features are held at any time.
    causal : bool
        Score each window with the ``history`` windows before it instead (what a
        live stream can do, :class:`LiveScorer`).
    out : path or None
        Write the timeline CSV here (and ``failures.csv`` beside it).
    classes : str, sequence or None
        Decide among these classes only (see :func:`mer_pipeline.scoring.predict_table`).
    trust, vggface_weights, whisper_model
        See :func:`mer_pipeline.workflows.score_inputs`.
    progress : bool
        Show a progress bar over windows.
    speakers, speaker : path, str or None
        A folder of enrolled speaker profiles and the speaker of the recordings
        (:func:`mer_pipeline.workflows.score_inputs`): windows scored while their
        batch holds fewer than the model's ``min_speaker_clips`` (a short
        recording, a causal start) get the profile's statistics.

    Returns
    -------
    timeline : pandas.DataFrame
        ``clip_id, start_s, end_s, predicted, proba_<class>…, modalities, smoothed,
        note`` (why a modality is missing in a window); a window with no usable
        modality has an empty ``predicted`` and NaN probabilities.
    failures : pandas.DataFrame
        Recordings that could not be read (the others are scored).

    Raises
    ------
    MerError
        If no recording could be scored (the message says why).
    """
    from tqdm.auto import tqdm

    from ._io import atomic_path
    from .parallel import FAILURE_COLUMNS, write_failures

    _check_windows(window, hop)
    if not isinstance(history, (int, np.integer)) or history < 1:
        raise ParameterError(f"history must be a whole number of windows >= 1, got {history!r}")
    history = int(history)
    scorer = _WindowModel(model_path, trust=trust, vggface_weights=vggface_weights,
                          whisper_model=whisper_model, classes=classes, speakers=speakers,
                          speaker=speaker)
    parts, failures = [], []
    for path in _media_inputs(inputs):
        clip_id = path.stem
        try:
            stream = scorer.open(path)
        except MediaError as exc:
            failures.append({"clip_id": clip_id, "path": str(path), "stage": "media",
                             "error": str(exc)})
            continue
        wins, preds = [], []
        # causal: the history is held; blocks: the windows not yet scored, and the last block
        rows: deque | list = deque(maxlen=history + 1) if causal else []
        last_block: list = []
        bar = tqdm(desc=clip_id, unit="window", leave=False, disable=None if progress else True)
        with stream:
            try:
                for win in window_features(stream, scorer.tasks, window=window, hop=hop,
                                           audio_frames=scorer.audio_frames):
                    # the window's times and notes only: its features live in the compact row
                    wins.append(WindowFeatures(win.start_s, win.end_s, errors=win.errors))
                    rows.append(scorer.row(win, clip_id))
                    if causal:
                        preds.append(scorer.predict_last(rows))
                    elif len(rows) == history:  # a block: one batch of its speaker
                        preds.append(scorer.predict(rows, list(range(history))))
                        last_block, rows = rows, []
                    if len(wins) % TRIM_EVERY == 0:
                        _trim_heap()
                    bar.update()
            except MediaError as exc:
                failures.append({"clip_id": clip_id, "path": str(path), "stage": "media",
                                 "error": str(exc)})
                continue
            finally:
                bar.close()
        if stream.error is not None:
            failures.append({"clip_id": clip_id, "path": str(path), "stage": "media",
                             "error": f"decoding stopped early, windows up to "
                                      f"{wins[-1].end_s if wins else 0:.1f} s scored "
                                      f"({stream.error})"})
        if not wins:
            failures.append({"clip_id": clip_id, "path": str(path), "stage": "media",
                             "error": "no window decoded"})
            continue
        if not causal and rows:  # the rest: a short one is scored with the block before it
            context = last_block[len(rows) - history:] if len(rows) < history // 2 else []
            batch = context + rows
            preds.append(scorer.predict(batch, list(range(len(batch)))).iloc[len(context):])
        pred = pd.concat(preds)
        part = _timeline_rows(clip_id, wins, pred)
        proba = part[[f"proba_{c}" for c in scorer.class_names]].to_numpy(dtype=float)
        smoothed = np.asarray(scorer.class_names)[viterbi_smooth(proba, hop=hop, smooth=smooth)]
        part.insert(part.columns.get_loc("modalities") + 1, "smoothed",
                    np.where(np.isnan(proba).all(axis=1), "", smoothed))
        parts.append(part)
    fails = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    if not parts:
        lines = "; ".join(f"{f['path']}: {f['error']}" for f in failures[:5])
        raise MerError(f"nothing to score: {lines or 'no media given'}")
    timeline = pd.concat(parts, ignore_index=True)
    if out is not None:
        out = Path(out)
        if out.is_dir():
            raise ParameterError(f"--out {out} is a folder; give the timeline file "
                                 f"(e.g. {out / 'timeline.csv'})")
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            timeline.to_csv(tmp, index=False, float_format="%.6f")
        write_failures(fails, out.parent / "failures.csv")
    return timeline, fails


class LiveScorer:
    """Score a live source window by window, as the windows close.

    Parameters
    ----------
    model_path : path
        A saved model.
    source : path, URL, ``"-"`` or None
        See :func:`mer_pipeline.media.open_source` (``None`` with ``camera``/``mic``).
    camera, mic : int, str or None
        A camera and/or a microphone.
    realtime : bool
        Play a file at its own rate (as a live source delivers it).
    window, hop : float
        Window length and step (seconds).
    history : int
        Each window is scored with at most this many windows before it as its
        speaker's history (speaker adaptation from the stream itself).
    smooth : float
        Expected dwell time (seconds) of the causal smoothing (:func:`forward_smooth`).
    classes, trust, vggface_weights, whisper_model
        See :func:`score_timeline`.
    keep_frame : bool
        Decode the video even for a model without face features, and keep the
        latest frame (:attr:`last_frame`), face box (:attr:`last_box`) and result
        (:attr:`last_row`), for display.
    on_frame : callable or None
        Called with each sampled frame (RGB) as it arrives, from the thread that
        iterates (e.g. to draw it with :func:`annotate_frame`).
    speakers, speaker : path, str or None
        Enrolled profiles and the speaker of the stream: its first windows (fewer
        than the model's ``min_speaker_clips`` in the history) get the profile's
        statistics instead of none (see :func:`score_timeline`).

    Notes
    -----
    Iterating yields one dict per window: ``clip_id, start_s, end_s, predicted,
    proba_<class>…, modalities, smoothed, latency_s, note``. ``latency_s`` is how
    long after the window closed in the source's time its result was ready:
    the source clock is estimated as the earliest arrival of any block relative
    to its timestamp (a block cannot arrive before it was produced), so the
    latency is never under-stated by decoding delays. It is meaningful for
    live and ``realtime`` sources; a file read as fast as possible is ahead of
    its clock and shows negative latencies.
    """

    def __init__(self, model_path, source=None, *, camera=None, mic=None,
                 realtime: bool = False, window: float = WINDOW_S, hop: float = HOP_S,
                 history: int = STREAM_HISTORY, smooth: float = SMOOTH_S, classes=None,
                 trust: bool = False, vggface_weights=None, whisper_model=None,
                 keep_frame: bool = False, on_frame=None, speakers=None, speaker=None):
        _check_windows(window, hop)
        self.window, self.hop, self.smooth = window, hop, smooth
        self.history = int(history)
        self.model = _WindowModel(model_path, trust=trust, vggface_weights=vggface_weights,
                                  whisper_model=whisper_model, classes=classes,
                                  speakers=speakers, speaker=speaker)
        self.stream = self.model.open(source, realtime=realtime, camera=camera, mic=mic,
                                      frames=keep_frame)
        self.model.warm_up()  # before the source starts: the first window is as quick as any
        self.clip_id = self.stream.source.name
        self.keep_frame = keep_frame
        self.on_frame = on_frame
        self.last_frame = None
        self.last_box = None
        self.last_row = None
        self.offset = None  # monotonic time of the source's t = 0 (estimated)

    def close(self) -> None:
        """Stop decoding (safe to call twice)."""
        self.stream.close()

    def _watch(self, chunks):
        """Pass chunks through, tracking the source clock and the latest frame."""
        for chunk in chunks:
            end = chunk.start_s + (len(chunk.data) / self.stream.sr if chunk.kind == "audio"
                                   else 0.0)
            guess = chunk.arrival - end
            self.offset = guess if self.offset is None else min(self.offset, guess)
            if chunk.kind == "video":
                if self.keep_frame:
                    self.last_frame = chunk.data
                if self.on_frame is not None:
                    self.on_frame(chunk.data)
            yield chunk

    def __iter__(self):
        names = self.model.class_names
        rows: deque = deque(maxlen=self.history + 1)
        belief = None
        smoothed = ""
        n_windows = 0

        class _Watched:  # the stream as window_features sees it, through _watch
            def __init__(inner, stream):
                inner.source, inner.sr, inner.fps = stream.source, stream.sr, stream.fps

            def __iter__(inner):
                return self._watch(iter(self.stream))

        with self.stream:
            for win in window_features(_Watched(self.stream), self.model.tasks,
                                       window=self.window, hop=self.hop,
                                       audio_frames=self.model.audio_frames):
                rows.append(self.model.row(win, self.clip_id))
                pred = self.model.predict_last(rows).iloc[0]
                proba = pred[[f"proba_{c}" for c in names]].to_numpy(dtype=float)
                if not np.isnan(proba).any():
                    post = forward_smooth(proba[None], hop=self.hop, smooth=self.smooth,
                                          prior=belief)[0]
                    belief = post
                    smoothed = names[int(np.argmax(post))]
                if win.box is not None:
                    self.last_box = win.box
                done = time.monotonic()
                row = {"clip_id": self.clip_id, "start_s": win.start_s, "end_s": win.end_s,
                       "predicted": pred["predicted"],
                       **{f"proba_{c}": float(pred[f"proba_{c}"]) for c in names},
                       "modalities": pred["modalities"],
                       "smoothed": smoothed if not np.isnan(proba).any() else "",
                       "latency_s": round(done - (self.offset + win.end_s), 4)
                       if self.offset is not None else np.nan,
                       "note": "; ".join(f"{m}: {e}" for m, e in win.errors.items())}
                self.last_row = row
                n_windows += 1
                if n_windows % TRIM_EVERY == 0:
                    _trim_heap()
                yield row
        if self.stream.error is not None:
            warnings.warn(f"the source stopped early: {self.stream.error}", stacklevel=2)


# --- display ------------------------------------------------------------------------------

def annotate_frame(frame: np.ndarray, row: dict, box=None) -> np.ndarray:
    """A copy of an RGB frame with the face box and the class probabilities drawn on it.

    Parameters
    ----------
    frame : np.ndarray, shape (h, w, 3), uint8, RGB
    row : dict
        A window's result (``predicted``, ``proba_<class>``…).
    box : tuple or None
        ``x, y, width, height`` of the face, in frame pixels.

    Returns
    -------
    np.ndarray, the annotated copy (RGB)
    """
    import cv2

    out = np.ascontiguousarray(frame, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    if box is not None:
        x, y, bw, bh = (int(v) for v in box)
        cv2.rectangle(out, (x, y), (x + bw - 1, y + bh - 1), (0, 255, 0), max(1, w // 320))
    probs = {k[len("proba_"):]: v for k, v in row.items()
             if k.startswith("proba_") and v == v}
    scale = max(0.35, w / 1600)
    line = max(12, int(26 * scale * 1.2))
    bar = max(40, w // 5)
    for i, (name, p) in enumerate(sorted(probs.items(), key=lambda kv: -kv[1])):
        y0 = 6 + i * line
        colour = (255, 200, 0) if name == row.get("predicted") else (200, 200, 200)
        cv2.rectangle(out, (6, y0), (6 + int(bar * float(p)), y0 + line - 4), colour, -1)
        cv2.putText(out, f"{name} {float(p):.2f}", (10 + bar, y0 + line - 6),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def check_display() -> None:
    """Raise a one-line error when frames cannot be shown (an OpenCV without GUI, no display)."""
    import cv2

    if "GUI:                           NONE" in cv2.getBuildInformation():
        raise ParameterError("--show needs OpenCV with a GUI; this is opencv-python-headless "
                             "(no GUI): install opencv-python in its place to see the video")
    if os.name == "posix" and sys.platform != "darwin" and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        raise ParameterError("--show needs a display: DISPLAY is not set (run it on a desktop, "
                             "or under Xvfb)")
