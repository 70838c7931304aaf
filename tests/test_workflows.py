"""Workflows end to end: settings recorded at extraction travel with the model to scoring."""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from mer_pipeline.cli import main

from .conftest import ffmpeg, shared_path


def _face_videos(root, images, seconds=1.0):
    """Short videos of still faces in a labelled folder (``<emotion>/<name>.mp4``)."""
    for label, image in images:
        out = root / label / f"{image.stem.replace('.', '_')}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-loop", "1",
                        "-i", str(image), "-t", str(seconds), "-r", "25",
                        "-vf", "scale=256:256,format=yuv420p", "-c:v", "libx264", str(out)],
                       check=True)
    return root


@pytest.fixture
def face_video_folder(tmp_path):
    jaffe = shared_path("faces", "jaffe", "jaffedbase")
    images = [("happy", p) for p in sorted(jaffe.glob("*.HA*.tiff"))[:4]] + \
             [("sad", p) for p in sorted(jaffe.glob("*.SA*.tiff"))[:4]]
    return _face_videos(tmp_path / "videos", images)


def test_frame_rate_recorded_at_extraction_is_used_at_scoring(face_video_folder, tmp_path,
                                                              capsys):
    pytest.importorskip("ai_edge_litert")
    videos, f5, f3 = face_video_folder, tmp_path / "f5", tmp_path / "f3"
    run = ["--n-jobs", "1", "--no-progress"]
    assert main(["features", str(videos), "--fps", "5", "--out", str(f5), *run]) == 0
    record = json.loads((f5 / "features.json").read_text())
    assert record["modalities"]["face"]["params"]["fps"] == 5
    steps = pd.read_csv(f5 / "face_detections.csv").groupby("clip_id")["time_s"].diff().dropna()
    assert np.allclose(steps, 0.2)
    model = tmp_path / "m.joblib"
    assert main(["train", "--features", str(f5), "--out", str(model), "--folds", "0"]) == 0
    meta = json.loads((tmp_path / "m.joblib.json").read_text())
    assert meta["provenance"]["modalities"]["face"]["params"]["fps"] == 5
    # media are extracted with the model's settings: 5 frames a second, not the default 3
    clip = next(videos.glob("happy/*.mp4"))
    out = tmp_path / "scored" / "predictions.csv"
    assert main(["score", "--model", str(model), str(clip), "--out", str(out), *run]) == 0
    det = pd.read_csv(out.parent / "face_detections.csv")
    assert len(det) == 5 and np.allclose(np.diff(det["time_s"]), 0.2)
    assert pd.read_csv(out)["modalities"].tolist() == ["face"]
    # a features folder extracted at another rate is refused, naming both rates
    assert main(["features", str(videos), "--fps", "3", "--out", str(f3), *run]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(model), str(f3), "--out", str(out), *run]) == 1
    err = capsys.readouterr().err
    assert "fps=3.0 there, fps=5.0 for the model" in err and "Traceback" not in err
    # the folder it was trained on is accepted
    assert main(["score", "--model", str(model), str(f5), "--out", str(out), *run]) == 0


def test_predict_lists_why_nothing_could_be_scored(tmp_path, tone_corpus, capsys):
    feats, model = tmp_path / "f", tmp_path / "m.joblib"
    run = ["--n-jobs", "1", "--no-progress"]
    assert main(["features", str(tone_corpus), "--out", str(feats), "--audio-set", "egemaps",
                 *run]) == 0
    assert main(["train", "--features", str(feats), "--out", str(model), "--folds", "0"]) == 0
    image = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", str(image), "--model", str(model)]) == 1
    err = capsys.readouterr().err
    assert "nothing to score" in err and "face.png" in err and "no audio stream" in err


def test_a_folder_of_silent_videos_trains_a_face_model(tmp_path, face_video_folder, capsys):
    """Issue 16: videos without sound go through features -> evaluate -> train -> score."""
    pytest.importorskip("ai_edge_litert")
    videos, feats, model = face_video_folder, tmp_path / "f", tmp_path / "m.joblib"
    run = ["--n-jobs", "1", "--no-progress"]
    assert main(["features", str(videos), "--out", str(feats), *run]) == 0
    out = capsys.readouterr().out
    assert "face: 8 of 8 clips" in out
    assert not (feats / "audio_features.csv").exists()
    assert main(["evaluate", "--features", str(feats), "--cv", "random", "--folds", "2",
                 "--report", str(tmp_path / "r"), "--n-jobs", "1"]) == 0
    assert main(["train", "--features", str(feats), "--out", str(model), "--folds", "0"]) == 0
    scored = tmp_path / "p.csv"
    assert main(["score", "--model", str(model), str(videos), "--out", str(scored), *run]) == 0
    table = pd.read_csv(scored)
    assert len(table) == 8 and set(table["modalities"]) == {"face"}


def test_an_audio_folder_of_a_video_only_run_says_so(tmp_path, capsys):
    """Issue 16: a modality no clip yielded writes no table, and the summary says why."""
    from .conftest import make_video

    root = tmp_path / "videos"
    for label in ("happy", "sad"):
        for i in range(2):
            make_video(root / label / f"c{i}.mp4", seconds=0.5, audio=False)
    feats = tmp_path / "f"
    assert main(["features", str(root), "--modalities", "audio", "--out", str(feats),
                 "--n-jobs", "1", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "audio: 0 of 4 clips" in captured.out and "NoAudioStreamError" in captured.out
    assert "no clip yielded features" in captured.err
    assert not (feats / "audio_features.csv").exists()
    failures = pd.read_csv(feats / "failures.csv")
    assert len(failures) == 4 and failures["error"].str.contains("no audio").all()
    assert main(["train", "--features", str(feats), "--out", str(tmp_path / "m.joblib")]) == 1
    assert "no clip yielded features (audio: 0 of 4 clips)" in capsys.readouterr().err


def test_model_extractors_rebuild_recorded_settings_and_warn_without_them():
    from mer_pipeline.exceptions import ParameterError
    from mer_pipeline.features import make_extractor
    from mer_pipeline.scoring import model_extractors

    recorded = make_extractor("audio", audio_set="librosa")
    columns = ["audio__librosa_mfcc_mean_00", "audio__librosa_rms_mean"]
    meta = {"provenance": {"modalities": {"audio": {"extractor": recorded.name,
                                                    "params": recorded.params()}}}}
    tasks = model_extractors(meta, columns)
    assert set(tasks) == {"audio"}
    assert tasks["audio"].params() == recorded.params()

    # a model trained on a table without features.json: the column names decide, with a warning
    with pytest.warns(UserWarning, match="records no audio extraction settings"):
        tasks = model_extractors({}, columns)
    assert tasks["audio"].params()["feature_set"] == "librosa"
    # a recorded setting this version cannot reproduce is refused, not silently replaced
    bad = {"provenance": {"modalities": {"audio": {"extractor": recorded.name,
                                                   "params": {**recorded.params(),
                                                              "sample_rate": 12345}}}}}
    with pytest.raises(ParameterError, match="cannot be reproduced.*12345 recorded"):
        model_extractors(bad, columns)
