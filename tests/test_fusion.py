"""MultimodalEmotionClassifier: fusion strategies, missing modalities, scikit-learn API."""
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from mer_pipeline import EmotionClassifier, MultimodalEmotionClassifier, build_estimator
from mer_pipeline.exceptions import FeatureTableError, ParameterError

CLASSES = np.array(["angry", "happy", "sad"])
FAST = dict(epochs=40, hidden_size=16, n_heads=2, inner_cv=3)


def make_table(n_groups=8, per_class=6, seed=0, *, audio_sep=(1.5, 0, 0), face_sep=(0, 1.5, 0),
               sequences=True):
    """Synthetic two-modality table: the audio features tell class 0 from the rest,
    the face features tell class 1 from the rest, so only fusion separates all three."""
    rng = np.random.default_rng(seed)
    rows, labels, groups, aseq, fseq = [], [], [], [], []
    for g in range(n_groups):
        shift_a, shift_f = rng.normal(0, 1, 12), rng.normal(0, 1, 10)  # a speaker's own offset
        for k in range(len(CLASSES)):
            for _ in range(per_class):
                a = shift_a + rng.normal(0, 1, 12)
                a[:4] += audio_sep[k] * 2
                f = shift_f + rng.normal(0, 1, 10)
                f[:4] += face_sep[k] * 2
                rows.append(np.r_[a, f])
                labels.append(CLASSES[k])
                groups.append(f"synth:{g:02d}")
                t = rng.integers(6, 12)
                s = rng.normal(0, 1, (t, 5)).astype(np.float32)
                s[:, 0] += audio_sep[k] * 2
                aseq.append(s)
                frames = np.tile(f[None, :], (rng.integers(1, 4), 1)).astype(np.float32)
                fseq.append(frames + rng.normal(0, .1, frames.shape).astype(np.float32))
    names = [f"audio__syn_{i}" for i in range(12)] + [f"face__syn_{i}" for i in range(10)]
    table = pd.DataFrame(np.array(rows), columns=names,
                         index=pd.Index([f"c{i:04d}" for i in range(len(rows))], name="clip_id"))
    table.insert(0, "group", groups)
    table.insert(1, "emotion", labels)
    if sequences:
        table["audio_frames"] = pd.Series(aseq, index=table.index, dtype=object)
        table["face_frames"] = pd.Series(fseq, index=table.index, dtype=object)
    return table


def split(table, test_groups=("synth:06", "synth:07")):
    test = table["group"].isin(test_groups)
    return table[~test], table[test]


def drop(table, modality):
    """The table with every clip's ``modality`` (features and frames) missing."""
    out = table.copy()
    out[[c for c in out.columns if c.startswith(f"{modality}__")]] = np.nan
    if f"{modality}_frames" in out:
        out[f"{modality}_frames"] = pd.Series([None] * len(out), index=out.index, dtype=object)
    return out


def drop_face(table):
    return drop(table, "face")


def drop_audio(table):
    return drop(table, "audio")


@pytest.mark.parametrize("fusion", ["late", "concat", "gated", "cross_attention"])
def test_each_fusion_learns_what_neither_modality_can(fusion):
    train, test = split(make_table())
    clf = MultimodalEmotionClassifier(fusion=fusion, **FAST).fit(train, train["emotion"])
    proba = clf.predict_proba(test)
    assert proba.shape == (len(test), 3) and np.allclose(proba.sum(axis=1), 1)
    assert list(clf.classes_) == list(CLASSES) and clf.modalities_ == ["audio", "face"]
    fused = np.mean(clf.predict(test) == test["emotion"])
    # each modality alone confuses two of the three classes: at most ~2/3 right
    audio = EmotionClassifier().fit(train.drop(columns=[c for c in train if "face" in c]),
                                    train["emotion"])
    alone = np.mean(audio.predict(test.drop(columns=[c for c in test if "face" in c]))
                    == test["emotion"])
    assert alone < 0.75 and fused > 0.85 and fused > alone + 0.15
    assert set(clf.modalities_used(test)) == {"audio+face"}


@pytest.mark.parametrize("fusion", ["late", "concat", "gated", "cross_attention"])
def test_missing_modality_predicts_from_what_is_there(fusion):
    train, test = split(make_table())
    clf = MultimodalEmotionClassifier(fusion=fusion, **FAST).fit(train, train["emotion"])
    audio_only, face_only = drop_face(test), drop_audio(test)
    for part, name, k in ((audio_only, "audio", 0), (face_only, "face", 1)):
        proba = clf.predict_proba(part)
        assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1)
        assert set(clf.modalities_used(part)) == {name}
        # the class this modality can tell apart is still recognised
        truth = part["emotion"] == CLASSES[k]
        pred = clf.predict(part) == CLASSES[k]
        assert np.mean(pred == truth) > 0.8, name
    mixed = pd.concat([audio_only.iloc[:3], face_only.iloc[3:6], test.iloc[6:9]])
    assert list(clf.modalities_used(mixed)) == ["audio"] * 3 + ["face"] * 3 + ["audio+face"] * 3
    nothing = drop_audio(drop_face(test.iloc[:2]))
    assert np.allclose(clf.predict_proba(nothing), clf.prior_)
    assert list(clf.modalities_used(nothing)) == ["none", "none"]


