"""Speaker enrollment: a few reference clips of a speaker, kept for later predictions.

A model normalises a speaker by that speaker's own statistics only when a batch
holds enough of their clips; a clip scored alone, or a stream's first windows, get
the population's. Enrollment stores a speaker's reference clips (their features,
and their emotion where it is known) so that later clips of that speaker, however
few, are normalised by statistics estimated from them
(:class:`~mer_pipeline.speaker.SpeakerPrior`: shrunk towards the population by
how little a few clips say).

A profile is a plain ``.npz`` file (no pickled code) holding the reference
features, their column names, the emotions, the clip ids and the provenance of
the features (how they were extracted): a profile is refused by a model whose
features were extracted otherwise.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._schema import feature_columns
from ._version import __version__
from .exceptions import FeatureTableError, ParameterError
from .speaker import NO_GROUP

__all__ = ["SpeakerProfile", "enroll", "merge_profiles", "save_profile", "load_profile",
           "load_profiles", "profile_name", "PROFILE_SUFFIX", "PROFILE_FORMAT"]

PROFILE_SUFFIX = ".profile.npz"
PROFILE_FORMAT = 1


@dataclass
class SpeakerProfile:
    """Reference clips of one speaker.

    Attributes
    ----------
    speaker : str
        The speaker id clips are matched by (their ``group`` column).
    values : np.ndarray, shape (n_refs, n_features)
        The reference clips' features.
    columns : list of str
        Their feature column names.
    emotions : list of str or None
        The emotion of each reference clip (``""`` for one without); ``None``
        where none is labelled (the model then estimates them).
    clip_ids : list of str
    provenance : dict or None
        How the features were extracted (``features.json``'s record).
    """

    speaker: str
    values: np.ndarray
    columns: list
    emotions: list | None = None
    clip_ids: list = field(default_factory=list)
    provenance: dict | None = None

    @property
    def n_clips(self) -> int:
        return int(len(self.values))

    def features(self, columns) -> np.ndarray:
        """The reference features in ``columns``' order (a model's columns).

        Raises
        ------
        FeatureTableError
            If the profile lacks any of ``columns``.
        """
        index = {c: i for i, c in enumerate(self.columns)}
        missing = [c for c in columns if c not in index]
        if missing:
            raise FeatureTableError(
                f"speaker profile {self.speaker!r} lacks {len(missing)} feature column(s) the "
                f"model needs (e.g. {missing[0]}): it was enrolled with another model's "
                "features; enroll the speaker again with this model")
        return self.values[:, [index[c] for c in columns]]


def merge_profiles(first: SpeakerProfile, second: SpeakerProfile) -> SpeakerProfile:
    """One profile holding both profiles' reference clips (a clip id in both: kept once).

    Raises
    ------
    FeatureTableError
        Profiles of two speakers, or of features extracted otherwise (other
        columns or settings).
    """
    from .features import check_provenance

    if first.speaker != second.speaker:
        raise FeatureTableError(f"cannot merge the profiles of {first.speaker!r} and "
                                f"{second.speaker!r}")
    if set(first.columns) != set(second.columns):
        raise FeatureTableError(f"the new references of {first.speaker!r} have other feature "
                                "columns than the stored profile; enroll anew (without append)")
    check_provenance(first.provenance, second.provenance, source="the new references")
    seen = set(first.clip_ids)
    new = [i for i, c in enumerate(second.clip_ids) if c not in seen]
    theirs = second.emotions or [""] * second.n_clips
    labels = (first.emotions or [""] * first.n_clips) + [theirs[i] for i in new]
    values = np.vstack([first.values, second.features(first.columns)[new]])
    return SpeakerProfile(speaker=first.speaker, values=values, columns=list(first.columns),
                          emotions=labels if any(labels) else None,
                          clip_ids=list(first.clip_ids) + [second.clip_ids[i] for i in new],
                          provenance=first.provenance or second.provenance)


def enroll(table: pd.DataFrame, speaker: str, *, emotion: str | None = None,
           labelled: bool = True) -> SpeakerProfile:
    """A speaker profile from the feature table of their reference clips.

    Parameters
    ----------
    table : pandas.DataFrame
        Feature table of the reference clips (from
        :func:`~mer_pipeline.features.load_features`, indexed by ``clip_id``);
        its ``attrs["provenance"]`` is kept.
    speaker : str
        The speaker's id (what later clips carry in their ``group`` column).
    emotion : str or None
        The emotion of every reference clip (e.g. ``"neutral"``), overriding the
        table's ``emotion`` column.
    labelled : bool, default=True
        Use the table's ``emotion`` column where every clip has one; ``False``
        stores the clips as unlabelled.

    Returns
    -------
    SpeakerProfile

    Raises
    ------
    ParameterError
        An empty table or speaker id, or no features.
    """
    speaker = str(speaker).strip()
    if speaker in NO_GROUP:
        raise ParameterError(f"speaker id {speaker!r} means 'unknown speaker'; give an id")
    if not len(table):
        raise ParameterError(f"no reference clip to enroll speaker {speaker!r}")
    cols = feature_columns(table)
    if not cols:
        raise ParameterError("the reference table has no feature columns (<modality>__…)")
    values = table[cols].to_numpy(dtype=np.float64, na_value=np.nan)
    emotions = None
    if emotion is not None:
        emotions = [str(emotion)] * len(table)
    elif labelled and "emotion" in table.columns:
        labels = table["emotion"].fillna("").astype(str)
        if (labels != "").all():
            emotions = labels.tolist()
    return SpeakerProfile(speaker=speaker, values=values, columns=[str(c) for c in cols],
                          emotions=emotions, clip_ids=[str(i) for i in table.index],
                          provenance=table.attrs.get("provenance"))


def profile_name(speaker: str) -> str:
    """The file name of a speaker's profile (the id percent-encoded: ``ravdess%3A06``)."""
    from urllib.parse import quote

    name = quote(str(speaker), safe="-_+")
    return f"{name}{PROFILE_SUFFIX}"


