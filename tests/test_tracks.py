"""Face landmark tracks as a face source: the three layouts, joining, gaps, failures."""
import numpy as np
import pandas as pd
import pytest

from mer_pipeline import discover, load_features
from mer_pipeline.face._mean_face import MEAN_FACE_68
from mer_pipeline.face.tracks import (TrackFeatureExtractor, attach_tracks, read_track_file,
                                      track_index)
from mer_pipeline.features import extract_features

from .conftest import make_tone, shared_path

AUS_R = ["AU01_r", "AU02_r", "AU04_r", "AU05_r", "AU06_r", "AU07_r", "AU09_r", "AU10_r",
         "AU12_r", "AU14_r", "AU15_r", "AU17_r", "AU20_r", "AU23_r", "AU25_r", "AU26_r",
         "AU45_r"]
AUS_C = [a.replace("_r", "_c") for a in AUS_R[:-1]] + ["AU28_c", "AU45_c"]


def synthetic_points(n, seed=0, smile=0.0):
    """A face of n frames: the mean shape in pixels, moving a little, mouth corners up."""
    rng = np.random.default_rng(seed)
    base = MEAN_FACE_68 * 60 + [640, 360]
    pts = np.repeat(base[None], n, axis=0) + rng.normal(0, 0.5, (n, 68, 2))
    t = np.linspace(0, 1, n)[:, None]
    pts[:, 48:68, 1] -= smile * 6 * np.sin(np.pi * t)  # the mouth rises and falls
    pts[:, :, 0] += 5 * t  # the head drifts
    return pts


def long_table(names, n=30, seed=0):
    rows = []
    for k, name in enumerate(names):
        pts = synthetic_points(n, seed + k, smile=float(name.split("-")[2] == "03"))
        for f in range(n):
            row = {"fname": name, "frame_ct": f}
            for i in range(68):
                row[f"pt{i + 1}.x"] = int(round(pts[f, i, 0]))
                row[f"pt{i + 1}.y"] = int(round(pts[f, i, 1]))
            rows.append(row)
    return pd.DataFrame(rows)


