import numpy as np
import pandas as pd
import pytest

from mer_pipeline import discover
from mer_pipeline.media import extract_media
from mer_pipeline.parallel import ClipOutcome, map_clips

from .conftest import shared_path


class Square:
    """A toy task: reads a number from a text file; 'bad' content fails."""

    name = "square"
    version = "1"

    def __init__(self, power=2):
        self.power = power

    def params(self):
        return {"power": self.power}

    def inputs(self, row):
        return [row["audio_path"]]

    def __call__(self, clip_id, row):
        out = ClipOutcome()
        text = open(row["audio_path"]).read()
        if text == "bad":
            out.fail("square", row["audio_path"], ValueError("not a number"))
        else:
            out.value = float(text) ** self.power
        return out


def toy_manifest(tmp_path, values):
    rows = []
    for i, v in enumerate(values):
        p = tmp_path / f"n{i}.txt"
        p.write_text(str(v))
        rows.append({"clip_id": f"c{i}", "audio_path": str(p), "video_path": ""})
    return pd.DataFrame(rows).set_index("clip_id")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_cache_reuses_and_keys_on_content_and_params(tmp_path, n_jobs):
    man = toy_manifest(tmp_path, [1, 2, "bad", 4])
    cache = tmp_path / "cache"
    run1 = map_clips(Square(), man, cache_dir=cache, n_jobs=n_jobs, progress=False)
    assert run1.values == {"c0": 1.0, "c1": 4.0, "c3": 16.0}
    assert list(run1.failures["clip_id"]) == ["c2"] and run1.n_computed == 4
    run2 = map_clips(Square(), man, cache_dir=cache, n_jobs=n_jobs, progress=False)
    assert run2.n_computed == 0 and run2.values == run1.values
    assert list(run2.failures["clip_id"]) == ["c2"]  # cached failure is still reported
    (tmp_path / "n1.txt").write_text("3")            # content changed: only that clip redone
    run3 = map_clips(Square(), man, cache_dir=cache, n_jobs=n_jobs, progress=False)
    assert run3.n_computed == 1 and run3.values["c1"] == 9.0
    run4 = map_clips(Square(power=3), man, cache_dir=cache, n_jobs=n_jobs, progress=False)
    assert run4.n_computed == 4 and run4.values["c3"] == 64.0
    run5 = map_clips(Square(), man, cache_dir=cache, n_jobs=n_jobs, progress=False,
                     retry_failed=True)
    assert run5.n_computed == 1


def test_results_in_manifest_order_whatever_the_workers(tmp_path):
    man = toy_manifest(tmp_path, list(range(12)))
    a = map_clips(Square(), man, n_jobs=1, progress=False)
    b = map_clips(Square(), man, n_jobs=2, progress=False)
    assert list(a.values) == list(b.values) == list(man.index)


def test_dask_backend_on_a_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    man = toy_manifest(tmp_path, [1, 2, 3])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        run = map_clips(Square(), man, cache_dir=tmp_path / "c", backend="dask",
                        scheduler=cluster.scheduler_address, progress=False)
    assert run.values == {"c0": 1.0, "c1": 4.0, "c2": 9.0}
    again = map_clips(Square(), man, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert again.n_computed == 0  # the dask workers wrote the same cache


def test_mixed_corpus_extract_finishes_and_lists_failures(mixed_corpus, tmp_path):
    out = tmp_path / "out"
    scan = discover(mixed_corpus)
    table, run = extract_media(scan, out, n_jobs=2, progress=False)
    # every good clip written
    good_av = table.loc["ravdess_01-03-01-01-01-02"]
    assert good_av.n_frames == 6 and good_av.wav_path and (out / "audio").is_dir()
    assert table.loc["ravdess_01-07-01-01-01-02", "wav_path"].endswith(".wav")
    assert table.loc["ravdess_01-04-01-01-01-02", "n_frames"] == 6  # frames kept without audio
    failures = pd.read_csv(out / "failures.csv", keep_default_na=False)
    reasons = {(r.clip_id, r.stage): r.error for r in failures.itertuples()}
    assert "NoAudioStreamError" in reasons[("ravdess_01-04-01-01-01-02", "audio")]
    assert "CorruptMediaError" in reasons[("ravdess_01-05-01-01-01-02", "video")]
    assert "EmptyMediaError" in reasons[("ravdess_01-06-01-01-01-02", "audio")]
    bad_name = failures[failures.stage == "manifest"]
    assert len(bad_name) == 1 and bad_name.path.iloc[0].endswith("holiday_video.wav")
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    # a second run redoes nothing
    _, run2 = extract_media(scan, out, n_jobs=2, progress=False)
    assert run.n_computed == 5 and run2.n_computed == 0 and run2.n_cached == 5
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == mtimes
    assert len(pd.read_csv(out / "failures.csv")) == len(failures)
    # an output deleted by hand is written again
    (out / "audio" / "ravdess_01-07-01-01-01-02.wav").unlink()
    _, run3 = extract_media(scan, out, n_jobs=1, progress=False)
    assert run3.n_computed == 1
    assert (out / "audio" / "ravdess_01-07-01-01-01-02.wav").is_file()


@pytest.mark.shared
def test_extract_real_sample_clip(tmp_path):
    import soundfile as sf

    folder = shared_path("samples", "ravdess_av_reencoded")
    table, run = extract_media(discover(folder), tmp_path, progress=False)
    row = table.loc["ravdess_01-07-02-02-01-01"]
    assert row.n_frames == 12
    info = sf.info(row.wav_path)
    assert info.samplerate == 16000 and info.channels == 1 and abs(info.duration - 4.0) < 0.05
    assert np.load(row.frames_path).shape == (12, 480, 640, 3)
    assert len(run.failures) == 0
