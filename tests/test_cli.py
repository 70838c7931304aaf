import json
import subprocess
import sys

import pandas as pd
import pytest

from mer_pipeline.cli import build_parser, main

from .conftest import shared_path

def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


COMMANDS = _commands()


def test_every_command_is_covered():
    assert {"manifest", "extract", "features", "evaluate", "train", "score",
            "predict"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"mer {command}" in out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "mer_pipeline.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert "mer_pipeline" in out


def test_manifest_command_writes_csv(mixed_corpus, tmp_path, capsys):
    out = tmp_path / "m.csv"
    assert main(["manifest", str(mixed_corpus), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clips:    5" in text and "unparsed: 1" in text and "holiday_video.wav" in text
    table = pd.read_csv(out)
    assert {"clip_id", "emotion", "actor", "audio_path", "video_path"} <= set(table.columns)


def test_library_errors_are_one_line(tmp_path, capsys):
    assert main(["evaluate", "--features", str(tmp_path), "--report", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mer: error: no feature table") and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:   # the parser validates paths
        main(["manifest", str(tmp_path / "missing")])
    assert exc.value.code == 2


def test_extract_then_features_then_evaluate(mixed_corpus, tmp_path, tone_corpus, capsys):
    # extract: good clips written, bad ones in failures.csv
    assert main(["extract", str(mixed_corpus), "--out", str(tmp_path / "x"), "--n-jobs", "1",
                 "--no-progress"]) == 0
    assert "computed 5, from cache 0" in capsys.readouterr().out
    assert main(["extract", str(mixed_corpus), "--out", str(tmp_path / "x"), "--n-jobs", "1",
                 "--no-progress"]) == 0
    assert "computed 0, from cache 5" in capsys.readouterr().out
    data = tone_corpus
    feats = tmp_path / "feats"
    assert main(["features", str(data), "--out", str(feats), "--audio-set", "egemaps",
                 "--n-jobs", "1", "--no-progress"]) == 0
    assert (feats / "audio_features.csv").is_file()
    report = tmp_path / "report"
    assert main(["evaluate", "--features", str(feats), "--folds", "5", "--model", "logreg",
                 "--report", str(report), "--n-jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "actor-independent" in out and "OPTIMISTIC" in out
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_clips"] == 20 and metrics["n_groups"] == 5
    assert metrics["accuracy"] > 0.8  # pitch separates the two synthetic "emotions"


def test_parser_defaults_come_from_config():
    from mer_pipeline import config

    args = build_parser().parse_args(["extract", ".", "--out", "x"])
    assert args.sr == config.SAMPLE_RATE and args.fps == config.FRAME_RATE


@pytest.mark.shared
def test_manifest_on_shared_ravdess(capsys):
    assert main(["manifest", str(shared_path("ravdess_speech")), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == 1200 and summary["actors"] == 20
    assert len(summary["emotions"]) == 8 and summary["unparsed"] == 0


def test_train_and_score_a_multimodal_features_folder(tmp_path, capsys):
    from mer_pipeline.features import write_features
    from tests.test_fusion import make_table, split

    train, test = split(make_table())
    write_features(train, tmp_path / "train")
    write_features(test, tmp_path / "test")
    model = tmp_path / "m.joblib"
    assert main(["train", "--features", str(tmp_path / "train"), "--out", str(model),
                 "--folds", "3", "--n-jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "MultimodalEmotionClassifier(late) on audio+face features" in out
    assert "actor-grouped 3-fold CV" in out
    assert main(["score", "--model", str(model), str(tmp_path / "test"), "--out",
                 str(tmp_path / "p.csv"), "--no-progress"]) == 0
    preds = pd.read_csv(tmp_path / "p.csv")
    assert set(preds["modalities"]) == {"audio+face"} and len(preds) == len(test)
    assert (preds["predicted"] == preds["emotion"]).mean() > 0.8
    with pytest.raises(SystemExit):
        main(["train", "--features", str(tmp_path / "train"), "--fusion", "bogus"])


def test_features_lists_the_sets_without_data(capsys):
    assert main(["features", "--list-sets"]) == 0
    out = capsys.readouterr().out
    assert "default: = whisper" in out and "seed45:" in out
    assert "classical: = egemaps+compare+librosa" in out
    assert main(["features"]) == 1
    assert "needs DATA" in capsys.readouterr().err


def test_adaptation_option_reaches_either_model():
    from mer_pipeline.fusion import build_estimator
    from mer_pipeline import ParameterError

    assert build_estimator(fusion="none", adaptation="batch").adaptation == "batch"
    assert build_estimator(fusion="none").adaptation == "auto"
    assert build_estimator(fusion="late", adaptation="class_aware").adaptation == "class_aware"
    assert build_estimator(fusion="late").adaptation == "switch"
    with pytest.raises(ParameterError, match="multimodal"):  # no inner-CV choice there
        build_estimator(fusion="late", adaptation="auto")._check_params()
