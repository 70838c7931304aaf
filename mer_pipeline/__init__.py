"""mer_pipeline: multimodal (face + voice) emotion recognition, scikit-learn style.

Public API::

    discover            corpus folders / listings -> clip manifest
    extract_features    per-clip feature tables (cached, parallel)
    load_features       read a feature table back, checked
    SpeakerNormalizer   per-speaker standardisation (transformer)
    EmotionClassifier   the single-table classifier (estimator)
    MultimodalEmotionClassifier  voice + face fusion (estimator)
    CorpusExperts       several corpora: a shared model + an expert per corpus (estimator)
    LabelSetLogisticRegression  logistic regression whose clips each have a label set (corpora)
    evaluate_features   actor-independent cross-validation report (workflows)
    train_and_save      fit and save with metadata and provenance (workflows)
    score_inputs        score feature tables or media with a saved model (workflows)
    score_timeline      emotion over time: windows of long recordings (stream)
    LiveScorer          window-by-window scoring of a camera, microphone, URL or pipe (stream)
    save_model, load_model
"""
from ._version import __version__
from .corpus import CorpusScan, discover, parse_filename, read_manifest
from .enrollment import SpeakerProfile, enroll, load_profiles, save_profile
from .ensemble import EmotionClassifier
from .evaluation import cross_validate_model
from .experts import CorpusExperts
from .exceptions import (
    CorruptMediaError,
    EmptyMediaError,
    FeatureTableError,
    MediaError,
    MediaNotFoundError,
    MerError,
    NoAudioStreamError,
    NoFaceError,
    NoVideoStreamError,
    ParameterError,
    SilentAudioError,
    TooShortError,
)
from .features import extract_features, load_features
from .fusion import MultimodalEmotionClassifier, build_estimator
from .labelsets import LabelSetLogisticRegression
from .persistence import ArtifactError, load_model, save_model
from .speaker import SpeakerNormalizer
from .stream import LiveScorer, score_timeline
from .workflows import enroll_inputs, evaluate_features, score_inputs, train_and_save

__all__ = [
    "__version__",
    "CorpusScan", "discover", "parse_filename", "read_manifest",
    "extract_features", "load_features",
    "SpeakerNormalizer", "EmotionClassifier", "MultimodalEmotionClassifier", "build_estimator",
    "CorpusExperts", "LabelSetLogisticRegression",
    "cross_validate_model", "evaluate_features",
    "train_and_save", "save_model", "load_model", "score_inputs", "score_timeline",
    "LiveScorer", "SpeakerProfile", "enroll", "save_profile", "load_profiles", "enroll_inputs",
    "MerError", "ParameterError", "MediaError", "MediaNotFoundError", "EmptyMediaError",
    "CorruptMediaError", "NoAudioStreamError", "NoVideoStreamError", "SilentAudioError",
    "NoFaceError", "TooShortError",
    "FeatureTableError", "ArtifactError",
]
