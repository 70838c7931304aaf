"""Face detection and cropping for sampled frames (first block of the face stage).

The detector is OpenCV's Haar cascade for frontal faces, which ships inside
``opencv-python-headless`` (<5: release 5.0 drops the cascades), so nothing is
downloaded. Per frame the largest face is kept, enlarged by a margin, made
square and resized. Images that are already face crops (CK+48 and FER2013 are
48x48) defeat detectors; a small image with no detection is used whole and
marked as such. A frame with no face is recorded, not fatal; a clip with no
face in any frame raises :class:`NoFaceError` so batch code can record it.

Not yet here (issue 5 goes on): eye alignment from landmarks, the frame
encoders (expression CNN, landmark geometry, VGGFace) and pooling over frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .exceptions import MerError, ParameterError

__all__ = ["NoFaceError", "FaceCrops", "detect_faces", "crop_face", "face_crops"]

#: Images whose longer side is at most this are taken as face crops when no face is found.
CROP_MAX_SIDE = 96


class NoFaceError(MerError):
    """No face was found in any frame of a clip."""


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
        # ITU-R BT.601 luma, as OpenCV's RGB2GRAY
        grey = frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114
        return np.clip(grey + 0.5, 0, 255).astype(np.uint8)
    raise ParameterError(f"a frame must be (h, w) or (h, w, 3), got shape {frame.shape}")


def detect_faces(frame: np.ndarray, *, min_size: float = 0.1) -> np.ndarray:
    """Face boxes in one frame, largest first.

    Parameters
    ----------
    frame : np.ndarray, shape (h, w, 3) RGB or (h, w) grey, uint8
    min_size : float in (0, 1]
        Smallest face side as a fraction of the frame's shorter side.

    Returns
    -------
    np.ndarray of int, shape (n_faces, 4)
        ``x, y, width, height`` per face.
    """
    if not 0 < min_size <= 1:
        raise ParameterError(f"min_size must be in (0, 1], got {min_size!r}")
    grey = _grey(frame)
    side = max(12, int(min(grey.shape) * min_size))
    boxes = np.empty((0, 4), dtype=int)
    for name, neighbours in (("haarcascade_frontalface_default.xml", 5),
                             ("haarcascade_frontalface_alt2.xml", 3)):
        found = _cascade(name).detectMultiScale(grey, scaleFactor=1.1, minNeighbors=neighbours,
                                                minSize=(side, side))
        if len(found):
            boxes = np.asarray(found, dtype=int).reshape(-1, 4)
            break
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
    x, y, w, h = (int(v) for v in box)
    side = int(round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    pad = max(0, -x0, -y0, x0 + side - img.shape[1], y0 + side - img.shape[0])
    if pad:
        widths = ((pad, pad), (pad, pad)) + (((0, 0),) if img.ndim == 3 else ())
        img = np.pad(img, widths, mode="edge")
        x0, y0 = x0 + pad, y0 + pad
    crop = img[y0:y0 + side, x0:x0 + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


@dataclass
class FaceCrops:
    """Face crops of a clip's frames.

    Attributes
    ----------
    crops : np.ndarray, uint8, shape (n_faces, size, size)
        One crop per frame that has a face (grey).
    frame_index : np.ndarray of int
        Which frame each crop comes from.
    status : list of str
        Per input frame: ``detected``, ``whole`` (a small image used whole as
        an existing face crop) or ``none``.
    boxes : np.ndarray of int, shape (n_faces, 4)
        The box each crop was cut around (the whole image for ``whole``).
    """

    crops: np.ndarray
    frame_index: np.ndarray
    status: list
    boxes: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.status)

    @property
    def face_fraction(self) -> float:
        """Fraction of frames with a face."""
        return 0.0 if not self.status else float(np.mean([s != "none" for s in self.status]))


def face_crops(frames: np.ndarray, *, size: int = 64, margin: float = 0.2,
               min_size: float = 0.1, crop_max_side: int = CROP_MAX_SIDE) -> FaceCrops:
    """Detect and crop the largest face of every frame.

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

    Returns
    -------
    FaceCrops

    Raises
    ------
    NoFaceError
        If no frame has a face.
    """
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or len(frames) == 0:
        raise ParameterError(f"frames must be a non-empty (n, h, w[, 3]) array, "
                             f"got shape {frames.shape}")
    crops, index, status, boxes = [], [], [], []
    for i, frame in enumerate(frames):
        found = detect_faces(frame, min_size=min_size)
        if len(found):
            box, tag = found[0], "detected"
        elif max(frame.shape[:2]) <= crop_max_side:
            box, tag = np.array([0, 0, frame.shape[1], frame.shape[0]]), "whole"
        else:
            status.append("none")
            continue
        crops.append(crop_face(frame, box, margin=margin if tag == "detected" else 0.0,
                               size=size))
        index.append(i)
        status.append(tag)
        boxes.append(box)
    if not crops:
        raise NoFaceError(f"no face found in any of {len(frames)} frame(s)")
    return FaceCrops(crops=np.stack(crops), frame_index=np.asarray(index), status=status,
                     boxes=np.asarray(boxes, dtype=int))
