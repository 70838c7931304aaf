import json

import numpy as np
import pytest

from mer_pipeline import EmotionClassifier, ParameterError, cross_validate_model, evaluate_features

from .test_models import synthetic_table


def test_grouped_folds_never_share_an_actor(tmp_path):
    table = synthetic_table(n_speakers=10)
    result = evaluate_features(table, cv="actor", folds=5, report_dir=tmp_path,
                               model="logreg", n_jobs=1)
    preds = result.predictions.join(table["group"])
    per_group = preds.groupby("group")["fold"].nunique()
    assert (per_group == 1).all()              # each actor lives in one test fold
    assert len(result.folds) == 5 and result.accuracy > 0.8
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["protocol"] == "actor" and "no actor in both" in metrics["protocol_description"]
    assert set(metrics) >= {"accuracy", "macro_f1", "folds", "classes", "per_class",
                            "optimistic_random_split"}
    assert metrics["optimistic_random_split"]["protocol"] == "random"
    for name in ("confusion_matrix.png", "roc_curves.png", "per_class_report.txt",
                 "predictions.csv", "confusion_matrix_random_split.png",
                 "roc_curves_random_split.png", "predictions_random_split.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "OPTIMISTIC" in result.format()


def test_random_split_mixes_actors():
    table = synthetic_table(n_speakers=4)
    result = cross_validate_model(EmotionClassifier(model="logreg"), table, table["emotion"],
                                  protocol="random", folds=3)
    preds = result.predictions.join(table["group"])
    assert (preds.groupby("group")["fold"].nunique() > 1).any()


def test_grouped_protocol_needs_actor_ids():
    table = synthetic_table(n_speakers=4)
    table.loc[table.index[:3], "group"] = ""
    with pytest.raises(ParameterError, match="3 clips have no actor"):
        evaluate_features(table, cv="actor", folds=2, model="logreg")
    with pytest.raises(ParameterError, match="need at least 5 actors"):
        evaluate_features(synthetic_table(n_speakers=3), cv="actor", folds=5, model="logreg")


def test_fold_probabilities_are_out_of_fold():
    table = synthetic_table(n_speakers=6)
    result = cross_validate_model(EmotionClassifier(model="logreg"), table, table["emotion"],
                                  groups=table["group"], protocol="actor", folds=3)
    proba = result.predictions[[f"proba_{c}" for c in result.classes]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1)
    assert set(result.predictions["fold"]) == {0, 1, 2}


def test_single_clip_presentation_withholds_the_speakers_statistics(tmp_path):
    """The same fits, scored per speaker batch and clip by clip: with a large speaker offset,
    a speaker-normalised model needs the batch; the single-clip figure shows it."""
    table = synthetic_table(n_speakers=8, speaker_shift=4.0)
    result = evaluate_features(table, cv="actor", folds=4, report_dir=tmp_path, n_jobs=1,
                               random_comparison=False)
    assert set(result.presentations) == {"balanced_batch", "single_clip", "skewed_batch"}
    batch, single = result.presentations["balanced_batch"], result.presentations["single_clip"]
    assert batch is result and single.presentation == "single_clip"
    assert batch.accuracy > 0.9 and single.accuracy < batch.accuracy - 0.1
    # the same folds: each clip in the same test fold under both presentations
    assert (batch.predictions["fold"] == single.predictions["fold"]).all()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["presentations"]["single_clip"]["accuracy"] == round(single.accuracy, 4)
    assert (tmp_path / "predictions_single_clip.csv").is_file()
    assert (tmp_path / "confusion_matrix_single_clip.png").is_file()
    assert "single_clip" in result.format()
    # a model without speaker normalisation does not care how its clips arrive
    plain = cross_validate_model(EmotionClassifier(speaker_norm=False), table, table["emotion"],
                                 groups=table["group"], folds=4,
                                 presentations=("balanced_batch", "single_clip"))
    assert plain.accuracy == plain.presentations["single_clip"].accuracy
    with pytest.raises(ParameterError, match="presentations"):
        cross_validate_model(EmotionClassifier(), table, table["emotion"],
                             groups=table["group"], presentations=("skewed",))


def test_skewed_batches_cover_each_clip_once_by_a_rule_of_each_speaker():
    from mer_pipeline.evaluation import skewed_batches

    assert [len(b) for b in skewed_batches(['s'] * 3, list('abc'))] == [2, 1]

    labels = np.repeat(list("abcdefgh"), 3).tolist() * 2
    groups = ["s1"] * 24 + ["s2"] * 24
    batches = skewed_batches(groups, labels, seed=0)
    rows = np.sort(np.concatenate(batches))
    assert (rows == np.arange(48)).all()  # every clip once
    sizes = sorted(len(set(np.asarray(labels)[b])) for b in batches)
    assert sizes == [2, 2, 3, 3, 3, 3]  # 8 emotions: 3 + 3 + 2 per speaker
    assert all(len(set(np.asarray(groups)[b])) == 1 for b in batches)
    # a speaker's batches do not depend on who else is in the table; the seed changes them
    alone = skewed_batches(groups[24:], labels[24:], seed=0)
    assert [list(b + 24) for b in alone] == [list(b) for b in batches[3:]]
    assert [list(b) for b in skewed_batches(groups, labels, seed=1)] != [list(b) for b in batches]
