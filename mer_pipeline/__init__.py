"""mer_pipeline: multimodal (face + voice) emotion recognition, scikit-learn style."""
from ._version import __version__
from .corpus import CorpusScan, discover, parse_filename, read_manifest
from .exceptions import (
    CorruptMediaError,
    EmptyMediaError,
    FeatureTableError,
    MediaError,
    MediaNotFoundError,
    MerError,
    NoAudioStreamError,
    NoVideoStreamError,
    ParameterError,
    SilentAudioError,
)

__all__ = [
    "__version__",
    "CorpusScan", "discover", "parse_filename", "read_manifest",
    "MerError", "ParameterError", "MediaError", "MediaNotFoundError", "EmptyMediaError",
    "CorruptMediaError", "NoAudioStreamError", "NoVideoStreamError", "SilentAudioError",
    "FeatureTableError",
]

from .ensemble import EmotionClassifier  # noqa: E402
from .evaluation import cross_validate_model, evaluate_features  # noqa: E402
from .features import extract_features, load_features  # noqa: E402
from .speaker import SpeakerNormalizer  # noqa: E402

__all__ += ["EmotionClassifier", "SpeakerNormalizer", "cross_validate_model",
            "evaluate_features", "extract_features", "load_features"]

from .persistence import ArtifactError, load_model, save_model, train_and_save  # noqa: E402
from .scoring import score_inputs  # noqa: E402

__all__ += ["ArtifactError", "load_model", "save_model", "train_and_save", "score_inputs"]
