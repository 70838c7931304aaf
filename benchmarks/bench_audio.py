"""Audio benchmark: extraction cost of each feature set and the accuracy table.

Run with ``make bench-audio`` (or ``python benchmarks/bench_audio.py --data DIR``).
Writes ``audio.md`` (the tables) and ``audio.json`` (the raw figures) to --out.

What it measures, and how:

- Extraction cost: for each feature set, the same ``--speed-clips`` clips are
  decoded and featurised in this one process, one clip after another
  (BLAS/OpenMP limited to one thread), timing CPU seconds (``process_time``)
  and wall seconds per clip; the real-time factor is audio seconds per
  processing second. Then each set over the same ``--throughput-clips`` clips
  with ``--n-jobs`` workers (cache off) gives the parallel throughput in clips/s.
- Accuracy: features of every clip (through the package's cached
  ``extract_features``), then actor-grouped 5-fold cross-validation
  (StratifiedGroupKFold, no actor in two folds, every fitted step inside the
  folds) of each configuration; the headline configuration is repeated over
  three fold-assignment seeds, and its optimistic random clip split is shown
  beside it. The headline rows (the package default, whisper, and the classical
  set it replaced) are also scored with each test clip alone (``single_clip``: no
  statistics of its speaker, what one clip of a new speaker gets).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mer_pipeline import _schema, discover  # noqa: E402
from mer_pipeline.audio import DEFAULT_SET, AudioFeatureExtractor, resolve_set  # noqa: E402
from mer_pipeline.ensemble import EmotionClassifier  # noqa: E402
from mer_pipeline.evaluation import cross_validate_model  # noqa: E402
from mer_pipeline.features import extract_features, load_features  # noqa: E402
from mer_pipeline.parallel import map_clips  # noqa: E402

SPEED_SETS = ["seed45", "egemaps", "compare", "librosa", "pitch", "classical", "whisper"]


def speed(clips, n_clips: int) -> list[dict]:
    from threadpoolctl import threadpool_limits

    sample = clips.iloc[np.linspace(0, len(clips) - 1, n_clips).astype(int)]
    import torch

    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the whisper set's torch ops: one thread like the rest
    with threadpool_limits(1):
        for name in SPEED_SETS:
            task = AudioFeatureExtractor(name)
            task("warm-up", sample.iloc[0].to_dict())  # imports, openSMILE config parsing
            cpu0, wall0 = time.process_time(), time.perf_counter()
            audio_s = 0.0
            for clip_id, row in sample.iterrows():
                out = task(clip_id, row.to_dict())
                assert out.value is not None, out.failures
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            import soundfile as sf

            audio_s = sum(sf.info(p).duration for p in sample["audio_path"])
            rows.append({"set": name, "parts": "+".join(resolve_set(name)),
                         "n_features": int(len(out.value.names)), "clips": len(sample),
                         "cpu_ms_per_clip": 1000 * cpu / len(sample),
                         "wall_ms_per_clip": 1000 * wall / len(sample),
                         "mean_clip_s": audio_s / len(sample),
                         "realtime_factor": audio_s / cpu})
            print(f"speed {name}: {rows[-1]['cpu_ms_per_clip']:.1f} ms CPU/clip", flush=True)
    torch.set_num_threads(threads)
    return rows


def throughput(clips, n_jobs: int, n_clips: int) -> list[dict]:
    """Each set over the same clips with n_jobs workers, cache off (pool warmed first)."""
    sample = clips.iloc[np.linspace(0, len(clips) - 1, n_clips).astype(int)]
    map_clips(AudioFeatureExtractor("seed45"), sample.iloc[:8], n_jobs=n_jobs, progress=False)
    rows = []
    for name in SPEED_SETS:
        t0 = time.perf_counter()
        run = map_clips(AudioFeatureExtractor(name), sample, cache_dir=None, n_jobs=n_jobs,
                        progress=False)
        wall = time.perf_counter() - t0
        rows.append({"set": name, "clips": len(sample), "n_jobs": n_jobs, "cpus": os.cpu_count(),
                     "wall_s": wall, "clips_per_s": len(sample) / wall,
                     "failures": int(len(run.failures))})
        print(f"throughput {name}: {rows[-1]['clips_per_s']:.1f} clips/s", flush=True)
    return rows


CONFIGS = [
    # name, feature set, model kwargs, fold seeds
    ("classical (egemaps+compare+librosa), blend, speaker norm (the default before whisper)",
     "classical", dict(model="blend"), [0, 1, 2]),
    ("whisper, blend, NO speaker norm", "whisper", dict(model="blend", speaker_norm=False),
     [0, 1, 2]),
    ("classical, blend, NO speaker norm", "classical", dict(model="blend", speaker_norm=False),
     [0]),
    ("whisper + classical, blend, speaker norm", "whisper+classical", dict(model="blend"), [0]),
    ("whisper, ANOVA top 1,000 (select_k), speaker norm", "whisper",
     dict(model="blend", block_k=()), [0]),
    ("whisper, stacking SVC+RF+XGB -> SVC (design), speaker norm", "whisper",
     dict(model="stacking"), [0]),
    ("seed45, SVC, no speaker norm (the seed recipe)", "seed45",
     dict(model="svc", speaker_norm=False, pca_components=None), [0]),
    ("seed45, blend, speaker norm", "seed45", dict(model="blend"), [0]),
    ("egemaps, blend, speaker norm", "egemaps", dict(model="blend"), [0]),
    ("egemaps+compare, blend, speaker norm", "egemaps+compare", dict(model="blend"), [0]),
    ("classical + pitch (pYIN), blend, speaker norm", "classical+pitch", dict(model="blend"),
     [0]),
    ("classical, single logreg (all features), speaker norm", "classical",
     dict(model="logreg"), [0]),
    ("classical, SVC after PCA-300, speaker norm", "classical", dict(model="svc"), [0]),
    ("classical, stacking SVC+RF+XGB -> SVC (design), speaker norm", "classical",
     dict(model="stacking"), [0]),
    ("classical, stacking + linear block members, speaker norm", "classical",
     dict(model="stacking", stack_linear=True), [0]),
]
HEADLINE = ("whisper, blend, speaker norm (the package default)", "whisper",
            dict(model="blend"), [0, 1, 2])
#: rows also scored one clip at a time
SINGLE_CLIP = {HEADLINE[0], CONFIGS[0][0]}


def columns_of(tables, feature_set):
    """The joined table restricted to a set's columns (``classical``, ``a+b`` expand)."""
    parts = set(resolve_set(feature_set.replace("classical", "egemaps+compare+librosa")))
    table = tables["all"]
    keep = [c for c in table.columns if not _schema.is_feature(c)
            or _schema.feature_set_of(c) in parts]
    return table[keep]


