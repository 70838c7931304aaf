"""The fusion networks of :class:`~mer_pipeline.fusion.MultimodalEmotionClassifier`
and their training loop.

A module of its own so that PyTorch is imported only when a network is asked
for, and so that a fitted network pickles (its classes live at module level).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["AttentionPool", "FusionNet", "SequenceNet", "train", "predict_proba"]


class AttentionPool(nn.Module):
    """Learned attention pooling over a sequence: ``softmax(w · tanh(W x_t))`` weights.

    Parameters
    ----------
    d : int
        Token width.
    """

    def __init__(self, d: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))

    def forward(self, x, mask):
        s = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, dim=1)
        return torch.bmm(w.unsqueeze(1), x).squeeze(1)


class FusionNet(nn.Module):
    """Gated or cross-attention fusion of K modalities.

    Each modality ``m`` comes as a vector (its PCA components, and the
    log-probabilities of its own classifier) and a token sequence (its frames,
    or the vector as one token), with a mask of real tokens, and a flag of
    whether the clip has it. A learned null token leads each sequence so that
    attention is defined for a clip without the modality.

    ``gated``: ``h_m = tanh(MLP(vector_m) + AttentionPool(tokens_m))``; a gate
    computed from all ``h_m`` gives a softmax weight per modality present;
    the head reads ``Σ w_m h_m``.

    ``cross_attention``: each modality's tokens attend (multi-head) over the
    other modalities' tokens; the result, added to the tokens and normalised,
    is pooled by a learned attention over time; the head reads each
    modality's vector encoding and pooled sequence.

    Parameters
    ----------
    fusion : {"gated", "cross_attention"}
    dims : list of (int, int)
        Per modality: vector width, token width.
    n_classes, hidden, heads : int
    dropout : float
    """

    def __init__(self, fusion, dims, n_classes, hidden, heads, dropout):
        super().__init__()
        self.fusion = fusion
        k = len(dims)
        self.vec = nn.ModuleList(
            nn.Sequential(nn.Dropout(dropout), nn.Linear(dv, hidden), nn.GELU(),
                          nn.Dropout(dropout)) for dv, _ in dims)
        self.tok = nn.ModuleList(nn.Sequential(nn.Linear(dt, hidden), nn.GELU())
                                 for _, dt in dims)
        self.null = nn.Parameter(torch.zeros(k, 1, hidden))
        self.pool = nn.ModuleList(AttentionPool(hidden) for _ in dims)
        if fusion == "gated":
            self.gate = nn.Linear(k * hidden, k)
            self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Dropout(dropout),
                                      nn.Linear(hidden, n_classes))
        else:
            self.cross = nn.ModuleList(
                nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
                for _ in dims)
            self.norm = nn.ModuleList(nn.LayerNorm(hidden) for _ in dims)
            self.missing = nn.Parameter(torch.zeros(k, hidden))
            self.head = nn.Sequential(nn.LayerNorm(2 * k * hidden), nn.Dropout(dropout),
                                      nn.Linear(2 * k * hidden, n_classes))

    def _seq(self, j, tokens, mask):
        t = self.tok[j](tokens)
        null = self.null[j].expand(t.shape[0], 1, -1)
        ones = torch.ones(t.shape[0], 1, dtype=torch.bool)
        return torch.cat([null, t], 1), torch.cat([ones, mask], 1)

    def gates(self, vecs, toks, masks, avail):
        """Per clip, the weight the gate gives each modality (``gated`` only)."""
        k = len(vecs)
        seqs = [self._seq(j, toks[j], masks[j]) for j in range(k)]
        h = [torch.tanh(self.vec[j](vecs[j]) + self.pool[j](*seqs[j])) for j in range(k)]
        gate = self.gate(torch.cat([h[j] * avail[:, [j]] for j in range(k)], 1))
        return torch.softmax(gate.masked_fill(avail == 0, float("-inf")), dim=1), h

    def forward(self, vecs, toks, masks, avail):
        k = len(vecs)
        if self.fusion == "gated":
            gate, h = self.gates(vecs, toks, masks, avail)
            return self.head(sum(gate[:, [j]] * h[j] for j in range(k)))
        seqs = [self._seq(j, toks[j], masks[j]) for j in range(k)]
        parts = []
        for j in range(k):
            q, qmask = seqs[j]
            others = [seqs[i] for i in range(k) if i != j] or [seqs[j]]
            kv = torch.cat([o[0] for o in others], 1)
            kvmask = torch.cat([o[1] for o in others], 1)
            ctx, _ = self.cross[j](q, kv, kv, key_padding_mask=~kvmask, need_weights=False)
            pooled = self.pool[j](self.norm[j](q + ctx), qmask)
            a = avail[:, [j]]
            parts += [a * self.vec[j](vecs[j]) + (1 - a) * self.missing[j], a * pooled]
        return self.head(torch.cat(parts, 1))


class SequenceNet(nn.Module):
    """A temporal classifier over each modality's frame sequence (the ``sequence`` fusion).

    Per modality: a linear projection of each frame, a bidirectional GRU over the
    real frames (packed, so padding never enters it), and the mean and maximum of
    its outputs over time; a learned vector stands in for a modality the clip lacks.
    The head reads the modalities' summaries side by side. It sees only the frames:
    the pooled statistics and the modalities' own classifiers are not inputs.

    Parameters
    ----------
    dims : list of (int, int)
        Per modality: vector width (unused), token width.
    n_classes, hidden : int
    dropout : float
    """

    def __init__(self, dims, n_classes, hidden, dropout):
        super().__init__()
        k = len(dims)
        half = max(1, hidden // 2)
        self.proj = nn.ModuleList(nn.Sequential(nn.Linear(dt, hidden), nn.GELU(),
                                                nn.Dropout(dropout)) for _, dt in dims)
        self.gru = nn.ModuleList(nn.GRU(hidden, half, batch_first=True, bidirectional=True)
                                 for _ in dims)
        self.missing = nn.Parameter(torch.zeros(k, 4 * half))
        self.head = nn.Sequential(nn.LayerNorm(4 * half * k), nn.Dropout(dropout),
                                  nn.Linear(4 * half * k, n_classes))

    def _summary(self, j, tokens, mask):
        x = self.proj[j](tokens)
        lengths = mask.sum(1).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.gru[j](packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=tokens.shape[1])
        m = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        mean = (out * m).sum(1) / lengths[:, None]
        peak = out.masked_fill(~m, float("-inf")).max(1).values
        return torch.cat([mean, peak], 1)

    def forward(self, vecs, toks, masks, avail):
        parts = []
        for j in range(len(toks)):
            a = avail[:, [j]]
            h = self._summary(j, toks[j], masks[j])
            parts.append(a * h + (1 - a) * self.missing[j])
        return self.head(torch.cat(parts, 1))


# -- the training loop ---------------------------------------------------------
def _batch(R, tokens, avail, modalities, idx):
    vecs = [torch.from_numpy(R[m][idx].astype(np.float32)) for m in modalities]
    toks = [torch.from_numpy(tokens[m][0][idx]) for m in modalities]
    masks = [torch.from_numpy(tokens[m][1][idx]) for m in modalities]
    return vecs, toks, masks, torch.from_numpy(avail[idx].astype(np.float32))


def train(net, R, tokens, avail, codes, modalities, *, epochs, batch_size, lr, weight_decay,
          modality_dropout, seed):
    """Fit ``net`` with AdamW and a one-cycle schedule, label smoothing 0.1, and
    modality dropout (one modality of some complete clips hidden per batch)."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * int(np.ceil(len(codes) / batch_size)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    y = torch.from_numpy(codes.astype(np.int64))
    k = len(modalities)
    net.train()
    for _ in range(epochs):
        order = rng.permutation(len(codes))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            vecs, toks, masks, av = _batch(R, tokens, avail, modalities, idx)
            if k > 1 and modality_dropout > 0:
                # hide one modality of some clips that have them all
                full = (av.sum(1) == k).numpy()
                hide = full & (rng.random(len(idx)) < modality_dropout)
                which = rng.integers(0, k, len(idx))
                for j in range(k):
                    rows = torch.from_numpy(hide & (which == j))
                    av[rows, j] = 0.0
                    masks[j][rows] = False
                    vecs[j][rows] = 0.0
            loss = loss_fn(net(vecs, toks, masks, av), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()


def predict_proba(net, R, tokens, avail, modalities, batch_size=256):
    """Softmax outputs of a fitted ``net``, float64, in batches."""
    out = []
    with torch.no_grad():
        for start in range(0, len(avail), batch_size):
            idx = np.arange(start, min(start + batch_size, len(avail)))
            logits = net(*_batch(R, tokens, avail, modalities, idx))
            out.append(torch.softmax(logits, dim=1).numpy().astype(np.float64))
    return np.vstack(out) if out else np.zeros((0, 0))
