"""Late fusion: each modality's own classifier, a meta-learner over their evidence."""
from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ._common import FusionContext, ModalityData, ModalityEvidence, augment_masks, proba_in

__all__ = ["LateFusion", "META_LEARNERS"]

META_LEARNERS = ("logreg", "svm", "knn", "mlp")


def meta_features(logps: dict, avail, modalities) -> np.ndarray:
    """Per clip: each modality's log-probabilities (0 where missing) and whether it is there."""
    parts = []
    for j, m in enumerate(modalities):
        parts += [np.where(avail[:, [j]], logps[m], 0.0), avail[:, [j]].astype(np.float64)]
    return np.hstack(parts)


class LateFusion:
    """One classifier per modality; their out-of-fold log-probabilities, from
    speaker-grouped inner folds, feed a meta-learner (``meta_learner``)."""

    name = "late"
    uses_sequences = False

    def __init__(self, ctx: FusionContext):
        self.ctx = ctx

    def _meta(self):
        p = self.ctx.p
        if p.meta_learner == "logreg":
            return LogisticRegression(C=p.meta_C, max_iter=5000)
        if p.meta_learner == "svm":
            return CalibratedClassifierCV(SVC(C=p.meta_C, kernel="rbf", gamma="scale",
                                              random_state=p.random_state),
                                          method="sigmoid", cv=3, ensemble=False)
        if p.meta_learner == "knn":
            return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15,
                                                                        weights="distance"))
        return MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-2, max_iter=2000,
                             random_state=p.random_state)

    def fit(self, data: ModalityData, codes) -> "LateFusion":
        ctx = self.ctx
        self.evidence_ = ModalityEvidence(ctx).fit(data, codes)
        oof = self.evidence_.oof_
        full = data.avail.all(axis=1)
        F, t = [], []
        masks = augment_masks(data.avail, len(ctx.modalities), ctx.p.missing_augment)
        for k, mask in enumerate(masks):
            sel = slice(None) if k == 0 else full
            F.append(meta_features({m: oof[m][sel] for m in oof}, mask, ctx.modalities))
            t.append(codes[sel])
        self.meta_ = self._meta().fit(np.vstack(F), np.concatenate(t))
        return self

    def predict_proba(self, data: ModalityData) -> np.ndarray:
        logps = self.evidence_.log_proba(data)
        return proba_in(self.meta_, meta_features(logps, data.avail, self.ctx.modalities),
                        self.ctx.n_classes)
