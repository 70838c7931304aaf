"""Windowed scoring of long recordings and live streams (mer score --window, mer stream)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mer_pipeline.cli import main
from mer_pipeline.exceptions import MediaNotFoundError, MerError, ParameterError
from mer_pipeline.media import MediaStream, list_devices, open_source
from mer_pipeline.workflows import train_and_save
from mer_pipeline.stream import (LiveScorer, forward_smooth, score_timeline, viterbi_smooth,
                                 window_features)

from .conftest import ffmpeg, make_tone_corpus, shared_path

SR = 16000


@pytest.fixture(scope="module")
def tone_model(tmp_path_factory):
    """A model trained on synthetic tones: low pitch = happy, high pitch = sad (egemaps)."""
    root = tmp_path_factory.mktemp("tones")
    data = make_tone_corpus(root / "data", actors=6, seconds=1.0)
    feats = root / "feats"
    assert main(["features", str(data), "--out", str(feats), "--audio-set", "egemaps",
                 "--n-jobs", "1", "--no-progress"]) == 0
    model = root / "model.joblib"
    train_and_save(feats, model, model="logreg", cv_folds=None, speaker_norm=False)
    return model


def _tone(freq, seconds, sr=SR, amp=0.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t)
    return (amp * env * np.sin(2 * np.pi * freq * t)
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def two_part_recording(tmp_path):
    """6 s of a low tone, then 6 s of a high one, as a FLAC file."""
    y = np.concatenate([_tone(190.0, 6.0), _tone(330.0, 6.0, seed=1)])
    path = tmp_path / "long_recording.flac"
    sf.write(str(path), y, SR)
    return path


def test_stream_reads_a_file_like_the_clip_decoder(video):
    from mer_pipeline.media import decode_clip

    path = video(seconds=3.0)
    clip = decode_clip(audio_path=path, video_path=path)
    with MediaStream(open_source(path), block_s=0.1) as stream:
        chunks = list(stream)
    audio = np.concatenate([c.data for c in chunks if c.kind == "audio"])
    frames = np.stack([c.data for c in chunks if c.kind == "video"])
    assert np.array_equal(audio, clip.audio)
    assert np.array_equal(frames, clip.frames)
    starts = [c.start_s for c in chunks if c.kind == "video"]
    assert starts == pytest.approx([k / 3.0 for k in range(len(starts))])
    assert stream.error is None


def test_open_source_finds_the_streams_and_names_missing_devices(video, tone, tmp_path):
    assert (open_source(video(audio=False)).audio, open_source(video(audio=False)).video) \
        == (False, True)
    src = open_source(tone(seconds=0.5))
    assert (src.audio, src.video, src.live) == (True, False, False)
    assert open_source(tone(seconds=0.5), realtime=True).input_args[0] == "-re"
    with pytest.raises(MediaNotFoundError, match="no such media file"):
        open_source(tmp_path / "absent.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MerError, match="cannot decode"):
        open_source(bad)
    with pytest.raises(ParameterError):
        open_source()
    devices = list_devices()
    if not devices["cameras"]:
        with pytest.raises(MediaNotFoundError, match=r"no such camera .*cameras found: none"):
            open_source(camera=7)
    if not devices["microphones"]:
        with pytest.raises(MediaNotFoundError, match="no microphone"):
            open_source(mic="default")


def test_window_features_match_whole_clip_features(tone):
    """A window over a whole clip has the clip's features; windows are placed as asked."""
    from mer_pipeline.audio import AudioFeatureExtractor

    path = tone(seconds=2.0, freq=250.0)
    task = AudioFeatureExtractor("egemaps")
    clip = task("c", {"audio_path": str(path)}).value
    with MediaStream(open_source(path)) as stream:
        wins = list(window_features(stream, {"audio": task}, window=2.0, hop=0.5))
    assert [(w.start_s, w.end_s) for w in wins] == [(0.0, 2.0)]
    assert np.allclose(wins[0].values["audio"].values, clip.values, rtol=1e-4, atol=1e-5)
    with MediaStream(open_source(path)) as stream:
        wins = list(window_features(stream, {"audio": task}, window=1.0, hop=0.25))
    assert [w.start_s for w in wins] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    with MediaStream(open_source(path)) as stream:  # shorter than a window: one over all
        wins = list(window_features(stream, {"audio": task}, window=5.0, hop=1.0))
    assert [(w.start_s, w.end_s) for w in wins] == [(0.0, 2.0)]
    with pytest.raises(ParameterError, match="hop"):
        next(window_features(MediaStream(open_source(path)), {"audio": task}, window=1.0,
                             hop=2.0))