def accuracy(tables, n_jobs, quick):
    rows = []
    configs = [HEADLINE] + (CONFIGS[:3] if quick else CONFIGS)
    for name, fset, kw, seeds in configs:
        table = columns_of(tables, fset)
        single = name in SINGLE_CLIP
        presentations = ("balanced_batch", "single_clip") if single else ("balanced_batch",)
        accs, f1s, ones, t0 = [], [], [], time.perf_counter()
        for seed in seeds:
            r = cross_validate_model(EmotionClassifier(random_state=0, **kw), table,
                                     table["emotion"], groups=table["group"], protocol="actor",
                                     folds=5, seed=seed, n_jobs=n_jobs,
                                     presentations=presentations)
            accs.append(r.accuracy)
            f1s.append(r.macro_f1)
            if single:
                ones.append(r.presentations["single_clip"].accuracy)
        row = {"config": name, "features": len(_schema.feature_columns(table)),
               "protocol": "actor-grouped 5-fold", "seeds": seeds,
               "accuracy": float(np.mean(accs)), "accuracy_sd": float(np.std(accs)),
               "accuracy_per_seed": accs, "macro_f1": float(np.mean(f1s)),
               "single_clip": float(np.mean(ones)) if ones else None,
               "cv_wall_s": (time.perf_counter() - t0) / len(seeds)}
        if name == HEADLINE[0]:
            rnd = cross_validate_model(EmotionClassifier(random_state=0, **kw), table,
                                       table["emotion"], protocol="random", folds=5, seed=0,
                                       n_jobs=n_jobs)
            row["random_split_accuracy"] = rnd.accuracy
        rows.append(row)
        print(f"accuracy {name}: {row['accuracy']:.4f} {np.round(accs, 4)}"
              + (f", single clip {row['single_clip']:.4f}" if ones else ""), flush=True)
    return rows


