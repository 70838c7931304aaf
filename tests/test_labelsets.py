"""Training across corpora whose label sets differ: each clip weighed against its corpus's classes."""
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from mer_pipeline import EmotionClassifier, ParameterError
from mer_pipeline.labelsets import LabelSetLogisticRegression, _masked_loss, corpus_label_sets


def blobs(n=240, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d))
    X[np.arange(n), y] += 2.0
    return X, y


def test_without_label_sets_it_is_scikit_learns_logistic_regression():
    X, y = blobs()
    ref = LogisticRegression(C=0.1, max_iter=5000).fit(X, y)
    for sets in (None, np.ones((len(y), 4), dtype=bool)):
        model = LabelSetLogisticRegression(C=0.1).fit(X, y, label_sets=sets)
        assert not model.restricted_
        assert np.array_equal(model.predict_proba(X), ref.predict_proba(X))
        assert np.array_equal(model.predict(X), ref.predict(X))


def test_a_label_set_fit_reaches_the_minimum_of_its_objective():
    X, y = blobs()
    allowed = np.ones((len(y), 4), dtype=bool)
    half = np.arange(len(y)) % 2 == 1
    allowed[half & (y != 3), 3] = False  # half the clips come from a corpus without class 3
    C = 0.1
    theta0 = np.random.default_rng(1).normal(0, 0.1, 4 * 13)
    assert check_grad(lambda t: _masked_loss(t, X, y, allowed, C)[0],
                      lambda t: _masked_loss(t, X, y, allowed, C)[1], theta0) < 1e-5
    model = LabelSetLogisticRegression(C=C).fit(X, y, label_sets=allowed)
    assert model.restricted_
    theta = np.concatenate([model.coef_.ravel(), model.intercept_])
    value, grad = _masked_loss(theta, X, y, allowed, C)
    assert np.abs(grad).max() <= 1e-4  # scikit-learn's stopping rule
    plain = LogisticRegression(C=C, max_iter=5000).fit(X, y)
    other = _masked_loss(np.concatenate([plain.coef_.ravel(), plain.intercept_]), X, y,
                         allowed, C)[0]
    assert value < other  # the unrestricted optimum is not this objective's
    proba = model.predict_proba(X)  # predictions are over every class, for every clip
    assert proba.shape == (len(y), 4) and np.allclose(proba.sum(1), 1)
    assert (proba[half & (y != 3), 3] > 0).all()
    with pytest.raises(ParameterError, match="its own label"):
        LabelSetLogisticRegression().fit(X, y, label_sets=~allowed)
    with pytest.raises(ParameterError, match="shape"):
        LabelSetLogisticRegression().fit(X, y, label_sets=allowed[:, :3])


def test_corpus_label_sets_restrict_only_corpora_missing_classes():
    codes = np.array([0, 1, 2, 0, 2, 1, 1, 0])
    corpora = np.array(["a", "a", "a", "b", "b", "c", "", None], dtype=object)
    mask, sets = corpus_label_sets(corpora, codes, 3)
    assert sets == {"b": [0, 2]}  # c has one class (it would teach nothing): unrestricted
    assert mask[3].tolist() == [True, False, True] and mask[4].tolist() == [True, False, True]
    assert mask[[0, 1, 2, 5, 6, 7]].all()  # a has every class; unknown corpus: all
    assert corpus_label_sets(np.array(["a"] * 3 + ["b"] * 3), np.array([0, 1, 2] * 2), 3) == \
        (None, {})
    assert corpus_label_sets(None, codes, 3) == (None, {})


def confounded(seed=0):
    """Corpus alpha labels angry, calm and sad; beta only angry and sad, and its channel
    (feature 3) differs; gamma, unseen, sounds like beta and has calm clips."""
    rng = np.random.default_rng(seed)
    plan = {"alpha": (["angry", "calm", "sad"], 0.0), "beta": (["angry", "sad"], 3.0),
            "gamma": (["angry", "calm", "sad"], 3.0)}
    rows = []
    for corpus, (classes, channel) in plan.items():
        for emo in classes:
            k = ["angry", "calm", "sad"].index(emo)
            for _ in range(40):
                x = rng.normal(0, 1, 6)
                x[k] += 1.5
                x[3] += channel
                rows.append({"corpus": corpus, "group": "", "emotion": emo,
                             **{f"audio__f_{i}": x[i] for i in range(6)}})
    table = pd.DataFrame(rows)
    table.index = pd.Index([f"c{i}" for i in range(len(table))], name="clip_id")
    return table


@pytest.mark.parametrize("model", ["logreg", "blend"])
def test_a_corpus_never_teaches_against_emotions_it_lacks(model):
    table = confounded()
    train, test = table[table["corpus"] != "gamma"], table[table["corpus"] == "gamma"]
    calm = (test["emotion"] == "calm").to_numpy()
    recall, accuracy = {}, {}
    for col in ("corpus", None):
        clf = EmotionClassifier(model=model, speaker_norm=False, corpus_col=col)
        clf.fit(train, train["emotion"])
        pred = clf.predict(test)
        recall[col] = float((pred[calm] == "calm").mean())
        accuracy[col] = float((pred == test["emotion"]).mean())
        if col:
            assert clf.label_sets_ == {"beta": ["angry", "sad"]}
        else:
            assert clf.label_sets_ == {}
    # trained over the union of labels, beta's channel reads "not calm" and gamma's calm
    # clips are lost to it; weighed only against their own corpus's classes, they are not
    assert recall[None] < 0.2 and recall["corpus"] > 0.5
    assert accuracy["corpus"] > accuracy[None] + 0.05


def test_one_corpus_or_no_corpus_column_fits_as_before():
    table = confounded()
    alpha = table[table["corpus"] == "alpha"]
    y = alpha["emotion"].to_numpy()
    kw = dict(model="logreg", speaker_norm=False)
    base = EmotionClassifier(corpus_col=None, **kw).fit(alpha, y).predict_proba(alpha)
    for X in (alpha, alpha.drop(columns=["corpus"])):
        clf = EmotionClassifier(**kw).fit(X, y)
        assert clf.label_sets_ == {} and np.array_equal(clf.predict_proba(X), base)
    assert clone(EmotionClassifier(corpus_col="db")).get_params()["corpus_col"] == "db"
    # the non-linear models ignore it
    assert EmotionClassifier(model="rf", speaker_norm=False, rf_n_estimators=10).fit(
        table, table["emotion"]).label_sets_ == {}


def test_auto_judges_its_inner_folds_among_each_corpus_own_classes():
    table = confounded()
    table = table[table["corpus"] != "gamma"].copy()
    table["group"] = [f"{c}:{i % 6}" for c, i in zip(table["corpus"], range(len(table)))]
    clf = EmotionClassifier(model="logreg").fit(table, table["emotion"])
    own = clf._own_classes(table)
    beta = (table["corpus"] == "beta").to_numpy()
    assert own[beta].tolist() == [[True, False, True]] * int(beta.sum())  # angry, calm, sad
    assert own[~beta].all()
    assert EmotionClassifier(model="logreg", corpus_col=None).fit(
        table, table["emotion"])._own_classes(table) is None
    assert clf._own_classes(table.drop(columns=["corpus"])) is None
    inner = clf.adaptation_["inner"]
    assert isinstance(inner, dict) and set(inner["single_clip"]) == {"population", "fallback"}
