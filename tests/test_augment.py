"""Augmented training copies: the perturbation, extraction, and copies kept out of scoring."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from mer_pipeline import ParameterError, cross_validate_model, discover
from mer_pipeline.augment import (AUGMENT_COLUMN, copy_id, n_copies, originals, perturb,
                                  with_copies)
from mer_pipeline.cli import main
from mer_pipeline.features import extract_features, load_features
from mer_pipeline.workflows import score_inputs, train_and_save


def test_perturb_is_seeded_and_changes_the_signal():
    sr = 16000
    t = np.arange(sr) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    a = perturb(y, sr, np.random.default_rng(7))
    b = perturb(y, sr, np.random.default_rng(7))
    c = perturb(y, sr, np.random.default_rng(8))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not (len(a) == len(c) and np.allclose(a, c))
    assert np.abs(a).max() <= 1.0
    lengths = {len(perturb(y, sr, np.random.default_rng(s))) for s in range(40)}
    # speed factors 0.9-1.1 change the length by resampling; 1.0 keeps it
    assert len(y) in lengths and min(lengths) < len(y) < max(lengths)
    assert max(lengths) <= round(len(y) / 0.9) + 1 and min(lengths) >= round(len(y) / 1.1) - 1
    # noise at 10-35 dB SNR: a copy is close to a scaled, filtered version, never silent
    assert all(np.std(perturb(y, sr, np.random.default_rng(s))) > 1e-3 for s in range(10))


def _table():
    ids = [f"c{i}" for i in range(6)]
    table = pd.DataFrame({"group": ["a", "a", "b", "b", "c", "c"], "emotion": ["x", "y"] * 3,
                          "audio__f_0": np.arange(6.0)}, index=pd.Index(ids, name="clip_id"))
    copies = table.copy()
    copies[AUGMENT_COLUMN] = ids
    copies.index = pd.Index([copy_id(i, 1) for i in ids], name="clip_id")
    return pd.concat([table.assign(**{AUGMENT_COLUMN: ""}), copies])


def test_with_copies_adds_the_copies_of_the_chosen_clips_only():
    table = _table()
    assert originals(table).tolist() == [True] * 6 + [False] * 6 and n_copies(table) == 6
    rows = with_copies(table, [0, 3])
    assert table.index[rows].tolist() == ["c0", "c3", "c0~aug1", "c3~aug1"]
    no_copies = table[originals(table)].drop(columns=[AUGMENT_COLUMN])
    assert originals(no_copies).all() and with_copies(no_copies, [1]).tolist() == [1]


class _Spy(ClassifierMixin, BaseEstimator):
    """Records the rows each fit saw; predicts the majority class."""

    fits: list = []

    def fit(self, X, y):
        type(self).fits.append(list(X.index))
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1 / len(self.classes_))


@pytest.mark.parametrize("protocol", ["actor", "random"])
def test_cross_validation_trains_on_copies_of_training_clips_and_never_scores_one(protocol):
    table = _table()
    _Spy.fits = []
    result = cross_validate_model(_Spy(), table, table["emotion"], groups=table["group"],
                                  protocol=protocol, folds=3, seed=0)
    assert sorted(result.predictions.index) == [f"c{i}" for i in range(6)]  # recordings only
    assert result.augmented_rows == 6 and result.to_dict()["augmented_training_rows"] == 6
    assert "augmented copies" in result.format()
    test_of = result.predictions["fold"]
    for k, seen in enumerate(_Spy.fits):
        test = set(test_of.index[test_of == k])
        recordings = [i for i in seen if "~aug" not in i]
        copies = [i for i in seen if "~aug" in i]
        assert not test & set(recordings)
        # every training clip's copy, and no test clip's
        assert sorted(c.split("~aug")[0] for c in copies) == sorted(recordings)


def test_extraction_writes_copies_beside_the_recordings(tone_corpus, tmp_path):
    out, cache = tmp_path / "f", tmp_path / "cache"
    kw = dict(audio_set="egemaps", n_jobs=1, progress=False, cache_dir=cache)
    _, run = extract_features(discover(tone_corpus), out, augment=2, **kw)
    table = load_features(out)
    rec = table[originals(table)]
    copies = table[~originals(table)]
    assert len(rec) == 20 and len(copies) == 40
    assert set(copies.index) == {copy_id(i, k) for i in rec.index for k in (1, 2)}
    src = copies[AUGMENT_COLUMN]
    for col in ("emotion", "group", "actor", "corpus"):  # a copy keeps its source's labels
        assert (copies[col].to_numpy() == rec.loc[src, col].to_numpy()).all()
    feats = [c for c in table.columns if c.startswith("audio__")]
    diff = np.abs(copies[feats].to_numpy() - rec.loc[src, feats].to_numpy())
    assert np.nanmean(diff) > 0  # perturbed, not duplicated
    assert copies["audio_frames"].map(lambda a: a is not None and len(a) > 0).all()
    record = json.loads((out / "features.json").read_text())["modalities"]["audio"]
    assert record["augment"] == {"recipe": "speed-eq-gain-noise/1", "copies": 2, "rows": 40}
    assert record["clips"] == 20 and record["clips_with_features"] == 20
    # the copies are cached like clips: one copy fewer costs nothing, the same copy is equal
    _, again = extract_features(discover(tone_corpus), tmp_path / "g", augment=1, **kw)
    assert again.n_computed == 0 and again.n_cached == 40
    first = load_features(tmp_path / "g")
    assert np.allclose(first.loc[copies.index[:20], feats].to_numpy(dtype=float),
                       table.loc[copies.index[:20], feats].to_numpy(dtype=float), equal_nan=True)


def test_augment_is_checked(tone_corpus, tmp_path):
    with pytest.raises(ParameterError, match="augment"):
        extract_features(discover(tone_corpus), tmp_path / "f", augment=-1, progress=False)
    with pytest.raises(ParameterError, match="audio"):
        extract_features(discover(tone_corpus), tmp_path / "f", modalities=["face"], augment=1,
                         progress=False)


def test_training_uses_copies_and_scoring_leaves_them_out(tone_corpus, tmp_path):
    feats = tmp_path / "f"
    extract_features(discover(tone_corpus), feats, audio_set="egemaps", augment=1, n_jobs=1,
                     progress=False, cache_dir=tmp_path / "cache")
    model, meta = train_and_save(feats, tmp_path / "m.joblib", model="logreg", cv_folds=0)
    assert meta["training"]["n_clips"] == 20 and meta["training"]["augmented_rows"] == 20
    assert meta["training"]["emotion_counts"] == {"happy": 10, "sad": 10}
    assert meta["provenance"]["modalities"]["audio"]["augment"]["copies"] == 1
    with pytest.warns(UserWarning, match="20 augmented training copies left out"):
        preds, _ = score_inputs(tmp_path / "m.joblib", [feats], progress=False)
    assert len(preds) == 20 and not any("~aug" in i for i in preds.index)


def test_cli_features_augment(tone_corpus, tmp_path, capsys):
    out = tmp_path / "f"
    assert main(["features", str(tone_corpus), "--out", str(out), "--audio-set", "egemaps",
                 "--augment", "1", "--n-jobs", "1", "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    assert "augmented: 20 perturbed copies" in text
    assert main(["evaluate", "--features", str(out), "--model", "logreg", "--folds", "2",
                 "--n-jobs", "1", "--presentations", "balanced_batch"]) == 0
    assert "trained with 20 augmented copies" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["features", str(tone_corpus), "--out", str(out), "--augment", "-1"])
