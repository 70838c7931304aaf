"""Corpus discovery: walk folders (or read CSV listings) into a clip manifest.

A *manifest* is a :class:`pandas.DataFrame` with one row per clip, indexed
by a stable ``clip_id``. Its columns:

``corpus``
    Corpus name: one of :data:`CORPUS_NAMES` where the file names are that
    corpus's (``ravdess``, ``cremad``, ``savee``, ``tess``, ``ckplus``, ``jaffe``,
    ``emodb``, ``urdu``, ``nemo``, ``turevdb``, ``emovo``, ``cafe``, ``subesco``,
    ``shemo``, ``mesd``, ``esd``, ``jlcorpus``, ``aesdd``, ``asvpesd``,
    ``enterface``); for a listing its ``corpus`` column, else its folder's name; for
    a generic labelled collection the folder's name.
``actor``
    Actor / speaker / subject id inside the corpus (string), empty if unknown.
``group``
    ``corpus:actor``, the key for actor-independent splits (empty if unknown).
``gender``
    ``male``, ``female`` or empty where the corpus does not say.
``emotion``
    Canonical label (:data:`mer_pipeline.config.EMOTIONS`); labels outside the
    set are kept as their own class.
``audio_path``, ``video_path``
    Absolute paths of the media that carry each modality (empty if none).
    A still image is a one-frame video.
``media``
    ``audio``, ``video``, ``audio+video`` or ``image``.
``split``
    The corpus' own split where its layout has one (FER2013 ``train``/``test``).

followed by the corpus' own fields (RAVDESS ``vocal_channel``,
``intensity``, ``statement``, ``repetition``; CREMA-D ``sentence``; ...) and,
where the corpus has one, its ``language`` (ISO 639-1).

Labels: each reader maps its corpus's codes onto the canonical set
(:data:`mer_pipeline.config.EMOTIONS`; e.g. EmoDB ``W`` Wut → angry, EMOVO ``gio``
→ happy, CaFE ``P`` peur → fearful, TurEV-DB ``sk`` sakin → calm). Labels with no
canonical counterpart stay classes of their own, named in English: EmoDB ``L`` and
ASVP-ESD ``01`` → ``boredom``; JL-Corpus's secondary emotions (``excited``,
``anxious``, ``apologetic``, ``assertive``, ``concerned``, ``encouraging``);
ASVP-ESD ``09``-``13`` → ``excited``, ``pleasure``, ``pain``, ``disappointment``,
``breath``. ``--classes`` (:func:`mer_pipeline.config.parse_classes`) restricts
training, evaluation and scoring to a subset.

Speakers: MESD's names carry none (its clips cannot enter a speaker-grouped split);
ESD's emotion comes from its folder, else from the utterance number (350 per
emotion, in the order neutral, angry, happy, sad, surprise).

Files whose names cannot be parsed are returned beside the manifest with a
reason; they are never dropped silently and never stop the scan.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .config import (
    AUDIO_EXTENSIONS,
    EMOTIONS,
    IMAGE_EXTENSIONS,
    LABEL_SYNONYMS,
    MEDIA_EXTENSIONS,
    VIDEO_EXTENSIONS,
    canonical_label,
)
from .exceptions import ParameterError

__all__ = ["CorpusScan", "discover", "parse_filename", "read_manifest", "MANIFEST_COLUMNS",
           "CORPUS_NAMES"]

MANIFEST_COLUMNS = [
    "corpus", "actor", "group", "gender", "emotion",
    "audio_path", "video_path", "media", "split",
]
UNPARSED_COLUMNS = ["path", "reason"]

RAVDESS_EMOTIONS = {i + 1: e for i, e in enumerate(EMOTIONS)}
_RAVDESS = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_CREMAD = re.compile(r"^(\d{4})[_-]([A-Z]{3})[_-]([A-Z]{3})[_-]([A-Z]{2})$")
_CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy",
                    "NEU": "neutral", "SAD": "sad"}
_TESS = re.compile(r"^(OAF|YAF)[_-](.+)[_-]([A-Za-z]+)$", re.IGNORECASE)
_SAVEE = re.compile(r"^(?:([A-Z]{2})[_-])?(sa|su|a|d|f|h|n)(\d{2})$")
_SAVEE_EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy",
                   "n": "neutral", "sa": "sad", "su": "surprised"}
_JAFFE = re.compile(r"^([A-Z]{2})\.(AN|DI|FE|HA|NE|SA|SU)(\d+)\.(\d+)$")
_JAFFE_EMOTIONS = {"AN": "angry", "DI": "disgust", "FE": "fearful", "HA": "happy",
                   "NE": "neutral", "SA": "sad", "SU": "surprised"}
_CKPLUS = re.compile(r"^(S\d{3})_(\d{3})_(\d{8})$")
# speech corpora in other languages (each tested on synthetic names in tests/test_corpus.py)
_EMODB = re.compile(r"^(\d{2})([ab]\d{2})([WLEAFTN])([a-z])$")
_EMODB_EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy",
                   "T": "sad", "N": "neutral"}
_EMODB_MALE = {"03", "10", "11", "12", "15"}
_URDU = re.compile(r"^(S([MF])\d+)_F\d+_([ASHN])(\d+)$")
_URDU_EMOTIONS = {"A": "angry", "S": "sad", "H": "happy", "N": "neutral"}
_NEMO = re.compile(r"^([A-Z]{2}\d)_(anger|fear|happiness|neutral|sadness|surprised)_(\d+)$")
_TUREV = re.compile(r"^(\d{4})_(kz|sk|mt|hl)_(.+)$")
_TUREV_EMOTIONS = {"kz": "angry", "sk": "calm", "mt": "happy", "hl": "sad"}
_EMOVO = re.compile(r"^(dis|gio|neu|pau|rab|sor|tri)-([fm][1-9])-(.+)$")
_EMOVO_EMOTIONS = {"dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fearful",
                   "rab": "angry", "sor": "surprised", "tri": "sad"}
_CAFE = re.compile(r"^(\d{2})-([CDJNPST])-(?:([12])-)?(\d)$")
_CAFE_EMOTIONS = {"C": "angry", "D": "disgust", "J": "happy", "N": "neutral", "P": "fearful",
                  "S": "surprised", "T": "sad"}
_SUBESCO = re.compile(r"^([MF])_(\d+)_([A-Z]+)_S_(\d+)_([A-Z]+)_(\d+)$")
_SHEMO = re.compile(r"^([FM]\d{2})([AHNSWF])(\d{2})$")
_SHEMO_EMOTIONS = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad", "W": "surprised",
                   "F": "fearful"}
_MESD = re.compile(r"^(Anger|Disgust|Fear|Happiness|Neutral|Sadness)_([FMC])_([AB])_(.+)$",
                   re.IGNORECASE)
_ESD = re.compile(r"^(\d{4})_(\d{6})$")
#: ESD's utterance numbers by emotion (350 each, the same order for every speaker)
_ESD_RANGES = ((350, "neutral"), (700, "angry"), (1050, "happy"), (1400, "sad"),
               (1750, "surprised"))
_JL = re.compile(r"^(female|male)([1-9])_([a-z]+)_(\d+[a-z])_(\d+)$")
_AESDD = re.compile(r"^([adfhs])(\d{2})\s*\((\d+)\)\s*([a-z]?)$")
_AESDD_EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "s": "sad"}
_ASVP = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2,4})-(\d{2,4})-(\d{2})-(\d{2})"
                   r"(?:-(\d{2}))?(?:-(\d{2}))?$")
_ASVP_EMOTIONS = {1: "boredom", 2: "neutral", 3: "happy", 4: "sad", 5: "angry", 6: "fearful",
                  7: "disgust", 8: "surprised", 9: "excited", 10: "pleasure", 11: "pain",
                  12: "disappointment", 13: "breath"}
_ENTERFACE = re.compile(r"^s_?(\d+)_(an|di|fe|ha|sa|su)_(\d+)$")
_ENTERFACE_EMOTIONS = {"an": "angry", "di": "disgust", "fe": "fearful", "ha": "happy",
                       "sa": "sad", "su": "surprised"}
#: Manifest columns a listing may not set through an extra column (``corpus`` and
#: ``gender`` are read from their own columns).
_RESERVED = {"clip_id", "corpus", "actor", "gender", "emotion", "kind", "path", "group",
             "speaker_gender", "sex",
             "split", "audio_path", "video_path", "media", "subject", "speaker", "label"}
_SPLITS = {"train", "training", "test", "testing", "val", "valid", "validation",
           "publictest", "privatetest", "dev"}


class _Unparsed(Exception):
    """A file name that no parser accepts (carries the reason)."""


def _media_kind(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    raise _Unparsed(f"not a media file extension ({ext or 'none'})")


def _av(kind: str) -> str:
    """What a file of a speech corpus carries: a video file its sound too."""
    return "audio+video" if kind == "video" else kind


def _record(corpus, key, actor, gender, emotion, path, kind, **extra):
    """One parsed file: ``key`` identifies the clip inside its corpus."""
    rec = {
        "clip_id": f"{corpus}_{key}",
        "corpus": corpus,
        "actor": actor or "",
        "gender": gender or "",
        "emotion": emotion,
        "kind": kind,
        "path": str(path),
    }
    rec.update(extra)
    return rec


def _parse_ravdess(stem: str, path: Path, kind: str):
    m = _RAVDESS.match(stem)
    if not m:
        return None
    mm, vc, ee, ii, ss, rr, aa = (int(g) for g in m.groups())
    checks = [("modality", mm, 1, 3), ("vocal channel", vc, 1, 2), ("emotion", ee, 1, 8),
              ("intensity", ii, 1, 2), ("statement", ss, 1, 2), ("repetition", rr, 1, 2)]
    for name, value, lo, hi in checks:
        if not lo <= value <= hi:
            raise _Unparsed(f"RAVDESS {name} code {value:02d} outside {lo:02d}-{hi:02d}")
    if aa < 1:
        raise _Unparsed("RAVDESS actor code 00")
    if mm == 3 and kind != "audio":
        raise _Unparsed("RAVDESS modality 03 (audio-only) on a non-audio file")
    if mm in (1, 2) and kind == "audio":
        raise _Unparsed(f"RAVDESS modality {mm:02d} (video) on an audio file")
    # modality 01 carries both streams, 02 video only, 03 audio only
    kind = {1: "audio+video", 2: "video", 3: "audio"}[mm]
    key = "-".join(f"{v:02d}" for v in (vc, ee, ii, ss, rr, aa))
    return _record(
        "ravdess", key, f"{aa:02d}", "male" if aa % 2 else "female", RAVDESS_EMOTIONS[ee],
        path, kind, ravdess_modality=mm,
        vocal_channel="speech" if vc == 1 else "song",
        intensity="normal" if ii == 1 else "strong",
        statement=ss, repetition=rr,
    )


def _parse_cremad(stem: str, path: Path, kind: str):
    m = _CREMAD.match(stem)
    if not m:
        return None
    actor, sentence, emo, level = m.groups()
    if emo not in _CREMAD_EMOTIONS:
        raise _Unparsed(f"CREMA-D emotion code {emo!r} unknown")
    key = "_".join(m.groups())
    return _record("cremad", key, actor, "", _CREMAD_EMOTIONS[emo], path,
                   _av(kind),
                   sentence=sentence, intensity=level)


def _parse_tess(stem: str, path: Path, kind: str):
    m = _TESS.match(stem)
    if not m:
        return None
    speaker, word, emo = m.groups()
    label = emo.lower()
    if label not in LABEL_SYNONYMS:
        raise _Unparsed(f"TESS emotion {emo!r} unknown")
    key = f"{speaker.upper()}_{word}_{label}"
    return _record("tess", key, speaker.upper(), "female", canonical_label(label), path,
                   _av(kind), word=word)


def _parse_savee(stem: str, path: Path, kind: str):
    m = _SAVEE.match(stem)
    if not m:
        return None
    speaker, code, number = m.groups()
    if speaker is None:
        # "a04" inside a speaker folder (DC, JE, JK, KL)
        parent = path.parent.name
        speaker = parent if re.fullmatch(r"[A-Z]{2}", parent) else ""
    key = f"{speaker}_{code}{number}" if speaker else f"{code}{number}"
    return _record("savee", key, speaker, "male", _SAVEE_EMOTIONS[code], path,
                   _av(kind), sentence=f"{code}{number}")


def _parse_jaffe(stem: str, path: Path, kind: str):
    m = _JAFFE.match(stem)
    if not m:
        return None
    subject, code, rep, number = m.groups()
    return _record("jaffe", stem, subject, "female", _JAFFE_EMOTIONS[code], path, kind,
                   image_no=int(number))


def _parse_ckplus(stem: str, path: Path, kind: str):
    m = _CKPLUS.match(stem)
    if not m:
        return None
    subject, seq, frame = m.groups()
    label = path.parent.name
    if label.lower() not in LABEL_SYNONYMS and not re.fullmatch(r"[A-Za-z]+", label):
        raise _Unparsed(f"CK+ image outside an emotion folder ({label!r})")
    return _record("ckplus", stem, subject, "", canonical_label(label), path, kind,
                   sequence=f"{subject}_{seq}", frame=int(frame))


def _parse_emodb(stem: str, path: Path, kind: str):
    m = _EMODB.match(stem)
    if not m:
        return None
    speaker, text, code, version = m.groups()
    return _record("emodb", stem, speaker, "male" if speaker in _EMODB_MALE else "female",
                   _EMODB_EMOTIONS[code], path, _av(kind), sentence=text, language="de")


def _parse_urdu(stem: str, path: Path, kind: str):
    m = _URDU.match(stem)
    if not m:
        return None
    speaker, sex, code, _ = m.groups()
    return _record("urdu", stem, speaker, "male" if sex == "M" else "female",
                   _URDU_EMOTIONS[code], path, _av(kind), language="ur")


def _parse_nemo(stem: str, path: Path, kind: str):
    m = _NEMO.match(stem)
    if not m:
        return None
    speaker, emo, sentence = m.groups()
    return _record("nemo", stem, speaker, "", canonical_label(emo), path, _av(kind),
                   sentence=sentence, language="pl")


def _parse_turev(stem: str, path: Path, kind: str):
    m = _TUREV.match(stem)
    if not m:
        return None
    speaker, code, word = m.groups()
    return _record("turevdb", stem, speaker, "", _TUREV_EMOTIONS[code], path, _av(kind),
                   word=word, language="tr")


def _parse_emovo(stem: str, path: Path, kind: str):
    m = _EMOVO.match(stem)
    if not m:
        return None
    code, speaker, sentence = m.groups()
    return _record("emovo", stem, speaker, "female" if speaker[0] == "f" else "male",
                   _EMOVO_EMOTIONS[code], path, _av(kind), sentence=sentence, language="it")


def _parse_cafe(stem: str, path: Path, kind: str):
    m = _CAFE.match(stem)
    if not m:
        return None
    actor, code, level, sentence = m.groups()
    intensity = {"1": "low", "2": "high"}.get(level, "")
    return _record("cafe", stem, actor, "male" if int(actor) % 2 else "female",
                   _CAFE_EMOTIONS[code], path, _av(kind), intensity=intensity,
                   sentence=sentence, language="fr")


def _parse_subesco(stem: str, path: Path, kind: str):
    m = _SUBESCO.match(stem)
    if not m:
        return None
    sex, number, name, sentence, emo, take = m.groups()
    label = emo.lower()
    if label not in LABEL_SYNONYMS:
        raise _Unparsed(f"SUBESCO emotion {emo!r} unknown")
    return _record("subesco", stem, f"{sex}_{number}", "male" if sex == "M" else "female",
                   canonical_label(label), path, _av(kind), sentence=sentence, language="bn")


def _parse_shemo(stem: str, path: Path, kind: str):
    m = _SHEMO.match(stem)
    if not m:
        return None
    speaker, code, _ = m.groups()
    return _record("shemo", stem, speaker, "female" if speaker[0] == "F" else "male",
                   _SHEMO_EMOTIONS[code], path, _av(kind), language="fa")


def _parse_mesd(stem: str, path: Path, kind: str):
    m = _MESD.match(stem)
    if not m:
        return None
    emo, voice, part, word = m.groups()
    # MESD names no speaker: its clips cannot take part in speaker-grouped splits
    return _record("mesd", stem, "", {"F": "female", "M": "male"}.get(voice.upper(), ""),
                   canonical_label(emo), path, _av(kind), voice=voice.upper(), word=word,
                   language="es")


def _parse_esd(stem: str, path: Path, kind: str):
    m = _ESD.match(stem)
    if not m:
        return None
    speaker, number = m.groups()
    label = path.parent.name.lower()
    if label not in LABEL_SYNONYMS:  # not in its emotion folder: the number tells it
        label = next((e for hi, e in _ESD_RANGES if int(number) <= hi), "")
        if not label or int(number) < 1:
            raise _Unparsed(f"ESD utterance number {number} outside 000001-001750")
    return _record("esd", stem, speaker, "", canonical_label(label), path, _av(kind),
                   language="zh" if int(speaker) <= 10 else "en")


def _parse_jl(stem: str, path: Path, kind: str):
    m = _JL.match(stem)
    if not m:
        return None
    sex, number, emo, sentence, take = m.groups()
    return _record("jlcorpus", stem, f"{sex}{number}", sex, canonical_label(emo), path,
                   _av(kind), sentence=sentence, language="en")


def _parse_aesdd(stem: str, path: Path, kind: str):
    m = _AESDD.match(stem)
    if not m:
        return None
    code, sentence, speaker, take = m.groups()
    return _record("aesdd", _slug(stem), str(int(speaker)), "", _AESDD_EMOTIONS[code], path,
                   _av(kind), sentence=sentence, language="el")


def _parse_asvp(stem: str, path: Path, kind: str):
    m = _ASVP.match(stem)
    if not m:
        return None
    fields = [int(g) for g in m.groups() if g is not None]
    emo, actor = fields[2], fields[5]
    if emo not in _ASVP_EMOTIONS:
        raise _Unparsed(f"ASVP-ESD emotion code {emo:02d} outside 01-13")
    return _record("asvpesd", stem, f"{actor:02d}", "", _ASVP_EMOTIONS[emo], path, _av(kind),
                   vocal_channel="speech" if fields[1] == 1 else "non_speech")


def _parse_enterface(stem: str, path: Path, kind: str):
    m = _ENTERFACE.match(stem)
    if not m:
        return None
    subject, code, sentence = m.groups()
    return _record("enterface", f"s{int(subject)}_{code}_{sentence}", str(int(subject)), "",
                   _ENTERFACE_EMOTIONS[code], path, _av(kind), sentence=sentence,
                   language="en")


#: Tried in this order; each pattern is strict enough that no two accept the same name
#: (tests/test_corpus.py checks every reader's names against all the others).
_NAME_PARSERS = (_parse_ravdess, _parse_cremad, _parse_tess, _parse_jaffe, _parse_ckplus,
                 _parse_savee, _parse_emodb, _parse_urdu, _parse_nemo, _parse_turev,
                 _parse_emovo, _parse_cafe, _parse_subesco, _parse_shemo, _parse_mesd,
                 _parse_esd, _parse_jl, _parse_aesdd, _parse_asvp, _parse_enterface)

#: The corpora whose file names :func:`parse_filename` reads, with an example name each.
CORPUS_NAMES: dict[str, str] = {
    "ravdess": "03-01-05-01-02-01-12.wav", "cremad": "1001_DFA_ANG_XX.wav",
    "tess": "OAF_back_angry.wav", "savee": "DC_a04.wav", "jaffe": "KA.AN1.39.tiff",
    "ckplus": "S010_004_00000017.png (in an emotion folder)", "emodb": "03a01Fa.wav",
    "urdu": "SM1_F10_A010.wav", "nemo": "EB0_anger_1.wav", "turevdb": "1157_kz_acik.wav",
    "emovo": "dis-f1-b1.wav", "cafe": "01-C-1-1.wav", "subesco": "F_01_OISHI_S_1_ANGRY_1.wav",
    "shemo": "F01A01.wav", "mesd": "Anger_F_A_abajo.wav", "esd": "0011_000351.wav",
    "jlcorpus": "female1_angry_1a_1.wav", "aesdd": "a01 (1).wav",
    "asvpesd": "03-01-05-01-01-02-02-01-01.wav (8-10 fields)", "enterface": "s1_an_1.avi",
}


def parse_filename(path: str | os.PathLike) -> dict:
    """Parse the labels a corpus file name carries.

    Parameters
    ----------
    path : str or path-like
        A media file named as RAVDESS (``03-01-05-01-02-01-12.wav``), CREMA-D
        (``1001_DFA_ANG_XX``), TESS (``OAF_back_angry``), SAVEE
        (``DC_a04``, or ``a04`` inside a speaker folder), JAFFE
        (``KA.AN1.39.tiff``), CK+ (``S010_004_00000017.png`` in an emotion
        folder) or another corpus of :data:`CORPUS_NAMES` (EmoDB ``03a01Fa``,
        nEMO ``EB0_anger_1``, TurEV-DB ``1157_kz_acik``, ...) names its files.

    Returns
    -------
    dict
        ``clip_id``, ``corpus``, ``actor``, ``gender``, ``emotion``, ``kind``
        (which streams the file carries) and ``path``, plus the corpus' own
        fields.

    Raises
    ------
    ParameterError
        If no parser accepts the name; the message says why.

    Examples
    --------
    >>> parse_filename("Actor_12/03-01-05-01-02-01-12.wav")["emotion"]
    'angry'
    """
    path = Path(path)
    try:
        rec = _parse_named(path)
    except _Unparsed as exc:
        raise ParameterError(f"{path.name}: {exc}") from None
    if rec is None:
        raise ParameterError(f"{path.name}: no corpus naming scheme matches this name")
    return rec


def _parse_named(path: Path):
    kind = _media_kind(path)
    stem = path.stem
    for parser in _NAME_PARSERS:
        rec = parser(stem, path, kind)
        if rec is not None:
            return rec
    return None


def _parse_in_folder(path: Path, root: Path):
    """Name parsers first, then a labelled folder (``[split/]<emotion>/file``)."""
    rec = _parse_named(path)
    if rec is not None:
        return rec
    kind = _media_kind(path)
    label = path.parent.name
    if path.parent == root or label.lower() not in LABEL_SYNONYMS:
        raise _Unparsed("no corpus naming scheme matches and the folder "
                        f"{label!r} is not an emotion label")
    corpus = _slug(root.name)
    rel = path.relative_to(root)
    split = next((p.lower() for p in rel.parts[:-2] if p.lower() in _SPLITS), "")
    key = _slug("_".join(rel.with_suffix("").parts))
    return _record(corpus, key, "", "", canonical_label(label), path,
                   _av(kind), split=split, _slug=True)


def _slug(text: str) -> str:
    """A readable id part: letters of any script and digits kept (``怒り``, ``ärger``), other
    runs of characters made one ``_``. Distinct names can still meet (``a b`` and ``a_b``):
    :func:`_assemble` then tells them apart by a short hash of their path."""
    return re.sub(r"[^\w.+-]+", "_", text).strip("_").lower() or "corpus"


def _corpus_name(text: str) -> str:
    """A corpus name from a folder or a listing's ``corpus`` cell: the reader's name where it is
    one of the known corpora written another way (``turev_db``, ``EMO-DB`` → ``turevdb``,
    ``emodb``), else its slug."""
    slug = _slug(text)
    flat = re.sub(r"[^a-z0-9]", "", slug)
    return next((name for name in CORPUS_NAMES if name == flat), slug)


def _walk(root: Path) -> Iterable[Path]:
    """Files under ``root`` in sorted order, following symbolic links to folders (a folder
    reached twice, a link loop included, is walked once)."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in seen)
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _read_listing(csv_path: Path, records: list, unparsed: list, *,
                  require_labels: bool = True) -> None:
    """Read a CSV listing: ``path``, ``label``/``emotion``, optional subject (and, to
    score, the labels may be absent or empty)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    cols = {c.lower(): c for c in table.columns}
    label_col = cols.get("label") or cols.get("emotion")
    missing = (["path"] if "path" not in cols else []) + (
        ["label (or emotion)"] if label_col is None and require_labels else [])
    if missing:
        raise ParameterError(f"{csv_path}: listing lacks column(s) {', '.join(missing)}; "
                             "it needs 'path' and 'label' (or 'emotion')")
    subject_col = next((cols[c] for c in ("subject", "actor", "speaker") if c in cols), None)
    gender_col = next((cols[c] for c in ("gender", "speaker_gender", "sex") if c in cols), None)
    # three corpora listed by three LABELS.csv files stay three corpora
    corpus = _corpus_name(csv_path.parent.name)
    known = {cols["path"], label_col, subject_col, cols.get("clip_id")}
    for row in table.to_dict("records"):
        path = Path(row[cols["path"]])
        if not path.is_absolute():
            path = (csv_path.parent / path)
        path = path.resolve()
        try:
            if not path.is_file():
                raise _Unparsed(f"listed in {csv_path.name} but not found")
            kind = _media_kind(path)
            label = row[label_col].strip() if label_col else ""
            if not label and require_labels:
                raise _Unparsed(f"empty label in {csv_path.name}")
        except _Unparsed as exc:
            unparsed.append({"path": str(path), "reason": str(exc)})
            continue
        given = row.get(cols.get("clip_id", ""), "")
        key = given or _slug("_".join(Path(row[cols["path"]]).with_suffix("").parts[-3:]))
        # columns the manifest defines itself are honoured or dropped, never passed twice
        extra = {k: v for k, v in row.items() if k not in known and k.lower() not in _RESERVED}
        corpus_cell = row[cols["corpus"]] if cols.get("corpus") else ""
        here = _corpus_name(corpus_cell) if corpus_cell else corpus
        gender = row[gender_col].strip().lower() if gender_col else ""
        actor = row[subject_col].strip() if subject_col else ""
        if cols.get("split"):
            extra["split"] = row[cols["split"]]
        if not actor or not gender or not extra.get("language"):
            # what the listing leaves out, the file's name may say (a corpus reader's speaker)
            try:
                named = _parse_named(path) or {}
            except _Unparsed:
                named = {}
            if named and not actor and named.get("actor"):
                actor = named["actor"]
                if not corpus_cell:
                    here = named["corpus"]
            gender = gender or named.get("gender", "")
            if named.get("language") and not extra.get("language"):
                extra["language"] = named["language"]
        rec = _record(here, key, actor,
                      {"m": "male", "f": "female"}.get(gender, gender),
                      canonical_label(label) if label else "", path,
                      _av(kind), _slug=not given, **extra)
        if given:
            rec["clip_id"] = given
        records.append(rec)


@dataclass
class CorpusScan:
    """What :func:`discover` found.

    Attributes
    ----------
    clips : pandas.DataFrame
        The manifest, one row per clip, indexed by ``clip_id``.
    unparsed : pandas.DataFrame
        Files that could not be used, with columns ``path`` and ``reason``.
    ignored : int
        Non-media files skipped (READMEs, label lists).
    """

    clips: pd.DataFrame
    unparsed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=UNPARSED_COLUMNS))
    ignored: int = 0

    def summary(self) -> dict:
        """Counts of clips, actors, emotions, corpora and unparsed files."""
        clips = self.clips
        groups = clips["group"][clips["group"] != ""] if len(clips) else pd.Series(dtype=str)
        return {
            "clips": int(len(clips)),
            "actors": int(groups.nunique()),
            "clips_without_actor": int(len(clips) - len(groups)),
            "emotions": {k: int(v) for k, v in clips["emotion"].value_counts().sort_index().items()}
            if len(clips) else {},
            "corpora": {k: int(v) for k, v in clips["corpus"].value_counts().sort_index().items()}
            if len(clips) else {},
            "media": {k: int(v) for k, v in clips["media"].value_counts().sort_index().items()}
            if len(clips) else {},
            "unparsed": int(len(self.unparsed)),
        }

    def format_summary(self) -> str:
        """The summary as a few human-readable lines."""
        s = self.summary()
        lines = [
            f"clips:    {s['clips']}",
            f"actors:   {s['actors']}" + (f" ({s['clips_without_actor']} clips without actor id)"
                                          if s["clips_without_actor"] else ""),
            f"emotions: {len(s['emotions'])} "
            + ", ".join(f"{k}={v}" for k, v in s["emotions"].items()),
            "corpora:  " + ", ".join(f"{k}={v}" for k, v in s["corpora"].items()),
            "media:    " + ", ".join(f"{k}={v}" for k, v in s["media"].items()),
            f"unparsed: {s['unparsed']}",
        ]
        for row in self.unparsed.head(10).itertuples():
            lines.append(f"  {row.path}: {row.reason}")
        if len(self.unparsed) > 10:
            lines.append(f"  ... and {len(self.unparsed) - 10} more")
        return "\n".join(lines)


def discover(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
             require_labels: bool = True) -> CorpusScan:
    """Walk folders (or read CSV listings) into a clip manifest.

    Parameters
    ----------
    paths : path or sequence of paths
        Folders to walk, media files, or CSV listings (columns ``path``,
        absolute or relative to the CSV, ``label`` or ``emotion``, optional
        ``subject``/``actor``/``speaker``, ``gender``/``speaker_gender``/``sex``,
        ``corpus``, ``language``, ``split``, ``clip_id``; any other column is
        kept). A listing's corpus is its ``corpus`` column, else the name of the
        folder it lies in (so ``nemo/LABELS.csv`` lists corpus ``nemo``); a
        speaker, gender or language the listing leaves empty is taken from the
        file's name where a corpus reader knows it.
    require_labels : bool, default=True
        With ``False`` (scoring new clips), a media file whose name carries no
        label becomes a clip of corpus ``unlabelled`` with an empty emotion and
        no actor, keyed by its file name, instead of an unparsed file.

    Returns
    -------
    CorpusScan
        ``clips``: the manifest (see the module docstring); ``unparsed``: the
        files that could not be used, each with a reason.

    Raises
    ------
    ParameterError
        If a path does not exist or a listing lacks its required columns.

    Notes
    -----
    The files of one RAVDESS recording are paired into one clip: an
    audio-only ``03-…`` file gives the audio, a video-only ``02-…`` file the
    video, and an audio-video ``01-…`` file both (a ``03-…`` file, being
    lossless, is preferred for the audio where both exist).

    Examples
    --------
    >>> scan = discover("../shared/data/ravdess_speech")  # doctest: +SKIP
    >>> scan.summary()["clips"]  # doctest: +SKIP
    1200
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: list[dict] = []
    unparsed: list[dict] = []
    ignored = 0
    for raw in paths:
        root = Path(raw).expanduser().resolve()
        if not root.exists():
            raise ParameterError(f"no such file or folder: {raw}")
        if root.is_file() and root.suffix.lower() == ".csv":
            _read_listing(root, records, unparsed, require_labels=require_labels)
            continue
        files = [root] if root.is_file() else _walk(root)
        base = root.parent if root.is_file() else root
        for path in files:
            if path.suffix.lower() not in MEDIA_EXTENSIONS:
                if root.is_file():
                    unparsed.append({"path": str(path), "reason": "not a media file or CSV listing"})
                else:
                    ignored += 1
                continue
            try:
                # an empty or corrupt file still becomes a clip: the media stage
                # records it as a per-clip failure with its reason
                records.append(_parse_in_folder(path, base))
            except _Unparsed as exc:
                if require_labels:
                    unparsed.append({"path": str(path), "reason": str(exc)})
                else:
                    kind = _media_kind(path)
                    records.append(_record("unlabelled", _slug(path.stem), "", "", "", path,
                                           _av(kind),
                                           _slug=True))
    clips, dup = _assemble(records)
    unparsed.extend(dup)
    return CorpusScan(clips=clips, unparsed=pd.DataFrame(unparsed, columns=UNPARSED_COLUMNS),
                      ignored=ignored)


