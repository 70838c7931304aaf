"""Face detection and cropping: OpenCV's Haar cascades, tracking between frames.

The detector is OpenCV's Haar cascade for frontal faces, which ships inside
``opencv-python-headless`` (<5: release 5.0 drops the cascades), so nothing is
downloaded.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..exceptions import MerError, ParameterError

__all__ = ["detect_faces", "crop_face", "CROP_MAX_SIDE"]

#: Images whose longer side is at most this are taken as face crops when no face is found.
CROP_MAX_SIDE = 96


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


def _square(box, margin: float):
    """The square (x0, y0, side) that :func:`crop_face` cuts around ``box``."""
    x, y, w, h = (int(v) for v in box)
    side = int(round(max(w, h) * (1 + 2 * margin)))
    return int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2)), side
