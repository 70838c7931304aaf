"""Face benchmark: subject-grouped accuracy on the real face corpora, and speed per clip.

Run with ``make bench-face``. Writes ``face.md`` and ``face.json`` to --out.

What it measures, and how:

- Accuracy: face features of every image of CK+48 (981 images, 118 subjects)
  and JAFFE (213 images, 10 subjects) through the package's cached
  ``extract_features``; then the package's default classifier under
  subject-grouped CV (CK+48 5-fold StratifiedGroupKFold, JAFFE
  leave-one-subject-out), for each encoder alone and all together, with and
  without per-subject normalisation (a subject's own statistics from 10 of
  its images, the default; and, for all encoders together, from 20).
  ``vggface`` joins when its weights are at hand ($MER_VGGFACE_WEIGHTS or
  --vggface-weights). An ablation row runs
  the same default encoders on crops that are not eye-aligned
  (``FaceFeatureExtractor(align=False)`` through ``map_clips``).
- Speed: a 3.5 s 1280x720 H.264 clip made with ffmpeg from the real RAVDESS
  sample clip (so there is a face to find); per stage (decode at 3 fps,
  detect + crop, each encoder), the median wall time of --repeats runs in one
  process; then --clips copies through ``map_clips`` with --n-jobs workers
  (cache off) for seconds per clip on this machine's cores, against the
  decode-only floor measured the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mer_pipeline import _schema, discover  # noqa: E402
from mer_pipeline.ensemble import EmotionClassifier  # noqa: E402
from mer_pipeline.evaluation import cross_validate_model  # noqa: E402
from mer_pipeline.face import FRAME_ENCODERS, FaceFeatureExtractor, face_crops  # noqa: E402
from mer_pipeline.features import _to_table, extract_features, load_features  # noqa: E402
from mer_pipeline.media import ffmpeg_exe, sample_frames  # noqa: E402
from mer_pipeline.parallel import ClipOutcome, map_clips  # noqa: E402

ENCODERS = ["expression", "landmarks"]
CORPORA = [("CK+48", "ckplus48", 5), ("JAFFE", "jaffe", None)]  # None: leave-one-subject-out


def accuracy(shared: Path, work: Path, n_jobs: int, vggface_weights=None) -> list[dict]:
    encoders = ENCODERS + (["vggface"] if vggface_weights else [])
    rows = []
    for label, folder, folds in CORPORA:
        scan = discover(shared / "faces" / folder)
        out = work / folder
        _, run = extract_features(scan, out, modalities=["face"], face_encoders=encoders,
                                  vggface_weights=vggface_weights, n_jobs=n_jobs, progress=False)
        table = load_features(out, sequences=False)
        det = pd.read_csv(out / "face_detections.csv")
        coverage = {"detected": float((det["status"] == "detected").mean()),
                    "whole": float((det["status"] == "whole").mean()),
                    "aligned": float(det["aligned"].mean()), "failures": int(len(run.failures))}
        print(f"{label} crops: {coverage}", flush=True)
        # ablation: the default encoders on crops that are not eye-aligned
        plain = map_clips(FaceFeatureExtractor(tuple(ENCODERS), align=False),
                          scan.clips[scan.clips["video_path"] != ""], n_jobs=n_jobs,
                          cache_dir=out / ".cache", progress=False)
        tables = {"aligned": table, "not aligned": _to_table(plain.values, scan.clips)}
        k = folds or table["group"].nunique()
        # (encoders, crops, whether to add the subject-norm-from-20-images row)
        variants = ([([e], "aligned", False) for e in encoders]
                    + [(encoders, "aligned", True), (ENCODERS, "not aligned", False)])
        for encs, crops, from_20 in variants:
            t = tables[crops]
            meta = [c for c in t.columns if not _schema.is_feature(c)]
            prefixes = {FRAME_ENCODERS[e].prefix for e in encs}
            cols = meta + [c for c in _schema.feature_columns(t)
                           if _schema.feature_set_of(c) in prefixes]
            name = "+".join(encs)
            # subject norm: off; on (default: own statistics from 10 images of a subject);
            # on from 20 images (most CK+ subjects then fall back to the population's)
            norms = [0, 10] + ([20] if from_20 else [])
            for norm in norms:
                t0 = time.perf_counter()
                r = cross_validate_model(EmotionClassifier(speaker_norm=bool(norm),
                                                           min_speaker_clips=norm or 10), t[cols],
                                         t["emotion"], groups=t["group"],
                                         protocol="subject", folds=k, n_jobs=n_jobs)
                rows.append({"corpus": label, "images": int(len(table)),
                             "subjects": int(table["group"].nunique()),
                             "protocol": f"subject-grouped {k}-fold"
                                         + (" (leave-one-subject-out)" if folds is None else ""),
                             "encoders": name, "crops": crops, "subject_norm": norm,
                             "crop_status": coverage,
                             "accuracy": r.accuracy, "macro_f1": r.macro_f1,
                             "cv_wall_s": time.perf_counter() - t0})
                print(f"{label} {name} {crops} norm={norm}: {r.accuracy:.4f}", flush=True)
    return rows


def make_clip(shared: Path, path: Path) -> Path:
    src = shared / "samples" / "ravdess_av_reencoded" / "Actor_01" / "01-01-07-02-02-01-01.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
                    "-t", "3.5", "-vf", "scale=1280:720", "-c:v", "libx264", "-preset", "fast",
                    "-c:a", "aac", str(path)], check=True)
    return path


class DecodeOnly:
    """The floor: decoding frames at 3 fps and nothing else."""

    name = "decode-only"
    version = "1"

    def params(self):
        return {}

    def inputs(self, row):
        return []

    def __call__(self, clip_id, row):
        frames = sample_frames(row["video_path"], fps=3.0)
        return ClipOutcome(value=len(frames))


def speed(clip: Path, repeats: int, n_clips: int, n_jobs: int) -> dict:
    stages = {"decode": [], "detect+track+landmarks+align": []}
    stages.update({f"encode {e}": [] for e in ENCODERS})
    for _ in range(repeats + 1):  # the first run warms up (imports, model loading)
        t0 = time.perf_counter()
        frames = sample_frames(clip, fps=3.0)
        t1 = time.perf_counter()
        faces = face_crops(frames)
        t2 = time.perf_counter()
        times = {"decode": t1 - t0, "detect+track+landmarks+align": t2 - t1}
        for e in ENCODERS:
            t = time.perf_counter()
            FRAME_ENCODERS[e]().encode_faces(faces)
            times[f"encode {e}"] = time.perf_counter() - t
        for k, v in times.items():
            stages[k].append(v)
    per_stage = {k: float(np.median(v[1:])) for k, v in stages.items()}
    manifest = pd.DataFrame({"clip_id": [f"c{i}" for i in range(n_clips)],
                             "video_path": str(clip), "audio_path": ""}).set_index("clip_id")
    out = {"clip": "3.5 s, 1280x720, H.264, 3 fps -> "
                   f"{len(frames)} frames, faces in {faces.face_fraction:.0%}",
           "single_process_median_s": per_stage, "repeats": repeats}
    for name, task in (("decode-only floor", DecodeOnly()),
                       ("expression only", FaceFeatureExtractor(("expression",))),
                       ("default (expression+landmarks)", FaceFeatureExtractor(tuple(ENCODERS)))):
        map_clips(task, manifest.iloc[:2], n_jobs=n_jobs, progress=False)  # warm the workers
        t0 = time.perf_counter()
        run = map_clips(task, manifest, n_jobs=n_jobs, progress=False)
        wall = time.perf_counter() - t0
        assert len(run.failures) == 0, run.failures
        out[f"parallel: {name}"] = {"clips": n_clips, "n_jobs": n_jobs,
                                    "wall_s_per_clip": wall / n_clips}
        print(f"speed {name}: {wall / n_clips:.3f} s/clip", flush=True)
    return out


def markdown(acc, spd, meta) -> str:
    lines = [f"# Face benchmark ({meta['date']})", "",
             f"Machine: {meta['machine']}.", "",
             "## Accuracy (subject-grouped CV: no subject in train and test)", "",
             "| corpus | protocol | encoders | crops | subject norm | accuracy | macro-F1 |",
             "|---|---|---|---|---|---:|---:|"]
    for r in acc:
        lines.append(f"| {r['corpus']} ({r['images']} images, {r['subjects']} subjects) | "
                     f"{r['protocol']} | {r['encoders']} | {r['crops']} | "
                     f"{'>= %d images' % r['subject_norm'] if r['subject_norm'] else 'no'}"
                     f" | {100 * r['accuracy']:.1f}% | {100 * r['macro_f1']:.1f}% |")
    lines += ["", "Crops (face_detections.csv): share of images with a detected face, used "
              "whole (an existing crop), and eye-aligned:", ""]
    seen = set()
    for r in acc:
        if r["corpus"] not in seen:
            seen.add(r["corpus"])
            c = r["crop_status"]
            lines.append(f"- {r['corpus']}: detected {100 * c['detected']:.1f}%, whole "
                         f"{100 * c['whole']:.1f}%, aligned {100 * c['aligned']:.1f}%, "
                         f"failures {c['failures']}")
    lines += ["", "## Speed", "", f"Clip: {spd['clip']}.", "",
              f"One process, median of {spd['repeats']} runs:", "",
              "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in spd["single_process_median_s"].items()]
    lines += ["", "| through map_clips | clips | n_jobs | wall s per clip | x decode floor |",
              "|---|---:|---:|---:|---:|"]
    floor = spd["parallel: decode-only floor"]["wall_s_per_clip"]
    for k, v in spd.items():
        if k.startswith("parallel: "):
            lines.append(f"| {k[len('parallel: '):]} | {v['clips']} | {v['n_jobs']} | "
                         f"{v['wall_s_per_clip']:.3f} | {v['wall_s_per_clip'] / floor:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--work", type=Path, default=Path("features/bench_face"))
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--vggface-weights", default=os.environ.get("MER_VGGFACE_WEIGHTS"),
                   help="keras-vggface ResNet-50 .h5: adds the vggface encoder to the accuracy "
                        "table (default $MER_VGGFACE_WEIGHTS; without it vggface is left out)")
    args = p.parse_args(argv)
    if not (args.shared / "faces").is_dir():
        p.error(f"{args.shared}/faces not found: this benchmark needs the shared face corpora")
    meta = {"date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}"}
    with tempfile.TemporaryDirectory() as tmp:
        spd = speed(make_clip(args.shared, Path(tmp) / "clip720p.mp4"), args.repeats, args.clips,
                    args.n_jobs)
    acc = accuracy(args.shared, args.work, args.n_jobs, args.vggface_weights)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "face.json").write_text(json.dumps({"meta": meta, "accuracy": acc, "speed": spd},
                                                   indent=2))
    md = markdown(acc, spd, meta)
    (args.out / "face.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
