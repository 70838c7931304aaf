"""Speaker adaptation benchmark: how the way a new speaker's clips arrive changes accuracy.

Run with ``make bench-adaptation`` (or ``python benchmarks/bench_adaptation.py --data DIR``).
Writes ``adaptation.md`` and ``adaptation.json`` to --out.

What it measures, and how: the package's default audio features (through the cached
``extract_features``) of every clip, then actor-grouped 5-fold cross-validation
(StratifiedGroupKFold, shuffle, seed 0; every fitted step inside the folds) of
``EmotionClassifier`` under each ``adaptation`` (and without speaker normalisation; for
``"auto"``, the rules its inner cross-validation chose in each fold are listed), each
fold's model scored on its test actors under every presentation of
:data:`mer_pipeline.evaluation.PRESENTATIONS` (the same fits): ``balanced_batch`` (each
actor's clips together), ``single_clip`` (each clip alone) and ``skewed_batch`` (each actor's
clips in batches of 2-3 emotions, the seeded rule of :func:`~mer_pipeline.evaluation.skewed_batches`)
and ``enrolled`` (each actor enrolled with 4 of their neutral clips, not scored; each other clip
scored alone with that profile; beside it the single-clip figure on the same clips). A second
table varies the references (``adaptation="switch"``, which ``auto`` chose in every fold here):
K neutral clips, or K clips of any emotion (labelled), drawn by
:func:`~mer_pipeline.evaluation.enrollment_references`. A third table holds the face default
(``expression`` + ``landmarks`` encoders, ``EmotionClassifier()``) on the shared JAFFE and CK+48
images under the same presentations, subject-grouped (JAFFE one fold per subject, enrolled from
4 neutral images where a subject has them, else all they have; CK+48 5 folds, enrolled from 4
images of any emotion, as it has no neutral ones).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mer_pipeline import discover  # noqa: E402
from mer_pipeline.audio import DEFAULT_SET  # noqa: E402
from mer_pipeline.ensemble import EmotionClassifier  # noqa: E402
from mer_pipeline.evaluation import PRESENTATIONS, cross_validate_model  # noqa: E402
from mer_pipeline.features import extract_features, load_features  # noqa: E402

CONFIGS = [
    ("adaptation='auto' (the default)", dict(adaptation="auto")),
    ("adaptation='batch' (before 0.4)", dict(adaptation="batch")),
    ("adaptation='switch'", dict(adaptation="switch")),
    ("adaptation='class_aware'", dict(adaptation="class_aware")),
    ("no speaker normalisation", dict(speaker_norm=False)),
]


#: Enrollment references of the second table: (clips per actor, emotion or None for any).
REFERENCES = [(4, "neutral"), (2, "neutral"), (4, None), (8, None), (16, None)]
#: Face corpora under the same presentations: (label, folder under faces/, folds (None: one
#: per subject), enrollment emotion (None: any: CK+48 has no neutral images)).
FACES = [("JAFFE", "jaffe", None, "neutral"), ("CK+48", "ckplus48", 5, None)]


def faces(shared: Path, work: Path, n_jobs: int, seed: int) -> list[dict]:
    """The face default (expression + landmarks encoders, aligned crops, EmotionClassifier's
    defaults) on the shared face corpora, subject-grouped, under every presentation."""
    rows = []
    for label, folder, folds, emotion in FACES:
        if not (shared / folder).is_dir():
            continue
        out = work / folder
        extract_features(discover(shared / folder), out, modalities=["face"], n_jobs=n_jobs,
                         progress=False)
        table = load_features(out, sequences=False)
        k = folds or table["group"].nunique()
        t0 = time.perf_counter()
        res = cross_validate_model(EmotionClassifier(), table, table["emotion"],
                                   groups=table["group"], protocol="subject", folds=k,
                                   seed=seed, n_jobs=n_jobs, presentations=list(PRESENTATIONS),
                                   enroll_emotion=emotion)
        d = res.to_dict()["presentations"]
        sizes = table["group"].value_counts()
        rows.append({"corpus": label, "images": int(len(table)),
                     "subjects": int(table["group"].nunique()),
                     "subjects_with_10": int((sizes >= 10).sum()), "folds": int(k),
                     "references": f"4 × {emotion or 'any'}",
                     **{name: d[name]["accuracy"] for name in PRESENTATIONS},
                     "single_clip_same_clips": d["enrolled"]["single_clip_same_clips"],
                     "enrolled_scored": d["enrolled"]["n_clips"],
                     "cv_wall_s": round(time.perf_counter() - t0, 1)})
        print(label, rows[-1], flush=True)
    return rows


def _train_rows(table, seed):
    from mer_pipeline.evaluation import _splits

    y = table["emotion"].astype(str).to_numpy()
    return [tr for tr, _ in _splits("actor", y, table["group"].astype(object).to_numpy(), 5, seed)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--work", type=Path, default=Path("features/bench_audio") / DEFAULT_SET,
                   help="features folder (shared with bench-audio's cache)")
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faces", type=Path, default=Path("../shared/data/faces"),
                   help="face corpora (JAFFE, CK+48) measured under the same presentations")
    p.add_argument("--faces-work", type=Path, default=Path("features/bench_adaptation"),
                   help="their features folder")
    args = p.parse_args(argv)
    scan = discover(args.data)
    extract_features(scan, args.work, audio_set=DEFAULT_SET, n_jobs=args.n_jobs, progress=False)
    table = load_features(args.work, sequences=False)
    rows = []
    for name, params in CONFIGS:
        t0 = time.perf_counter()
        res = cross_validate_model(EmotionClassifier(**params), table, table["emotion"],
                                   groups=table["group"], folds=5, seed=args.seed,
                                   n_jobs=args.n_jobs, presentations=list(PRESENTATIONS))
        chosen = ""
        if params.get("adaptation") == "auto":  # what the inner CV chose, fold by fold
            chosen = " / ".join(
                "{lone_clip}+{batch}".format(**EmotionClassifier(**params).fit(
                    table.iloc[tr], table["emotion"].iloc[tr]).adaptation_)
                for tr in _train_rows(table, args.seed))
        same = res.to_dict()["presentations"]["enrolled"]["single_clip_same_clips"]
        rows.append({"model": name, "params": params, "chosen": chosen,
                     **{k: round(r.accuracy, 4) for k, r in res.presentations.items()},
                     "single_clip_same_clips": same,
                     "cv_wall_s": round(time.perf_counter() - t0, 1)})
        print(name, {k: rows[-1][k] for k in PRESENTATIONS}, flush=True)
    enrol = []
    for k, emotion in REFERENCES:
        res = cross_validate_model(EmotionClassifier(adaptation="switch"), table,
                                   table["emotion"], groups=table["group"], folds=5,
                                   seed=args.seed, n_jobs=args.n_jobs,
                                   presentations=["enrolled", "single_clip", "balanced_batch"],
                                   enroll_clips=k, enroll_emotion=emotion)
        d = res.to_dict()["presentations"]
        balanced = res.presentations["balanced_batch"].predictions
        balanced = balanced.loc[res.predictions.index]
        enrol.append({"clips": k, "emotion": emotion or "any", "scored": d["enrolled"]["n_clips"],
                      "enrolled": d["enrolled"]["accuracy"],
                      "single_clip": d["enrolled"]["single_clip_same_clips"],
                      "balanced_batch": round(float(
                          (balanced["predicted"] == balanced["emotion"]).mean()), 4)})
        print("enrolled", enrol[-1], flush=True)
    face_rows = faces(args.faces, args.faces_work, args.n_jobs, args.seed)
    meta = {"date": time.strftime("%Y-%m-%d"), "data": str(args.data), "clips": len(table),
            "actors": int(table["group"].nunique()), "features": DEFAULT_SET, "seed": args.seed,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adaptation.json").write_text(json.dumps({"meta": meta, "rows": rows,
                                                          "enrollment": enrol,
                                                          "faces": face_rows}, indent=1))
    lines = [f"# Speaker adaptation benchmark (`make bench-adaptation`)", "",
             f"{meta['date']}, {meta['machine']}. {meta['clips']} clips of {meta['actors']} "
             f"actors, `{DEFAULT_SET}` features, actor-grouped 5-fold CV (fold seed "
             f"{args.seed}); the same fits scored under each presentation:", ""]
    lines += [f"- `{k}`: {v}" for k, v in PRESENTATIONS.items()]
    lines += ["", "| model | " + " | ".join(PRESENTATIONS)
              + " | single clip, the enrolled clips | CV wall (s) |",
              "|---|" + "---:|" * (len(PRESENTATIONS) + 2)]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{100 * r[k]:.1f} %" for k in PRESENTATIONS)
                     + f" | {100 * r['single_clip_same_clips']:.1f} % | {r['cv_wall_s']} |")
    lines += ["", "Rules `adaptation='auto'` chose (lone clip + batch), folds 1-5: "
              + next(r["chosen"] for r in rows if r["chosen"])]
    lines += ["", "Enrollment references (`adaptation='switch'`; each row on the clips left once "
              "the references are taken out: single clip and balanced batch on those same clips):",
              "", "| references per actor | clips scored | enrolled | single clip | "
              "balanced batch |", "|---|---:|---:|---:|---:|"]
    for e in enrol:
        lines.append(f"| {e['clips']} × {e['emotion']} | {e['scored']} | "
                     f"{100 * e['enrolled']:.1f} % | {100 * e['single_clip']:.1f} % | "
                     f"{100 * e['balanced_batch']:.1f} % |")
    if face_rows:
        lines += ["", "Faces (`expression` + `landmarks` encoders, aligned crops, "
                  "EmotionClassifier's defaults; subject-grouped folds; a subject's own "
                  "statistics need 10 of their images in the batch):", "",
                  "| corpus | subjects (with ≥ 10 images) | folds | " + " | ".join(PRESENTATIONS)
                  + " | enrolled from | single clip, the enrolled images | CV wall (s) |",
                  "|---|---:|---:|" + "---:|" * len(PRESENTATIONS) + "---|---:|---:|"]
        for r in face_rows:
            lines.append(f"| {r['corpus']} ({r['images']} images) | {r['subjects']} "
                         f"({r['subjects_with_10']}) | {r['folds']} | "
                         + " | ".join(f"{100 * r[k]:.1f} %" for k in PRESENTATIONS)
                         + f" | {r['references']} | {100 * r['single_clip_same_clips']:.1f} % | "
                         f"{r['cv_wall_s']} |")
    (args.out / "adaptation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
