"""Documented defaults: the one source of truth for the pipeline's settings.

The CLI, the Makefile and the Python API all read their defaults from here.
Every value can be overridden per call; the environment variables below
override the locations only.

Attributes
----------
EMOTIONS : tuple of str
    The canonical label set (RAVDESS order). Labels of other corpora are
    mapped onto it by :data:`LABEL_SYNONYMS`; a label outside it (CK+'s
    ``contempt``) is kept as its own class.
SAMPLE_RATE : int
    Rate (Hz) audio is decoded to: 16 kHz mono.
FRAME_RATE : float
    Rate (frames per second) video is sampled at: 3 fps.
N_JOBS : int
    Default worker count for per-clip work (``-1``: all cores).
CACHE_ENV : str
    Environment variable naming the per-clip cache folder
    (default: ``<output folder>/.cache``).
AUDIO_SET : str
    The acoustic feature set ``default`` stands for (chosen by measurement:
    README, benchmarks/results/audio.md).
FACE_ENCODERS : tuple of str
    Default frame encoders of the face stage.
FACE_CROP_SIZE, FACE_MARGIN, FACE_ALIGN
    Face crops: side in pixels, margin around the detected box (fraction of
    its side), eye alignment on or off.
WINDOW_S, HOP_S : float
    Windows of long recordings and streams (``mer score --window``,
    ``mer stream``): 3 s long, one every second.
SMOOTH_S : float
    Expected dwell time (seconds) in one emotion of the smoothed label track.
AUGMENT_COPIES : int
    Perturbed copies of each clip's audio ``mer features`` adds for training
    (``--augment``; :mod:`mer_pipeline.augment`): 0, extraction time being
    the cost; 1 is worth about 3 points across corpora and nothing within one
    (README, "Across corpora").
STREAM_HISTORY : int
    The most windows a speaker's statistics come from: a timeline is scored
    in blocks of this many windows, a stream with its last this many.
"""
from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)

#: Synonyms (lower case) mapped to the canonical set.
LABEL_SYNONYMS: dict[str, str] = {
    "neutral": "neutral", "neu": "neutral", "ne": "neutral", "n": "neutral",
    "calm": "calm",
    "happy": "happy", "happiness": "happy", "hap": "happy", "ha": "happy", "h": "happy",
    "joy": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "angry": "angry", "anger": "angry", "ang": "angry", "an": "angry", "a": "angry",
    "fearful": "fearful", "fear": "fearful", "fea": "fearful", "fe": "fearful", "f": "fearful",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust", "di": "disgust",
    "d": "disgust",
    "surprised": "surprised", "surprise": "surprised", "su": "surprised",
    "ps": "surprised", "pleasant_surprise": "surprised", "pleasant surprise": "surprised",
}

#: Named class subsets for ``--classes`` (training, evaluation and scoring on a subset).
CLASS_PRESETS: dict[str, tuple[str, ...]] = {
    "big4": ("angry", "happy", "neutral", "sad"),
    "basic6": ("angry", "disgust", "fearful", "happy", "sad", "surprised"),
    "basic7": ("angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised"),
    "ravdess8": EMOTIONS,
}

SAMPLE_RATE: int = 16_000
FRAME_RATE: float = 3.0
N_JOBS: int = -1
AUGMENT_COPIES: int = 0

CACHE_ENV: str = "MER_CACHE_DIR"
FEATURES_DIR: str = "features"
ARTIFACTS_DIR: str = "artifacts"
#: Where ``mer enroll`` writes speaker profiles (``<speaker>.profile.npz``).
SPEAKERS_DIR: str = "speakers"

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".m4v", ".mpg"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif"})
MEDIA_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS | IMAGE_EXTENSIONS


def canonical_label(label: str) -> str:
    """Map a corpus label to the canonical set.

    Parameters
    ----------
    label : str
        A label as a corpus writes it (``"Fear"``, ``"sadness"``, ``"ps"``).

    Returns
    -------
    str
        The canonical label, or the lower-cased label itself when it has no
        synonym (it is then kept as a class of its own).

    Examples
    --------
    >>> canonical_label("Surprise")
    'surprised'
    >>> canonical_label("contempt")
    'contempt'
    """
    key = str(label).strip().lower()
    return LABEL_SYNONYMS.get(key, key)

#: The set ``default`` stands for: the Whisper tiny.en encoder's pooled hidden states,
#: chosen by actor-grouped accuracy on RAVDESS (benchmarks/results/audio.md: 83.9 % against
#: 70.8 % for the classical egemaps+compare+librosa, 75.5 % against 60.1 % without speaker
#: normalisation) at a lower cost (about 65 ms of one core per 3.7 s clip against 98 ms).
AUDIO_SET: str = "whisper"
#: The classical acoustic default before Whisper, kept as a named combination.
CLASSICAL_AUDIO_SET: str = "egemaps+compare+librosa"

#: Default frame encoders of the face stage: the FER2013 CNN's activations and the 68-point
#: geometry. Together they scored best on CK+48 and JAFFE (benchmarks/results/face.md); each
#: costs about 0.01 s per frame.
FACE_ENCODERS: tuple[str, ...] = ("expression", "landmarks")
#: Windows over long recordings and live streams: a RAVDESS-length span (the clips the
#: models are trained on last 3-4 s), one result a second.
WINDOW_S: float = 3.0
HOP_S: float = 1.0
#: Dwell time of the smoothed track: emotions expressed in speech last a few utterances.
SMOOTH_S: float = 5.0
#: Two minutes of a stream at the default hop.
STREAM_HISTORY: int = 120
FACE_CROP_SIZE: int = 128
FACE_MARGIN: float = 0.2
FACE_ALIGN: bool = True


def parse_classes(spec) -> tuple[str, ...] | None:
    """The classes a ``--classes`` value names.

    Parameters
    ----------
    spec : str, sequence of str or None
        Comma-separated labels in any of the corpora's spellings
        (``"Anger,joy,neutral,sad"``), a preset of :data:`CLASS_PRESETS`
        (``big4``: angry, happy, neutral, sad; ``basic6``: Ekman's six;
        ``basic7``: basic6 and neutral; ``ravdess8``: :data:`EMOTIONS`), or
        ``None`` for all classes.

    Returns
    -------
    tuple of str or None
        Canonical labels, sorted, without repeats.

    Raises
    ------
    ParameterError
        If ``spec`` names no class.

    Examples
    --------
    >>> parse_classes("big4")
    ('angry', 'happy', 'neutral', 'sad')
    >>> parse_classes("Anger, joy")
    ('angry', 'happy')
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in CLASS_PRESETS:
            return tuple(sorted(CLASS_PRESETS[key]))
        spec = spec.split(",")
    labels = sorted({canonical_label(s) for s in spec if str(s).strip()})
    if not labels:
        from .exceptions import ParameterError

        raise ParameterError(f"--classes names no class: {spec!r}")
    return tuple(labels)
