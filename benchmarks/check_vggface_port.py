"""Check the PyTorch VGGFace ResNet-50 port against an independent Keras definition.

No package ships the real keras-vggface weights, so the port's accuracy cannot
be measured here; what can be checked is that it computes the same function as
keras-vggface's ``RESNET50(include_top=False)`` for the same weights. This
script:

1. writes a stand-in ``.h5`` in keras-vggface's layout (every layer name of the
   network, random weights: the tests' ``write_standin``);
2. runs :mod:`mer_pipeline.vggface` (PyTorch) on two random 224x224 crops;
3. runs, in a second Python that has Keras 3 and h5py (``--keras-python``; e.g. a
   throwaway venv with ``pip install tensorflow-cpu h5py``: TensorFlow is not a
   dependency of this package), an independent Keras definition of the same
   network (Keras' own "same" padding, HWIO kernels, batch norm with its default
   epsilon) with the weights set layer by layer from the file, on the same
   crops with keras-vggface's version-2 preprocessing;
4. prints how many layers Keras set and the largest difference.

Run: ``python benchmarks/check_vggface_port.py --keras-python /path/to/tf-venv/bin/python``.
Measured 2026-11-23 (TensorFlow 2.21, Keras 3.15, torch 2.13): 106 of 106 layers
set, max abs difference 0.014 on outputs up to 1.9e4 (relative 7e-7, float32).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KERAS_SIDE = r'''
import sys
import h5py, keras, numpy as np
from keras import layers

weights, crops_path, out_path = sys.argv[1:4]
KERAS_NAME = lambda name: name.replace("/", "__")  # Keras 3 refuses "/" in layer names


def conv_bn(x, filters, k, name, strides=1, padding="valid"):
    x = layers.Conv2D(filters, k, strides=strides, padding=padding, use_bias=False,
                      name=KERAS_NAME(name))(x)
    return layers.BatchNormalization(axis=3, name=KERAS_NAME(name + "/bn"))(x)


def block(x, filters, stage, b, strides, proj):
    f1, f2, f3 = filters
    base = f"conv{stage}_{b}"
    y = layers.Activation("relu")(conv_bn(x, f1, 1, base + "_1x1_reduce", strides))
    y = layers.Activation("relu")(conv_bn(y, f2, 3, base + "_3x3", padding="same"))
    y = conv_bn(y, f3, 1, base + "_1x1_increase")
    s = conv_bn(x, f3, 1, base + "_1x1_proj", strides) if proj else x
    return layers.Activation("relu")(layers.add([y, s]))


inp = keras.Input((224, 224, 3))
x = layers.Activation("relu")(conv_bn(inp, 64, 7, "conv1/7x7_s2", 2, "same"))
x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
for stage, n, filters, stride in ((2, 3, (64, 64, 256), 1), (3, 4, (128, 128, 512), 2),
                                  (4, 6, (256, 256, 1024), 2), (5, 3, (512, 512, 2048), 2)):
    for b in range(1, n + 1):
        x = block(x, filters, stage, b, stride if b == 1 else 1, b == 1)
x = layers.AveragePooling2D((7, 7))(x)
model = keras.Model(inp, layers.Flatten()(x))
n_set = 0
with h5py.File(weights, "r") as h5:
    for layer in model.layers:
        name = layer.name.replace("__", "/")
        if name not in h5:
            continue
        g = h5[name]
        if isinstance(layer, layers.Conv2D):
            layer.set_weights([np.asarray(g[f"{name}/kernel:0"])])
        else:
            layer.set_weights([np.asarray(g[f"{name}/{s}:0"]) for s in
                               ("gamma", "beta", "moving_mean", "moving_variance")])
        n_set += 1
n_layers = sum(isinstance(l, (layers.Conv2D, layers.BatchNormalization)) for l in model.layers)
crops = np.load(crops_path).astype("float32")
x = crops[..., ::-1] - np.array([91.4953, 103.8827, 131.0912], "float32")  # version 2
np.save(out_path, model.predict(x, verbose=0))
print(f"keras {keras.__version__}: {n_set} of {n_layers} layers set from the file")
'''


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keras-python", required=True,
                   help="a Python interpreter with keras>=3 (TensorFlow backend) and h5py")
    args = p.parse_args(argv)
    import torch

    from mer_pipeline.vggface import build_resnet50, load_vggface_weights, preprocess
    from tests.test_vggface import write_standin

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = write_standin(tmp / "standin.h5", seed=3)
        crops = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
        np.save(tmp / "crops.npy", crops)
        model = build_resnet50()
        loaded = load_vggface_weights(model, weights)
        with torch.no_grad():
            ours = model(torch.from_numpy(preprocess(crops))).numpy()
        (tmp / "keras_side.py").write_text(KERAS_SIDE)
        run = subprocess.run([args.keras_python, str(tmp / "keras_side.py"), str(weights),
                              str(tmp / "crops.npy"), str(tmp / "keras.npy")],
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"the Keras side failed:\n{run.stderr[-3000:]}")
        print(run.stdout.strip())
        keras_out = np.load(tmp / "keras.npy")
    err = float(np.abs(keras_out - ours).max())
    scale = float(np.abs(ours).max())
    print(f"torch {torch.__version__}: {len(loaded)} conv layers (+ their batch norms) loaded")
    print(f"outputs {ours.shape}: max abs difference {err:.3g}, max |output| {scale:.3g}, "
          f"relative {err / scale:.2g}")
    if not err / scale < 1e-5:
        sys.exit("MISMATCH: the port does not compute keras-vggface's function")


if __name__ == "__main__":
    main()
