"""Network fusion (PyTorch, CPU): ``gated`` and ``cross_attention``.

Each modality comes to the network as a vector (its PCA components and, with
``net_evidence``, the out-of-fold log-probabilities of its own classifier) and
a token sequence (its frames, speaker-standardised and reduced by a PCA, or
the vector as one token). The networks, and their training loop, live in
:mod:`mer_pipeline.fusion._nets`, imported only when a network is fitted.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._schema import SEQUENCE_COLUMNS
from ..exceptions import FeatureTableError
from ._common import (FusionContext, ModalityData, ModalityEvidence, ModalityPCA, SequenceScaler,
                      pca_fit)

__all__ = ["GatedFusion", "CrossAttentionFusion", "SequenceFusion"]


class _NetworkFusion:
    kind = ""
    uses_sequences = True
    uses_evidence = True

    def _build(self, dims):
        from . import _nets

        p = self.ctx.p
        return _nets.FusionNet(self.kind, dims, self.ctx.n_classes, p.hidden_size, p.n_heads,
                               p.dropout)

    def __init__(self, ctx: FusionContext):
        self.ctx = ctx

    @property
    def name(self):
        return self.kind

    # -- frame sequences ---------------------------------------------------
    def _raw_sequences(self, table) -> dict:
        """Modality → whether the table has its frame sequence column, and the column."""
        out = {}
        for m in self.ctx.modalities:
            col = SEQUENCE_COLUMNS.get(m)
            use = (self.ctx.p.use_sequences and isinstance(table, pd.DataFrame)
                   and col is not None and col in table.columns)
            out[m] = (use, col)
        return out

    def _fit_sequences(self, data: ModalityData) -> None:
        p = self.ctx.p
        self.sequences_, self.seq_scalers_, self.frame_pcas_ = {}, {}, {}
        self.frame_dims_, self.frame_widths_ = {}, {}
        for m, (use, col) in self._raw_sequences(data.table).items():
            self.sequences_[m] = bool(use and any(s is not None for s in data.table[col]))
            if not self.sequences_[m]:
                continue
            raw = self._column(data.table, col)
            self.seq_scalers_[m] = SequenceScaler(p.min_speaker_clips, p.speaker_norm).fit(raw)
            scaled = self.seq_scalers_[m].transform(raw, data.groups)
            frames = np.vstack([s for s in scaled if s is not None])
            k = int(min(p.frame_components, frames.shape[1], max(1, len(frames) - 1)))
            pca = None
            if frames.shape[1] > p.frame_components:
                pca = pca_fit(frames, k, p.random_state)
            self.frame_pcas_[m] = pca
            width = next(s.shape[1] for s in scaled if s is not None)
            self.frame_dims_[m] = pca.n_components_ if pca is not None else width
            self.frame_widths_[m] = width

    @staticmethod
    def _column(table, col):
        return [s if isinstance(s, np.ndarray) and len(s) else None for s in table[col]]

    def _tokens(self, data: ModalityData, R: dict) -> dict:
        """Per modality: padded token array (n, T, d) and mask (n, T) of real frames."""
        n, avail = len(data.avail), data.avail
        present = self._raw_sequences(data.table)
        tokens = {}
        for j, m in enumerate(self.ctx.modalities):
            if not self.sequences_.get(m):  # one token: the modality's vector
                tokens[m] = (R[m][:, None, :].astype(np.float32), avail[:, [j]].copy())
                continue
            use, col = present[m]
            if not use:
                raise FeatureTableError(
                    f"this model attends over the {m} frame sequences, but the table has no "
                    f"{col!r} column: load the features folder with load_features(folder) "
                    f"(it reads {m}_frames.parquet beside the CSV)")
            scaled = self.seq_scalers_[m].transform(self._column(data.table, col), data.groups)
            pca, dim = self.frame_pcas_[m], self.frame_dims_[m]
            bad = [i for i, s in enumerate(scaled) if s is not None
                   and s.shape[1] != self.frame_widths_[m]]
            if bad:
                raise FeatureTableError(f"{m} frames of clip {bad[0]} have "
                                        f"{scaled[bad[0]].shape[1]} features; the model was fit "
                                        f"on {self.frame_widths_[m]}")
            lengths = [0 if s is None or not avail[i, j] else len(s) for i, s in enumerate(scaled)]
            T = max(1, max(lengths))
            arr = np.zeros((n, T, dim), np.float32)
            mask = np.zeros((n, T), bool)
            for i, s in enumerate(scaled):
                if lengths[i]:
                    v = s if pca is None else pca.transform(s)
                    if pca is not None:
                        v = v / np.sqrt(np.maximum(pca.explained_variance_[0], 1e-12))
                    arr[i, :lengths[i]] = v
                    mask[i, :lengths[i]] = True
            tokens[m] = (arr, mask)
        return tokens

    def _vectors(self, data: ModalityData, R: dict, evidence: dict | None) -> dict:
        if evidence is None:
            return R
        # log-probabilities of the modality's own classifier, centred, beside its PCA
        return {m: np.hstack([np.where(data.avail[:, [j]], evidence[m] - evidence[m].mean(
            axis=1, keepdims=True), 0.0), R[m]]) for j, m in enumerate(self.ctx.modalities)}

    def _evidence_on(self) -> bool:
        return bool(self.uses_evidence and self.ctx.p.net_evidence)

    # -- fit / predict -------------------------------------------------------
    def fit(self, data: ModalityData, codes) -> "_NetworkFusion":
        import torch

        from . import _nets

        ctx, p = self.ctx, self.ctx.p
        evidence = None
        if self._evidence_on():
            self.evidence_ = ModalityEvidence(ctx).fit(data, codes)
            evidence = self.evidence_.oof_
        self.pca_ = ModalityPCA(ctx).fit(data.Z, data.avail)
        R = self.pca_.transform(data.Z, data.avail)
        self._fit_sequences(data)
        tokens = self._tokens(data, R)
        R = self._vectors(data, R, evidence)
        dims = [(R[m].shape[1], tokens[m][0].shape[2]) for m in ctx.modalities]
        seed = 0 if p.random_state is None else int(p.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._build(dims)
            _nets.train(net, R, tokens, data.avail, codes, ctx.modalities, epochs=p.epochs,
                        batch_size=p.batch_size, lr=p.learning_rate,
                        weight_decay=p.weight_decay, modality_dropout=p.modality_dropout,
                        seed=seed)
        self.net_ = net.eval()
        return self

    def predict_proba(self, data: ModalityData) -> np.ndarray:
        from . import _nets

        R = self.pca_.transform(data.Z, data.avail)
        tokens = self._tokens(data, R)
        evidence = self.evidence_.log_proba(data) if self._evidence_on() else None
        R = self._vectors(data, R, evidence)
        return _nets.predict_proba(self.net_, R, tokens, data.avail, self.ctx.modalities)


class GatedFusion(_NetworkFusion):
    """Each modality encoded from its vector and a learned attention pooling over its
    frames; a gate computed per clip from all of them weighs the modalities present."""

    kind = "gated"


class CrossAttentionFusion(_NetworkFusion):
    """Each modality's frame sequence attends (multi-head) over the other's, then is
    pooled by a learned attention over time."""

    kind = "cross_attention"


class SequenceFusion(_NetworkFusion):
    """A temporal model: a bidirectional GRU over each modality's frames (speaker-
    standardised, reduced by PCA), summarised by its mean and maximum over time, the
    modalities side by side (:class:`~mer_pipeline.fusion._nets.SequenceNet`). It learns
    from the frame sequences alone, beside the pooled statistics the other strategies
    use; a modality without frames enters as its PCA vector, one step long."""

    kind = "sequence"
    uses_evidence = False

    def _build(self, dims):
        from . import _nets

        p = self.ctx.p
        return _nets.SequenceNet(dims, self.ctx.n_classes, p.hidden_size, p.dropout)