def save_profile(profile: SpeakerProfile, folder: str | os.PathLike) -> Path:
    """Write ``<folder>/<speaker>.profile.npz`` (:func:`profile_name`; replacing an
    earlier profile of the speaker)."""
    from ._io import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / profile_name(profile.speaker)
    meta = {"format": PROFILE_FORMAT, "mer_pipeline": __version__, "speaker": profile.speaker,
            "columns": list(profile.columns), "emotions": profile.emotions,
            "clip_ids": list(profile.clip_ids), "provenance": profile.provenance}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, values=np.asarray(profile.values, dtype=np.float64),
                                meta=np.array(json.dumps(meta, default=str)))
    return path


def load_profile(path: str | os.PathLike) -> SpeakerProfile:
    """Read a profile written by :func:`save_profile`.

    Raises
    ------
    FeatureTableError
        A file that is not a profile, or one of a newer format.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            values, meta = data["values"], json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise FeatureTableError(f"{path}: not a speaker profile ({err})") from err
    if meta.get("format", 0) > PROFILE_FORMAT:
        raise FeatureTableError(f"{path}: profile format {meta.get('format')} is newer than "
                                f"this mer_pipeline ({__version__}) reads")
    if values.ndim != 2 or values.shape[1] != len(meta.get("columns") or ()):
        raise FeatureTableError(f"{path}: its values and column names disagree")
    return SpeakerProfile(speaker=str(meta["speaker"]), values=values,
                          columns=list(meta["columns"]), emotions=meta.get("emotions"),
                          clip_ids=list(meta.get("clip_ids") or []),
                          provenance=meta.get("provenance"))


def load_profiles(folder: str | os.PathLike, *, provenance: dict | None = None,
                  speaker: str | None = None) -> dict:
    """Every profile in a folder, by speaker id, checked against a model's provenance.

    Parameters
    ----------
    folder : path
        A folder of ``*.profile.npz`` files (or one such file).
    provenance : dict or None
        The model's record (its metadata's ``provenance``): a profile whose
        features were extracted with other settings is refused.
    speaker : str or None
        A speaker whose profile must be among them.

    Returns
    -------
    dict of str to SpeakerProfile

    Raises
    ------
    FeatureTableError
        A missing folder, no profile in it, or a profile of other features.
    ParameterError
        No profile of ``speaker``.
    """
    from .features import check_provenance

    folder = Path(folder)
    if folder.is_file():
        paths = [folder]
    elif folder.is_dir():
        paths = sorted(folder.glob(f"*{PROFILE_SUFFIX}"))
    else:
        raise FeatureTableError(f"speaker profiles: {folder} does not exist")
    if not paths:
        raise FeatureTableError(f"no speaker profile (*{PROFILE_SUFFIX}) in {folder}; "
                                "write them with `mer enroll`")
    out = {}
    for path in paths:
        profile = load_profile(path)
        check_provenance(provenance, profile.provenance, source=str(path))
        out[profile.speaker] = profile
    if speaker is not None and str(speaker) not in out:
        raise ParameterError(f"no profile of speaker {str(speaker)!r} in {folder} (it has: "
                             f"{', '.join(sorted(out))})")
    return out
