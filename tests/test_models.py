import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from mer_pipeline import EmotionClassifier, ParameterError, SpeakerNormalizer
from mer_pipeline.ensemble import feature_blocks

EMOS = np.array(["angry", "happy", "sad"])


def synthetic_table(n_speakers=6, per_class=8, seed=0, speaker_shift=3.0):
    """Emotion signal in a few features, plus a large per-speaker offset on all of them."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for s in range(n_speakers):
        offset = rng.normal(0, speaker_shift, 12)
        for k, emo in enumerate(EMOS):
            for _ in range(per_class):
                x = rng.normal(0, 1, 12) + offset
                x[k] += 2.5          # emotion-specific features
                x[6 + k] -= 2.0
                rows.append({"group": f"c:{s}", **{f"audio__a_{i}": x[i] for i in range(6)},
                             **{f"audio__b_{i}": x[6 + i] for i in range(6)}})
                labels.append(emo)
    table = pd.DataFrame(rows)
    table.index = [f"clip{i}" for i in range(len(table))]
    table.insert(1, "emotion", labels)
    return table


def test_speaker_normalizer_uses_each_speakers_own_statistics():
    table = synthetic_table()
    Z = SpeakerNormalizer(min_clips=5).fit(table).transform(table)
    for g in table["group"].unique():
        rows = (table["group"] == g).to_numpy()
        assert np.allclose(Z[rows].mean(axis=0), 0, atol=1e-9)
        assert np.allclose(Z[rows].std(axis=0), 1, atol=1e-9)


def test_speaker_normalizer_falls_back_for_a_speaker_seen_once():
    table = synthetic_table()
    norm = SpeakerNormalizer(min_clips=5).fit(table)
    one = table.iloc[[0]].copy()
    one["group"] = "new:speaker"
    values = one[[c for c in table.columns if "__" in c]].to_numpy(float)
    expected = (values - norm.mean_) / norm.scale_
    assert np.allclose(norm.transform(one), expected)
    with pytest.raises(ParameterError, match="min_clips"):
        SpeakerNormalizer(min_clips=1).fit(table)


def test_speaker_norm_helps_across_speakers():
    table = synthetic_table(n_speakers=8, speaker_shift=4.0)
    y, groups = table["emotion"], table["group"]
    scores = {}
    for norm in (True, False):
        clf = EmotionClassifier(model="logreg", speaker_norm=norm, logreg_C=1.0)
        scores[norm] = cross_validate(clf, table, y, groups=groups,
                                      cv=GroupKFold(4))["test_score"].mean()
    assert scores[True] > 0.9 and scores[True] > scores[False] + 0.05


@pytest.mark.parametrize("model", ["blend", "svc", "logreg", "rf", "xgb", "stacking"])
def test_models_fit_predict(model):
    pytest.importorskip("xgboost")
    table = synthetic_table(n_speakers=6)
    clf = EmotionClassifier(model=model, select_k=4, pca_components=5, rf_n_estimators=30,
                            xgb_n_estimators=20, stack_cv=3).fit(table, table["emotion"])
    proba = clf.predict_proba(table)
    assert proba.shape == (len(table), 3) and np.allclose(proba.sum(axis=1), 1)
    assert list(clf.classes_) == list(EMOS)
    assert (clf.predict(table) == table["emotion"]).mean() > 0.85
    assert list(clf.feature_names_in_) == [c for c in table.columns if "__" in c]


def test_blend_has_one_member_per_block_plus_all():
    table = synthetic_table()
    clf = EmotionClassifier(select_k=4).fit(table, table["emotion"])
    assert set(clf.blocks_) == {"audio__a", "audio__b"}
    assert [n for n, _ in clf.estimator_.estimators] == ["lin_audio_a", "lin_audio_b", "lin_all"]
    assert feature_blocks(["audio__compare_x_y", "face__cnn_1", "z"]) == {
        "audio__compare": [0], "face__cnn": [1], "features": [2]}


def test_sklearn_composition():
    table = synthetic_table()
    y, groups = table["emotion"], table["group"]
    base = EmotionClassifier(model="logreg")
    assert clone(base).get_params() == base.get_params()
    grid = GridSearchCV(base, {"logreg_C": [0.01, 1.0]}, cv=GroupKFold(3))
    grid.fit(table, y, groups=groups)
    assert grid.best_params_["logreg_C"] in (0.01, 1.0)
    pipe = Pipeline([("clf", EmotionClassifier(model="logreg"))]).fit(table, y)
    assert (pipe.predict(table) == y).mean() > 0.85


def test_mismatched_columns_are_refused():
    table = synthetic_table()
    clf = EmotionClassifier(model="logreg").fit(table, table["emotion"])
    with pytest.raises(ParameterError, match="expecting 12 features"):
        clf.predict(table.drop(columns=["audio__a_0"]))
    renamed = table.rename(columns={"audio__a_0": "audio__a_zero"})
    with pytest.raises(ParameterError, match="missing: audio__a_0"):
        clf.predict(renamed)
    with pytest.raises(ParameterError, match="model must be one of"):
        EmotionClassifier(model="forest").fit(table, table["emotion"])


# scikit-learn's estimator contract, on small fast settings.
@parametrize_with_checks([
    EmotionClassifier(model="logreg", speaker_norm=False, select_k=5),
    EmotionClassifier(model="blend", select_k=5),
    SpeakerNormalizer(),
])
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_probability_blend_rules():
    from mer_pipeline.ensemble import ProbabilityBlend
    from sklearn.linear_model import LogisticRegression

    table = synthetic_table()
    X = table[[c for c in table.columns if "__" in c]].to_numpy()
    y = table["emotion"].to_numpy()
    members = [("a", LogisticRegression(C=0.1)), ("b", LogisticRegression(C=10.0))]
    geo = ProbabilityBlend(members, rule="geometric").fit(X, y).predict_proba(X)
    ari = ProbabilityBlend(members).fit(X, y).predict_proba(X)
    assert np.allclose(geo.sum(axis=1), 1) and np.allclose(ari.sum(axis=1), 1)
    pa, pb = (m.fit(X, y).predict_proba(X) for _, m in members)
    expected = np.sqrt(np.clip(pa, 1e-12, 1) * np.clip(pb, 1e-12, 1))
    assert np.allclose(geo, expected / expected.sum(axis=1, keepdims=True))
    assert np.allclose(ari, (pa + pb) / 2)
    with pytest.raises(ParameterError, match="blend_rule"):
        EmotionClassifier(blend_rule="median").fit(table, y)


def test_block_C_overrides_by_set_name():
    table = synthetic_table()
    clf = EmotionClassifier(block_C=(("a", 5.0),), logreg_C=0.5).fit(table, table["emotion"])
    Cs = {name: est.steps[-1][1].C for name, est in clf.estimator_.estimators}
    assert Cs == {"lin_audio_a": 5.0, "lin_audio_b": 0.5, "lin_all": 0.5}
