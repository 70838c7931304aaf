import numpy as np
import pandas as pd
import pytest

from mer_pipeline import ParameterError, SilentAudioError, discover
from mer_pipeline.audio import audio_features, available_sets, resolve_set
from mer_pipeline.features import extract_features, load_features

pytest.importorskip("opensmile")
pytest.importorskip("librosa")


def signal(seconds=1.0, sr=16000, freq=200.0):
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    return (0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * freq * t)
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("name, n", [("seed45", 45), ("egemaps", 88), ("compare", 6373),
                                     ("emobase", 988), ("pitch", 10)])
def test_set_sizes(name, n):
    feats = audio_features(signal(), 16000, name)
    assert len(feats) == n
    assert all(c.startswith(f"audio__{name}_") for c in feats.index)
    assert np.isfinite(feats.to_numpy()).all()


def test_default_set_and_combination():
    parts = resolve_set("default")
    assert parts == resolve_set(None) == ("whisper",)
    assert resolve_set("classical") == ("egemaps", "compare", "librosa")
    combo = audio_features(signal(), 16000, "egemaps+librosa")
    assert len(combo) == 88 + len(audio_features(signal(), 16000, "librosa"))
    assert "default" in available_sets()
    with pytest.raises(ParameterError, match="unknown audio feature set"):
        resolve_set("mfcc+bogus")


def test_features_change_with_the_signal():
    low = audio_features(signal(freq=150), 16000, "egemaps")
    high = audio_features(signal(freq=300), 16000, "egemaps")
    f0 = "audio__egemaps_F0semitoneFrom27.5Hz_sma3nz_amean"
    assert high[f0] > low[f0] + 6  # an octave is 12 semitones


def test_pitch_set_tracks_f0():
    feats = audio_features(signal(freq=200.0), 16000, "pitch")
    expected = 12 * np.log2(200.0 / 27.5)
    assert abs(feats["audio__pitch_f0_semitone_mean"] - expected) < 0.5
    assert feats["audio__pitch_voiced_fraction"] > 0.8


def test_silence_and_short_clips():
    with pytest.raises(SilentAudioError):
        audio_features(np.zeros(16000, np.float32), 16000, "default")
    short = audio_features(signal(seconds=0.3), 16000, "default")
    assert len(short) == len(audio_features(signal(), 16000, "default"))


def test_sample_rate_independent_of_input_rate():
    import soxr

    y16 = signal(sr=16000)
    y48 = soxr.resample(y16, 16000, 48000)
    a = audio_features(y16, 16000, "egemaps")
    b = audio_features(y48, 48000, "egemaps")
    f0 = "audio__egemaps_F0semitoneFrom27.5Hz_sma3nz_amean"
    assert abs(a[f0] - b[f0]) < 0.5


def test_features_table_over_a_mixed_corpus(tmp_path, tone):
    root = tmp_path / "data" / "Actor_01"
    tone("data/Actor_01/03-01-01-01-01-01-01.wav", sr=48000, seconds=1.2)
    tone("data/Actor_01/03-01-03-01-01-01-01.wav", sr=16000, seconds=1.0, freq=330)
    tone("data/Actor_01/03-01-04-01-01-01-01.wav", sr=44100, channels=2, seconds=1.0)
    tone("data/Actor_01/03-01-05-01-01-01-01.wav", sr=16000, seconds=0.3)
    tone("data/Actor_01/03-01-06-01-01-01-01.wav", sr=16000, seconds=1.0, amp=0.0)  # silent
    (root / "03-01-07-01-01-01-01.wav").write_bytes(b"RIFF....WAVEfmt garbage")   # corrupt
    scan = discover(tmp_path / "data")
    out = tmp_path / "features"
    written, run = extract_features(scan, out, audio_set="egemaps", n_jobs=2, progress=False)
    table = load_features(out)
    assert written == [out / "audio_features.csv", out / "audio_frames.parquet",
                       out / "failures.csv", out / "features.json"]
    assert len(table) == 4 and table.index.name == "clip_id"
    # the LLD sequence of each clip rides along: 25 frames per second, 24 descriptors
    seq = table.loc["ravdess_01-03-01-01-01-01", "audio_frames"]
    assert seq.dtype == np.float32 and seq.shape == (25, 24) and np.isfinite(seq).all()
    assert table.loc["ravdess_01-05-01-01-01-01", "audio_frames"].shape[0] == 7  # 0.3 s
    assert "audio_frames" not in load_features(out, sequences=False).columns
    assert list(table.columns[:6]) == ["corpus", "actor", "group", "gender", "emotion", "split"]
    feats = [c for c in table.columns if c.startswith("audio__")]
    assert len(feats) == 88 and np.isfinite(table[feats].to_numpy()).all()
    fails = pd.read_csv(out / "failures.csv")
    by_clip = dict(zip(fails.clip_id, fails.error))
    assert "SilentAudioError" in by_clip["ravdess_01-06-01-01-01-01"]
    assert "CorruptMediaError" in by_clip["ravdess_01-07-01-01-01-01"]
    _, run2 = extract_features(scan, out, audio_set="egemaps", n_jobs=1, progress=False)
    assert run2.n_computed == 0
    _, run3 = extract_features(scan, out, audio_set="seed45", n_jobs=1, progress=False)
    assert run3.n_computed == 6  # another set: new work


def test_load_features_rejects_bad_tables(tmp_path):
    from mer_pipeline import FeatureTableError

    with pytest.raises(FeatureTableError, match="run `mer features` first"):
        load_features(tmp_path)
    pd.DataFrame({"clip_id": ["a"], "emotion": ["sad"], "x": [1.0]}).to_csv(
        tmp_path / "t.csv", index=False)
    with pytest.raises(FeatureTableError, match="no feature columns"):
        load_features(tmp_path / "t.csv")
    pd.DataFrame({"clip_id": ["a"], "audio__x": [1.0]}).to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(FeatureTableError, match="missing column"):
        load_features(tmp_path / "u.csv")
