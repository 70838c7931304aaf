"""Fusion benchmark on real signals: RAVDESS voices paired with JAFFE faces.

Run with ``make bench-fusion``. Writes ``fusion.md`` and ``fusion.json`` to --out,
and the paired feature folder (--work/paired) that ``mer train`` takes.

THIS IS A PAIRED BENCHMARK, NOT AUDIO-VISUAL DATA. No RAVDESS video is
available here, so each RAVDESS speech clip (real voice, ../shared/data/
ravdess_speech) is paired with a real face image of the same emotion from
JAFFE (../shared/data/faces/jaffe). The voice and the face of a pair come from
different people and carry independent evidence of the label, which is more
than the two streams of one real recording do (their errors are correlated):
read the fusion gain here as an upper bound on what real audio-visual clips
give.

The pairing rule (fixed, no randomness):

- calm is dropped (JAFFE has no calm); the 7 shared classes remain
  (1,040 clips of 20 actors);
- RAVDESS actor ``a`` (1-20) is mapped to the JAFFE subject number
  ``(a - 1) mod 10`` of the 10 subjects in sorted order (so actors 1 and 11
  share subject KA, …);
- the r-th clip (sorted by clip id) of actor ``a`` with emotion ``e`` gets the
  JAFFE image number ``r mod n`` (sorted by clip id) of that subject's ``n``
  images of emotion ``e``.

CV: StratifiedGroupKFold over the 10 JAFFE subjects (each group holds the
two actors mapped to one subject), 5 folds, so no actor and no face subject is
in both the training and the test clips of a fold. Speaker normalisation
uses the actor (the face images of an actor's clips are all one subject's).
Every model is the package's estimator, refit from scratch inside each fold.
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
from mer_pipeline.evaluation import cross_validate_model  # noqa: E402
from mer_pipeline.features import (  # noqa: E402
    AUDIO_FRAME_TABLE, FRAME_TABLE, extract_features, load_features, write_features)
from mer_pipeline.fusion import MultimodalEmotionClassifier  # noqa: E402

FACE_ENCODERS = ["expression", "landmarks"]


def build_paired(audio: pd.DataFrame, faces: pd.DataFrame) -> pd.DataFrame:
    """The paired table: RAVDESS audio rows (calm dropped) with a JAFFE face each."""
    audio = audio[audio["emotion"] != "calm"].sort_index()
    subjects = sorted(faces["group"].unique())
    faces = faces.sort_index()
    face_cols = (_schema.feature_columns(faces, "face")
                 + [c for c in _schema.BOOKKEEPING_COLUMNS["face"] if c in faces.columns]
                 + [_schema.SEQUENCE_COLUMNS["face"]])
    rows = []
    for (actor, emotion), clips in audio.groupby(["actor", "emotion"], sort=True):
        subject = subjects[(int(actor) - 1) % len(subjects)]
        pool = faces[(faces["group"] == subject) & (faces["emotion"] == emotion)]
        if pool.empty:
            raise SystemExit(f"no {emotion} image of {subject}")
        for r, clip_id in enumerate(sorted(clips.index)):
            face_id = pool.index[r % len(pool)]
            rows.append((clip_id, face_id, subject))
    pairs = pd.DataFrame(rows, columns=["clip_id", "face_id", "face_subject"]).set_index("clip_id")
    table = audio.loc[pairs.index].copy()
    face_part = faces.loc[pairs["face_id"], face_cols].set_index(pairs.index)
    table = pd.concat([table, face_part], axis=1)
    table["face_id"] = pairs["face_id"]
    table["face_subject"] = pairs["face_subject"]
    return table


def paired_features(ravdess: Path, jaffe: Path, work: Path, *, n_jobs=-1) -> pd.DataFrame:
    """Extract both corpora (cached) and write the paired folder ``work/paired``; its table."""
    for src, dst, kw in ((ravdess, "ravdess", {}),
                         (jaffe, "jaffe", {"modalities": ["face"],
                                           "face_encoders": FACE_ENCODERS})):
        extract_features(discover(src), work / dst, n_jobs=n_jobs, progress=False, **kw)
    audio, faces = load_features(work / "ravdess"), load_features(work / "jaffe")
    table = build_paired(audio, faces)
    names = {col: [_schema.strip_modality(c)
                   for c in _schema.feature_columns(pd.read_parquet(path))]
             for col, path in (("audio_frames", work / "ravdess" / AUDIO_FRAME_TABLE),
                               ("face_frames", work / "jaffe" / FRAME_TABLE))}
    # how each modality was extracted: the audio as in the RAVDESS folder, the face as JAFFE's
    provenance = {**audio.attrs["provenance"],
                  "modalities": {"audio": audio.attrs["provenance"]["modalities"]["audio"],
                                 "face": faces.attrs["provenance"]["modalities"]["face"]},
                  "corpus": {"paired": "RAVDESS speech x JAFFE faces (benchmarks/bench_fusion.py)",
                             "clips": int(len(table))}}
    write_features(table, work / "paired", frame_names=names, provenance=provenance)
    return table


def candidates(n_jobs):
    single = dict(speaker_norm=True)
    return [
        ("audio only", "audio", EmotionClassifier(**single)),
        ("face only", "face", EmotionClassifier(**single)),
        ("late (logreg meta)", "both", MultimodalEmotionClassifier(fusion="late")),
        ("late (MLP meta)", "both", MultimodalEmotionClassifier(fusion="late",
                                                                meta_learner="mlp")),
        ("concat (blend head)", "both", MultimodalEmotionClassifier(fusion="concat")),
        ("concat (design stacking)", "both", MultimodalEmotionClassifier(
            fusion="concat", estimator=EmotionClassifier(model="stacking", n_jobs=1))),
        ("gated", "both", MultimodalEmotionClassifier(fusion="gated")),
        ("cross_attention", "both", MultimodalEmotionClassifier(fusion="cross_attention")),
    ]


def columns(table, which):
    meta = [c for c in table.columns if not _schema.is_feature(c)]
    if which == "both":
        return list(table.columns)
    return meta + _schema.feature_columns(table, which)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--work", type=Path, default=Path("features/bench_fusion"))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--only", default="", help="comma-separated model names to run (default "
                   "all); their rows replace those of an earlier fusion.json in --out")
    args = p.parse_args(argv)
    ravdess, jaffe = args.shared / "ravdess_speech", args.shared / "faces" / "jaffe"
    if not ravdess.is_dir() or not jaffe.is_dir():
        p.error(f"needs {ravdess} and {jaffe}")
    table = paired_features(ravdess, jaffe, args.work, n_jobs=args.n_jobs)
    y, groups = table["emotion"], table["face_subject"]
    print(f"paired table: {len(table)} clips, {table['actor'].nunique()} actors, "
          f"{groups.nunique()} face subjects, {table['face_id'].nunique()} distinct images",
          flush=True)
    rows = []
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for name, which, est in candidates(args.n_jobs):
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        data = table[columns(table, which)]
        if which == "face":  # the face's identity is its JAFFE subject, not the voice's actor
            data = data.assign(group=table["face_subject"])
        r = cross_validate_model(est, data, y, groups=groups,
                                 protocol="subject", folds=args.folds, n_jobs=args.n_jobs)
        rows.append({"model": name, "inputs": which, "accuracy": r.accuracy,
                     "macro_f1": r.macro_f1,
                     "fold_accuracy": [round(float(f["accuracy"]), 4) for f in r.folds],
                     "cv_wall_s": round(time.perf_counter() - t0, 1)})
        print(f"{name}: {r.accuracy:.4f} (F1 {r.macro_f1:.4f}) in {rows[-1]['cv_wall_s']} s",
              flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}",
            "clips": int(len(table)), "actors": int(table["actor"].nunique()),
            "face_subjects": int(groups.nunique()),
            "distinct_face_images": int(table["face_id"].nunique()), "folds": args.folds}
    args.out.mkdir(parents=True, exist_ok=True)
    if only and (args.out / "fusion.json").is_file():  # --only: replace those rows, keep others
        new = {r["model"]: r for r in rows}
        old = json.loads((args.out / "fusion.json").read_text())["results"]
        rows = [new.pop(r["model"], r) for r in old] + list(new.values())
    (args.out / "fusion.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    md = markdown(rows, meta)
    (args.out / "fusion.md").write_text(md)
    print(md)


def markdown(rows, meta) -> str:
    single = max((r["accuracy"] for r in rows if r["inputs"] != "both"), default=np.nan)
    lines = [
        "# Fusion benchmark: RAVDESS voices paired with JAFFE faces (`make bench-fusion`)",
        "",
        f"{meta['date']}, {meta['machine']}. **Paired benchmark, not audio-visual recordings**: "
        f"each of {meta['clips']} RAVDESS speech clips ({meta['actors']} actors, calm dropped, "
        f"7 classes) is paired with a real JAFFE face image of the same emotion "
        f"({meta['distinct_face_images']} distinct images of {meta['face_subjects']} subjects) "
        "by the fixed rule in `benchmarks/bench_fusion.py`. Voice and face come from different "
        "people, so their evidence is independent: the fusion gain is an upper bound on what "
        "real clips give.",
        "",
        f"Protocol: {meta['folds']}-fold StratifiedGroupKFold grouped by face subject (each "
        "group = one JAFFE subject and the two RAVDESS actors mapped to it): no actor and no "
        "face subject crosses folds. Each model is refit inside every fold.",
        "",
        "| model | inputs | accuracy | macro-F1 | per fold | vs best single | CV wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = "" if r["inputs"] != "both" else f"{100 * (r['accuracy'] - single):+.1f}"
        folds = " / ".join(f"{100 * a:.1f}" for a in r["fold_accuracy"])
        lines.append(f"| {r['model']} | {r['inputs']} | {100 * r['accuracy']:.1f} % | "
                     f"{100 * r['macro_f1']:.1f} % | {folds} | {gain} | {r['cv_wall_s']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
