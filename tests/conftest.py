"""Shared fixtures: synthetic media made on the fly, and the real data in ../shared."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(*parts) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared beside "
                    "the repository, as on CI)")
    return path


def ffmpeg() -> str:
    from mer_pipeline.media import ffmpeg_exe

    return ffmpeg_exe()


def make_tone(path: Path, *, freq=220.0, seconds=1.0, sr=16000, channels=1, amp=0.3,
              subtype="PCM_16") -> Path:
    """A sine tone with a little noise and an amplitude envelope (so it is not flat)."""
    rng = np.random.default_rng(int(freq * 1000 + seconds * 10 + sr) % 2**32)
    t = np.arange(int(seconds * sr)) / sr
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t)
    y = amp * env * np.sin(2 * np.pi * freq * t) + 0.03 * amp * rng.standard_normal(len(t))
    if channels > 1:
        y = np.stack([y * (1 - 0.2 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y.astype(np.float32), sr, subtype=subtype)
    return path


def make_video(path: Path, *, seconds=2.0, audio=True, size="160x120", rate=25) -> Path:
    """A test-pattern H.264 video, with a 440 Hz AAC tone unless ``audio=False``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    cmd += ["-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    cmd.append(str(path))
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture
def tone(tmp_path):
    return lambda name="tone.wav", **kw: make_tone(tmp_path / name, **kw)


@pytest.fixture
def video(tmp_path):
    return lambda name="clip.mp4", **kw: make_video(tmp_path / name, **kw)


@pytest.fixture
def mixed_corpus(tmp_path):
    """RAVDESS-named clips: good AV and audio clips plus every kind of bad file."""
    root = tmp_path / "corpus"
    actor = root / "Actor_02"
    make_video(actor / "01-01-03-01-01-01-02.mp4", seconds=2.0)               # good AV
    make_video(actor / "01-01-04-01-01-01-02.mp4", seconds=2.0, audio=False)  # no audio track
    good = make_video(tmp_path / "tmp_full.mp4", seconds=2.0)
    data = good.read_bytes()
    (actor / "01-01-05-01-01-01-02.mp4").write_bytes(data[: len(data) // 2])  # truncated
    (actor / "01-01-06-01-01-01-02.mp4").write_bytes(b"")                     # zero bytes
    make_tone(actor / "03-01-07-01-01-01-02.wav", freq=300, seconds=1.0)      # good audio
    make_tone(actor / "holiday_video.wav", freq=300, seconds=1.0)             # bad name
    good.unlink()
    return root


def make_tone_corpus(root: Path, *, actors: int = 5, seconds: float = 0.8) -> Path:
    """RAVDESS-named tones: ``actors`` x 2 "emotions" (happy low, sad high) x 2 repetitions."""
    for actor in range(1, actors + 1):
        for emo, freq in (("03", 180.0), ("04", 320.0)):
            for rep in (1, 2):
                make_tone(root / f"Actor_{actor:02d}" / f"03-01-{emo}-01-01-0{rep}-{actor:02d}.wav",
                          freq=freq + 7 * actor + rep, seconds=seconds)
    return root


@pytest.fixture
def tone_corpus(tmp_path):
    """RAVDESS-named tones: 5 actors x 2 "emotions" (happy low, sad high) x 2 repetitions."""
    return make_tone_corpus(tmp_path / "data")
