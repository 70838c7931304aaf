"""Face dynamics from a landmark track: what pooled per-frame statistics miss.

At the track's own rate (30 frames/s for video trackers), the shape's motion carries
much of an expression: how fast the brows rise, when the mouth reaches its apex, how
the head moves. :func:`shape_dynamics` turns a clip's 68-point track into one row of
named clip-level features (``dyn_…``).
"""
from __future__ import annotations

import numpy as np

from .geometry import batch_similarity

__all__ = ["shape_dynamics", "REGIONS"]

#: dlib/iBUG 68-point regions (0-based point indices).
REGIONS = {"jaw": np.arange(0, 17), "brows": np.arange(17, 27), "nose": np.arange(27, 36),
           "eyes": np.arange(36, 48), "mouth": np.arange(48, 68)}
_EXPRESSIVE = np.arange(17, 68)  # all but the jaw line, which moves with the head and speech
#: Velocities are taken between tracked frames at most this many frames apart.
_MAX_GAP = 3


def _stats(prefix: str, x: np.ndarray, which=("mean", "std", "p90", "max")) -> dict:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    out = {}
    for w in which:
        key = f"{prefix}_{w}"
        if not len(x):
            out[key] = np.nan
        elif w == "mean":
            out[key] = float(x.mean())
        elif w == "std":
            out[key] = float(x.std())
        elif w == "p90":
            out[key] = float(np.percentile(x, 90))
        elif w == "max":
            out[key] = float(x.max())
        elif w == "range":
            out[key] = float(np.percentile(x, 95) - np.percentile(x, 5))
    return out


def _rate(signal: np.ndarray, duration: float, *, below: bool) -> float:
    """Excursions per second of a signal beyond a robust threshold (peaks or dips)."""
    if len(signal) < 3 or duration <= 0:
        return np.nan
    med = np.median(signal)
    spread = np.median(np.abs(signal - med)) * 1.4826 + 1e-9
    beyond = (signal < med - 2 * spread) if below else (signal > med + spread)
    starts = np.flatnonzero(beyond[1:] & ~beyond[:-1]).size + int(beyond[0])
    return starts / duration


