import numpy as np
import pytest
import soundfile as sf

from mer_pipeline import (
    CorruptMediaError,
    EmptyMediaError,
    MediaNotFoundError,
    NoAudioStreamError,
    NoVideoStreamError,
    ParameterError,
)
from mer_pipeline.media import decode_clip, load_audio, sample_frames, write_wav

from .conftest import shared_path


def test_load_audio_downmixes_and_resamples(tone):
    path = tone("stereo.wav", sr=44100, channels=2, seconds=1.5)
    y = load_audio(path, sr=16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 24000) <= 2
    raw, _ = sf.read(path)
    # the downmix is the channel mean: its peak sits between the two channels' peaks
    assert np.abs(raw).max(axis=0).min() * 0.8 < np.abs(y).max() < np.abs(raw).max() * 1.05


@pytest.mark.parametrize("sr", [16000, 22050, 48000])
def test_load_audio_rates(tone, sr):
    y = load_audio(tone(f"t{sr}.wav", sr=sr, seconds=1.0), sr=8000)
    assert abs(len(y) - 8000) <= 2


def test_av_file_decoded_once_into_frames_and_audio(video):
    path = video("av.mp4", seconds=2.0)
    clip = decode_clip(audio_path=path, video_path=path, fps=3, sr=16000)
    assert clip.errors == {}
    assert clip.frames.shape == (6, 120, 160, 3) and clip.frames.dtype == np.uint8
    assert abs(len(clip.audio) - 32000) < 1600
    assert clip.frames.std() > 10  # a real test pattern, not blank frames


def test_frame_rate_and_downscale(video):
    path = video("v.mp4", seconds=2.0, size="320x240")
    assert sample_frames(path, fps=5).shape[0] == 10
    assert sample_frames(path, fps=3, max_side=80).shape[1:] == (60, 80, 3)


def test_video_without_audio_keeps_frames(video):
    path = video("silent.mp4", audio=False)
    clip = decode_clip(audio_path=path, video_path=path)
    assert clip.frames is not None and clip.audio is None
    assert isinstance(clip.errors["audio"], NoAudioStreamError)
    with pytest.raises(NoAudioStreamError, match="no audio stream"):
        load_audio(path)


def test_bad_files_give_typed_errors(tmp_path, video, tone):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(EmptyMediaError, match="zero-byte"):
        sample_frames(empty)
    full = video("full.mp4").read_bytes()
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(full[: len(full) // 2])
    with pytest.raises(CorruptMediaError, match="moov atom not found"):
        sample_frames(trunc)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(CorruptMediaError):
        load_audio(garbage)
    with pytest.raises(NoVideoStreamError):
        sample_frames(tone("a.wav"))
    with pytest.raises(MediaNotFoundError):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(ParameterError):
        load_audio(tone("b.wav"), sr=0)


def test_image_is_one_frame(tmp_path):
    from PIL import Image

    Image.fromarray((np.arange(48 * 48) % 255).astype(np.uint8).reshape(48, 48)).save(
        tmp_path / "face.png")
    frames = sample_frames(tmp_path / "face.png")
    assert frames.shape == (1, 48, 48, 3)


def test_write_wav_roundtrip(tmp_path):
    y = (0.5 * np.sin(np.linspace(0, 100, 16000))).astype(np.float32)
    path = write_wav(tmp_path / "out" / "x.wav", y, 16000)
    back, sr = sf.read(path, dtype="float32")
    assert sr == 16000 and np.allclose(back, y, atol=1e-4)
    assert sf.info(str(path)).channels == 1


@pytest.mark.shared
def test_real_ravdess_av_clip():
    path = shared_path("samples", "ravdess_av_reencoded", "Actor_01", "01-01-07-02-02-01-01.mp4")
    clip = decode_clip(audio_path=path, video_path=path)
    assert clip.frames.shape == (12, 480, 640, 3)
    assert abs(clip.duration - 4.0) < 0.05 and clip.sr == 16000