def _assemble(records: list[dict]) -> tuple[pd.DataFrame, list[dict]]:
    """Group file records into clips (pairing RAVDESS modalities)."""
    clips: dict[str, dict] = {}
    dup: list[dict] = []
    seen_paths: set[str] = set()
    for rec in records:
        if rec["path"] in seen_paths:  # the same file reached twice (overlapping arguments)
            continue
        seen_paths.add(rec["path"])
        rec = dict(rec)
        kind, path = rec.pop("kind"), rec.pop("path")
        rec.pop("ravdess_modality", None)
        slugged = rec.pop("_slug", False)
        cid = rec["clip_id"]
        if slugged and cid in clips and kind in clips[cid]["_src"]:
            # two files whose readable names meet: tell them apart by their path (stable)
            import hashlib

            cid = rec["clip_id"] = f"{cid}-{hashlib.sha1(path.encode()).hexdigest()[:6]}"
        clip = clips.get(cid)
        if clip is None:
            clip = clips[cid] = {**rec, "audio_path": "", "video_path": "", "_src": {}}
        src = clip["_src"]
        # priority per stream: a dedicated single-stream file beats an AV file
        if kind in src:
            dup.append({"path": path, "reason": f"duplicate clip {cid} (also {src[kind]})"})
            continue
        src[kind] = path
    rows = []
    for cid, clip in clips.items():
        src = clip.pop("_src")
        clip["audio_path"] = src.get("audio") or src.get("audio+video", "")
        clip["video_path"] = src.get("video") or src.get("audio+video", "") or src.get("image", "")
        if "image" in src:
            clip["media"] = "image"
            clip["video_path"] = src["image"]
        elif clip["audio_path"] and clip["video_path"]:
            clip["media"] = "audio+video"
        else:
            clip["media"] = "audio" if clip["audio_path"] else "video"
        clip["group"] = f"{clip['corpus']}:{clip['actor']}" if clip["actor"] else ""
        rows.append(clip)
    if not rows:
        frame = pd.DataFrame(columns=["clip_id"] + MANIFEST_COLUMNS).set_index("clip_id")
        return frame, dup
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS and c != "clip_id"]
    for col in ("split",):
        if col not in frame:
            frame[col] = ""
    frame = frame[["clip_id"] + MANIFEST_COLUMNS + extra]
    frame[MANIFEST_COLUMNS] = frame[MANIFEST_COLUMNS].fillna("")
    frame = frame.sort_values(["corpus", "clip_id"], kind="stable").set_index("clip_id")
    return frame, dup


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest CSV written by :func:`discover` / ``mer manifest``.

    Raises
    ------
    FeatureTableError
        If a required column is missing (the message lists them).
    """
    from .exceptions import FeatureTableError

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ["clip_id"] + MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise FeatureTableError(f"{path}: manifest lacks column(s) {', '.join(missing)}")
    return frame.set_index("clip_id")
