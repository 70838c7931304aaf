"""Early fusion: the modalities' PCA components side by side, one classifier on top."""
from __future__ import annotations

import numpy as np

from ._common import FusionContext, ModalityData, ModalityPCA, augment_masks, proba_in

__all__ = ["ConcatFusion"]


class ConcatFusion:
    """The modalities' PCA components concatenated, one ``estimator`` on top (e.g.
    the design's stacking ensemble, ``EmotionClassifier(model="stacking")``)."""

    name = "concat"
    uses_sequences = False

    def __init__(self, ctx: FusionContext):
        self.ctx = ctx

    def fit(self, data: ModalityData, codes) -> "ConcatFusion":
        ctx, avail = self.ctx, data.avail
        self.pca_ = ModalityPCA(ctx).fit(data.Z, avail)
        R = self.pca_.transform(data.Z, avail)
        names = [n for m in ctx.modalities for n in self.pca_.names_[m]]
        full = avail.all(axis=1)
        parts, t, g = [], [], []
        masks = augment_masks(avail, len(ctx.modalities), ctx.p.missing_augment)
        for k, mask in enumerate(masks):
            sel = np.ones(len(codes), bool) if k == 0 else full
            parts.append(np.hstack([np.where(mask[:, [j]], R[m][sel], 0.0)
                                    for j, m in enumerate(ctx.modalities)]))
            t.append(codes[sel])
            g.append(data.groups[sel] if data.groups is not None else np.full(sel.sum(), ""))
        table = ctx.table(np.vstack(parts), names, np.concatenate(g))
        self.estimator_ = ctx.base().fit(table, np.concatenate(t))
        self.names_ = names
        return self

    def predict_proba(self, data: ModalityData) -> np.ndarray:
        R = self.pca_.transform(data.Z, data.avail)
        fused = np.hstack([R[m] for m in self.ctx.modalities])
        table = self.ctx.table(fused, self.names_, data.groups)
        return proba_in(self.estimator_, table, self.ctx.n_classes)
