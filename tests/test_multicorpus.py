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
