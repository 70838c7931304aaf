"""Media stage: decode a clip's audio and sample its video frames, in memory.

Audio comes back as mono float32 at a chosen rate (default 16 kHz; stereo is
downmixed), video as a ``uint8`` array of RGB frames sampled at a fixed rate
(default 3 fps). A file with both streams is decoded by one ffmpeg process
that writes the frames and the audio to two pipes, so each file is read once.
ffmpeg is the binary bundled with ``imageio-ffmpeg``: nothing to install.

Every failure is a typed :class:`~mer_pipeline.exceptions.MediaError`:
a missing file, a zero-byte file, a corrupt or truncated file, a file without
the stream asked for.
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import AUDIO_EXTENSIONS, FRAME_RATE, IMAGE_EXTENSIONS, SAMPLE_RATE
from .exceptions import (
    CorruptMediaError,
    EmptyMediaError,
    MediaError,
    MediaNotFoundError,
    NoAudioStreamError,
    NoVideoStreamError,
    ParameterError,
)

__all__ = ["DecodedClip", "decode_clip", "load_audio", "sample_frames", "write_wav",
           "ffmpeg_exe"]

_SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"}


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (``IMAGEIO_FFMPEG_EXE`` overrides the bundled one)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class DecodedClip:
    """A clip decoded in memory.

    Attributes
    ----------
    frames : np.ndarray or None
        ``uint8`` array, shape ``(n_frames, height, width, 3)``, RGB.
    audio : np.ndarray or None
        ``float32`` mono signal, shape ``(n_samples,)``.
    sr : int
        Sample rate of ``audio``.
    fps : float
        Rate ``frames`` were sampled at.
    errors : dict
        Per stream (``"audio"``/``"video"``), the :class:`MediaError` that
        prevented decoding it; the other stream is still returned.
    """

    frames: np.ndarray | None = None
    audio: np.ndarray | None = None
    sr: int = SAMPLE_RATE
    fps: float = FRAME_RATE
    errors: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Audio duration in seconds (0 when there is no audio)."""
        return 0.0 if self.audio is None else len(self.audio) / self.sr


def _check_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MediaNotFoundError(path, "no such media file")
    if path.stat().st_size == 0:
        raise EmptyMediaError(path, "empty (zero-byte) media file")
    return path


def _check_rates(sr, fps):
    if sr is not None and (not isinstance(sr, (int, np.integer)) or sr <= 0):
        raise ParameterError(f"sr must be a positive integer, got {sr!r}")
    if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
        raise ParameterError(f"fps must be a positive number, got {fps!r}")


def _ffmpeg_failure(path, stderr: str) -> MediaError:
    text = stderr.strip()
    if re.search(r"matches no streams|does not contain any stream|no audio stream", text, re.I) \
            and "0:a" in text:
        return NoAudioStreamError(path, "no audio stream")
    if re.search(r"matches no streams|does not contain any stream", text, re.I) and "0:v" in text:
        return NoVideoStreamError(path, "no video stream")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")]
    reason = lines[-1] if lines else "ffmpeg failed"
    for pattern in ("moov atom not found", "Invalid data found", "End of file",
                    "could not find codec parameters", "Error opening input"):
        hit = next((ln for ln in lines if pattern.lower() in ln.lower()), None)
        if hit:
            reason = hit
            break
    reason = re.sub(r"^\[[^\]]*\]\s*", "", reason.strip())  # drop "[in#0 @ 0x...]"
    return CorruptMediaError(path, f"cannot decode ({reason[:200]})")


def _frame_size(stderr: str):
    """Width and height of the raw video output, read from ffmpeg's log."""
    out = stderr.split("Output #0", 1)
    if len(out) < 2:
        return None
    m = re.search(r"Video: rawvideo.*?, (\d{1,5})x(\d{1,5})", out[1])
    return (int(m.group(1)), int(m.group(2))) if m else None


def _scale_filter(max_side):
    if max_side is None:
        return ""
    if int(max_side) < 2:
        raise ParameterError(f"max_side must be >= 2, got {max_side!r}")
    m = int(max_side)
    return (f",scale='if(gt(iw,ih),min(iw,{m}),-2)':'if(gt(iw,ih),-2,min(ih,{m}))'")


