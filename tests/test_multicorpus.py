"""Several corpora: --classes, leave-one-corpus-out evaluation, scoring on a class subset."""
import numpy as np
import pandas as pd
import pytest

from mer_pipeline import EmotionClassifier, ParameterError, cross_validate_model, evaluate_features
from mer_pipeline.cli import main
from mer_pipeline.config import CLASS_PRESETS, parse_classes
from mer_pipeline.evaluation import restrict_proba
from mer_pipeline.features import write_features
from mer_pipeline.scoring import predict_table
from mer_pipeline.workflows import labelled_table

CLASSES = ["angry", "happy", "neutral", "sad", "fearful", "calm"]


def corpora_table(seed=0, shift=3.0):
    """Three corpora with their own class sets, speakers and a corpus-wide offset; the emotion
    signal is the same in all of them."""
    rng = np.random.default_rng(seed)
    plan = {"alpha": CLASSES, "beta": ["angry", "happy", "neutral", "sad"],
            "gamma": ["angry", "happy", "sad", "fearful", "boredom"]}
    rows = []
    for corpus, classes in plan.items():
        corpus_offset = rng.normal(0, 2, 14)
        for s in range(4):
            offset = corpus_offset + rng.normal(0, shift, 14)
            for emo in classes:
                k = (CLASSES + ["boredom"]).index(emo)
                for _ in range(6):
                    x = rng.normal(0, 1, 14) + offset
                    x[k] += 3.0
                    x[7 + k] -= 2.5
                    rows.append({"corpus": corpus, "group": f"{corpus}:{s}", "emotion": emo,
                                 **{f"audio__f_{i}": x[i] for i in range(14)}})
    table = pd.DataFrame(rows)
    table.index = pd.Index([f"clip{i}" for i in range(len(table))], name="clip_id")
    return table


def test_parse_classes_presets_and_spellings():
    assert parse_classes(None) is None
    assert parse_classes("big4") == ("angry", "happy", "neutral", "sad")
    assert parse_classes("BASIC6") == tuple(sorted(CLASS_PRESETS["basic6"]))
    assert parse_classes("Anger, joy,sadness,anger") == ("angry", "happy", "sad")
    assert parse_classes(["Fear", "contempt"]) == ("contempt", "fearful")
    with pytest.raises(ParameterError, match="names no class"):
        parse_classes(" , ")


def test_labelled_table_keeps_the_classes_and_counts_the_rest():
    table = corpora_table()
    kept = labelled_table(table, "big4")
    assert set(kept["emotion"]) == {"angry", "happy", "neutral", "sad"}
    dropped = kept.attrs["dropped_classes"]
    assert dropped == {"boredom": 24, "calm": 24, "fearful": 48}
    assert len(kept) + sum(dropped.values()) == len(table)
    with pytest.raises(ParameterError, match="no clip has"):
        labelled_table(table, "disgust")


def test_leave_one_corpus_out_scores_shared_classes_only():
    table = corpora_table()
    result = evaluate_features(table, cv="corpus", model="logreg", n_jobs=1,
                               presentations=("balanced_batch", "single_clip"))
    folds = {f["corpus"]: f for f in result.folds}
    assert set(folds) == {"alpha", "beta", "gamma"}
    # gamma's boredom is in no other corpus: left out and counted, never scored
    assert folds["gamma"]["dropped"] == {"boredom": 24}
    assert folds["gamma"]["classes"] == ["angry", "fearful", "happy", "sad"]
    assert folds["beta"]["classes"] == ["angry", "happy", "neutral", "sad"]
    assert folds["beta"]["chance"] == 0.25 and folds["beta"]["majority"] == 0.25
    preds = result.predictions.join(table[["corpus"]])
    assert folds["alpha"]["dropped"] == {"calm": 24}  # calm only in alpha
    assert not {"boredom", "calm"} & set(preds["emotion"]) and len(preds) == len(table) - 48
    # each corpus's predictions fall among its own shared classes
    for corpus, part in preds.groupby("corpus"):
        assert set(part["predicted"]) <= set(folds[corpus]["classes"])
        others = [c for c in result.classes if c not in folds[corpus]["classes"]]
        assert np.allclose(part[[f"proba_{c}" for c in others]].to_numpy(), 0)
    # the signal is shared across corpora, so the held-out corpora are recognised well
    assert all(f["accuracy"] > 0.7 for f in result.folds)
    assert "single_clip" in result.presentations
    text = result.format()
    assert "mean over held-out corpora" in text and "left out: boredom=24" in text
    d = result.to_dict()
    assert d["protocol"] == "corpus" and d["n_folds"] == 3