def openface_csv(path, n=30, fail=(), faces=1):
    """A file in OpenFace 2 FeatureExtraction's exact column layout (", " separated)."""
    cols = (["frame", "face_id", "timestamp", "confidence", "success"]
            + [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
            + [f"eye_lmk_{a}_{i}" for a in ("x", "y") for i in range(56)]
            + [f"eye_lmk_{a}_{i}" for a in ("X", "Y", "Z") for i in range(56)]
            + ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
            + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
            + [f"{a}_{i}" for a in ("X", "Y", "Z") for i in range(68)]
            + ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
            + AUS_R + AUS_C)
    rows = []
    for face in range(faces):
        pts = synthetic_points(n, 7 + face)
        for f in range(n):
            row = dict.fromkeys(cols, 0.0)
            ok = f not in fail
            row.update({"frame": f + 1, "face_id": face, "timestamp": round(f / 30.0, 3),
                        "confidence": 0.98 if ok else 0.1, "success": int(ok)})
            row.update({f"x_{i}": pts[f, i, 0] for i in range(68)})
            row.update({f"y_{i}": pts[f, i, 1] for i in range(68)})
            row.update({a: 1.5 + 0.1 * f for a in AUS_R})
            row.update({"pose_Rx": 0.1, "pose_Ry": -0.05 * f / n, "pose_Rz": 0.02})
            rows.append(row)
    table = pd.DataFrame(rows, columns=cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(", ".join(cols) + "\n" + table.to_csv(header=False, index=False,
                                                           float_format="%.3f")
                    .replace(",", ", "))
    return path


def test_long_table_of_many_recordings(tmp_path):
    names = ["02-01-03-01-01-01-01", "02-01-04-01-01-01-01"]
    path = tmp_path / "Actor_01.csv.gz"
    long_table(names, n=20).to_csv(path, index=False)
    tracks = read_track_file(path)
    assert sorted(tracks) == names
    t = tracks[names[0]]
    assert t.points.shape == (20, 68, 2) and t.success.all() and t.fps is None
    index, problems = track_index(tmp_path)
    assert index == {n: str(path) for n in names} and problems.empty


def test_openface_csv_with_spaces_failed_frames_and_extra_features(tmp_path):
    path = openface_csv(tmp_path / "clipA.csv", n=30, fail=(4, 5, 6))
    track = read_track_file(path)["clipA"]
    assert track.fps == pytest.approx(30.0, rel=0.01)
    assert (~track.success).sum() == 3
    assert "AU12_r" in track.extra_names and "pose_Ry" in track.extra_names \
        and "gaze_angle_x" in track.extra_names and "AU28_c" in track.extra_names
    value = TrackFeatureExtractor().features(track)
    row = value.row
    assert "face__au_AU12_r_mean" in row and np.isfinite(row["face__au_AU12_r_mean"])
    assert "face__pose_Ry_std" in row and "face__dyn_mouth_speed_mean" in row
    status = [r["status"] for r in value.records]
    assert len(status) == 30 and status[4:7] == ["none"] * 3 and status.count("tracked") == 27
    assert value.records[1]["time_s"] == pytest.approx(1 / 30.0, rel=0.01)


def test_openface_keeps_the_face_tracked_most(tmp_path):
    path = openface_csv(tmp_path / "two.csv", n=10, faces=2)
    table = pd.read_csv(path, skipinitialspace=True)
    table.loc[table["face_id"] == 0, "success"] = 0
    table.to_csv(path, index=False)
    track = read_track_file(path)["two"]
    assert track.success.all() and len(track.frame) == 10


def test_plain_per_clip_tables_csv_and_parquet(tmp_path):
    pts = synthetic_points(12)
    table = pd.DataFrame({"frame": range(12), **{f"x_{i}": pts[:, i, 0] for i in range(68)},
                          **{f"y_{i}": pts[:, i, 1] for i in range(68)}})
    table.drop(index=[3]).to_csv(tmp_path / "c1.csv", index=False)  # a gap at frame 3
    table.to_parquet(tmp_path / "c2.parquet")
    one, two = read_track_file(tmp_path / "c1.csv")["c1"], read_track_file(
        tmp_path / "c2.parquet")["c2"]
    assert len(one.frame) == 11 and len(two.frame) == 12
    records = TrackFeatureExtractor().features(one).records
    assert [r["status"] for r in records][3] == "none" and len(records) == 12


def test_unreadable_layouts_are_named(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    (tmp_path / "worse.parquet").write_bytes(b"not parquet")
    index, problems = track_index(tmp_path)
    assert index == {} and len(problems) == 2
    assert problems["reason"].str.contains("68-point|cannot read").all()


def test_tracks_join_the_recording_not_the_file(tmp_path):
    audio = tmp_path / "audio" / "Actor_01"
    for emo in ("03", "04"):
        make_tone(audio / f"03-01-{emo}-01-01-01-01.wav", seconds=0.6)
    make_tone(tmp_path / "audio" / "happy" / "my_clip.wav", seconds=0.6)
    clips = discover(tmp_path / "audio").clips
    index = {"02-01-03-01-01-01-01": "t.csv", "02-01-04-01-01-01-01": "t.csv",
             "my_clip": "u.csv", "02-01-05-01-01-01-09": "t.csv"}
    joined, unmatched = attach_tracks(clips, index)
    assert joined.loc["ravdess_01-03-01-01-01-01", "face_track_key"] == "02-01-03-01-01-01-01"
    assert joined.loc["ravdess_01-04-01-01-01-01", "face_track"] == "t.csv"
    assert (joined["face_track_key"] == "my_clip").sum() == 1
    assert unmatched == ["02-01-05-01-01-01-09"]


def _audio_and_tracks(root, actors=(1, 2, 3, 4, 5)):
    names = []
    for a in actors:
        for emo, freq in (("03", 200.0), ("04", 330.0)):
            for rep in (1, 2):
                stem = f"01-{emo}-01-01-0{rep}-{a:02d}"
                make_tone(root / "audio" / f"Actor_{a:02d}" / f"03-{stem}.wav",
                          freq=freq + 5 * a + rep, seconds=0.6)
                names.append(f"02-{stem}")
    (root / "tracks").mkdir(parents=True, exist_ok=True)
    long_table(names, n=24).to_csv(root / "tracks" / "all.csv.gz", index=False)
    return root / "audio", root / "tracks"


def test_features_train_score_with_tracks(tmp_path, capsys):
    from mer_pipeline.cli import main

    audio, tracks = _audio_and_tracks(tmp_path)
    feats, model = tmp_path / "f", tmp_path / "m.joblib"
    run = ["--n-jobs", "1", "--no-progress"]
    assert main(["features", str(audio), "--face-tracks", str(tracks), "--out", str(feats),
                 "--audio-set", "egemaps", *run]) == 0
    out = capsys.readouterr().out
    assert "audio: 20 of 20 clips" in out and "face: 20 of 20 clips" in out
    table = load_features(feats)
    assert table["face__lmk_mouth_open_mean"].notna().all()
    assert {"face__dyn_mouth_speed_mean", "face__lmk_x00_seg2_mean",
            "face__lmk_x00_p90"} <= set(table.columns)
    assert table["face_frames"].map(len).min() >= 7  # 24 frames at 30 fps -> 10 fps
    record = table.attrs["provenance"]["modalities"]["face"]
    assert record["extractor"] == "face_tracks" and record["params"]["fps"] == 29.97
    det = pd.read_csv(feats / "face_detections.csv")
    assert set(det["status"]) == {"tracked"} and len(det) == 20 * 24
    assert main(["train", "--features", str(feats), "--out", str(model), "--folds", "0"]) == 0
    scored = tmp_path / "p.csv"
    clip = next(audio.glob("Actor_01/*.wav"))
    assert main(["score", "--model", str(model), str(clip), "--face-tracks", str(tracks),
                 "--out", str(scored), *run]) == 0
    assert pd.read_csv(scored)["modalities"].tolist() == ["audio+face"]
    # without the tracks the face is missing: predicted from the audio, with a warning
    with pytest.warns(UserWarning, match="landmark tracks"):
        assert main(["score", "--model", str(model), str(clip), "--out", str(scored),
                     *run]) == 0
    assert pd.read_csv(scored)["modalities"].tolist() == ["audio"]


def test_a_damaged_track_file_is_a_recorded_failure(tmp_path):
    audio, tracks = _audio_and_tracks(tmp_path, actors=(1, 2))
    (tracks / "broken.csv").write_text("fname,frame_ct\n02-01-03,0\n")
    _, run = extract_features(discover(audio), tmp_path / "f", audio_set="egemaps",
                              face_tracks=tracks, n_jobs=1, progress=False)
    assert run.modalities["face"]["clips_with_features"] == 8
    bad = run.failures[run.failures["stage"] == "tracks"]
    assert len(bad) == 1 and "broken.csv" in bad["path"].iloc[0]


def test_real_ravdess_tracks_join_the_speech_clips(tmp_path):
    speech = shared_path("ravdess_speech", "Actor_01")
    tracks = shared_path("ravdess_landmarks", "Actor_01.csv.gz")
    _, run = extract_features(discover(speech), tmp_path / "f", modalities=["face"],
                              face_tracks=tracks, n_jobs=1, progress=False)
    assert run.modalities["face"]["clips"] == run.modalities["face"]["clips_with_features"] == 60
    table = load_features(tmp_path / "f")
    assert len(table) == 60 and table["face__lmk_mouth_open_mean"].notna().all()
    # the caveat the data's README names: a video one frame longer than its audio is kept
    det = pd.read_csv(tmp_path / "f" / "face_detections.csv")
    assert det.groupby("clip_id").size().between(88, 160).all()


def test_a_model_trained_on_real_audio_and_tracks_scores_other_actors(tmp_path):
    """Real RAVDESS: train on three actors' voices and face tracks, score a fourth's."""
    from mer_pipeline.workflows import score_inputs, train_and_save

    speech = shared_path("ravdess_speech")
    tracks = shared_path("ravdess_landmarks")
    train_dirs = [speech / f"Actor_{a:02d}" for a in (1, 2, 3)]
    feats = tmp_path / "f"
    extract_features(discover(train_dirs), feats, audio_set="egemaps", face_tracks=tracks,
                     n_jobs=2, progress=False)
    model, meta = train_and_save(feats, tmp_path / "m.joblib", cv_folds=0)
    assert meta["modalities"] == ["audio", "face"]
    assert meta["provenance"]["modalities"]["face"]["extractor"] == "face_tracks"
    predictions, failures = score_inputs(tmp_path / "m.joblib", [speech / "Actor_04"],
                                         face_tracks=[tracks / "Actor_04.csv.gz"],
                                         cache_dir=tmp_path / "cache", n_jobs=2,
                                         progress=False)
    assert len(predictions) == 60 and failures.empty
    assert set(predictions["modalities"]) == {"audio+face"}
    # three actors of training: well above chance (1/8), on an actor never seen
    assert (predictions["predicted"] == predictions["emotion"]).mean() > 0.3