def _run_ffmpeg(path: Path, *, video: bool, audio: bool, fps, sr, max_side):
    """One ffmpeg process: frames to stdout, audio to an extra pipe."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    if video:
        cmd += ["-map", "0:v:0", "-vf", f"fps={fps}{_scale_filter(max_side)}",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    read_fd = write_fd = None
    if audio:
        read_fd, write_fd = os.pipe()
        cmd += ["-map", "0:a:0", "-ac", "1", "-ar", str(sr), "-f", "f32le", f"pipe:{write_fd}"]
    chunks: list[bytes] = []

    def drain():
        with os.fdopen(read_fd, "rb") as fh:
            while True:
                block = fh.read(1 << 16)
                if not block:
                    break
                chunks.append(block)

    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(write_fd,) if audio else ())
    except OSError as exc:  # pragma: no cover - ffmpeg missing
        if audio:
            os.close(read_fd)
            os.close(write_fd)
        raise CorruptMediaError(path, f"cannot start ffmpeg ({exc})") from exc
    reader = None
    if audio:
        os.close(write_fd)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
    stdout, stderr_b = proc.communicate()
    if reader is not None:
        reader.join()
    stderr = stderr_b.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise _ffmpeg_failure(path, stderr)
    frames = samples = None
    if video:
        size = _frame_size(stderr)
        if size is None or not stdout:
            raise CorruptMediaError(path, "no video frames decoded")
        w, h = size
        n = len(stdout) // (w * h * 3)
        if n == 0:
            raise CorruptMediaError(path, "no video frames decoded")
        frames = np.frombuffer(stdout, np.uint8, count=n * w * h * 3).reshape(n, h, w, 3)
    if audio:
        raw = b"".join(chunks)
        samples = np.frombuffer(raw, np.float32, count=len(raw) // 4).copy()
        if samples.size == 0:
            raise CorruptMediaError(path, "no audio samples decoded")
    return frames, samples


def load_audio(path: str | os.PathLike, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a file's audio to mono float32 at ``sr``.

    Parameters
    ----------
    path : str or path-like
        Audio file (WAV, FLAC, OGG, MP3, ...) or a video with an audio track.
    sr : int > 0
        Target sample rate in Hz. Stereo is averaged to mono.

    Returns
    -------
    np.ndarray, shape (n_samples,), dtype float32

    Raises
    ------
    MediaNotFoundError, EmptyMediaError, CorruptMediaError, NoAudioStreamError

    Examples
    --------
    >>> y = load_audio("03-01-05-01-02-01-12.wav", sr=16000)  # doctest: +SKIP
    """
    _check_rates(sr, None)
    path = _check_file(path)
    if path.suffix.lower() in _SOUNDFILE_EXTENSIONS:
        y = _load_soundfile(path, sr)
        if y is not None:
            return y
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise NoAudioStreamError(path, "no audio stream (still image)")
    _, y = _run_ffmpeg(path, video=False, audio=True, fps=None, sr=sr, max_side=None)
    return y


def _load_soundfile(path: Path, sr: int):
    import soundfile as sf
    import soxr

    try:
        y, native = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception:  # libsndfile cannot read it: let ffmpeg try and say why
        return None
    if y.shape[0] == 0:
        raise CorruptMediaError(path, "no audio samples decoded")
    y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if native != sr:
        y = soxr.resample(y, native, sr, quality="HQ")
    return np.ascontiguousarray(y, dtype=np.float32)