def test_leave_one_corpus_out_needs_two_corpora():
    table = corpora_table()
    with pytest.raises(ParameterError, match="at least two corpora"):
        evaluate_features(table[table["corpus"] == "alpha"], cv="corpus", model="logreg")


def test_restrict_proba_renormalises_over_kept_classes():
    proba = np.array([[0.5, 0.3, 0.2], [0.9, 0.0, 0.1], [1.0, 0.0, 0.0]])
    out = restrict_proba(proba, np.array([False, True, True]))
    assert np.allclose(out, [[0, 0.6, 0.4], [0, 0, 1], [0, 0.5, 0.5]])


def test_scoring_decides_among_the_given_classes():
    table = corpora_table()
    model = EmotionClassifier(model="logreg").fit(table, table["emotion"])
    full = predict_table(model, table)
    sub = predict_table(model, table, classes="big4")
    assert set(sub["predicted"]) <= {"angry", "happy", "neutral", "sad"}
    assert np.allclose(sub[[c for c in sub.columns if c.startswith("proba_")]].sum(axis=1), 1)
    assert (sub["proba_calm"] == 0).all() and (full["proba_calm"] > 0).any()
    with pytest.raises(ParameterError, match="does not know class.*disgust"):
        predict_table(model, table, classes="angry,disgust")


def test_cli_classes_and_corpus_cv(tmp_path, capsys):
    table = corpora_table()
    write_features(table, tmp_path / "feats")
    assert main(["evaluate", "--features", str(tmp_path / "feats"), "--cv", "corpus",
                 "--model", "logreg", "--classes", "big4", "--report", str(tmp_path / "r"),
                 "--n-jobs", "1", "--presentations", "balanced_batch"]) == 0
    out = capsys.readouterr().out
    assert "leave-one-corpus-out" in out and "clips outside --classes left out" in out
    assert "OPTIMISTIC" not in out  # no random split beside a corpus protocol
    model = tmp_path / "m.joblib"
    assert main(["train", "--features", str(tmp_path / "feats"), "--out", str(model),
                 "--model", "logreg", "--classes", "angry,happy,sad", "--folds", "0"]) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and "left out (outside --classes)" in out
    assert main(["score", "--model", str(model), str(tmp_path / "feats"), "--classes",
                 "angry,sad", "--out", str(tmp_path / "p.csv"), "--no-progress"]) == 0
    preds = pd.read_csv(tmp_path / "p.csv")
    assert set(preds["predicted"]) <= {"angry", "sad"}
    assert main(["score", "--model", str(model), str(tmp_path / "feats"), "--classes",
                 "calm", "--out", str(tmp_path / "q.csv"), "--no-progress"]) == 1
    assert "does not know class" in capsys.readouterr().err


def test_corpus_experts_mix_each_corpus_expert_with_the_shared_model():
    from sklearn.base import clone

    from mer_pipeline import CorpusExperts

    table = corpora_table()
    y = table["emotion"].to_numpy()
    model = CorpusExperts(EmotionClassifier(model="logreg"), min_corpus_clips=50).fit(table, y)
    assert sorted(model.experts_) == ["alpha", "beta", "gamma"]
    assert list(model.classes_) == list(model.shared_.classes_)
    assert model.feature_names_in_ is not None and model.adaptation_  # the shared model's state
    part = table[table["corpus"] == "beta"]
    shared = model.shared_.predict_proba(part)
    expert = pd.DataFrame(model.experts_["beta"].predict_proba(part),
                          columns=model.experts_["beta"].classes_)
    expert = expert.reindex(columns=model.classes_, fill_value=0.0).to_numpy()
    proba = model.predict_proba(part)
    assert np.allclose(proba, 0.7 * expert + 0.3 * shared) and np.allclose(proba.sum(1), 1)
    assert np.allclose(proba[:, list(model.classes_).index("calm")],
                       0.3 * shared[:, list(model.classes_).index("calm")])  # beta has no calm
    # a corpus it was not trained on, or no corpus column: the shared model alone
    other = part.assign(corpus="delta")
    assert np.allclose(model.predict_proba(other), model.shared_.predict_proba(other))
    assert np.allclose(model.predict_proba(part.drop(columns=["corpus"])),
                       model.shared_.predict_proba(part.drop(columns=["corpus"])))
    assert clone(model).get_params()["expert_weight"] == 0.7
    assert not CorpusExperts(EmotionClassifier(model="logreg"), expert_weight=0.0).fit(
        table, y).experts_
    assert not CorpusExperts(EmotionClassifier(model="logreg")).fit(
        table[table["corpus"] == "alpha"], y[table["corpus"] == "alpha"]).experts_
    with pytest.raises(ParameterError, match="expert_weight"):
        CorpusExperts(expert_weight=1.5).fit(table, y)


