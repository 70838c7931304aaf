"""Cross-corpus benchmark: train on some corpora, score others (leave-one-corpus-out).

Run with ``make bench-corpora`` (or ``python benchmarks/bench_corpora.py --data DIR DIR ...``).
Writes ``corpora.md`` and ``corpora.json`` to --out.

What it measures, and how: the audio features of every clip of the given corpora (one
``extract_features`` run through the per-clip cache, ``--whisper-model`` choosing the
Whisper weights of the ``whisper`` set), then, for each configuration of
``EmotionClassifier``:

- the **train-on x test-on matrix**: a model fit on all clips of one corpus scores every
  other corpus on the classes the two share (the argmax taken over those; the test corpus's
  other clips left out); the diagonal is that corpus's own speaker-grouped 5-fold CV
  (StratifiedGroupKFold, shuffle, seed 0);
- **all but one -> one** (``mer evaluate --cv corpus``): a model fit on all other corpora
  scores the held-out one on the classes it shares with them, beside the held-out corpus's
  majority-class share and chance; the mean over held-out corpora is the headline;
- **RAVDESS with more corpora**: actor-grouped 5-fold CV on RAVDESS (same folds) with the
  other corpora added to every training fold, against RAVDESS alone: one model over all
  corpora, and ``CorpusExperts`` (that model mixed with an expert per corpus).

Configurations named ``+ augmented copies`` train on ``--augment`` perturbed copies of each
training clip as well (``mer features --augment``, :mod:`mer_pipeline.augment`): a copy
follows its clip into training folds and is never scored; the other configurations see the
recordings only.

Every configuration trains with label sets (``EmotionClassifier(corpus_col="corpus")``,
the default, :mod:`mer_pipeline.labelsets`): each training clip's linear members are fitted
over the classes its own corpus labels, never against an emotion that corpus lacks.

Every test clip is scored with its speaker's clips together (``balanced_batch``) and, for
the leave-one-corpus-out row, also alone (``single_clip``). Nothing is tuned to a corpus:
the configurations are the package's named options.
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

from mer_pipeline import __version__, discover  # noqa: E402
from mer_pipeline.audio import DEFAULT_SET  # noqa: E402
from mer_pipeline.augment import RECIPE, n_copies, originals, with_copies  # noqa: E402
from mer_pipeline.ensemble import EmotionClassifier  # noqa: E402
from mer_pipeline.evaluation import _splits, cross_validate_model  # noqa: E402
from mer_pipeline.experts import CorpusExperts  # noqa: E402
from mer_pipeline.features import extract_features, load_features  # noqa: E402
from mer_pipeline.scoring import predict_table  # noqa: E402

#: key -> (name, EmotionClassifier parameters, whether training folds take the augmented copies)
CONFIGS = {
    "default": ("EmotionClassifier() (adaptation='auto')", dict(), False),
    "batch": ("adaptation='batch'", dict(adaptation="batch"), False),
    "no_norm": ("no speaker normalisation", dict(speaker_norm=False), False),
    "default_aug": ("EmotionClassifier() + augmented copies", dict(), True),
    "batch_aug": ("adaptation='batch' + augmented copies", dict(adaptation="batch"), True),
}


def _score(model, X, y, shared):
    """Accuracy deciding among ``shared`` only, as ``mer score --classes`` does."""
    return float(np.mean(predict_table(model, X, classes=shared)["predicted"].to_numpy() == y))


def matrix(table, params, corpora, seed, n_jobs):
    """Train on one corpus, test on each (diagonal: own speaker-grouped 5-fold CV).

    A corpus is trained on with its augmented copies, if the table has any; only
    recordings are scored."""
    y = table["emotion"].astype(str).to_numpy()
    recorded = originals(table)
    out = {}
    for a in corpora:
        tr = (table["corpus"] == a).to_numpy()
        model = EmotionClassifier(**params).fit(table[tr], y[tr])
        row = {}
        for b in corpora:
            te = (table["corpus"] == b).to_numpy()
            if a == b:  # the copies follow their clips into the training folds
                res = cross_validate_model(EmotionClassifier(**params), table[te], y[te],
                                           groups=table["group"][te], folds=5, seed=seed,
                                           n_jobs=n_jobs)
                row[b] = round(res.accuracy, 4)
                continue
            te = te & recorded & np.isin(y, model.classes_.astype(str))
            shared = sorted(set(y[te]))
            row[b] = round(_score(model, table[te], y[te], shared), 4) if te.any() else None
        out[a] = row
        print("  train", a, row, flush=True)
    return out


def with_more_corpora(table, params, target, seed):
    """Actor-grouped 5-fold CV on ``target``: alone, with the other corpora added, and with
    them added under :class:`~mer_pipeline.experts.CorpusExperts` (what ``mer train`` fits on
    a table of several corpora)."""
    y = table["emotion"].astype(str).to_numpy()
    inside = (table["corpus"] == target).to_numpy()
    idx = np.flatnonzero(inside & originals(table))
    others = np.flatnonzero(~inside)  # with their copies, if any
    folds = _splits("actor", y[idx], table["group"].astype(object).to_numpy()[idx], 5, seed)
    hits = {"alone": 0, "with_others": 0, "with_others_experts": 0}
    for tr, te in folds:
        train = with_copies(table, idx[tr])
        more = np.concatenate([train, others])
        for name, rows, model in (
                ("alone", train, EmotionClassifier(**params)),
                ("with_others", more, EmotionClassifier(**params)),
                ("with_others_experts", more, CorpusExperts(EmotionClassifier(**params)))):
            model.fit(table.iloc[rows], y[rows])
            pred = model.predict(table.iloc[idx[te]])
            hits[name] += int(np.sum(np.asarray(pred).astype(str) == y[idx[te]]))
    return {k: round(v / len(idx), 4) for k, v in hits.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, nargs="+", required=True,
                   help="corpus folders or listings (two or more corpora)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--work", type=Path, default=Path("features/bench_corpora"))
    p.add_argument("--whisper-model", default=None,
                   help="Whisper weights for the whisper set (tiny.en, base or a path)")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated, among {', '.join(CONFIGS)}")
    p.add_argument("--reference", default="ravdess",
                   help="corpus whose actor-grouped accuracy is measured with the others added")
    p.add_argument("--augment", type=int, default=1,
                   help="perturbed copies per clip extracted for the '+ augmented copies' "
                        "configurations (mer features --augment; default %(default)s)")
    p.add_argument("--name", default="corpora",
                   help="results file stem: NAME.md and NAME.json (default %(default)s)")
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    scan = discover(args.data)
    keys = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}; among {', '.join(CONFIGS)}")
    copies = args.augment if any(CONFIGS[k][2] for k in keys) else 0
    extract_features(scan, args.work, audio_set=DEFAULT_SET, n_jobs=args.n_jobs, progress=False,
                     augment=copies,
                     **({"whisper_model": args.whisper_model} if args.whisper_model else {}))
    everything = load_features(args.work, sequences=False)
    everything = everything[everything["emotion"].astype(str) != ""]
    corpora = sorted(everything["corpus"].unique())
    table = everything[originals(everything)]
    meta = {"date": time.strftime("%Y-%m-%d"), "data": [str(d) for d in args.data],
            "clips": {c: int((table["corpus"] == c).sum()) for c in corpora},
            "speakers": {c: int(table.loc[table["corpus"] == c, "group"].nunique())
                         for c in corpora},
            "augment": {"copies": copies, "recipe": RECIPE} if copies else None,
            "features": DEFAULT_SET, "whisper_model": args.whisper_model or "tiny.en (default)",
            "seed": args.seed, "mer_pipeline": __version__,
            "label_sets": "each training clip over its own corpus's classes "
                          "(EmotionClassifier(corpus_col='corpus'), the default)",
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}"}
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for key in keys:
        name, params, augmented = CONFIGS[key]
        table = everything if augmented else everything[originals(everything)]
        print(name, flush=True)
        t0 = time.perf_counter()
        loco = cross_validate_model(EmotionClassifier(**params), table, table["emotion"],
                                    groups=table["corpus"], protocol="corpus", seed=args.seed,
                                    n_jobs=args.n_jobs,
                                    presentations=["balanced_batch", "single_clip"])
        per = {f["corpus"]: {k: f[k] for k in ("accuracy", "macro_f1", "n_test", "classes",
                                                "majority", "chance", "dropped")}
               for f in loco.folds}
        single = loco.presentations["single_clip"]
        for f in single.folds:
            per[f["corpus"]]["single_clip"] = f["accuracy"]
        results[key] = {
            "name": name, "params": params, "augmented_rows": n_copies(table), "loco": per,
            "loco_mean": round(float(np.mean([v["accuracy"] for v in per.values()])), 4),
            "loco_mean_single_clip": round(float(np.mean(
                [v["single_clip"] for v in per.values()])), 4),
            "matrix": matrix(table, params, corpora, args.seed, args.n_jobs),
            "reference": with_more_corpora(table, params, args.reference, args.seed)
            if args.reference in corpora else None,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        print(" ", {k: results[key][k] for k in ("loco_mean", "loco_mean_single_clip",
                                                  "reference")}, flush=True)
        # after each configuration: a run stopped later keeps what it finished
        (args.out / f"{args.name}.json").write_text(json.dumps(
            {"meta": meta, "results": results}, indent=2))
        (args.out / f"{args.name}.md").write_text(_markdown(meta, results, corpora,
                                                            args.reference))
        print(f"wrote {args.out / f'{args.name}.md'}", flush=True)


def _markdown(meta, results, corpora, reference):
    lines = ["# Cross-corpus benchmark", "",
             f"{meta['date']}, {meta['machine']}. Audio features: `{meta['features']}` "
             f"(Whisper {meta['whisper_model']}). Corpora: "
             + ", ".join(f"{c} ({meta['clips'][c]} clips, {meta['speakers'][c]} speakers)"
                         for c in corpora) + "."
             + (f" Augmented copies (`mer features --augment {meta['augment']['copies']}`, "
                f"recipe `{meta['augment']['recipe']}`): in the training folds of the "
                "configurations that say so, never scored." if meta.get("augment") else "")
             + (f" Label sets: {meta['label_sets']}; mer_pipeline {meta['mer_pipeline']}."
                if meta.get("label_sets") else ""), "",
             "## All but one -> one (leave-one-corpus-out, `mer evaluate --cv corpus`)", "",
             "Each corpus scored by a model fit on the others, on the classes it shares with "
             "them (argmax over those). Speaker batch = each test speaker's clips together; "
             "single clip = each clip alone.", "",
             "| configuration | held-out corpus | classes | accuracy | single clip | macro-F1 "
             "| majority | chance |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, r in results.items():
        for c, v in r["loco"].items():
            lines.append(f"| {r['name']} | {c} | {len(v['classes'])} | {v['accuracy']:.1%} | "
                         f"{v['single_clip']:.1%} | {v['macro_f1']:.3f} | {v['majority']:.1%} "
                         f"| {v['chance']:.1%} |")
        lines.append(f"| {r['name']} | **mean** | | **{r['loco_mean']:.1%}** | "
                     f"{r['loco_mean_single_clip']:.1%} | | | |")
    lines += ["", "## Train on one x test on another", "",
              "Rows: the corpus trained on; columns: the corpus scored (shared classes only); "
              "diagonal: the corpus's own speaker-grouped 5-fold CV.", ""]
    for key, r in results.items():
        lines += [f"**{r['name']}**", "", "| trained on | " + " | ".join(corpora) + " |",
                  "|---|" + "---:|" * len(corpora)]
        for a in corpora:
            lines.append(f"| {a} | " + " | ".join(
                "—" if r["matrix"][a][b] is None else f"{r['matrix'][a][b]:.1%}"
                for b in corpora) + " |")
        lines.append("")
    if any(r["reference"] for r in results.values()):
        lines += [f"## {reference} with the other corpora added to training", "",
                  f"Actor-grouped 5-fold CV on {reference} (seed 0), speaker batches. "
                  "Corpus experts: the other corpora added under `CorpusExperts` (a model "
                  f"over all corpora mixed with one of {reference} alone for its clips; what "
                  "`mer train` fits on several corpora).", "",
                  f"| configuration | {reference} alone | with the other corpora | "
                  "with them, corpus experts |", "|---|---:|---:|---:|"]
        for r in results.values():
            if r["reference"]:
                lines.append(f"| {r['name']} | {r['reference']['alone']:.1%} | "
                             f"{r['reference']['with_others']:.1%} | "
                             f"{r['reference']['with_others_experts']:.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