def sample_frames(path: str | os.PathLike, *, fps: float = FRAME_RATE,
                  max_side: int | None = None) -> np.ndarray:
    """Sample a video's frames at ``fps`` into memory.

    Parameters
    ----------
    path : str or path-like
        Video file, or a still image (returned as one frame).
    fps : float > 0
        Sampling rate in frames per second (3 by default: a 4.0 s clip
        gives 12 frames).
    max_side : int or None
        Downscale so that the longer side is at most this many pixels.

    Returns
    -------
    np.ndarray, shape (n_frames, height, width, 3), dtype uint8, RGB

    Raises
    ------
    MediaNotFoundError, EmptyMediaError, CorruptMediaError, NoVideoStreamError
    """
    _check_rates(None, fps)
    path = _check_file(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return _load_image(path, max_side)
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        raise NoVideoStreamError(path, "no video stream (audio file)")
    frames, _ = _run_ffmpeg(path, video=True, audio=False, fps=fps, sr=None, max_side=max_side)
    return frames


def _to_rgb(img):
    """An image as 8-bit RGB: EXIF orientation applied (a phone photo tagged "rotate 90°"
    is turned upright), 16- and 32-bit greys scaled to 8 bits instead of clipped white."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = float(np.nanmax(arr)) if arr.size else 0.0
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "F" and peak <= 1.0:
            top = 1.0
        else:  # 32-bit integers or floats holding 8- or 16-bit values
            top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def _load_image(path: Path, max_side) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = _to_rgb(img)
            if max_side is not None and max(img.size) > max_side:
                img.thumbnail((max_side, max_side))
            return np.asarray(img, dtype=np.uint8)[None]
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise CorruptMediaError(path, f"cannot decode image ({exc})") from None


def decode_clip(*, audio_path: str | os.PathLike | None = None,
                video_path: str | os.PathLike | None = None, sr: int = SAMPLE_RATE,
                fps: float = FRAME_RATE, max_side: int | None = None) -> DecodedClip:
    """Decode a clip's audio and frames, reading a shared file once.

    Parameters
    ----------
    audio_path, video_path : path or None
        The media carrying each stream (the same file for an audio-video
        clip, in which case one ffmpeg process decodes both).
    sr : int > 0
        Audio sample rate.
    fps : float > 0
        Frame sampling rate.
    max_side : int or None
        Downscale frames so the longer side is at most this.

    Returns
    -------
    DecodedClip
        A stream that could not be decoded is ``None`` and its error is in
        ``errors`` (so a video without sound still yields its frames).
    """
    _check_rates(sr, fps)
    clip = DecodedClip(sr=sr, fps=fps)
    same = audio_path and video_path and Path(audio_path) == Path(video_path)
    if same and Path(video_path).suffix.lower() in IMAGE_EXTENSIONS:
        same = False
    if same:
        try:
            path = _check_file(video_path)
            clip.frames, clip.audio = _run_ffmpeg(path, video=True, audio=True, fps=fps, sr=sr,
                                                  max_side=max_side)
            return clip
        except NoAudioStreamError as exc:
            clip.errors["audio"] = exc
            audio_path = None
        except NoVideoStreamError as exc:
            clip.errors["video"] = exc
            video_path = None
        except MediaError as exc:  # the file itself is bad: both streams fail
            clip.errors["audio"] = clip.errors["video"] = exc
            return clip
    if video_path:
        try:
            clip.frames = sample_frames(video_path, fps=fps, max_side=max_side)
        except MediaError as exc:
            clip.errors["video"] = exc
    if audio_path:
        try:
            clip.audio = load_audio(audio_path, sr=sr)
        except MediaError as exc:
            clip.errors["audio"] = exc
    return clip


def write_wav(path: str | os.PathLike, y: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write a mono float signal as 16-bit PCM WAV (atomically)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(str(tmp), np.asarray(y, dtype=np.float32), int(sr), subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return path


class MediaExtractor:
    """Per-clip task of ``mer extract``: a 16 kHz mono WAV and a frame array.

    Writes ``<out_dir>/audio/<clip_id>.wav`` and ``<out_dir>/frames/<clip_id>.npy``
    (``uint8``, ``(n_frames, height, width, 3)``) for the streams a clip has.
    Used through :func:`extract_media`.
    """

    name = "extract"
    version = "1"

    def __init__(self, out_dir, *, sr: int = SAMPLE_RATE, fps: float = FRAME_RATE,
                 max_side: int | None = None, frames: bool = True):
        self.out_dir = str(out_dir)
        self.sr = sr
        self.fps = fps
        self.max_side = max_side
        self.frames = frames

    def params(self) -> dict:
        return {"out_dir": self.out_dir, "sr": self.sr, "fps": self.fps,
                "max_side": self.max_side, "frames": self.frames}

    def inputs(self, row: dict) -> list[str]:
        return sorted({p for p in (row.get("audio_path"), row.get("video_path")) if p})

    def is_valid(self, value) -> bool:
        """A cached result counts only while its output files still exist."""
        return value is None or all(
            Path(value[k]).is_file() for k in ("wav_path", "frames_path") if value.get(k))

    def __call__(self, clip_id: str, row: dict):
        from .parallel import ClipOutcome

        outcome = ClipOutcome()
        video = row.get("video_path") if self.frames else None
        clip = decode_clip(audio_path=row.get("audio_path") or None, video_path=video or None,
                           sr=self.sr, fps=self.fps, max_side=self.max_side)
        for stage, err in clip.errors.items():
            outcome.fail(stage, err.path, err)
        value = {"wav_path": "", "frames_path": "", "n_frames": 0, "duration_s": 0.0}
        out = Path(self.out_dir)
        if clip.audio is not None:
            value["wav_path"] = str(write_wav(out / "audio" / f"{clip_id}.wav", clip.audio, self.sr))
            value["duration_s"] = round(clip.duration, 4)
        if clip.frames is not None:
            target = out / "frames" / f"{clip_id}.npy"
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part.npy")
            np.save(tmp, clip.frames)
            os.replace(tmp, target)
            value["frames_path"] = str(target)
            value["n_frames"] = int(len(clip.frames))
        if value["wav_path"] or value["frames_path"]:
            outcome.value = value
        return outcome


def extract_media(manifest, out_dir: str | os.PathLike, *, sr: int = SAMPLE_RATE,
                  fps: float = FRAME_RATE, max_side: int | None = None, frames: bool = True,
                  n_jobs: int | None = -1, cache_dir=None, backend: str = "loky",
                  scheduler: str | None = None, progress: bool = True,
                  retry_failed: bool = False):
    """Stage 1 over a manifest: WAV (``sr`` mono) and sampled frames per clip.

    Parameters
    ----------
    manifest : pandas.DataFrame or CorpusScan
        From :func:`mer_pipeline.discover`; given the whole scan, its
        unparsed files are listed in ``failures.csv`` too (stage ``manifest``).
    out_dir : path
        Receives ``audio/``, ``frames/``, ``extracted.csv`` (one row per clip
        with ``wav_path``, ``frames_path``, ``n_frames``, ``duration_s``) and
        ``failures.csv``.
    sr, fps, max_side, frames
        See :func:`decode_clip`; ``frames=False`` writes audio only.
    n_jobs, cache_dir, backend, scheduler, progress, retry_failed
        See :func:`mer_pipeline.parallel.map_clips`; the cache defaults to
        ``<out_dir>/.cache`` (or ``$MER_CACHE_DIR``).

    Returns
    -------
    table : pandas.DataFrame
        ``extracted.csv``'s content, indexed by ``clip_id``.
    run : RunResult
        Failures and how many clips were computed or cached.
    """
    import pandas as pd

    from .parallel import default_cache_dir, map_clips, split_scan, write_failures

    from ._io import atomic_path

    manifest, scan_failures = split_scan(manifest)
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out_dir} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    cache = default_cache_dir(out) if cache_dir is None else cache_dir
    task = MediaExtractor(out, sr=sr, fps=fps, max_side=max_side, frames=frames)
    run = map_clips(task, manifest, cache_dir=cache, n_jobs=n_jobs, backend=backend,
                    scheduler=scheduler, progress=progress, retry_failed=retry_failed,
                    desc="extract")
    table = pd.DataFrame.from_dict(run.values, orient="index",
                                   columns=["wav_path", "frames_path", "n_frames", "duration_s"])
    table.index.name = "clip_id"
    meta = manifest.loc[table.index, [c for c in ("corpus", "actor", "group", "emotion")
                                      if c in manifest.columns]]
    table = meta.join(table)
    with atomic_path(out / "extracted.csv") as tmp:
        table.to_csv(tmp)
    run.failures = pd.concat([scan_failures, run.failures], ignore_index=True)
    write_failures(run.failures, out / "failures.csv")
    return table, run