def test_face_windows_on_a_real_clip_match_the_clip():
    """Frames are encoded once, and a window over the whole clip pools what the clip does."""
    from mer_pipeline.face import FaceFeatureExtractor

    path = shared_path("samples", "ravdess_av_reencoded", "Actor_01", "01-01-07-02-02-01-01.mp4")
    task = FaceFeatureExtractor()
    clip = task("c", {"video_path": str(path)}).value.row
    with MediaStream(open_source(path, audio=False)) as stream:
        wins = list(window_features(stream, {"face": task}, window=4.0, hop=1.0))
    assert len(wins) == 1 and "face" not in wins[0].errors
    row = wins[0].values["face"].row
    assert row["face_n_frames"] == clip["face_n_frames"] == 12
    assert row["face_fraction"] == pytest.approx(clip["face_fraction"])
    # the stream tracks the face across frames hop by hop as the clip does in one pass
    assert np.allclose(row.to_numpy(), clip.to_numpy(), rtol=1e-5, atol=1e-6)
    assert wins[0].box is not None and wins[0].box[2] > 50


def test_timeline_follows_a_change_of_emotion(tone_model, two_part_recording, tmp_path):
    out = tmp_path / "t" / "timeline.csv"
    timeline, failures = score_timeline(tone_model, [two_part_recording], window=2.0, hop=1.0,
                                        out=out, progress=False)
    assert len(failures) == 0
    assert list(timeline.columns[:4]) == ["clip_id", "start_s", "end_s", "predicted"]
    assert {"proba_happy", "proba_sad", "modalities", "smoothed"} <= set(timeline.columns)
    assert timeline["start_s"].tolist() == [float(k) for k in range(11)]
    assert (timeline["end_s"] - timeline["start_s"] == 2.0).all()
    first = timeline[timeline["end_s"] <= 6.0]
    last = timeline[timeline["start_s"] >= 6.0]
    assert (first["predicted"] == "happy").all() and (last["predicted"] == "sad").all()
    assert np.allclose(timeline[["proba_happy", "proba_sad"]].sum(axis=1), 1.0)
    assert set(timeline["modalities"]) == {"audio"}
    on_disk = pd.read_csv(out)
    assert len(on_disk) == len(timeline) and (out.parent / "failures.csv").is_file()
    # the causal variant (each window with its past only) agrees on so clear a signal
    causal, _ = score_timeline(tone_model, [two_part_recording], window=2.0, hop=1.0,
                               history=5, causal=True, progress=False)
    assert (causal["predicted"] == timeline["predicted"]).mean() >= 0.9


def test_timeline_speaker_batches_are_bounded(tone_model, two_part_recording, monkeypatch):
    """However long the recording, at most ``history`` windows are held and scored at once."""
    from mer_pipeline import stream

    sizes = []
    original = stream._WindowModel.predict

    def spy(self, rows, index):
        sizes.append(len(rows))
        return original(self, rows, index)

    monkeypatch.setattr(stream._WindowModel, "predict", spy)
    timeline, _ = score_timeline(tone_model, [two_part_recording], window=2.0, hop=1.0,
                                 history=4, progress=False)
    assert sizes == [4, 4, 3] and len(timeline) == 11  # a rest of 3 >= 4 / 2 stands alone
    sizes.clear()
    again, _ = score_timeline(tone_model, [two_part_recording], window=2.0, hop=1.0,
                              history=8, progress=False)
    assert sizes == [8, 8]  # a rest of 3 < 8 / 2: scored with the block's last 5 as context
    assert len(again) == 11 and again["start_s"].tolist() == timeline["start_s"].tolist()
    sizes.clear()
    score_timeline(tone_model, [two_part_recording], window=2.0, hop=1.0, history=20,
                   progress=False)
    assert sizes == [11]  # shorter than a block: one batch
    sizes.clear()
    score_timeline(tone_model, [two_part_recording], window=2.0, hop=1.0, history=3,
                   causal=True, progress=False)
    assert sizes == [1, 2, 3, 4] + [4] * 7  # each window with the 3 before it
    with pytest.raises(ParameterError, match="history"):
        score_timeline(tone_model, [two_part_recording], history=0, progress=False)


