"""Face geometry: eye alignment of crops and Procrustes alignment of landmarks."""
from __future__ import annotations

import numpy as np

from ..exceptions import ParameterError
from ._mean_face import MEAN_FACE_68

__all__ = ["ALIGNED_EYES", "eye_alignment", "similarity_fit", "batch_similarity", "mean_shape",
           "normalise_landmarks", "LEFT_EYE", "RIGHT_EYE"]

#: The two eyes among dlib's 68 landmarks (the subject's right eye, on the image's left, first).
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)

#: Where :func:`face_crops` puts the eye centres in an aligned crop, as fractions of its
#: side: the median eye centres of FER2013's faces (6,000 measured), the data the
#: expression CNN learnt from, so aligned crops look like its training crops.
ALIGNED_EYES = ((0.34, 0.40), (0.66, 0.40))

#: Alignment is skipped (the crop kept as cut) when the landmarks put the eyes
#: implausibly: inter-ocular distance outside this range of the crop's side ...
_ALIGN_IOD_RANGE = (0.12, 0.7)
#: ... or the eye line tilted more than this (degrees).
_ALIGN_MAX_TILT = 35.0


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
    left, right = points[LEFT_EYE].mean(axis=0), points[RIGHT_EYE].mean(axis=0)
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
    points : np.ndarray, shape (68, 2) or (n, 68, 2)
        One face, or a track of faces (each aligned on its own, in one pass).
    reference : np.ndarray, shape (68, 2) or None
        Default :data:`MEAN_FACE_68`, the mean of 6,000 FER2013 faces (centred,
        eyes level, inter-ocular distance 1), so outputs are in inter-ocular units.

    Returns
    -------
    np.ndarray, shape as ``points``
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-2:] != (68, 2) or points.ndim not in (2, 3):
        raise ParameterError(f"landmarks must be (68, 2) or (n, 68, 2); got {points.shape}")
    ref = MEAN_FACE_68 if reference is None else reference
    if points.ndim == 2:
        return similarity_fit(points, ref)
    return batch_similarity(points, ref)[0]


def batch_similarity(points: np.ndarray, reference: np.ndarray = MEAN_FACE_68):
    """Least-squares similarity of each frame's points onto ``reference`` (Umeyama, no
    reflections), for a whole track at once.

    Parameters
    ----------
    points : np.ndarray, shape (n, k, 2)
    reference : np.ndarray, shape (k, 2)

    Returns
    -------
    shapes : np.ndarray, shape (n, k, 2)
        The points moved, turned and scaled onto the reference (the shape, pose removed).
    angle : np.ndarray, shape (n,)
        Rotation (radians) that levels each frame: the head's roll, sign reversed.
    scale : np.ndarray, shape (n,)
        Scale applied (reference units per pixel): smaller when the face is larger.
    centre : np.ndarray, shape (n, 2)
        Centroid of each frame's points, in pixels.
    """
    p = np.asarray(points, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    centre = p.mean(axis=1)
    a = p - centre[:, None, :]
    b = ref - ref.mean(axis=0)
    cov = a.transpose(0, 2, 1) @ b
    u, sv, vt = np.linalg.svd(cov)
    det = np.sign(np.linalg.det(u @ vt))
    det[det == 0] = 1.0
    d = np.zeros((len(p), 2, 2))
    d[:, 0, 0] = 1.0
    d[:, 1, 1] = det
    rot = u @ d @ vt
    scale = (sv * np.stack([np.ones(len(p)), det], axis=1)).sum(axis=1) / np.maximum(
        (a ** 2).sum(axis=(1, 2)), 1e-12)
    shapes = (a @ rot) * scale[:, None, None] + ref.mean(axis=0)
    angle = np.arctan2(rot[:, 0, 1], rot[:, 0, 0])
    return shapes, angle, scale, centre
