"""Audio-visual benchmark on real RAVDESS recordings: voice + face landmark tracks.

Run with ``make bench-av``. Writes ``av.md`` and ``av.json`` to --out, and the
features folder (--work) that ``mer train`` takes.

Data: the 1,200 shared RAVDESS speech recordings of actors 01-20
(../shared/data/ravdess_speech, audio) and the per-frame dlib landmark tracks of
the same recordings' videos (../shared/data/ravdess_landmarks): the two streams
of one real recording, joined by ``mer features AUDIO --face-tracks TRACKS``.
Unlike the paired benchmark (``make bench-fusion``), voice and face come from the
same person at the same moment.

Protocol: actor-grouped 5-fold CV (StratifiedGroupKFold by actor: no actor's
clips in both training and test), every fitted step refit inside each fold. The
headline rows run three fold assignments (seeds 0, 1, 2: mean and spread); the
slower rows run seed 0. Each fold's model is scored under two presentations of
its test clips (``mer_pipeline.evaluation.PRESENTATIONS``): ``balanced_batch``
(all of a test actor's clips together, so speaker normalisation uses the actor's
own statistics) and ``single_clip`` (each clip alone: no statistics of its
speaker, what one clip of a new speaker gets); the headline rows also under
``skewed_batch`` (each actor's clips in batches of 2-3 emotions) and ``enrolled``
(each actor enrolled with 4 of their neutral clips, which are not scored; each
other clip scored alone with that profile; the single-clip figure on the same
clips beside it). Models are the package's estimators with their defaults;
``--only`` picks rows.

The sequence models' rows run with ``--sequence`` (slow); rows not run keep their
figures from the last run that had them (``av.json``), marked with that run's date.

Also measured: extraction cost of one recording's track (ms of one core, the
track already parsed, as a worker sees it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mer_pipeline import _schema, discover  # noqa: E402
from mer_pipeline.ensemble import EmotionClassifier  # noqa: E402
from mer_pipeline.evaluation import PRESENTATIONS, cross_validate_model  # noqa: E402
from mer_pipeline.features import extract_features, load_features  # noqa: E402
from mer_pipeline.fusion import MultimodalEmotionClassifier  # noqa: E402

SEEDS = (0, 1, 2)


def view(table: pd.DataFrame, modalities, *, sequences=False, drop_sets=(), drop_suffix=()):
    """The table restricted to some modalities (and without some feature sets)."""
    keep = [c for c in table.columns if not _schema.is_feature(c)
            and c not in _schema.SEQUENCE_COLUMNS.values()]
    for m in modalities:
        keep += [c for c in _schema.feature_columns(table, m)
                 if _schema.feature_set_of(c) not in drop_sets
                 and not any(c.endswith(s) for s in drop_suffix)]
        if sequences and _schema.SEQUENCE_COLUMNS[m] in table.columns:
            keep.append(_schema.SEQUENCE_COLUMNS[m])
    return table[keep]


#: the sequence models' rows: slow on 2 cores (the audio GRU over 90 LLD frames a clip takes
#: about 17 minutes per CV), so they run with --sequence
SEQUENCE_ROWS = {"face tracks, sequence model (GRU)", "audio, sequence model (GRU over LLDs)",
                 "sequence model (GRU), both"}


def candidates(table):
    """(name, inputs, estimator, table view, seeds)."""
    both = ("audio", "face")
    return [
        ("audio only", "audio", EmotionClassifier(), view(table, ["audio"]), SEEDS),
        ("face tracks only (pooled)", "face", EmotionClassifier(), view(table, ["face"]), SEEDS),
        ("late (logreg meta)", "both", MultimodalEmotionClassifier(fusion="late"),
         view(table, both, sequences=True), SEEDS),
        ("audio only, no speaker norm", "audio", EmotionClassifier(speaker_norm=False),
         view(table, ["audio"]), (0,)),
        ("face tracks only, no speaker norm", "face", EmotionClassifier(speaker_norm=False),
         view(table, ["face"]), (0,)),
        ("late, no speaker norm", "both",
         MultimodalEmotionClassifier(fusion="late", speaker_norm=False),
         view(table, both, sequences=True), (0,)),
        ("face tracks, without dynamics", "face", EmotionClassifier(),
         view(table, ["face"], drop_sets=("dyn",)), (0,)),
        ("face tracks, without the thirds", "face", EmotionClassifier(),
         view(table, ["face"], drop_suffix=("_seg1_mean", "_seg2_mean", "_seg3_mean")), (0,)),
        ("face tracks, sequence model (GRU)", "face",
         MultimodalEmotionClassifier(fusion="sequence"), view(table, ["face"], sequences=True),
         (0,)),
        ("audio, sequence model (GRU over LLDs)", "audio",
         MultimodalEmotionClassifier(fusion="sequence"), view(table, ["audio"], sequences=True),
         (0,)),
        ("sequence model (GRU), both", "both", MultimodalEmotionClassifier(fusion="sequence"),
         view(table, both, sequences=True), (0,)),
        ("concat (blend head)", "both", MultimodalEmotionClassifier(fusion="concat"),
         view(table, both, sequences=True), (0,)),
        ("gated", "both", MultimodalEmotionClassifier(fusion="gated"),
         view(table, both, sequences=True), (0,)),
        ("cross_attention", "both", MultimodalEmotionClassifier(fusion="cross_attention"),
         view(table, both, sequences=True), (0,)),
    ]


def track_speed(tracks: Path, n: int = 60) -> dict:
    """ms of one core per recording's track (parsed already), and per file parse."""
    from threadpoolctl import threadpool_limits

    from mer_pipeline.face.tracks import TrackFeatureExtractor, read_track_file

    first = sorted(tracks.glob("*.csv.gz"))[0]
    with threadpool_limits(1):
        t0 = time.process_time()
        parsed = read_track_file(first)
        parse_ms = (time.process_time() - t0) * 1000
        task = TrackFeatureExtractor()
        items = list(parsed.values())[:n]
        task.features(items[0])  # warm-up
        t0 = time.process_time()
        for track in items:
            task.features(track)
        per = (time.process_time() - t0) * 1000 / len(items)
    return {"ms_per_track": round(per, 2), "recordings": len(items),
            "parse_ms_per_file": round(parse_ms, 1), "recordings_per_file": len(parsed),
            "frames_per_track_mean": round(float(np.mean([len(t.frame) for t in items])), 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--work", type=Path, default=Path("features/bench_av"))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--only", default="",
                   help="row names to run, comma-separated (semicolon-separated when a name "
                        "holds a comma); default all")
    p.add_argument("--sequence", action="store_true",
                   help="also the sequence models' rows (slow: see SEQUENCE_ROWS)")
    args = p.parse_args(argv)
    speech, tracks = args.shared / "ravdess_speech", args.shared / "ravdess_landmarks"
    if not speech.is_dir() or not tracks.is_dir():
        p.error(f"needs {speech} and {tracks}")
    t0 = time.perf_counter()
    extract_features(discover(speech), args.work, face_tracks=tracks, n_jobs=args.n_jobs,
                     progress=False)
    print(f"features in {time.perf_counter() - t0:.0f} s -> {args.work}", flush=True)
    table = load_features(args.work)
    y, groups = table["emotion"], table["group"]
    speed = track_speed(tracks)
    print(f"track extraction: {speed}", flush=True)
    rows = []
    only = [s.strip() for s in args.only.split(";" if ";" in args.only else ",") if s.strip()]
    for name, inputs, est, X, seeds in candidates(table):
        if (only and name not in only) or (name in SEQUENCE_ROWS and not args.sequence
                                            and name not in only):
            continue
        t0 = time.perf_counter()
        shown = list(PRESENTATIONS) if seeds == SEEDS else ["balanced_batch", "single_clip"]
        res = [cross_validate_model(est, X, y, groups=groups, protocol="actor",
                                    folds=args.folds, seed=seed, n_jobs=args.n_jobs,
                                    presentations=shown)
               for seed in seeds]
        bal = [r.accuracy for r in res]
        one = [r.presentations["single_clip"].accuracy for r in res]
        more = {}
        if "enrolled" in shown:
            more = {"skewed_batch": float(np.mean([r.presentations["skewed_batch"].accuracy
                                                   for r in res])),
                    "enrolled": float(np.mean([r.presentations["enrolled"].accuracy
                                               for r in res])),
                    "single_clip_enrolled_clips": float(np.mean([
                        r.to_dict()["presentations"]["enrolled"]["single_clip_same_clips"]
                        for r in res]))}
        rows.append({"model": name, "inputs": inputs, "seeds": list(seeds),
                     "date": time.strftime("%Y-%m-%d"),
                     "audio_set": (table.attrs.get("provenance") or {}).get("modalities", {})
                     .get("audio", {}).get("params", {}).get("feature_set"),
                     "features": len(_schema.feature_columns(X)),
                     "balanced_batch": float(np.mean(bal)), "balanced_batch_sd": float(
                         np.std(bal)), "balanced_per_seed": [round(a, 4) for a in bal],
                     "macro_f1": float(np.mean([r.macro_f1 for r in res])),
                     "single_clip": float(np.mean(one)), "single_per_seed": [round(a, 4)
                                                                             for a in one],
                     **more,
                     "cv_wall_s": round((time.perf_counter() - t0) / len(seeds), 1)})
        print(f"{name}: balanced {np.mean(bal):.4f} {np.round(bal, 4)}, single clip "
              f"{np.mean(one):.4f} ({rows[-1]['cv_wall_s']} s per CV)", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}",
            "clips": int(len(table)), "actors": int(table["actor"].nunique()),
            "clips_with_face": int(table[_schema.feature_columns(table, "face")].notna()
                                   .any(axis=1).sum()),
            "folds": args.folds, "track_speed": speed}
    args.out.mkdir(parents=True, exist_ok=True)
    previous = {}
    if (args.out / "av.json").is_file():  # keep the rows not re-run (e.g. the sequence ones)
        previous = {r["model"]: r for r in json.loads((args.out / "av.json").read_text())
                    ["results"]}
    merged = {**previous, **{r["model"]: r for r in rows}}
    order = [c[0] for c in candidates(table)]
    rows = [merged[n] for n in order if n in merged]
    (args.out / "av.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    md = markdown(rows, meta)
    (args.out / "av.md").write_text(md)
    print(md)


def markdown(rows, meta) -> str:
    single = max((r["balanced_batch"] for r in rows if r["inputs"] != "both"), default=np.nan)
    s = meta["track_speed"]
    lines = [
        "# Audio-visual benchmark: real RAVDESS recordings, voice + face landmark tracks "
        "(`make bench-av`)",
        "",
        f"{meta['date']}, {meta['machine']}. {meta['clips']} RAVDESS speech recordings of "
        f"{meta['actors']} actors (8 classes); the face is the recording's own video, as "
        f"per-frame dlib landmark tracks ({meta['clips_with_face']} recordings with a track). "
        "How: the docstring of `benchmarks/bench_av.py`.",
        "",
        f"Protocol: actor-grouped {meta['folds']}-fold CV (no actor in both train and test), "
        "every fitted step refit in each fold. `balanced batch`: each test actor's clips "
        "scored together (speaker normalisation uses the actor's own statistics); `single "
        "clip`: each clip scored alone (no statistics of its speaker). Rows with three seeds "
        "show the mean (and spread) over fold assignments 0, 1, 2; others seed 0.",
        "",
        "| model | inputs | features | balanced batch | single clip | macro-F1 | vs best "
        "single | seeds | CV wall (s) |",
        "|---|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        gain = "" if r["inputs"] != "both" else f"{100 * (r['balanced_batch'] - single):+.1f}"
        spread = f" ± {100 * r['balanced_batch_sd']:.1f}" if len(r["seeds"]) > 1 else ""
        lines.append(f"| {r['model']} | {r['inputs']} | {r['features']} | "
                     f"{100 * r['balanced_batch']:.1f} %{spread} | {100 * r['single_clip']:.1f} % "
                     f"| {100 * r['macro_f1']:.1f} % | {gain} | "
                     f"{','.join(map(str, r['seeds']))} | {r['cv_wall_s']} |")
    four = [r for r in rows if "enrolled" in r]
    if four:
        lines += ["", "The headline rows under every presentation (mean over the three seeds; "
                  "`skewed batch`: each actor's clips in batches of 2-3 emotions; `enrolled`: "
                  "each actor enrolled with 4 of their neutral clips, not scored, each other "
                  "clip scored alone with that profile, beside the single-clip figure on those "
                  "same clips):", "",
                  "| model | balanced batch | single clip | skewed batch | enrolled | single "
                  "clip, the enrolled clips |", "|---|---:|---:|---:|---:|---:|"]
        for r in four:
            lines.append(f"| {r['model']} | {100 * r['balanced_batch']:.1f} % | "
                         f"{100 * r['single_clip']:.1f} % | {100 * r['skewed_batch']:.1f} % | "
                         f"{100 * r['enrolled']:.1f} % | "
                         f"{100 * r['single_clip_enrolled_clips']:.1f} % |")
    lines += ["", f"Track extraction: {s['ms_per_track']} ms of one core per recording "
              f"({s['frames_per_track_mean']} frames on average; the file already parsed: "
              f"{s['parse_ms_per_file']} ms per file of {s['recordings_per_file']} "
              "recordings, once per worker)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