def shape_dynamics(points: np.ndarray, frame: np.ndarray, fps: float, *,
                   similarity: tuple | None = None) -> dict:
    """Clip-level dynamics of a 68-point track.

    Parameters
    ----------
    points : np.ndarray, shape (n, 68, 2)
        Tracked frames' landmarks in pixels (failed frames left out).
    frame : np.ndarray of int, shape (n,)
        Their frame numbers (gaps where tracking failed).
    fps : float > 0
        Frames per second of the track.
    similarity : tuple or None
        :func:`~mer_pipeline.face.geometry.batch_similarity` of ``points`` when the
        caller has it already (it is not computed again).

    Returns
    -------
    dict
        Named features (``dyn_…``), NaN where the track is too short:

        - per region (brows, eyes, nose, mouth, jaw), the speed of its points in the
          pose-free shape (mean/std/90th percentile/max, inter-ocular units per second)
          and its acceleration (mean, 90th percentile);
        - the expression's time course: displacement of the shape from the clip's own
          median shape (mean, std, 90th percentile, max), when it peaks (apex position
          in the clip, 0–1), when it first and last exceeds half its peak (onset,
          offset) and the fraction of the clip above half; per region, mean and max
          displacement;
        - mouth opening (std, range, openings per second), eye opening (mean, std,
          blinks per second);
        - head motion from the pose: roll (std, range in degrees, mean angular speed),
          size (std of log scale, mean speed), position in face widths (std of x and y,
          mean speed), yaw and pitch proxies from the shape's asymmetry and nose length
          (std, range, mean speed).
    """
    pts = np.asarray(points, dtype=np.float64)
    frame = np.asarray(frame, dtype=np.float64)
    out: dict = {}
    n = len(pts)
    if similarity is None:
        similarity = (batch_similarity(pts) if n else
                      (np.zeros((0, 68, 2)), np.zeros(0), np.ones(0), np.zeros((0, 2))))
    shapes, angle, scale, centre = similarity
    gaps = np.diff(frame)
    pair = (gaps > 0) & (gaps <= _MAX_GAP)
    dt = gaps / fps
    # -- speeds and accelerations of the pose-free shape, per region --------------
    vel = (np.diff(shapes, axis=0) / dt[:, None, None])[pair] if n > 1 else np.zeros((0, 68, 2))
    speed = np.linalg.norm(vel, axis=2)  # (pairs, 68)
    pair_idx = np.flatnonzero(pair)
    consecutive = np.flatnonzero(np.diff(pair_idx) == 1) if len(pair_idx) > 1 else np.array([],
                                                                                            int)
    for region, idx in REGIONS.items():
        s = speed[:, idx].mean(axis=1) if len(speed) else np.array([])
        out.update(_stats(f"dyn_{region}_speed", s))
        if len(consecutive):
            v = vel[:, idx]
            acc = np.linalg.norm(v[consecutive + 1] - v[consecutive], axis=2).mean(axis=1) * fps
        else:
            acc = np.array([])
        out.update(_stats(f"dyn_{region}_accel", acc, ("mean", "p90")))
    # -- the expression's time course ------------------------------------------------
    if n:
        median = np.median(shapes, axis=0)
        disp = np.linalg.norm(shapes - median, axis=2)  # (n, 68)
        d = disp[:, _EXPRESSIVE].mean(axis=1)
    else:
        disp, d = np.zeros((0, 68)), np.array([])
    out.update(_stats("dyn_expr_disp", d))
    if n >= 3 and np.nanmax(d) > 0:
        span = max(frame[-1] - frame[0], 1.0)
        pos = (frame - frame[0]) / span
        peak = int(np.argmax(d))
        above = d > 0.5 * d[peak]
        out.update({"dyn_expr_apex_pos": float(pos[peak]),
                    "dyn_expr_onset_pos": float(pos[np.argmax(above)]),
                    "dyn_expr_offset_pos": float(pos[len(above) - 1 - np.argmax(above[::-1])]),
                    "dyn_expr_active_frac": float(above.mean())})
    else:
        out.update({k: np.nan for k in ("dyn_expr_apex_pos", "dyn_expr_onset_pos",
                                        "dyn_expr_offset_pos", "dyn_expr_active_frac")})
    for region in ("brows", "eyes", "mouth"):
        r = disp[:, REGIONS[region]].mean(axis=1) if n else np.array([])
        out.update(_stats(f"dyn_{region}_disp", r, ("mean", "max")))
    # -- mouth and eyes ------------------------------------------------------------
    duration = (frame[-1] - frame[0] + 1) / fps if n else 0.0
    y = shapes[:, :, 1] if n else np.zeros((0, 68))
    mouth = y[:, 66] - y[:, 62] if n else np.array([])
    eyes = ((y[:, 40:42].mean(axis=1) - y[:, 37:39].mean(axis=1))
            + (y[:, 46:48].mean(axis=1) - y[:, 43:45].mean(axis=1))) / 2 if n else np.array([])
    out.update(_stats("dyn_mouth_open", mouth, ("std", "range")))
    out["dyn_mouth_open_rate"] = _rate(mouth, duration, below=False)
    out.update(_stats("dyn_eye_open", eyes, ("mean", "std")))
    out["dyn_blink_rate"] = _rate(eyes, duration, below=True)
    # -- head motion -------------------------------------------------------------------
    size = 1.0 / np.maximum(scale, 1e-12)  # pixels per reference unit (inter-ocular distance)
    face = float(np.median(size)) if n else 1.0
    roll = np.degrees(-angle)
    head = {"roll": roll, "logsize": np.log(size),
            "x": centre[:, 0] / face if n else np.array([]),
            "y": centre[:, 1] / face if n else np.array([])}
    if n:
        x = shapes[:, :, 0]
        width = np.maximum(x[:, 16] - x[:, 0], 1e-9)
        head["yaw"] = ((x[:, 16] - x[:, 30]) - (x[:, 30] - x[:, 0])) / width
        head["pitch"] = (y[:, 30] - y[:, 27]) / np.maximum(y[:, 8] - y[:, 27], 1e-9)
    else:
        head["yaw"] = head["pitch"] = np.array([])
    for name, signal in head.items():
        which = ("std",) if name in ("x", "y", "logsize") else ("std", "range")
        out.update(_stats(f"dyn_head_{name}", signal, which))
        if n > 1 and pair.any():
            rate = (np.abs(np.diff(signal)) / dt)[pair]
            out[f"dyn_head_{name}_speed"] = float(rate.mean())
        else:
            out[f"dyn_head_{name}_speed"] = np.nan
    return out