def test_corpus_experts_help_corpora_that_show_emotions_differently(tmp_path):
    from mer_pipeline import CorpusExperts, build_estimator

    rng = np.random.default_rng(3)
    rows = []
    for corpus, sign in (("alpha", 1.0), ("beta", -1.0)):  # beta shows the emotions mirrored
        for s in range(6):
            offset = rng.normal(0, 2, 6)
            for emo, k in (("happy", 0), ("sad", 1), ("angry", 2)):
                for _ in range(8):
                    x = rng.normal(0, 1, 6) + offset
                    x[k] += 1.5
                    x[3 + k] += 3.0 * sign
                    rows.append({"corpus": corpus, "group": f"{corpus}:{s}", "emotion": emo,
                                 **{f"audio__f_{i}": x[i] for i in range(6)}})
    table = pd.DataFrame(rows)
    table.index = pd.Index([f"c{i}" for i in range(len(table))], name="clip_id")
    assert isinstance(build_estimator(table, model="logreg"), CorpusExperts)
    assert not isinstance(build_estimator(table[table["corpus"] == "alpha"], model="logreg"),
                          CorpusExperts)
    assert not isinstance(build_estimator(table, model="logreg", corpus_experts=False),
                          CorpusExperts)
    kw = dict(cv="actor", n_jobs=1, presentations=("balanced_batch",), random_comparison=False)
    experts = evaluate_features(table, model="logreg", **kw)
    shared = evaluate_features(table, estimator=EmotionClassifier(model="logreg"), **kw)
    assert experts.model["class"] == "CorpusExperts"
    assert experts.accuracy > shared.accuracy + 0.05
    # leave-one-corpus-out: the held-out corpus has no expert, so none is fitted
    assert evaluate_features(table, cv="corpus", model="logreg", n_jobs=1,
                             presentations=("balanced_batch",)).model["class"] == \
        "EmotionClassifier"
    # trained and saved: the metadata names the experts; scoring a table uses them
    from mer_pipeline.workflows import score_inputs, train_and_save

    write_features(table, tmp_path / "f")
    _, meta = train_and_save(tmp_path / "f", tmp_path / "m.joblib", model="logreg", cv_folds=0)
    assert meta["corpus_experts"] == ["alpha", "beta"] and meta["estimator"] == "CorpusExperts"
    preds, _ = score_inputs(tmp_path / "m.joblib", [tmp_path / "f"], progress=False)
    assert (preds["predicted"] == table.loc[preds.index, "emotion"]).mean() > 0.8


def test_cli_trains_corpus_experts_unless_told_not_to(tmp_path, capsys):
    import json

    write_features(corpora_table(), tmp_path / "f")
    args = ["train", "--features", str(tmp_path / "f"), "--model", "logreg", "--folds", "0"]
    assert main(args + ["--out", str(tmp_path / "a.joblib")]) == 0
    assert "experts for alpha, gamma" in capsys.readouterr().out  # beta: 96 clips, too few
    meta = json.loads((tmp_path / "a.joblib.json").read_text())
    assert meta["estimator"] == "CorpusExperts" and meta["corpus_experts"] == ["alpha", "gamma"]
    assert main(args + ["--out", str(tmp_path / "b.joblib"), "--no-corpus-experts"]) == 0
    meta = json.loads((tmp_path / "b.joblib.json").read_text())
    assert meta["estimator"] == "EmotionClassifier" and "corpus_experts" not in meta
    # each corpus's clips were weighed against its own classes only (labelsets)
    sets = {"alpha": CLASSES, "beta": ["angry", "happy", "neutral", "sad"],
            "gamma": ["angry", "happy", "sad", "fearful", "boredom"]}
    assert meta["label_sets"] == {k: sorted(v) for k, v in sets.items()}
