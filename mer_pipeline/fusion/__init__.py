"""Fusion of voice and face: :class:`MultimodalEmotionClassifier`.

Modules: ``_estimator`` (the estimator and the :data:`STRATEGIES` registry),
``_common`` (per-modality preprocessing and the modalities' own classifiers),
one module per strategy (``_late``, ``_concat``, ``_networks`` with the
PyTorch networks and their training loop in ``_nets``).

The estimator takes the joined feature table that ``mer features`` writes
(``audio__*`` and ``face__*`` columns, the speaker column, and, where present,
the per-clip frame sequences ``audio_frames`` / ``face_frames`` that
:func:`mer_pipeline.features.load_features` attaches) and learns everything
inside ``fit``: per-modality speaker normalisation and PCA, attention pooling
over frames, the fusion, and the classifiers.

Fusion strategies (parameter ``fusion``):

``"late"`` (default, chosen by measurement: see the README's fusion benchmark)
    One classifier per modality (``estimator``, by default the blend of
    :class:`~mer_pipeline.ensemble.EmotionClassifier`); their out-of-fold
    log-probabilities, from speaker-grouped inner folds, feed a meta-learner
    (``meta_learner``: logistic regression, SVM, KNN or MLP).
``"concat"``
    The modalities' PCA components side by side, one ``estimator`` on top
    (e.g. the design's stacking ensemble, SVC + random forest + XGBoost →
    meta SVC: ``estimator=EmotionClassifier(model="stacking")``).
``"gated"``
    A network (PyTorch, CPU) that encodes each modality (its PCA vector plus
    a learned attention pooling over its frames) and mixes them with a gate
    computed per clip from both: a softmax over the modalities present.
``"cross_attention"``
    A network in which each modality's frame sequence (the audio's low-level
    descriptors at 25 frames/s, the face's per-frame embeddings at 3 frames/s)
    attends, with multi-head attention, over the other's, then is pooled by a
    learned attention over time.
``"sequence"``
    A temporal model over the frame sequences alone: a bidirectional GRU per
    modality, its outputs' mean and maximum over time, the modalities side by
    side. The alternative to pooled statistics (it works on one modality too).

Missing modality: a clip whose features for a modality are all missing (no
audio track, no video, no face found) is predicted from the modalities it
has. Each strategy learns to: ``late`` and ``concat`` add training copies with
one modality removed, the networks drop a modality at random while training.
:meth:`MultimodalEmotionClassifier.modalities_used` says which modalities
each clip's prediction used.
"""
from __future__ import annotations

import numpy as np

from .._schema import modality_blocks, table_modalities
from ..ensemble import EmotionClassifier
from ..exceptions import ParameterError
from ._estimator import FUSIONS, META_LEARNERS, STRATEGIES, MultimodalEmotionClassifier

__all__ = ["MultimodalEmotionClassifier", "FUSIONS", "FUSION_CHOICES", "META_LEARNERS",
           "STRATEGIES", "build_estimator", "modality_blocks", "table_modalities"]


FUSION_CHOICES = ("auto", "none") + FUSIONS


def build_estimator(table=None, *, fusion: str = "auto", model: str | None = None,
                    speaker_norm: bool = True, random_state: int | None = 0,
                    adaptation: str | None = None, corpus_experts: bool = True, **params):
    """The estimator ``mer evaluate`` and ``mer train`` fit: one place decides.

    Parameters
    ----------
    table : pandas.DataFrame or None
        The feature table (only its columns are looked at, for ``"auto"``).
    fusion : {"auto", "none", "late", "concat", "gated", "cross_attention", "sequence"}
        ``"auto"``: :class:`MultimodalEmotionClassifier` with ``late`` fusion
        when the table has audio and face features, otherwise
        :class:`~mer_pipeline.ensemble.EmotionClassifier`. ``"none"``:
        ``EmotionClassifier`` over all columns, whatever the modalities.
    model : str or None
        ``EmotionClassifier(model=...)``: the classifier itself, or each
        modality's classifier (``late``) / the fused one (``concat``) inside
        the multimodal estimator; ``None`` keeps the default (``blend``).
    speaker_norm : bool
    random_state : int or None
    adaptation : str or None
        The estimator's ``adaptation`` (``None``: its default: ``"auto"`` for
        ``EmotionClassifier``, ``"switch"`` for the multimodal estimator, which
        has no ``"auto"``).
    corpus_experts : bool, default=True
        With a table of several corpora (its ``corpus`` column), wrap the
        estimator in :class:`~mer_pipeline.experts.CorpusExperts`: one model
        over all corpora plus an expert per corpus for that corpus's clips.
    **params
        More :class:`MultimodalEmotionClassifier` (or ``EmotionClassifier``)
        hyper-parameters.

    Returns
    -------
    estimator (unfitted)
    """
    if fusion not in FUSION_CHOICES:
        raise ParameterError(f"fusion must be one of {', '.join(FUSION_CHOICES)}; "
                             f"got {fusion!r}")
    kw = {} if model is None else {"model": model}
    if fusion == "auto":
        fusion = "late" if table is not None and len(table_modalities(table)) > 1 else "none"
    if adaptation is not None:
        params = {**params, "adaptation": adaptation}
    if fusion == "none":
        estimator = EmotionClassifier(speaker_norm=speaker_norm, random_state=random_state,
                                      **kw, **params)
    else:
        inner = EmotionClassifier(random_state=random_state, **kw) if kw else None
        estimator = MultimodalEmotionClassifier(fusion=fusion, estimator=inner,
                                                speaker_norm=speaker_norm,
                                                random_state=random_state, **params)
    if corpus_experts and n_corpora(table) > 1:
        from ..experts import CorpusExperts

        return CorpusExperts(estimator)
    return estimator


def n_corpora(table) -> int:
    """How many corpora a feature table's ``corpus`` column names (0 without one)."""
    if table is None or "corpus" not in getattr(table, "columns", ()):
        return 0
    return int(table["corpus"].astype(str).replace("", np.nan).nunique())