def test_timeline_keeps_going_past_bad_files_and_silence(tone_model, two_part_recording,
                                                         tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 2048)
    silent = tmp_path / "gap.wav"
    y = np.concatenate([_tone(190.0, 3.0), np.zeros(3 * SR, np.float32)])
    sf.write(str(silent), y, SR)
    timeline, failures = score_timeline(tone_model, [bad, silent, two_part_recording],
                                        window=1.0, hop=1.0, progress=False)
    assert failures["path"].tolist() == [str(bad)]
    gap = timeline[timeline["clip_id"] == "gap"]
    assert len(gap) == 6
    quiet = gap[gap["start_s"] >= 3.0]
    assert (quiet["predicted"] == "").all() and quiet["proba_happy"].isna().all()
    assert (quiet["modalities"] == "none").all() and quiet["note"].str.contains("silent").all()
    with pytest.raises(MerError, match="nothing to score"):
        score_timeline(tone_model, [bad], progress=False)


def test_smoothing_removes_isolated_flips():
    proba = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] + [[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 6)
    raw = np.argmax(proba, axis=1)
    path = viterbi_smooth(proba, hop=1.0, smooth=5.0)
    assert raw[4] == 1 and path[4] == 0          # a one-window flip is smoothed away
    assert (path[-5:] == 1).all()                # a lasting change is kept
    assert np.array_equal(viterbi_smooth(proba, smooth=0), raw)
    post = forward_smooth(proba, hop=1.0, smooth=5.0)
    assert np.allclose(post.sum(axis=1), 1.0) and np.argmax(post[4]) == 0
    nan = proba.copy()
    nan[2] = np.nan                              # a window without prediction: no evidence
    assert viterbi_smooth(nan)[2] == 0


def test_live_scorer_on_a_realtime_file_reports_latency(tone_model, two_part_recording):
    scorer = LiveScorer(tone_model, two_part_recording, realtime=True, window=2.0, hop=1.0,
                        history=10)
    t0 = time.monotonic()
    rows = list(scorer)
    took = time.monotonic() - t0
    assert len(rows) == 11 and took >= 10.0      # played at its own rate (12 s)
    assert rows[0]["predicted"] == "happy" and rows[-1]["predicted"] == "sad"
    lat = np.array([r["latency_s"] for r in rows])
    assert np.isfinite(lat).all() and (lat > -0.3).all() and lat.max() < 1.0
    assert {"smoothed", "modalities"} <= set(rows[0])


def test_live_scorer_stops_cleanly_midway(tone_model, two_part_recording):
    scorer = LiveScorer(tone_model, two_part_recording, realtime=True, window=1.0, hop=1.0)
    first = []
    for row in scorer:
        first.append(row)
        if len(first) == 2:
            break
    scorer.close()
    assert len(first) == 2
    assert scorer.stream.proc.poll() is not None  # ffmpeg is gone


def test_stream_from_a_pipe(tone_model, tmp_path):
    """``mer stream --source -``: another process writes the media to our standard input."""
    wav = tmp_path / "piped.wav"
    sf.write(str(wav), np.concatenate([_tone(190.0, 4.0), _tone(330.0, 4.0)]), SR)
    out = tmp_path / "live.csv"
    with open(wav, "rb") as fh:
        proc = subprocess.run([sys.executable, "-m", "mer_pipeline.cli", "stream", "--model",
                               str(tone_model), "--source", "-", "--window", "2", "--hop", "1",
                               "--out", str(out)], stdin=fh, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(out)
    assert len(rows) == 7 and rows["predicted"].iloc[0] == "happy"
    assert rows["predicted"].iloc[-1] == "sad"
    assert proc.stdout.count("\n") >= 7 and "happy" in proc.stdout


def test_cli_score_window_and_stream_errors(tone_model, two_part_recording, tmp_path, capsys):
    out = tmp_path / "timeline.csv"
    assert main(["score", "--model", str(tone_model), str(two_part_recording), "--window", "3",
                 "--hop", "1", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "10 windows" in text and out.is_file()
    timeline = pd.read_csv(out)
    assert len(timeline) == 10 and timeline["end_s"].max() == 12.0
    # a feature CSV has no time axis
    table = tone_model.parent / "feats" / "audio_features.csv"
    assert main(["score", "--model", str(tone_model), str(table), "--window", "3"]) == 1
    assert "feature table" in capsys.readouterr().err
    assert main(["score", "--model", str(tone_model), str(out), "--window", "3"]) == 1
    assert "media files or folders" in capsys.readouterr().err
    if not list_devices()["cameras"]:
        assert main(["stream", "--model", str(tone_model), "--camera", "3"]) == 1
        err = capsys.readouterr().err
        assert "no such camera" in err and err.count("\n") == 1


def test_show_needs_a_display_or_says_why(tone_model, two_part_recording, capsys):
    from mer_pipeline.stream import annotate_frame

    frame = np.zeros((120, 160, 3), np.uint8)
    drawn = annotate_frame(frame, {"predicted": "happy", "proba_happy": 0.8, "proba_sad": 0.2},
                           box=(40, 20, 60, 60))
    assert drawn.shape == frame.shape and drawn.any() and not frame.any()
    assert (drawn[20, 40:100] > 0).any()  # the box's top edge is drawn
    import cv2

    if "GUI:                           NONE" in cv2.getBuildInformation() or \
            not os.environ.get("DISPLAY"):
        assert main(["stream", "--model", str(tone_model), "--source",
                     str(two_part_recording), "--show"]) == 1
        err = capsys.readouterr().err
        assert "--show" in err and ("GUI" in err or "display" in err)


def test_ctrl_c_stops_the_stream_and_keeps_the_csv(tone_model, tmp_path):
    import signal

    # a minute of sound, played in real time: the Ctrl-C comes long before its end. The signal
    # is ignored while the stream starts (as for `mer stream ... &` from a shell, or a test
    # run started that way): mer stream still stops on it
    recording = tmp_path / "long_recording.flac"
    sf.write(str(recording), np.concatenate([_tone(190.0 + 20 * k, 6.0, seed=k)
                                             for k in range(10)]), SR)
    out = tmp_path / "live.csv"
    proc = subprocess.Popen([sys.executable, "-m", "mer_pipeline.cli", "stream", "--model",
                             str(tone_model), "--source", str(recording), "--realtime",
                             "--window", "1", "--hop", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines = []
    while len(lines) < 3:  # three windows decided, as they come
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        lines.append(line)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err
    rows = pd.read_csv(out)
    assert 3 <= len(rows) < 60 and rows["end_s"].is_monotonic_increasing


@pytest.mark.skipif(shutil.which("Xvfb") is None,
                    reason="Xvfb is not installed here (no virtual display to show a window in)")
def test_show_under_a_virtual_display(tone_model, video, tmp_path):  # pragma: no cover
    import cv2

    if "GUI:                           NONE" in cv2.getBuildInformation():
        pytest.skip("this OpenCV (opencv-python-headless) has no GUI to open a window with")
    display = ":97"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24"])
    try:
        time.sleep(1.0)
        env = dict(os.environ, DISPLAY=display)
        proc = subprocess.Popen([sys.executable, "-m", "mer_pipeline.cli", "stream", "--model",
                                 str(tone_model), "--source", str(video(seconds=6.0)),
                                 "--realtime", "--show", "--window", "1"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4.0)
        shot = tmp_path / "screen.png"  # a screenshot of the virtual display
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "x11grab",
                        "-i", display, "-frames:v", "1", str(shot)], env=env, check=True)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        pixels = cv2.imread(str(shot))
        assert pixels is not None and pixels.max() > 0  # the window drew something
    finally:
        xvfb.terminate()


def test_iter_frames_gives_sample_frames_in_chunks(video, tone):
    from mer_pipeline.exceptions import NoVideoStreamError
    from mer_pipeline.media import decode_clip, iter_frames

    path = video(seconds=4.0)
    chunks = list(iter_frames(path, chunk=5))
    assert [len(c) for c in chunks] == [5, 5, 2]
    # the same frames as one ffmpeg pass writing both streams at once
    assert np.array_equal(np.concatenate(chunks), decode_clip(audio_path=path,
                                                              video_path=path).frames)
    with pytest.raises(NoVideoStreamError):
        list(iter_frames(tone(seconds=0.5)))


def test_whole_clip_face_features_do_not_depend_on_the_chunking(monkeypatch):
    """A long video's frames are encoded chunk by chunk; the pooled row is the same."""
    import mer_pipeline.media as media
    from mer_pipeline.face import FaceFeatureExtractor

    path = shared_path("samples", "ravdess_av_reencoded", "Actor_01", "01-01-07-02-02-01-01.mp4")
    task = FaceFeatureExtractor()
    whole = task("c", {"video_path": str(path)}).value
    original = media.iter_frames
    monkeypatch.setattr(media, "iter_frames", lambda p, **kw: original(p, **{**kw, "chunk": 5}))
    chunked = task("c", {"video_path": str(path)}).value
    assert [r["frame"] for r in chunked.records] == list(range(12))
    assert [r["time_s"] for r in chunked.records] == [r["time_s"] for r in whole.records]
    assert np.array_equal(chunked.frames.frame, whole.frames.frame)
    # the face is tracked across chunks as in one pass: the same crops, the same row
    assert np.allclose(chunked.values, whole.values, rtol=1e-5, atol=1e-6)


def test_an_enrolled_speakers_first_windows_use_the_profile(tmp_path, two_part_recording):
    """A causal stream's first window has no history: with the speaker enrolled it gets the
    profile's statistics; once the history is a batch, the batch rule as before."""
    from mer_pipeline.workflows import enroll_inputs

    data = make_tone_corpus(tmp_path / "data", actors=6, seconds=1.0)
    feats = tmp_path / "feats"
    assert main(["features", str(data), "--out", str(feats), "--audio-set", "egemaps",
                 "--n-jobs", "1", "--no-progress"]) == 0
    model = tmp_path / "model.joblib"
    train_and_save(feats, model, model="logreg", cv_folds=None, adaptation="switch",
                   min_speaker_clips=3)
    refs = sorted((data / "Actor_01").glob("*.wav"))
    _, path, _, summary = enroll_inputs(model, refs, "reader", tmp_path / "speakers",
                                        n_jobs=1, progress=False)
    assert summary["weight"] > 0 and summary["emotions"] == {"happy": 2, "sad": 2}
    kw = dict(window=2.0, hop=1.0, history=5, causal=True, progress=False)
    plain, _ = score_timeline(model, [two_part_recording], **kw)
    enrolled, _ = score_timeline(model, [two_part_recording], speakers=tmp_path / "speakers",
                                 speaker="reader", **kw)
    probas = ["proba_happy", "proba_sad"]
    assert not np.allclose(plain[probas].iloc[:2], enrolled[probas].iloc[:2])
    assert np.allclose(plain[probas].iloc[3:], enrolled[probas].iloc[3:])
    with pytest.raises(ParameterError, match="--speaker"):
        score_timeline(model, [two_part_recording], speakers=tmp_path / "speakers", **kw)