def markdown(speed_rows, tput, acc_rows, meta) -> str:
    lines = [f"# Audio benchmark ({meta['date']})", "",
             f"Machine: {meta['machine']}. Data: {meta['data']} ({meta['clips']} clips, "
             f"{meta['actors']} actors).", "",
             "## Extraction cost (one process, one thread, same clips for every set)", "",
             "| set | features | CPU ms / clip | wall ms / clip | x real time |",
             "|---|---:|---:|---:|---:|"]
    for r in speed_rows:
        label = r["set"] if r["set"] == r["parts"] else f"{r['set']} ({r['parts']})"
        lines.append(f"| {label} | {r['n_features']} | "
                     f"{r['cpu_ms_per_clip']:.1f} | {r['wall_ms_per_clip']:.1f} | "
                     f"{r['realtime_factor']:.0f} |")
    lines += ["", f"Mean clip length {speed_rows[0]['mean_clip_s']:.2f} s, "
                  f"{speed_rows[0]['clips']} clips per set.", ""]
    if tput:
        lines += [f"Throughput with n_jobs={tput[0]['n_jobs']} ({tput[0]['cpus']} CPUs, cache off, "
                  f"the same {tput[0]['clips']} clips for every set):", "",
                  "| set | clips/s | wall s |", "|---|---:|---:|"]
        lines += [f"| {r['set']} | {r['clips_per_s']:.1f} | {r['wall_s']:.1f} |" for r in tput]
        lines.append("")
    lines += ["## Accuracy (actor-grouped 5-fold CV: no actor in train and test)"
              + (f", run {meta['accuracy_date']}" if meta.get("accuracy_date") else ""), "",
              "| configuration | features | accuracy (balanced batch) | single clip | macro-F1 "
              "| CV wall s |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in acc_rows:
        acc = f"{100 * r['accuracy']:.1f}%"
        if len(r["seeds"]) > 1:
            acc += f" ± {100 * r['accuracy_sd']:.1f} ({len(r['seeds'])} fold seeds: " + \
                " / ".join(f"{100 * a:.1f}" for a in r["accuracy_per_seed"]) + ")"
        one = "" if r.get("single_clip") is None else f"{100 * r['single_clip']:.1f}%"
        if one == "" and "NO speaker norm" in r["config"]:
            one = f"{100 * r['accuracy']:.1f}% (same)"
        lines.append(f"| {r['config']} | {r['features']} | {acc} | {one} | "
                     f"{100 * r['macro_f1']:.1f}% | {r['cv_wall_s']:.0f} |")
    head = acc_rows[0]
    if "random_split_accuracy" in head:
        lines += ["", f"Beside it, the OPTIMISTIC random clip split (speakers leak into training) "
                      f"of the package default: {100 * head['random_split_accuracy']:.1f}%. "
                      "It is not an estimate for unseen speakers."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--work", type=Path, default=Path("features/bench_audio"),
                   help="feature tables and their cache (re-runs reuse them)")
    p.add_argument("--speed-clips", type=int, default=60)
    p.add_argument("--throughput-clips", type=int, default=240)
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--quick", action="store_true", help="fewer configurations")
    p.add_argument("--speed-only", action="store_true",
                   help="measure the extraction cost again; keep the accuracy rows of the last "
                        "run (audio.json)")
    args = p.parse_args(argv)
    if not args.data.exists():
        p.error(f"{args.data} not found: this benchmark needs the RAVDESS speech clips")
    scan = discover(args.data)
    clips = scan.clips[scan.clips["audio_path"] != ""]
    meta = {"date": time.strftime("%Y-%m-%d"), "data": str(args.data), "clips": len(clips),
            "actors": int(clips["group"].nunique()),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}"}
    speed_rows = speed(clips, args.speed_clips)
    tput = throughput(clips, args.n_jobs, args.throughput_clips)
    if args.speed_only:
        last = json.loads((args.out / "audio.json").read_text())
        meta["accuracy_date"] = last["meta"].get("accuracy_date", last["meta"]["date"])
        write(args.out, meta, speed_rows, tput, last["accuracy"])
        return
    parts = {}
    for fset in ("seed45", "classical", "pitch", "whisper"):
        work = args.work / fset
        extract_features(scan, work, audio_set=fset, n_jobs=args.n_jobs, progress=False)
        parts[fset] = load_features(work, sequences=False)
    joined = parts["whisper"]
    for fset in ("classical", "seed45", "pitch"):
        joined = joined.join(parts[fset][_schema.feature_columns(parts[fset])], how="inner")
    tables = {"all": joined}
    acc_rows = accuracy(tables, args.n_jobs, args.quick)
    write(args.out, meta, speed_rows, tput, acc_rows)


def write(out: Path, meta, speed_rows, tput, acc_rows) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "audio.json").write_text(json.dumps(
        {"meta": meta, "default_set": DEFAULT_SET, "speed": speed_rows, "throughput": tput,
         "accuracy": acc_rows}, indent=2))
    md = markdown(speed_rows, tput, acc_rows, meta)
    (out / "audio.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