def test_networks_are_seeded_and_deterministic():
    train, test = split(make_table())
    a = MultimodalEmotionClassifier(fusion="gated", random_state=3, **FAST).fit(
        train, train["emotion"]).predict_proba(test)
    b = MultimodalEmotionClassifier(fusion="gated", random_state=3, **FAST).fit(
        train, train["emotion"]).predict_proba(test)
    c = MultimodalEmotionClassifier(fusion="gated", random_state=4, **FAST).fit(
        train, train["emotion"]).predict_proba(test)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_cross_attention_attends_over_the_frame_sequences():
    train, test = split(make_table())
    clf = MultimodalEmotionClassifier(fusion="cross_attention", **FAST).fit(train,
                                                                           train["emotion"])
    assert clf.sequences_ == {"audio": True, "face": True}
    assert clf.fusion_.frame_dims_["audio"] == 5
    # the face frames are projected to at most frame_components before attention
    assert clf.fusion_.frame_dims_["face"] <= 10
    with pytest.raises(FeatureTableError, match="audio_frames"):
        clf.predict(test.drop(columns=["audio_frames"]))
    flat = MultimodalEmotionClassifier(fusion="cross_attention", use_sequences=False,
                                       **FAST).fit(train, train["emotion"])
    assert flat.sequences_ == {"audio": False, "face": False}
    assert flat.predict(test.drop(columns=["audio_frames", "face_frames"])).shape == (len(test),)


def test_works_with_clone_grid_search_pipeline_and_grouped_cv():
    table = make_table(n_groups=6)
    y, groups = table["emotion"], table["group"]
    clf = MultimodalEmotionClassifier(**FAST)
    assert clone(clf).get_params() == clf.get_params()
    res = cross_validate(clf, table, y, groups=groups, cv=GroupKFold(n_splits=3))
    assert np.mean(res["test_score"]) > 0.8
    grid = GridSearchCV(MultimodalEmotionClassifier(fusion="late", **FAST),
                        {"meta_learner": ["logreg", "knn"],
                         "estimator": [None, EmotionClassifier(model="logreg")]},
                        cv=GroupKFold(n_splits=3))
    grid.fit(table, y, groups=groups)
    assert grid.best_score_ > 0.8
    nested = GridSearchCV(MultimodalEmotionClassifier(
        estimator=EmotionClassifier(), **FAST), {"estimator__logreg_C": [0.01, 1.0]},
        cv=GroupKFold(n_splits=3)).fit(table, y, groups=groups)
    assert nested.best_params_["estimator__logreg_C"] in (0.01, 1.0)
    pipe = Pipeline([("keep", FunctionTransformer(lambda t: t)), ("clf", clf)]).fit(table, y)
    assert pipe.predict(table).shape == (len(table),)


def test_design_stacking_inside_concat_and_meta_learners():
    train, test = split(make_table())
    stack = MultimodalEmotionClassifier(
        fusion="concat", estimator=EmotionClassifier(model="stacking", rf_n_estimators=30,
                                                     xgb_n_estimators=20, stack_cv=3),
        **FAST).fit(train, train["emotion"])
    # one modality alone tells one class from the rest (at most 2/3 of these 36 clips); the
    # small design ensemble read 28/36 with scikit-learn 1.9.1 / xgboost 3.2.0, 29+ before
    assert np.mean(stack.predict(test) == test["emotion"]) > 0.7
    # PCA per modality, never more components than the training clips allow
    assert all(p.n_components_ <= min(300, len(train) - 1) for p in stack.fusion_.pca_.pcas_.values())
    for meta in ("svm", "knn", "mlp"):
        clf = MultimodalEmotionClassifier(meta_learner=meta, **FAST).fit(train, train["emotion"])
        assert np.mean(clf.predict(test) == test["emotion"]) > 0.8, meta


def test_bad_parameters_and_inputs_are_clear_errors():
    table = make_table(n_groups=4)
    with pytest.raises(ParameterError, match="fusion must be one of"):
        MultimodalEmotionClassifier(fusion="sum").fit(table, table["emotion"])
    with pytest.raises(ParameterError, match="multiple of n_heads"):
        MultimodalEmotionClassifier(fusion="gated", hidden_size=10, n_heads=4).fit(
            table, table["emotion"])
    with pytest.raises(ParameterError, match="no feature of any modality"):
        bad = table.copy()
        bad.iloc[0, 2:24] = np.nan
        MultimodalEmotionClassifier(**FAST).fit(bad, bad["emotion"])
    clf = MultimodalEmotionClassifier(**FAST).fit(table, table["emotion"])
    with pytest.raises(ParameterError, match="missing: face__syn_9"):
        clf.predict(table.drop(columns=["face__syn_9"]).assign(face__zz_9=0.0))


