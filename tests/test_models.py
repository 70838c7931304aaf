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


def test_adaptation_scores_a_lone_clip_with_the_model_trained_without_speaker_statistics():
    table = synthetic_table(n_speakers=8, per_class=12, seed=1)
    train, test = table[table["group"] != "c:7"], table[table["group"] == "c:7"]
    auto = EmotionClassifier(adaptation="switch").fit(train, train["emotion"])
    plain = EmotionClassifier(speaker_norm=False).fit(train, train["emotion"])
    lone = [auto.predict_proba(test.iloc[[i]])[0] for i in range(len(test))]
    assert np.allclose(lone, plain.predict_proba(test), atol=1e-6)
    # the same with the speaker column blanked, and for a batch below min_speaker_clips
    assert np.allclose(auto.predict_proba(test.assign(group="")), lone, atol=1e-6)
    assert np.allclose(auto.predict_proba(test.iloc[:9]), np.asarray(lone)[:9], atol=1e-6)
    # "batch" keeps the speaker-normalised model with population statistics, no second model
    batch = EmotionClassifier(adaptation="batch").fit(train, train["emotion"])
    assert batch.fallback_ is None and not np.allclose(batch.predict_proba(test.iloc[[0]]),
                                                       lone[0])


def test_auto_adaptation_chooses_its_rules_by_inner_speaker_grouped_cv():
    table = synthetic_table(n_speakers=8, per_class=12, seed=1)
    train, test = table[table["group"] != "c:7"], table[table["group"] == "c:7"]
    auto = EmotionClassifier().fit(train, train["emotion"])
    chosen, inner = auto.adaptation_, auto.adaptation_["inner"]
    assert chosen["lone_clip"] == max(inner["single_clip"], key=inner["single_clip"].get)
    score = {r: inner["balanced_batch"][r] + inner["skewed_batch"][r] for r in ("own", "switch",
                                                                            "class_aware")}
    assert score[chosen["batch"]] == max(score.values())
    # a lone clip gets the chosen model
    lone = auto.estimator_ if chosen["lone_clip"] == "population" else auto.fallback_
    assert np.allclose(auto.predict_proba(test.iloc[[3]]),
                       lone.predict_proba(auto._population(test.iloc[[3], 2:].to_numpy())))
    # the choice is a fitted attribute: clone forgets it, a refit finds the same
    assert not hasattr(clone(auto), "adaptation_")
    assert EmotionClassifier().fit(train, train["emotion"]).adaptation_ == chosen
    # too few speakers for the inner folds: the fixed 'switch' rules, said so
    two = table[table["group"].isin(["c:0", "c:1"])]
    few = EmotionClassifier().fit(two, two["emotion"]).adaptation_
    assert few["batch"] == "switch" and "too few speakers" in few["inner"]


def test_adaptation_holds_up_on_a_one_sided_batch():
    """Six emotions; a test speaker's batch of two: normalising by the batch's own mean
    shifts it towards those emotions and wrecks it; class-aware statistics do not."""
    rng = np.random.default_rng(0)
    emotions = [f"e{k}" for k in range(6)]
    rows, labels, groups = [], [], []
    for s in range(10):
        offset = rng.normal(0, 3.0, 12)
        for k, emo in enumerate(emotions):
            for _ in range(10):
                x = rng.normal(0, 1, 12) + offset
                x[2 * k] += 3.0
                x[2 * k + 1] += 3.0
                rows.append(x)
                labels.append(emo)
                groups.append(f"s{s}")
    table = pd.DataFrame(np.array(rows), columns=[f"audio__f_{i}" for i in range(12)])
    table.insert(0, "group", groups)
    labels = np.array(labels)
    train = (table["group"] != "s9").to_numpy()
    fits = {a: EmotionClassifier(adaptation=a).fit(table[train], labels[train])
            for a in ("auto", "batch", "class_aware")}
    one_sided = ~train & np.isin(labels, ["e0", "e1"])
    acc = {a: (f.predict(table[one_sided]) == labels[one_sided]).mean() for a, f in fits.items()}
    assert acc["batch"] < 0.75 and acc["auto"] > acc["batch"] + 0.15
    assert acc["class_aware"] == acc["auto"]
    balanced = ~train
    assert (fits["auto"].predict(table[balanced]) == labels[balanced]).mean() >= \
        (fits["batch"].predict(table[balanced]) == labels[balanced]).mean() - 0.02
    with pytest.raises(ParameterError, match="adaptation"):
        EmotionClassifier(adaptation="always").fit(table[train], labels[train])
