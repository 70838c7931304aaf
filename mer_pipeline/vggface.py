"""VGGFace ResNet-50 in PyTorch, loading the original keras-vggface ``.h5`` weights.

``keras-vggface`` no longer imports on current Keras and downloads its
weights at run time; no package ships them. Users who have the original file
(``rcmalli_vggface_tf_notop_resnet50.h5``, or the file with the top) give its
path (``weights=`` / ``--vggface-weights`` / ``$MER_VGGFACE_WEIGHTS``) and this
module rebuilds the network and loads every layer by name:

- stem ``conv1/7x7_s2`` (7x7, stride 2, TensorFlow "same" padding: 2 before,
  3 after on a 224 input) + ``conv1/7x7_s2/bn``, ReLU, 3x3/2 max-pool;
- bottleneck blocks ``conv{stage}_{block}_1x1_reduce`` (carrying the stride),
  ``_3x3``, ``_1x1_increase`` and, in each stage's first block,
  ``_1x1_proj``, each with its ``/bn`` twin; stages 2–5 of 3, 4, 6, 3 blocks;
- no convolution bias, batch-norm epsilon 1e-3, kernels HWIO → OIHW;
- 7x7 average pool → 2048-d embedding.

Input preprocessing is keras-vggface's version 2: RGB → BGR, minus the
channel means (91.4953, 103.8827, 131.0912), on 224x224 crops.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .exceptions import MerError

__all__ = ["VGGFACE_ENV", "STAGES", "layer_names", "build_resnet50", "load_vggface_weights",
           "vggface_weights_path", "preprocess"]

VGGFACE_ENV = "MER_VGGFACE_WEIGHTS"
#: stage -> (number of blocks, (reduce, 3x3, increase) filters, stride of the first block)
STAGES = {2: (3, (64, 64, 256), 1), 3: (4, (128, 128, 512), 2),
          4: (6, (256, 256, 1024), 2), 5: (3, (512, 512, 2048), 2)}
MEAN_BGR = (91.4953, 103.8827, 131.0912)
BN_EPS = 1e-3


def layer_names() -> list[str]:
    """Every convolution layer name of the network (each has a ``/bn`` twin)."""
    names = ["conv1/7x7_s2"]
    for stage, (blocks, _, _) in STAGES.items():
        for block in range(1, blocks + 1):
            base = f"conv{stage}_{block}"
            names += [f"{base}_1x1_reduce", f"{base}_3x3", f"{base}_1x1_increase"]
            if block == 1:
                names.append(f"{base}_1x1_proj")
    return names


def vggface_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The weights file from ``path`` or ``$MER_VGGFACE_WEIGHTS``; a clear error otherwise."""
    path = path or os.environ.get(VGGFACE_ENV)
    if not path:
        raise MerError(
            "the vggface encoder needs the original keras-vggface ResNet-50 weights, which no "
            "package ships and which are never downloaded at run time: give the path of "
            "rcmalli_vggface_tf_notop_resnet50.h5 (from the keras-vggface v2.0 release, "
            "github.com/rcmalli/keras-vggface) with --vggface-weights or $" + VGGFACE_ENV)
    path = Path(path)
    if not path.is_file():
        raise MerError(f"VGGFace weights not found at {path}")
    return path