def test_build_estimator_picks_fusion_from_the_columns():
    table = make_table(n_groups=2)
    assert isinstance(build_estimator(table), MultimodalEmotionClassifier)
    audio = table[[c for c in table.columns if not c.startswith("face")]]
    assert isinstance(build_estimator(audio), EmotionClassifier)
    est = build_estimator(table, fusion="concat", model="stacking")
    assert est.fusion == "concat" and est.estimator.model == "stacking"
    assert isinstance(build_estimator(table, fusion="none"), EmotionClassifier)
    with pytest.raises(ParameterError):
        build_estimator(table, fusion="bogus")


@parametrize_with_checks([MultimodalEmotionClassifier(**FAST),
                          MultimodalEmotionClassifier(fusion="gated", **FAST)])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_train_save_score_roundtrip_with_frames_and_missing_modalities(tmp_path):
    from mer_pipeline import load_features, load_model, score_inputs, train_and_save
    from mer_pipeline.exceptions import FeatureTableError
    from mer_pipeline.features import write_features
    from mer_pipeline.persistence import ArtifactError

    train, test = split(make_table())
    train = train.assign(face_subject=[f"s{i % 3}" for i in range(len(train))])
    write_features(train, tmp_path / "train")
    # columns beyond the metadata survive the round trip, in both tables
    kept = load_features(tmp_path / "train")
    assert list(kept["face_subject"]) == list(train["face_subject"])
    # the test folder: two clips lose their face, two their audio (absent from that CSV)
    test = test.copy()
    test.iloc[:2, [i for i, c in enumerate(test.columns) if c.startswith("face")]] = np.nan
    test.loc[test.index[:2], "face_frames"] = None
    test.iloc[2:4, [i for i, c in enumerate(test.columns) if c.startswith("audio")]] = np.nan
    test.loc[test.index[2:4], "audio_frames"] = None
    written = write_features(test, tmp_path / "test")
    assert {p.name for p in written} == {"audio_features.csv", "video_features.csv",
                                         "audio_frames.parquet", "face_frames.parquet"}
    back = load_features(tmp_path / "test")
    assert back.loc[test.index[0], "face_frames"] is None
    assert np.allclose(back.loc[test.index[5], "audio_frames"], test.iloc[5]["audio_frames"])

    model_path = tmp_path / "m.joblib"
    model, meta = train_and_save(tmp_path / "train", model_path, fusion="gated", cv_folds=0,
                                 **FAST)
    assert meta["estimator"] == "MultimodalEmotionClassifier" and meta["params"]["fusion"] == \
        "gated"
    assert meta["modalities"] == ["audio", "face"]
    assert meta["frame_sequences"] == ["audio", "face"]
    assert meta["training"]["clips_with_face"] == len(train)
    loaded, _ = load_model(model_path)  # the network pickles and comes back
    table = load_features(tmp_path / "test", required_meta=())
    assert np.allclose(loaded.predict_proba(table), model.predict_proba(table))

    preds, fails = score_inputs(model_path, [tmp_path / "test"])
    assert len(preds) == len(test) and fails.empty
    assert list(preds["modalities"].iloc[:4]) == ["audio"] * 2 + ["face"] * 2
    assert set(preds["modalities"].iloc[4:]) == {"audio+face"}
    proba = preds[[c for c in preds.columns if c.startswith("proba_")]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1)
    assert (preds["predicted"].iloc[4:] == preds["emotion"].iloc[4:]).mean() > 0.8

    # a network trained on frames refuses a CSV whose frame tables are not beside it
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "audio_features.csv").write_bytes((tmp_path / "test" / "audio_features.csv")
                                              .read_bytes())
    (lone / "video_features.csv").write_bytes((tmp_path / "test" / "video_features.csv")
                                              .read_bytes())
    with pytest.raises(FeatureTableError, match="frame sequences"):
        score_inputs(model_path, [lone])

    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its metadata"):
        score_inputs(model_path, [tmp_path / "test"])


def test_sequence_model_learns_from_frames_and_handles_missing_modalities():
    train, test = split(make_table())
    clf = MultimodalEmotionClassifier(fusion="sequence", **FAST).fit(train, train["emotion"])
    assert clf.sequences_ == {"audio": True, "face": True}
    proba = clf.predict_proba(test)
    assert proba.shape == (len(test), 3) and np.allclose(proba.sum(axis=1), 1)
    # the audio frames tell class 0 apart, the face frames class 1: together all three
    assert np.mean(clf.predict(test) == test["emotion"]) > 0.8
    face_only = drop_audio(test)
    assert set(clf.modalities_used(face_only)) == {"face"}
    assert np.isfinite(clf.predict_proba(face_only)).all()
    again = MultimodalEmotionClassifier(fusion="sequence", **FAST).fit(train, train["emotion"])
    assert np.allclose(again.predict_proba(test), proba)  # seeded, deterministic
