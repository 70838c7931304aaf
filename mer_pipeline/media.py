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
           "ffmpeg_exe", "MediaSource", "MediaStream", "MediaChunk", "open_source",
           "list_devices", "iter_frames"]

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
    return np.concatenate(list(iter_frames(path, fps=fps, max_side=max_side)))


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


# --- streaming: long recordings and live sources, decoded incrementally -------------------

#: Seconds of audio per block a :class:`MediaStream` delivers.
STREAM_BLOCK_S = 0.25


@dataclass
class MediaSource:
    """A source for :class:`MediaStream`: ffmpeg's input arguments and the streams it has.

    Made by :func:`open_source`. ``live`` sources (a camera, a microphone, a
    URL or a pipe) cannot be probed or rewound; ``realtime`` files are read at
    their own rate (ffmpeg ``-re``), as if they were live.
    """

    name: str
    input_args: list
    audio: bool
    video: bool
    live: bool = False


def _probe_streams(path) -> tuple[bool, bool]:
    """Whether a file or URL has an audio and a video stream (ffmpeg's input listing)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=60)
    text = proc.stderr
    streams = re.findall(r"Stream #\d+:\d+.*?: (Audio|Video):(.*)", text)
    audio = any(kind == "Audio" for kind, _ in streams)
    # a cover picture (attached_pic) is not a video stream
    video = any(kind == "Video" and "attached pic" not in rest for kind, rest in streams)
    if not streams:
        raise _ffmpeg_failure(path, text)
    return audio, video


def list_devices() -> dict:
    """Cameras and microphones ffmpeg can open on this machine.

    Returns
    -------
    dict
        ``{"cameras": [...], "microphones": [...], "system": ...}``: on Linux
        the ``/dev/video*`` nodes and the PulseAudio/PipeWire sources; on macOS
        and Windows the names ffmpeg's ``avfoundation``/``dshow`` list.
    """
    import platform

    system = platform.system()
    cameras: list[str] = []
    mics: list[str] = []
    if system == "Linux":
        cameras = sorted(str(p) for p in Path("/dev").glob("video*"))
        try:
            out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-sources", "pulse"],
                                 capture_output=True, text=True, errors="replace", timeout=10)
            mics = [m.group(1) for m in re.finditer(r"^\s*\*?\s*(\S+)\s+\[", out.stdout, re.M)]
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover
            mics = []
    elif system in ("Darwin", "Windows"):  # pragma: no cover - not testable here
        fmt = "avfoundation" if system == "Darwin" else "dshow"
        out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-f", fmt, "-list_devices", "true",
                              "-i", "dummy" if fmt == "dshow" else ""],
                             capture_output=True, text=True, errors="replace", timeout=10)
        section = None
        for line in out.stderr.splitlines():
            if re.search(r"video devices", line, re.I):
                section = cameras
            elif re.search(r"audio devices", line, re.I):
                section = mics
            elif section is not None:
                m = re.search(r'\[(\d+)\]\s*(.+)$', line) or re.search(r'"([^"]+)"', line)
                if m:
                    section.append(m.group(0).strip())
    return {"cameras": cameras, "microphones": mics, "system": system}


def _device_args(camera, mic) -> list:
    """ffmpeg input arguments for a camera and/or a microphone (one-line errors if absent)."""
    import platform

    system = platform.system()
    found = None
    args: list = []
    if system == "Linux":
        if camera is not None:
            node = Path(str(camera) if str(camera).startswith("/dev/") else f"/dev/video{camera}")
            if not node.exists():
                found = list_devices()
                raise MediaNotFoundError(node, "no such camera (cameras found: "
                                         f"{', '.join(found['cameras']) or 'none'})")
            args += ["-f", "v4l2", "-i", str(node)]
        if mic is not None:
            found = found or list_devices()
            if not found["microphones"]:
                raise MediaNotFoundError(f"pulse:{mic}", "no microphone: no PulseAudio/PipeWire "
                                         "source found (microphones found: none)")
            if mic != "default" and mic not in found["microphones"]:
                raise MediaNotFoundError(f"pulse:{mic}", "no such microphone (microphones "
                                         f"found: {', '.join(found['microphones'])})")
            args += ["-f", "pulse", "-i", str(mic)]
        return args
    if system == "Darwin":  # pragma: no cover - not testable here
        video = "" if camera is None else str(camera)
        audio = "" if mic is None else ("0" if mic == "default" else str(mic))
        return ["-f", "avfoundation", "-i", f"{video}:{audio}" if audio else video]
    if system == "Windows":  # pragma: no cover - not testable here
        parts = ([f"video={camera}"] if camera is not None else []) + \
                ([f"audio={mic}"] if mic is not None else [])
        return ["-f", "dshow", "-i", ":".join(parts)]
    raise ParameterError(f"cameras and microphones are not supported on {system}")


def open_source(source=None, *, realtime: bool = False, camera=None, mic=None,
                audio: bool | None = None, video: bool | None = None) -> MediaSource:
    """Describe a media source for :class:`MediaStream`.

    Parameters
    ----------
    source : path, URL, ``"-"`` or None
        A media file, anything ffmpeg reads (``rtsp://``, ``http://``), or
        ``"-"`` for standard input. ``None`` with ``camera`` and/or ``mic``.
    realtime : bool
        Read a file at its own rate (as a live source delivers it).
    camera : int, str or None
        A camera: its number (``0`` = ``/dev/video0`` on Linux) or device name.
    mic : str or None
        A microphone: ``"default"`` or a source name (:func:`list_devices`).
    audio, video : bool or None
        Which streams to read; default: those a file or URL has (probed), both
        for a pipe, the devices given for a camera and a microphone.

    Returns
    -------
    MediaSource

    Raises
    ------
    MediaNotFoundError
        A missing file, camera or microphone (the message names the devices found).
    CorruptMediaError, NoAudioStreamError, NoVideoStreamError
    """
    if source is None and camera is None and mic is None:
        raise ParameterError("give a source (file, URL or '-') or a camera and/or a microphone")
    if source is not None and (camera is not None or mic is not None):
        raise ParameterError("give either a source or devices (camera, microphone), not both")
    if source is None:
        args = _device_args(camera, mic)
        name = "+".join(x for x in (f"camera{camera}" if camera is not None else "",
                                    f"mic:{mic}" if mic is not None else "") if x)
        has_audio, has_video = mic is not None, camera is not None
        live = True
    else:
        text = str(source)
        live = text == "-" or bool(re.match(r"^[a-z][a-z0-9+.-]*://", text))
        if text == "-":
            args, has_audio, has_video, name = ["-i", "pipe:0"], True, True, "stdin"
        else:
            if not live:
                path = _check_file(text)
                name = path.stem
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    raise NoAudioStreamError(path, "a still image is not a stream")
            else:
                name = re.sub(r"[^A-Za-z0-9._-]+", "_", text.split("://", 1)[1])[:60]
            has_audio, has_video = _probe_streams(text)
            # at its own rate from the first second (no initial read burst: a live source has none)
            args = (["-re", "-readrate_initial_burst", "0"] if realtime else []) + ["-i", text]
        live = live or realtime
    wanted = [k for k, on in (("audio", audio), ("video", video)) if on is None or on]
    has_audio = has_audio if audio is None else (bool(audio) and has_audio)
    has_video = has_video if video is None else (bool(video) and has_video)
    if not has_audio and not has_video:
        raise NoAudioStreamError(source if source is not None else name,
                                 f"no {' or '.join(wanted) or 'audio or video'} stream to read")
    return MediaSource(name=name, input_args=args, audio=has_audio, video=has_video, live=live)


@dataclass
class MediaChunk:
    """What a :class:`MediaStream` delivers: a block of audio or one sampled frame.

    Attributes
    ----------
    kind : {"audio", "video"}
    start_s : float
        Source time of the block's first sample (of the frame), from the stream's start.
    data : np.ndarray
        ``float32`` mono samples, or one ``uint8`` RGB frame ``(h, w, 3)``.
    arrival : float
        ``time.monotonic()`` when it was read (for latency measurement).
    """

    kind: str
    start_s: float
    data: np.ndarray
    arrival: float


class MediaStream:
    """Decode a source incrementally: one ffmpeg process, audio blocks and frames as they come.

    Memory does not grow with the recording's length: blocks are handed over
    as they are decoded, through a bounded queue (ffmpeg waits while the
    consumer is behind, for a file; a live source is read as fast as it comes).

    Parameters
    ----------
    source : MediaSource
        From :func:`open_source`.
    sr : int
        Audio sample rate (mono).
    fps : float
        Rate frames are sampled at.
    block_s : float
        Seconds of audio per block.
    max_side : int or None
        Downscale frames so the longer side is at most this.
    queue_size : int
        Blocks held between the decoder and the consumer at most.

    Examples
    --------
    >>> with MediaStream(open_source("talk.mp4")) as stream:  # doctest: +SKIP
    ...     for chunk in stream:
    ...         print(chunk.kind, chunk.start_s, chunk.data.shape)
    """

    def __init__(self, source: MediaSource, *, sr: int = SAMPLE_RATE, fps: float = FRAME_RATE,
                 block_s: float = STREAM_BLOCK_S, max_side: int | None = None,
                 queue_size: int = 64):
        _check_rates(sr, fps)
        self.source = source
        self.sr = sr
        self.fps = fps
        self.block_s = block_s
        self.max_side = max_side
        self.queue_size = queue_size
        self.proc = None
        self.stderr_lines: list[str] = []
        self.frame_size = None
        self.decoded = {"audio": 0, "video": 0}  # samples, frames
        self.error: MediaError | None = None  # why decoding stopped early, if it did
        self._threads: list = []
        self._stop = threading.Event()

    # -- process ---------------------------------------------------------------------------
    def start(self) -> "MediaStream":
        import queue

        src = self.source
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
               *src.input_args]
        read_fd = write_fd = None
        # a live source's outputs are flushed packet by packet (ffmpeg's output buffer holds
        # 32 KB: half a second of 16 kHz float audio would otherwise arrive in one burst)
        flush = ["-flush_packets", "1"] if src.live else []
        if src.video:
            cmd += ["-map", "0:v:0", "-vf", f"fps={self.fps}{_scale_filter(self.max_side)}",
                    *flush, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        if src.audio:
            read_fd, write_fd = os.pipe()
            # a camera and a microphone are two inputs: the sound is the second's
            stream = "1:a:0" if (src.video and src.input_args.count("-i") > 1) else "0:a:0"
            cmd += ["-map", stream, "-ac", "1", "-ar", str(self.sr), *flush, "-f", "f32le",
                    f"pipe:{write_fd}"]
        self.queue = queue.Queue(maxsize=self.queue_size)
        self._size_known = threading.Event()
        stdin = None if src.input_args[-1] == "pipe:0" else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE,
                                         pass_fds=(write_fd,) if src.audio else ())
        except OSError as exc:  # pragma: no cover - ffmpeg missing
            for fd in (read_fd, write_fd):
                if fd is not None:
                    os.close(fd)
            raise CorruptMediaError(src.name, f"cannot start ffmpeg ({exc})") from exc
        if write_fd is not None:
            os.close(write_fd)
        self._open = {k for k, on in (("audio", src.audio), ("video", src.video)) if on}
        targets = [("stderr", self._read_stderr, None)]
        if src.video:
            targets.append(("video", self._read_video, None))
        if src.audio:
            targets.append(("audio", self._read_audio, read_fd))
        for name, func, arg in targets:
            t = threading.Thread(target=func, args=() if arg is None else (arg,),
                                 name=f"mer-stream-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __enter__(self) -> "MediaStream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the decoder (also mid-stream) and release its pipes."""
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)

    # -- reader threads --------------------------------------------------------------------
    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read_stderr(self) -> None:
        text = ""
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.stderr_lines.append(line)
            if len(self.stderr_lines) > 400:
                del self.stderr_lines[:200]
            if self.frame_size is None:
                text += line
                size = _frame_size(text)
                if size is not None:
                    self.frame_size = size
                    self._size_known.set()
        self._size_known.set()  # ended: whoever waits learns there is no size

    @staticmethod
    def _read_exactly(fh, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            block = fh.read(n - got)
            if not block:
                break
            parts.append(block)
            got += len(block)
        return b"".join(parts)

    def _read_video(self) -> None:
        import time

        fh = self.proc.stdout
        try:
            self._size_known.wait()
            if self.frame_size is not None:
                w, h = self.frame_size
                n = w * h * 3
                k = 0
                while not self._stop.is_set():
                    data = self._read_exactly(fh, n)
                    if len(data) < n:
                        break
                    frame = np.frombuffer(data, np.uint8).reshape(h, w, 3)
                    if not self._put(MediaChunk("video", k / self.fps, frame, time.monotonic())):
                        break
                    k += 1
                    self.decoded["video"] = k
            else:  # no size: drain whatever there is
                while fh.read(1 << 16):
                    pass
        finally:
            self._put(MediaChunk("end", 0.0, np.empty(0), time.monotonic()))

    def _read_audio(self, fd) -> None:
        import time

        n = max(1, int(round(self.block_s * self.sr))) * 4
        total = 0
        try:
            with os.fdopen(fd, "rb") as fh:
                while not self._stop.is_set():
                    data = self._read_exactly(fh, n)
                    usable = len(data) // 4 * 4
                    if usable:
                        y = np.frombuffer(data[:usable], np.float32).copy()
                        if not self._put(MediaChunk("audio", total / self.sr, y,
                                                    time.monotonic())):
                            break
                        total += len(y)
                        self.decoded["audio"] = total
                    if len(data) < n:
                        break
        finally:
            self._put(MediaChunk("end", 1.0, np.empty(0), time.monotonic()))

    # -- consumer ---------------------------------------------------------------------------
    def __iter__(self):
        """Yield :class:`MediaChunk` objects until both streams end; then check how ffmpeg ended.

        Raises
        ------
        MediaError
            If ffmpeg failed before decoding anything (a corrupt file, a device
            that cannot be opened); a failure midway ends the iteration after
            what was decoded, with :attr:`error` set.
        """
        import queue

        if self.proc is None:
            self.start()
        open_streams = len(self._open)
        self.error = None
        while open_streams:
            try:
                chunk = self.queue.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if chunk.kind == "end":
                open_streams -= 1
                continue
            yield chunk
        code = self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        if code != 0 and not self._stop.is_set():
            err = _ffmpeg_failure(self.source.name, "".join(self.stderr_lines))
            if not any(self.decoded.values()):
                raise err
            self.error = err


def iter_frames(path: str | os.PathLike, *, fps: float = FRAME_RATE, chunk: int = 64,
                max_side: int | None = None):
    """Sample a video's frames at ``fps``, ``chunk`` frames at a time (bounded memory).

    The same frames as :func:`sample_frames`, without holding them all: a long
    recording's frames are never in memory together.

    Parameters
    ----------
    path : str or path-like
        Video file, or a still image (one chunk of one frame).
    fps : float > 0
        Sampling rate in frames per second.
    chunk : int > 0
        Frames per yielded array.
    max_side : int or None
        Downscale so that the longer side is at most this many pixels.

    Yields
    ------
    np.ndarray, shape (n, height, width, 3), dtype uint8, RGB, with n <= chunk

    Raises
    ------
    MediaNotFoundError, EmptyMediaError, CorruptMediaError, NoVideoStreamError
    """
    _check_rates(None, fps)
    path = _check_file(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        yield _load_image(path, max_side)
        return
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        raise NoVideoStreamError(path, "no video stream (audio file)")
    source = MediaSource(name=str(path), input_args=["-i", str(path)], audio=False, video=True)
    batch: list = []
    with MediaStream(source, fps=fps, max_side=max_side) as stream:
        for item in stream:
            batch.append(item.data)
            if len(batch) == chunk:
                yield np.stack(batch)
                batch = []
    if batch:
        yield np.stack(batch)
    if stream.error is not None:  # decoded part of it: as sample_frames, the file is bad
        raise stream.error
    if not stream.decoded["video"]:
        raise CorruptMediaError(path, "no video frames decoded")