def build_resnet50():
    """The VGGFace ResNet-50 as a ``torch.nn.Module`` (random weights), eval mode.

    Its convolution and batch-norm modules are registered under their Keras
    layer names (``/`` written ``__``), so loading is by name.
    """
    import torch.nn.functional as F
    from torch import nn

    def conv(cin, cout, k, stride=1, padding=0):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)

    def bn(c):
        return nn.BatchNorm2d(c, eps=BN_EPS)

    class Bottleneck(nn.Module):
        def __init__(self, cin, filters, stride, proj):
            super().__init__()
            f1, f2, f3 = filters
            self.reduce, self.reduce_bn = conv(cin, f1, 1, stride), bn(f1)
            self.conv3, self.conv3_bn = conv(f1, f2, 3, padding=1), bn(f2)
            self.increase, self.increase_bn = conv(f2, f3, 1), bn(f3)
            self.proj = conv(cin, f3, 1, stride) if proj else None
            self.proj_bn = bn(f3) if proj else None

        def forward(self, x):
            y = F.relu(self.reduce_bn(self.reduce(x)))
            y = F.relu(self.conv3_bn(self.conv3(y)))
            y = self.increase_bn(self.increase(y))
            short = self.proj_bn(self.proj(x)) if self.proj is not None else x
            return F.relu(y + short)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.stem_bn = conv(3, 64, 7, stride=2), bn(64)
            blocks, cin = [], 64
            for stage, (n, filters, stride) in STAGES.items():
                for b in range(1, n + 1):
                    blocks.append(Bottleneck(cin, filters, stride if b == 1 else 1, b == 1))
                    cin = filters[2]
            self.blocks = nn.ModuleList(blocks)

        def forward(self, x):
            x = F.pad(x, (2, 3, 2, 3))  # TF "same" for a 7x7/2 conv on an even input
            x = F.relu(self.stem_bn(self.stem(x)))
            x = F.max_pool2d(x, 3, stride=2)
            for block in self.blocks:
                x = block(x)
            return x.mean(dim=(2, 3))  # 7x7 average pool on a 224 input -> (n, 2048)

        def keras_modules(self):
            """Keras layer name -> (conv module, batch-norm module)."""
            out = {"conv1/7x7_s2": (self.stem, self.stem_bn)}
            i = 0
            for stage, (n, _, _) in STAGES.items():
                for b in range(1, n + 1):
                    blk, base = self.blocks[i], f"conv{stage}_{b}"
                    out[f"{base}_1x1_reduce"] = (blk.reduce, blk.reduce_bn)
                    out[f"{base}_3x3"] = (blk.conv3, blk.conv3_bn)
                    out[f"{base}_1x1_increase"] = (blk.increase, blk.increase_bn)
                    if blk.proj is not None:
                        out[f"{base}_1x1_proj"] = (blk.proj, blk.proj_bn)
                    i += 1
            return out

    return ResNet50().eval()


def _dataset(h5, layer: str, suffix: str):
    """A weight of a Keras layer, from either h5 layout (save_weights or full model)."""
    root = h5["model_weights"] if "model_weights" in h5 else h5
    if layer not in root:
        raise MerError(f"layer {layer!r} missing from the VGGFace weights file")
    group = root[layer]
    for name in (f"{layer}/{suffix}:0", f"{layer}/{suffix}", suffix + ":0", suffix):
        if name in group:
            return np.asarray(group[name])
    raise MerError(f"weight {suffix!r} of layer {layer!r} missing from the VGGFace weights file")


def load_vggface_weights(model, path: str | os.PathLike) -> list[str]:
    """Copy every layer's weights from a keras-vggface ``.h5`` file into ``model``.

    Returns
    -------
    list of str
        The layer names loaded (all of :func:`layer_names`).

    Raises
    ------
    MerError
        If a layer or weight is missing or has the wrong shape.
    """
    import h5py
    import torch

    loaded = []
    with h5py.File(path, "r") as h5, torch.no_grad():
        for name, (conv, bn) in model.keras_modules().items():
            kernel = _dataset(h5, name, "kernel")
            expected = tuple(conv.weight.shape)
            oihw = np.transpose(kernel, (3, 2, 0, 1))  # HWIO -> OIHW
            if oihw.shape != expected:
                raise MerError(f"{name}: kernel shape {kernel.shape} does not fit {expected}")
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(oihw)))
            for attr, suffix in (("weight", "gamma"), ("bias", "beta"),
                                 ("running_mean", "moving_mean"),
                                 ("running_var", "moving_variance")):
                value = _dataset(h5, f"{name}/bn", suffix)
                target = getattr(bn, attr)
                if value.shape != tuple(target.shape):
                    raise MerError(f"{name}/bn {suffix}: shape {value.shape} does not fit "
                                   f"{tuple(target.shape)}")
                target.copy_(torch.from_numpy(value.astype(np.float32)))
            loaded.append(name)
    return loaded


def preprocess(crops_rgb: np.ndarray) -> np.ndarray:
    """keras-vggface version-2 preprocessing: RGB→BGR, minus channel means, NCHW float32."""
    x = np.asarray(crops_rgb, dtype=np.float32)[..., ::-1] - np.asarray(MEAN_BGR, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
