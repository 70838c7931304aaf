import json

import numpy as np
import pandas as pd
import pytest

from mer_pipeline import FeatureTableError
from mer_pipeline.cli import main
from mer_pipeline.persistence import ArtifactError, load_model, save_model
from mer_pipeline.scoring import align_features, feature_set_of, predict_table
from mer_pipeline.workflows import score_inputs, train_and_save

from .conftest import shared_path
from .test_models import synthetic_table


@pytest.fixture
def trained(tmp_path):
    table = synthetic_table(n_speakers=6)
    path = tmp_path / "art" / "model.joblib"
    model, meta = train_and_save(table, path, model="logreg", cv_folds=3)
    return table, path, model, meta


def test_metadata_records_what_is_needed_to_reload_and_check(trained):
    table, path, model, meta = trained
    assert meta["classes"] == ["angry", "happy", "sad"]
    assert meta["feature_columns"] == [c for c in table.columns if "__" in c]
    assert meta["training"]["n_clips"] == len(table)
    assert meta["training"]["actors"] == sorted(table["group"].unique())
    assert meta["cv_metrics"]["protocol"] == "actor" and meta["cv_metrics"]["n_folds"] == 3
    assert {"mer_pipeline", "scikit-learn", "numpy"} <= set(meta["versions"])
    loaded, meta2 = load_model(path)
    assert np.allclose(loaded.predict_proba(table), model.predict_proba(table))
    assert meta2["sha256"] == meta["sha256"]


def test_one_changed_byte_is_refused(trained, tmp_path, capsys):
    table, path, _, _ = trained
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="altered or corrupted"):
        load_model(path)
    table.to_csv(tmp_path / "feats.csv")
    assert main(["score", "--model", str(path), str(tmp_path / "feats.csv"),
                 "--out", str(tmp_path / "p.csv")]) == 1
    err = capsys.readouterr().err
    assert "does not match its metadata" in err and "Traceback" not in err


def test_other_version_is_refused(trained):
    _, path, _, _ = trained
    meta_path = path.with_name(path.name + ".json")
    meta = json.loads(meta_path.read_text())
    meta["versions"]["scikit-learn"] = "0.1.0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="written with scikit-learn 0.1.0"):
        load_model(path)
    model, _ = load_model(path, trust=True)   # explicit trust loads anyway
    assert hasattr(model, "classes_")
    meta_path.unlink()
    with pytest.raises(ArtifactError, match="no metadata file"):
        load_model(path)


def test_feature_columns_checked(trained):
    table, _, model, meta = trained
    cols = meta["feature_columns"]
    with pytest.raises(FeatureTableError, match="lacks 1 column.*audio__a_0"):
        align_features(table.drop(columns=["audio__a_0"]), cols)
    with pytest.warns(UserWarning, match="ignoring 1 feature column"):
        align_features(table.assign(audio__extra_1=1.0), cols)
    shuffled = table[list(reversed(table.columns))]
    pred = predict_table(model, shuffled, cols)
    assert np.allclose(pred.filter(like="proba_").sum(axis=1), 1)
    assert (pred["modalities"] == "audio").all()
    assert feature_set_of(["audio__egemaps_x", "audio__compare_y", "audio__egemaps_z"]) == \
        "egemaps+compare"


def test_train_and_score_from_the_command_line(tmp_path, tone, tone_corpus, capsys):
    data = tone_corpus
    feats = tmp_path / "feats"
    assert main(["features", str(data), "--out", str(feats), "--audio-set", "egemaps",
                 "--n-jobs", "1", "--no-progress"]) == 0
    model = tmp_path / "artifacts" / "m.joblib"
    assert main(["train", "--features", str(feats), "--out", str(model), "--model", "logreg",
                 "--folds", "5", "--n-jobs", "1"]) == 0
    assert "actor-grouped 5-fold CV" in capsys.readouterr().out
    # new media with names that carry no label, plus a broken file
    new = tmp_path / "new"
    tone("new/low_voice.wav", freq=185.0, seconds=0.8)
    tone("new/high_voice.wav", freq=330.0, seconds=0.8, sr=44100)
    (new / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    out = tmp_path / "pred" / "predictions.csv"
    assert main(["score", "--model", str(model), str(new), "--out", str(out), "--n-jobs", "1",
                 "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    pred = pd.read_csv(out, index_col="clip_id")
    assert set(pred.index) == {"unlabelled_low_voice", "unlabelled_high_voice"}
    assert list(pred.columns) == ["predicted", "proba_happy", "proba_sad", "modalities"]
    assert np.allclose(pred[["proba_happy", "proba_sad"]].sum(axis=1), 1)
    assert pred.loc["unlabelled_low_voice", "predicted"] == "happy"
    assert pred.loc["unlabelled_high_voice", "predicted"] == "sad"
    fails = pd.read_csv(out.parent / "failures.csv")
    assert list(fails["clip_id"]) == ["unlabelled_broken"]
    # a feature CSV scores the same way
    assert main(["score", "--model", str(model), str(feats / "audio_features.csv"),
                 "--out", str(tmp_path / "p2.csv")]) == 0
    assert "accuracy on the 20 clips" in capsys.readouterr().out
    assert main(["predict", str(new / "low_voice.wav"), "--model", str(model), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["predictions"][0]["predicted"] == "happy"


def test_save_model_needs_a_fitted_model(tmp_path):
    from mer_pipeline import EmotionClassifier

    with pytest.raises(AttributeError):
        save_model(EmotionClassifier(), tmp_path / "m.joblib")


@pytest.mark.shared
def test_score_real_other_speakers_with_an_audio_model(tmp_path):
    """Trained on a slice of the shared RAVDESS actors, scoring TESS/SAVEE clip files."""
    from mer_pipeline import discover
    from mer_pipeline.features import extract_features

    scan = discover(shared_path("ravdess_speech"))
    subset = scan.clips[scan.clips["actor"].isin(["01", "02", "03", "04"])]
    extract_features(subset, tmp_path / "f", audio_set="egemaps", n_jobs=2, progress=False)
    model = tmp_path / "m.joblib"
    train_and_save(tmp_path / "f", model, model="logreg", cv_folds=None)
    pred, fails = score_inputs(model, [shared_path("samples", "tess"),
                                       shared_path("samples", "savee")],
                               cache_dir=tmp_path / "c", n_jobs=2, progress=False)
    assert len(pred) == 13 and len(fails) == 0
    proba = pred.filter(like="proba_")
    assert proba.shape[1] == 8 and np.allclose(proba.sum(axis=1), 1)
