"""Ill-formed inputs and interrupted runs, in one place (as librosa's test_failures.py):
each test failed before its fix (the reliability issue's numbered items)."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mer_pipeline import FeatureTableError, MerError, ParameterError, discover, load_features
from mer_pipeline.cli import main
from mer_pipeline.features import extract_features
from mer_pipeline.media import sample_frames

from .conftest import make_tone
from .test_models import synthetic_table

RUN = ["--n-jobs", "1", "--no-progress"]


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


# 1. outputs written atomically: a run killed at any moment leaves old or new files, and a
#    re-run gives byte-identical outputs
def test_killed_runs_resume_to_byte_identical_outputs(tmp_path, tone_corpus):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    cmd = [sys.executable, "-m", "mer_pipeline.cli", "features", str(tone_corpus),
           "--audio-set", "egemaps", "--n-jobs", "1", "--no-progress"]
    subprocess.run(cmd + ["--out", str(clean)], check=True, capture_output=True)
    rng = np.random.default_rng(0)
    for delay in rng.uniform(1.0, 6.0, 4):  # kill at random points, imports to writing
        proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for table in killed.glob("*.csv"):  # whatever is there is whole
            pd.read_csv(table)
    subprocess.run(cmd + ["--out", str(killed)], check=True, capture_output=True)
    assert _digests(killed) == _digests(clean)


def test_a_truncated_table_is_refused(tmp_path, tone_corpus):
    out = tmp_path / "f"
    extract_features(discover(tone_corpus), out, audio_set="egemaps", n_jobs=1, progress=False)
    lines = (out / "audio_features.csv").read_text().splitlines(keepends=True)
    (out / "audio_features.csv").write_text("".join(lines[:8]))
    with pytest.raises(FeatureTableError, match="has 7 rows but the run .* recorded 20"):
        load_features(out)


# 3. a run that finds no clips touches nothing
def test_no_clips_found_fails_and_touches_nothing(tmp_path, tone_corpus, capsys):
    out = tmp_path / "f"
    assert main(["features", str(tone_corpus), "--audio-set", "egemaps", "--out", str(out),
                 *RUN]) == 0
    before = _digests(out)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no media here")
    assert main(["features", str(empty), "--out", str(out), *RUN]) == 1
    assert "no clips found" in capsys.readouterr().err
    assert _digests(out) == before


# 4. EXIF orientation, 5. 16-bit PNGs
def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :40] = 255
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW" as phones write it
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert sample_frames(tmp_path / "phone.jpg").shape == (1, 80, 40, 3)


def test_16_bit_png_is_scaled_not_white(tmp_path):
    grey = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    frame = sample_frames(tmp_path / "g16.png")[0]
    assert frame.min() == 0 and frame.max() == 255 and 120 < frame.mean() < 135


# 6. distinct file names keep distinct, stable clip ids
def test_distinct_names_never_collapse(tmp_path):
    for name in ("怒り", "悲しい", "Ärger", "rger", "a b", "a_b"):
        make_tone(tmp_path / "data" / "happy" / f"{name}.wav", seconds=0.3)
    scan = discover(tmp_path / "data")
    assert len(scan.clips) == 6 and scan.unparsed.empty
    ids = sorted(scan.clips.index)
    assert "data_happy_怒り" in ids and "data_happy_ärger" in ids
    assert sorted(discover(tmp_path / "data").clips.index) == ids  # stable across runs


# 7. symbolic links to folders are followed, loops guarded
def test_symlinked_folders_are_followed_once(tmp_path):
    real = tmp_path / "elsewhere" / "Actor_03"
    make_tone(real / "03-01-03-01-01-01-03.wav", seconds=0.3)
    root = tmp_path / "data"
    make_tone(root / "Actor_01" / "03-01-03-01-01-01-01.wav", seconds=0.3)
    os.symlink(real, root / "Actor_03")
    os.symlink(root, root / "Actor_01" / "loop")  # a loop back to the top
    scan = discover(root)
    assert sorted(scan.clips["actor"]) == ["01", "03"]


# 8. clips too short for the features are a typed failure with the minimum stated
def test_too_short_clip_is_a_typed_failure(tmp_path):
    make_tone(tmp_path / "d" / "Actor_01" / "03-01-03-01-01-01-01.wav", seconds=0.05)
    make_tone(tmp_path / "d" / "Actor_01" / "03-01-04-01-01-01-01.wav", seconds=0.5)
    _, run = extract_features(discover(tmp_path / "d"), tmp_path / "f", audio_set="egemaps",
                              n_jobs=1, progress=False)
    row = run.failures.iloc[0]
    assert len(run.failures) == 1 and row["error"].startswith("TooShortError")
    assert "0.050 s, at least 0.1 s needed" in row["error"]


# 9. cache entries are checked: a flipped byte is recomputed, not served
def test_damaged_cache_entry_is_recomputed(tmp_path, tone_corpus):
    cache = tmp_path / "cache"
    kw = dict(audio_set="egemaps", n_jobs=1, progress=False, cache_dir=cache)
    extract_features(discover(tone_corpus), tmp_path / "a", **kw)
    good = pd.read_csv(tmp_path / "a" / "audio_features.csv")
    entry = sorted(cache.rglob("*.entry"))[0]
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the pickled arrays
    entry.write_bytes(bytes(data))
    _, run = extract_features(discover(tone_corpus), tmp_path / "b", **kw)
    assert run.n_computed == 1 and run.n_cached == 19
    assert pd.read_csv(tmp_path / "b" / "audio_features.csv").equals(good)


# 10. one absurd value moves no other clip; 11. inf is missing, per clip
def test_absurd_and_infinite_values_stay_in_their_clip():
    from mer_pipeline import EmotionClassifier

    table = synthetic_table(n_speakers=6)
    train, test = table[table["group"] != "c:5"], table[table["group"] == "c:5"].copy()
    clf = EmotionClassifier().fit(train, train["emotion"])
    before = clf.predict_proba(test)
    missing = test.copy()
    missing.iloc[0, 2] = missing.iloc[1, 3] = np.nan
    test.iloc[0, 2] = 1e300
    test.iloc[1, 3] = np.inf
    after = clf.predict_proba(test)
    # each bad value counts exactly as a missing one (the other clips of that speaker
    # move only as much as one missing value moves them) and nothing swings
    assert np.allclose(after, clf.predict_proba(missing)) and np.isfinite(after).all()
    assert np.abs(after[2:] - before[2:]).max() < 0.05
    bad_train = train.copy()
    bad_train.iloc[0, 2] = np.inf
    bad_train.iloc[1, 2] = -1e300
    assert np.isfinite(EmotionClassifier().fit(bad_train, bad_train["emotion"])
                       .predict_proba(test)).all()
    # a small training set (the inner folds of adaptation="auto" fit on 2 or 3 speakers):
    # the bounds of what is absurd are not moved by the absurd cell itself
    import warnings

    small = bad_train[bad_train["group"].isin(["c:0", "c:1"])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow anywhere
        EmotionClassifier(adaptation="switch").fit(small, small["emotion"])


# 12. an unreachable Dask scheduler is a clear error, soon
def test_unreachable_dask_scheduler_is_a_clear_error(tmp_path, tone_corpus):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a free port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(MerError, match="cannot reach the Dask scheduler"):
        extract_features(discover(tone_corpus), tmp_path / "f", audio_set="egemaps",
                         backend="dask", scheduler=f"tcp://127.0.0.1:{port}", progress=False)
    assert time.perf_counter() - t0 < 60


# 13. paths are checked before the work
def test_out_paths_are_checked_before_the_work(tmp_path, tone_corpus, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["features", str(tone_corpus), "--out", str(afile), *RUN]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    feats, model = tmp_path / "f", tmp_path / "m.joblib"
    assert main(["features", str(tone_corpus), "--audio-set", "egemaps", "--out", str(feats),
                 *RUN]) == 0
    assert main(["train", "--features", str(feats), "--out", str(model), "--folds", "0"]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(model), str(feats), "--out", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err


# 16. an unlabelled listing can be scored; 20. labels the model does not know are not counted
def test_unlabelled_listing_scores_and_unknown_labels_are_set_apart(tmp_path, tone_corpus,
                                                                     capsys):
    feats, model = tmp_path / "f", tmp_path / "m.joblib"
    assert main(["features", str(tone_corpus), "--audio-set", "egemaps", "--out", str(feats),
                 *RUN]) == 0
    assert main(["train", "--features", str(feats), "--out", str(model), "--folds", "0"]) == 0
    clips = sorted(tone_corpus.rglob("*.wav"))[:3]
    listing = tmp_path / "to_score.csv"
    pd.DataFrame({"path": [str(c) for c in clips]}).to_csv(listing, index=False)
    out = tmp_path / "p" / "predictions.csv"
    assert main(["score", "--model", str(model), str(listing), "--out", str(out), *RUN]) == 0
    assert len(pd.read_csv(out)) == 3
    bored = tmp_path / "bored.csv"
    pd.DataFrame({"path": [str(c) for c in clips], "label": ["boredom", "happy", "sad"]}
                 ).to_csv(bored, index=False)
    capsys.readouterr()
    assert main(["score", "--model", str(model), str(bored), "--out", str(out), *RUN]) == 0
    text = capsys.readouterr().out
    assert "on the 2 clips whose names carry a label the model knows" in text
    assert "not counted: 1 clips labelled with classes the model does not know (boredom=1)" \
        in text


# 17. feature CSVs that are not what they seem
def test_feature_csv_without_clip_id_or_with_semicolons(tmp_path, tone_corpus, capsys):
    feats, model = tmp_path / "f", tmp_path / "m.joblib"
    assert main(["features", str(tone_corpus), "--audio-set", "egemaps", "--out", str(feats),
                 *RUN]) == 0
    assert main(["train", "--features", str(feats), "--out", str(model), "--folds", "0"]) == 0
    table = pd.read_csv(feats / "audio_features.csv")
    table.drop(columns=["clip_id"]).to_csv(tmp_path / "no_id.csv", index=False)
    table.to_csv(tmp_path / "semi.csv", index=False, sep=";")
    capsys.readouterr()
    assert main(["score", "--model", str(model), str(tmp_path / "no_id.csv")]) == 1
    assert "no clip_id column" in capsys.readouterr().err
    assert main(["score", "--model", str(model), str(tmp_path / "semi.csv")]) == 1
    assert "separated by ';'" in capsys.readouterr().err


# 18. options that would be silently ignored or runs that did nothing
def test_ignored_options_and_empty_runs_say_so(tmp_path, tone_corpus, capsys):
    assert main(["features", str(tone_corpus), "--out", str(tmp_path / "f"),
                 "--scheduler", "tcp://127.0.0.1:1", *RUN]) == 1
    assert "is for backend='dask'" in capsys.readouterr().err
    assert main(["features", str(tone_corpus), "--modalities", "face",
                 "--out", str(tmp_path / "g"), *RUN]) == 1
    assert "face: 0 of 0 clips" in capsys.readouterr().out
    broken = tmp_path / "broken" / "Actor_01"
    broken.mkdir(parents=True)
    (broken / "03-01-03-01-01-01-01.wav").write_bytes(b"RIFF garbage")
    assert main(["extract", str(tmp_path / "broken"), "--out", str(tmp_path / "x"), *RUN]) == 1
    assert "every clip failed" in capsys.readouterr().err


# 19. runtime knobs never change results
def test_worker_count_never_changes_the_features(tmp_path, tone_corpus):
    outs = []
    for n_jobs in (1, 2):
        out = tmp_path / f"n{n_jobs}"
        extract_features(discover(tone_corpus), out, audio_set="librosa", n_jobs=n_jobs,
                         progress=False, cache_dir=tmp_path / f"cache{n_jobs}")
        outs.append((out / "audio_features.csv").read_bytes())
    assert outs[0] == outs[1]


# 20. more folds than actors names the way out; scoring caches in the user's cache folder
def test_folds_and_score_cache_location(tmp_path, tone_corpus, capsys, monkeypatch):
    feats = tmp_path / "f"
    assert main(["features", str(tone_corpus / "Actor_01"), "--audio-set", "egemaps",
                 "--out", str(feats), *RUN]) == 0
    capsys.readouterr()
    assert main(["train", "--features", str(feats), "--out", str(tmp_path / "m.joblib"),
                 "--folds", "5"]) == 1
    assert "--folds 0" in capsys.readouterr().err
    from mer_pipeline.parallel import default_cache_dir

    monkeypatch.delenv("MER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir(None) == tmp_path / "xdg" / "mer_pipeline"
    assert default_cache_dir(tmp_path / "out") == tmp_path / "out" / ".cache"


class _Slow:
    """A toy task that takes its time and says which process ran it."""

    name = "slow"
    version = "1"

    def __init__(self, seconds=0.3):
        self.seconds = seconds

    def params(self):
        return {"seconds": self.seconds}

    def inputs(self, row):
        return []

    def __call__(self, clip_id, row):
        from mer_pipeline.parallel import ClipOutcome

        time.sleep(self.seconds)
        return ClipOutcome(value=os.getpid())


# 12. losing every Dask worker mid-run is an error after a timeout, not a silent wait
def test_losing_every_dask_worker_is_an_error_not_a_hang(monkeypatch):
    distributed = pytest.importorskip("distributed")
    import threading

    from mer_pipeline import parallel

    monkeypatch.setattr(parallel, "DASK_NO_WORKERS_TIMEOUT", 2)
    man = pd.DataFrame({"clip_id": [f"c{i}" for i in range(40)], "audio_path": "",
                        "video_path": ""}).set_index("clip_id")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        threading.Timer(1.0, lambda: cluster.scale(0)).start()
        t0 = time.perf_counter()
        with pytest.raises(MerError, match="has had no worker for 2 s with .* clip.* left"):
            parallel.map_clips(_Slow(), man, backend="dask", scheduler=cluster.scheduler_address,
                               progress=False)
    assert time.perf_counter() - t0 < 30


# 14. a killed run leaves no worker processes behind
_KILLED_PARENT = """
import os, time
import pandas as pd
from mer_pipeline.parallel import ClipOutcome, map_clips

class Slow:
    name, version = "slow", "1"
    def params(self):
        return {}
    def inputs(self, row):
        return []
    def __call__(self, clip_id, row):
        time.sleep(0.05)
        return ClipOutcome(value=os.getpid())

if __name__ == "__main__":
    man = pd.DataFrame({"clip_id": [f"c{i}" for i in range(400)], "audio_path": "",
                        "video_path": ""}).set_index("clip_id")
    map_clips(Slow(), man, n_jobs=2, progress=False)
"""


def test_killed_run_leaves_no_worker_processes(tmp_path):
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "run.py"
    script.write_text(_KILLED_PARENT)
    proc = subprocess.Popen([sys.executable, str(script)])
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    workers = []
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = [c for c in parent.children(recursive=True)
                   if "resource_tracker" not in " ".join(c.cmdline())]
    assert len(workers) >= 2, "the run did not start its workers"
    time.sleep(1.0)  # workers busy with clips
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"orphaned workers: {[p.pid for p in alive]}"
