"""Speaker enrollment: profiles, their statistics, the enrolled presentation, the CLI."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from mer_pipeline import EmotionClassifier, FeatureTableError, ParameterError
from mer_pipeline.cli import main
from mer_pipeline.enrollment import (enroll, load_profile, load_profiles, profile_name,
                                     save_profile)
from mer_pipeline.evaluation import cross_validate_model, enrollment_references
from mer_pipeline.speaker import ClassEffects, SpeakerPrior

EMOS = ["angry", "happy", "neutral", "sad"]
PROVENANCE = {"mer_pipeline": "test", "modalities": {
    "audio": {"extractor": "audio", "version": "3", "table": "audio_features.csv",
              "params": {"feature_set": "egemaps", "sample_rate": 16000}}}}


def speakers_table(n_speakers=10, per_class=6, seed=0, shift=4.0, d=12):
    """Each emotion moves a pair of features; each speaker shifts every feature a lot."""
    rng = np.random.default_rng(seed)
    rows, labels, groups = [], [], []
    for s in range(n_speakers):
        offset = rng.normal(0, shift, d)
        for k, emo in enumerate(EMOS):
            for _ in range(per_class):
                x = rng.normal(0, 1, d) + offset
                x[2 * k:2 * k + 2] += 2.5
                rows.append(x)
                labels.append(emo)
                groups.append(f"spk:{s}")
    table = pd.DataFrame(np.array(rows), columns=[f"audio__f_{i}" for i in range(d)])
    table.insert(0, "group", groups)
    table.insert(1, "emotion", labels)
    table.index = [f"clip{i}" for i in range(len(table))]
    table.attrs["provenance"] = PROVENANCE
    return table


def test_speaker_prior_trusts_more_clips_of_more_emotions_more():
    table = speakers_table()
    values = table.filter(like="audio__").to_numpy()
    codes = np.searchsorted(EMOS, table["emotion"])
    groups = table["group"].to_numpy()
    effects = ClassEffects(values, codes, groups, len(EMOS), 10)
    prior = SpeakerPrior(values, codes, groups, effects, 10)
    assert prior.n_speakers == 10
    w = {(k, e): prior.weights(k, e).mean() for k in (1, 4, 16) for e in (1, 3)}
    assert 0 < w[1, 1] < w[4, 1] < w[16, 1] < 1 and w[16, 1] <= w[16, 3]
    assert np.all(prior.weights(0, 1) == 0)
    # speakers differ a lot here (shift 4 vs noise 1): a few clips are trusted a lot
    assert w[4, 1] > 0.8
    # the scale is a typical speaker's, not the population's (which speaker shifts inflate)
    assert np.all(prior.scale < values.std(axis=0))
    # one speaker: nothing to tell speakers apart by, weight 0
    one = groups == "spk:0"
    alone = SpeakerPrior(values[one], codes[one], groups[one],
                         ClassEffects(values[one], codes[one], groups[one], 4, 10), 10)
    assert alone.n_speakers == 1 and np.all(alone.weights(4, 1) == 0)


def _split(table, test_speaker="spk:9"):
    test = (table["group"] == test_speaker).to_numpy()
    return table[~test], table[test]


def test_an_enrolled_speakers_lone_clips_are_scored_with_their_statistics():
    table = speakers_table(per_class=8)
    train, test = _split(table)
    clf = EmotionClassifier(adaptation="switch").fit(train, train["emotion"])
    refs = test[test["emotion"] == "neutral"].iloc[:4]
    rest = test.drop(refs.index)
    profile = enroll(refs, "spk:9")
    assert profile.emotions == ["neutral"] * 4 and profile.n_clips == 4
    lone = [clf.predict_proba(rest.iloc[[i]])[0] for i in range(len(rest))]
    with_profile = [clf.predict_proba(rest.iloc[[i]], profiles={"spk:9": profile})[0]
                    for i in range(len(rest))]
    truth = np.searchsorted(clf.classes_, rest["emotion"])
    acc_lone = (np.argmax(lone, axis=1) == truth).mean()
    acc_enrolled = (np.argmax(with_profile, axis=1) == truth).mean()
    assert acc_enrolled > acc_lone + 0.15, (acc_lone, acc_enrolled)
    # the same scored as one batch too small for own statistics
    few = rest.iloc[:6]
    assert np.allclose(clf.predict_proba(few, profiles={"spk:9": profile}),
                       np.asarray(with_profile)[:6])
    # probabilities stay probabilities
    assert np.allclose(np.sum(with_profile, axis=1), 1.0)
    # a speaker with enough clips in the batch keeps the batch rule; others are untouched
    assert np.allclose(clf.predict_proba(rest, profiles={"spk:9": profile}),
                       clf.predict_proba(rest))
    other = few.assign(group="someone")
    assert np.allclose(clf.predict_proba(other, profiles={"spk:9": profile}),
                       clf.predict_proba(other))
    assert (clf.predict(few, profiles={"spk:9": profile})
            == clf.classes_[np.argmax(np.asarray(with_profile)[:6], axis=1)]).all()


def test_unlabelled_references_are_labelled_by_the_model():
    table = speakers_table(per_class=8, seed=3)
    train, test = _split(table)
    clf = EmotionClassifier(adaptation="switch").fit(train, train["emotion"])
    refs = test.groupby("emotion").head(2)  # 2 clips of each emotion, labels withheld
    rest = test.drop(refs.index).assign(group=[f"x{i}" for i in range(len(test) - len(refs))])
    unlabelled = enroll(refs, "spk:9", labelled=False)
    assert unlabelled.emotions is None
    profiles = {g: unlabelled for g in rest["group"]}  # each clip alone, same speaker
    truth = rest["emotion"].to_numpy()
    acc = {name: (clf.predict(rest, profiles=p) == truth).mean()
           for name, p in (("lone", None), ("unlabelled", profiles))}
    assert acc["unlabelled"] > acc["lone"] + 0.1, acc
    mean_u, _, w_u = clf.profile_stats(unlabelled)
    mean_l, _, w_l = clf.profile_stats(enroll(refs, "spk:9"))
    assert 0 < w_u <= 1 and 0 < w_l <= 1
    # the model's guesses of these well-separated emotions are the labels
    assert np.allclose(mean_u, mean_l, atol=0.5)
    # a label the model does not know: that clip is treated as unlabelled, said so
    odd = enroll(refs, "spk:9")
    odd.emotions = ["bored"] + odd.emotions[1:]
    with pytest.warns(UserWarning, match="bored"):
        clf.profile_stats(odd)


def test_profiles_are_refused_where_they_cannot_apply():
    table = speakers_table(n_speakers=6)
    train, test = _split(table, "spk:5")
    profile = enroll(test.iloc[:4], "spk:5")
    plain = EmotionClassifier(speaker_norm=False).fit(train, train["emotion"])
    with pytest.warns(UserWarning, match="no effect"):
        p = plain.predict_proba(test.iloc[:3], profiles={"spk:5": profile})
    assert np.allclose(p, plain.predict_proba(test.iloc[:3]))
    with pytest.raises(ParameterError, match="no speaker statistics"):
        plain.profile_stats(profile)
    clf = EmotionClassifier(adaptation="batch").fit(train, train["emotion"])
    del clf.speaker_prior_  # as a model saved before enrollment existed
    with pytest.raises(ParameterError, match="train it again"):
        clf.predict_proba(test.iloc[:3], profiles={"spk:5": profile})
    clf = EmotionClassifier(adaptation="batch").fit(train.drop(columns="audio__f_0"),
                                                    train["emotion"])
    short = enroll(test.iloc[:4].drop(columns="audio__f_11"), "spk:5")
    with pytest.raises(FeatureTableError, match="lacks 1 feature column"):
        clf.predict_proba(test.iloc[:3].drop(columns="audio__f_0"), profiles={"spk:5": short})
    # extra columns in a profile are ignored: only the model's are read
    assert clf.profile_stats(profile)[0].shape == (11,)
    with pytest.raises(ParameterError, match="unknown speaker"):
        enroll(test.iloc[:4], "")
    with pytest.raises(ParameterError, match="no reference clip"):
        enroll(test.iloc[:0], "spk:5")


def test_profiles_round_trip_and_are_checked_against_the_models_features(tmp_path):
    table = speakers_table(n_speakers=3)
    profile = enroll(table.iloc[:5], "ravdess:06", emotion="neutral")
    path = save_profile(profile, tmp_path / "speakers")
    assert path.name == profile_name("ravdess:06") == "ravdess%3A06.profile.npz"
    back = load_profile(path)
    assert back.speaker == "ravdess:06" and back.emotions == ["neutral"] * 5
    assert back.columns == profile.columns and np.array_equal(back.values, profile.values)
    assert back.clip_ids == list(table.index[:5]) and back.provenance == PROVENANCE
    assert set(load_profiles(tmp_path / "speakers", provenance=PROVENANCE)) == {"ravdess:06"}
    other = json.loads(json.dumps(PROVENANCE))
    other["modalities"]["audio"]["params"]["feature_set"] = "compare"
    with pytest.raises(FeatureTableError, match="feature_set"):
        load_profiles(tmp_path / "speakers", provenance=other)
    with pytest.raises(FeatureTableError, match="no speaker profile"):
        load_profiles(tmp_path)
    from mer_pipeline.enrollment import merge_profiles

    with pytest.raises(FeatureTableError, match="cannot merge"):
        merge_profiles(profile, enroll(table.iloc[5:7], "other"))
    with pytest.raises(FeatureTableError, match="other feature columns"):
        merge_profiles(profile, enroll(table.iloc[5:7].drop(columns="audio__f_3"), "ravdess:06"))
    with pytest.raises(FeatureTableError, match="feature_set"):
        later = enroll(table.iloc[5:7], "ravdess:06")
        later.provenance = other
        merge_profiles(profile, later)
    (tmp_path / "junk.profile.npz").write_bytes(b"not a profile")
    with pytest.raises(FeatureTableError, match="not a speaker profile"):
        load_profile(tmp_path / "junk.profile.npz")


def test_enrollment_references_follow_a_seeded_per_speaker_rule():
    groups = np.repeat(["a", "b", "c"], 8)
    labels = np.tile(["neutral", "neutral", "neutral", "neutral", "neutral", "sad", "sad",
                      "happy"], 3)
    labels[16:] = "sad"  # speaker c has no neutral clip: no references
    refs = enrollment_references(groups, labels, 4, "neutral", seed=0)
    assert set(refs) == {"a", "b"}
    assert all(len(r) == 4 and (labels[r] == "neutral").all() for r in refs.values())
    assert all((groups[r] == g).all() for g, r in refs.items())
    # another speaker's clips never change a speaker's references
    again = enrollment_references(groups[:8], labels[:8], 4, "neutral", seed=0)
    assert np.array_equal(again["a"], refs["a"])
    anything = enrollment_references(groups, labels, 3, None, seed=1)
    assert set(anything) == {"a", "b", "c"} and all(len(r) == 3 for r in anything.values())


def test_the_enrolled_presentation_scores_all_but_the_references():
    table = speakers_table(n_speakers=10, per_class=6)
    y, groups = table["emotion"].to_numpy(), table["group"].to_numpy()
    clf = EmotionClassifier(adaptation="switch", select_k=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cross_validate_model(clf, table, y, groups=groups, folds=5,
                                      presentations=["single_clip", "enrolled"])
    enrolled = result.presentations["enrolled"]
    assert len(enrolled.predictions) == len(table) - 10 * 4
    assert (enrolled.predictions["emotion"] == "neutral").sum() == 10 * 2  # 6 minus 4 refs
    d = result.to_dict()["presentations"]["enrolled"]
    assert d["references"] == {"clips": 4, "emotion": "neutral"}
    assert d["accuracy"] > d["single_clip_same_clips"] + 0.1, d
    with pytest.raises(ParameterError, match="profiles"):
        from sklearn.linear_model import LogisticRegression

        cross_validate_model(LogisticRegression(), table.filter(like="audio__"), y,
                             groups=groups, presentations=["enrolled"])


def test_enroll_then_score_from_the_command_line(tmp_path, capsys):
    table = speakers_table(n_speakers=10, per_class=6)
    train, test = _split(table)
    train.to_csv(tmp_path / "train.csv", index_label="clip_id")
    refs = test[test["emotion"] == "neutral"].iloc[:4]
    refs.drop(columns="group").to_csv(tmp_path / "refs.csv", index_label="clip_id")
    rest = test.drop(refs.index).drop(columns="group")
    new = rest.groupby("emotion").head(2)  # 8 clips: too few for own statistics
    new.to_csv(tmp_path / "new.csv", index_label="clip_id")
    model = tmp_path / "model.joblib"
    assert main(["train", "--features", str(tmp_path / "train.csv"), "--out", str(model),
                 "--folds", "0", "--adaptation", "switch"]) == 0
    speakers = tmp_path / "speakers"
    assert main(["enroll", "--model", str(model), str(tmp_path / "refs.csv"), "--speaker",
                 "alice", "--out", str(speakers), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "enrolled alice: 4 clips (neutral=4)" in out and "weight" in out
    assert (speakers / "alice.profile.npz").is_file()
    plain, enrolled = tmp_path / "p.csv", tmp_path / "e.csv"
    assert main(["score", "--model", str(model), str(tmp_path / "new.csv"), "--out",
                 str(plain), "--no-progress"]) == 0
    assert main(["score", "--model", str(model), str(tmp_path / "new.csv"), "--out",
                 str(enrolled), "--speakers", str(speakers), "--speaker", "alice",
                 "--no-progress"]) == 0
    a, b = pd.read_csv(plain, index_col=0), pd.read_csv(enrolled, index_col=0)
    probas = [c for c in a.columns if c.startswith("proba_")]
    assert not np.allclose(a[probas], b[probas])
    # what the API gives for these clips of the enrolled speaker
    from mer_pipeline.persistence import load_model

    clf, _ = load_model(model)
    expected = clf.predict_proba(new.assign(group="alice")[["group", *clf.feature_names_in_]],
                                 profiles={"alice": load_profile(speakers / "alice.profile.npz")})
    assert np.allclose(b[probas].to_numpy(), expected, atol=1e-5)
    capsys.readouterr()
    assert main(["score", "--model", str(model), str(tmp_path / "new.csv"), "--out",
                 str(plain), "--speakers", str(speakers), "--speaker", "bob"]) == 1
    assert "no profile of speaker 'bob'" in capsys.readouterr().err
    # unlabelled references, and labels overridden
    assert main(["enroll", "--model", str(model), str(tmp_path / "refs.csv"), "--speaker",
                 "carol", "--out", str(speakers), "--unlabelled", "--no-progress"]) == 0
    assert "(unlabelled)" in capsys.readouterr().out
    assert load_profile(speakers / "carol.profile.npz").emotions is None
    # more references appended: labelled and unlabelled ones side by side; a clip once
    more = test[test["emotion"] == "sad"].iloc[:3]
    more.drop(columns="group").to_csv(tmp_path / "more.csv", index_label="clip_id")
    assert main(["enroll", "--model", str(model), str(tmp_path / "more.csv"),
                 str(tmp_path / "refs.csv"), "--speaker", "carol", "--out", str(speakers),
                 "--append", "--no-progress"]) == 0
    assert "7 clips (unlabelled=4, sad=3)" in capsys.readouterr().out
    carol = load_profile(speakers / "carol.profile.npz")
    assert carol.emotions == [""] * 4 + ["sad"] * 3 and len(set(carol.clip_ids)) == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "" is unlabelled, not an unknown emotion
        clf.profile_stats(carol)


def av_speakers_table(n_speakers=10, per_class=6, seed=0, shift=4.0):
    """Audio and face features; each emotion moves a pair of each; each speaker (subject)
    shifts every feature of both a lot."""
    rng = np.random.default_rng(seed)
    rows, labels, groups = [], [], []
    for s in range(n_speakers):
        offset = rng.normal(0, shift, 16)
        for k, emo in enumerate(EMOS):
            for _ in range(per_class):
                x = rng.normal(0, 1, 16) + offset
                x[2 * k:2 * k + 2] += 2.0
                x[8 + 2 * k:8 + 2 * k + 2] += 2.0
                rows.append(x)
                labels.append(emo)
                groups.append(f"spk:{s}")
    names = [f"audio__f_{i}" for i in range(8)] + [f"face__g_{i}" for i in range(8)]
    table = pd.DataFrame(np.array(rows), columns=names,
                         index=[f"clip{i}" for i in range(len(rows))])
    table.insert(0, "group", groups)
    table.insert(1, "emotion", labels)
    return table


def test_multimodal_model_scores_enrolled_speakers_per_modality():
    from mer_pipeline import MultimodalEmotionClassifier

    table = av_speakers_table()
    train, test = _split(table)
    clf = MultimodalEmotionClassifier(inner_cv=3).fit(train, train["emotion"])
    refs = test[test["emotion"] == "neutral"].iloc[:4]
    rest = test.drop(refs.index)
    lone = rest.assign(group=[f"x{i}" for i in range(len(rest))])
    profile = enroll(refs, "spk:9")
    profiles = {g: profile for g in lone["group"]}
    truth = rest["emotion"].to_numpy()
    acc_lone = (clf.predict(lone) == truth).mean()
    acc_enrolled = (clf.predict(lone, profiles=profiles) == truth).mean()
    assert acc_enrolled > acc_lone + 0.15, (acc_lone, acc_enrolled)
    stats = clf.profile_stats(profile)
    assert set(stats) == {"audio", "face"} and all(0 < w <= 1 for _, _, w in stats.values())
    # references without the face: audio statistics only; clips without a modality still work
    audio_only = enroll(refs.assign(**{c: np.nan for c in refs if c.startswith("face__")}),
                        "spk:9")
    assert set(clf.profile_stats(audio_only)) == {"audio"}
    no_face = lone.assign(**{c: np.nan for c in lone if c.startswith("face__")})
    proba = clf.predict_proba(no_face, profiles={g: audio_only for g in lone["group"]})
    assert np.allclose(proba.sum(axis=1), 1.0)
    # a batch large enough for own statistics keeps them
    assert np.allclose(clf.predict_proba(rest, profiles={"spk:9": profile}),
                       clf.predict_proba(rest))
    # the enrolled presentation works for it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cross_validate_model(MultimodalEmotionClassifier(inner_cv=3), table,
                                      table["emotion"], groups=table["group"], folds=5,
                                      presentations=["single_clip", "enrolled"])
    d = result.to_dict()["presentations"]["enrolled"]
    assert d["accuracy"] > d["single_clip_same_clips"] + 0.1, d


def test_multimodal_adaptation_holds_up_on_one_sided_batches():
    from mer_pipeline import MultimodalEmotionClassifier

    table = av_speakers_table(n_speakers=10, per_class=10, seed=2)
    train, test = _split(table)
    fits = {a: MultimodalEmotionClassifier(inner_cv=3, adaptation=a).fit(train, train["emotion"])
            for a in ("batch", "switch", "class_aware")}
    one_sided = test[test["emotion"].isin(["angry", "happy"])]  # 20 clips: a batch
    truth = one_sided["emotion"].to_numpy()
    acc = {a: (f.predict(one_sided) == truth).mean() for a, f in fits.items()}
    assert acc["batch"] < 0.8 and acc["switch"] > acc["batch"] + 0.15, acc
    assert acc["class_aware"] >= acc["switch"] - 0.05
    # a balanced batch: switch keeps the batch's own statistics
    balanced = {a: f.predict_proba(test) for a, f in fits.items()}
    assert np.allclose(balanced["switch"], balanced["batch"])
    # a lone clip: population statistics under every rule
    clip = test.iloc[[5]]
    assert np.allclose(fits["switch"].predict_proba(clip), fits["batch"].predict_proba(clip))
    with pytest.raises(ParameterError, match="multimodal"):
        MultimodalEmotionClassifier(adaptation="auto").fit(train, train["emotion"])


def test_enroll_inputs_works_for_the_multimodal_model(tmp_path):
    from mer_pipeline import MultimodalEmotionClassifier, save_model
    from mer_pipeline.workflows import enroll_inputs

    table = av_speakers_table()
    train, test = _split(table)
    model = tmp_path / "av.joblib"
    save_model(MultimodalEmotionClassifier(inner_cv=3).fit(train, train["emotion"]), model,
               training_table=train)
    refs = test[test["emotion"] == "neutral"].iloc[:4]
    refs.drop(columns="group").to_csv(tmp_path / "refs.csv", index_label="clip_id")
    profile, path, _, summary = enroll_inputs(model, [tmp_path / "refs.csv"], "spk:9",
                                              tmp_path / "speakers", progress=False)
    assert path.is_file() and summary["emotions"] == {"neutral": 4}
    clf = MultimodalEmotionClassifier(inner_cv=3).fit(train, train["emotion"])
    weights = [w for _, _, w in clf.profile_stats(profile).values()]
    assert 0 < summary["weight"] == pytest.approx(np.mean(weights), abs=1e-3)
