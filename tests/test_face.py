import numpy as np
import pytest

from mer_pipeline import ParameterError
from mer_pipeline.media import decode_clip, sample_frames

from .conftest import shared_path

cv2 = pytest.importorskip("cv2")
from mer_pipeline.face import NoFaceError, crop_face, detect_faces, face_crops  # noqa: E402


def test_no_face_anywhere_is_a_typed_error():
    flat = np.full((2, 240, 320, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="no face found in any of 2 frame"):
        face_crops(flat)
    with pytest.raises(ParameterError):
        face_crops(np.zeros((0, 10, 10, 3), np.uint8))


def test_small_images_without_detection_are_used_whole():
    small = np.full((1, 48, 48), 90, np.uint8)
    small[0, 10:20, 10:38] = 200
    faces = face_crops(small, size=32)
    assert faces.status == ["whole"] and faces.crops.shape == (1, 32, 32)
    assert faces.boxes.tolist() == [[0, 0, 48, 48]]


def test_crop_face_pads_at_the_border_and_resizes():
    frame = np.arange(100 * 120, dtype=np.uint32).reshape(100, 120) % 251
    frame = np.stack([frame] * 3, axis=-1).astype(np.uint8)
    crop = crop_face(frame, (0, 0, 40, 40), margin=0.25, size=64)
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    colour = crop_face(frame, (30, 20, 50, 50), margin=0.0, size=50, grey=False)
    assert colour.shape == (50, 50, 3)
    assert np.array_equal(colour, frame[20:70, 30:80])  # no margin, same size: the box itself
    with pytest.raises(ParameterError):
        detect_faces(frame, min_size=0)


@pytest.mark.shared
def test_real_stills_and_sample_clip_all_get_a_face():
    stills = sorted(shared_path("samples", "ravdess_stills").glob("Actor_*.png"))
    assert len(stills) == 24
    for still in stills:
        faces = face_crops(sample_frames(still))
        assert faces.status == ["detected"], still.name
        x, y, w, h = faces.boxes[0]
        assert w >= 40  # a face, not a speck
    clip = shared_path("samples", "ravdess_av_reencoded", "Actor_01", "01-01-07-02-02-01-01.mp4")
    frames = decode_clip(video_path=clip).frames
    faces = face_crops(frames)
    assert faces.status == ["detected"] * 12 and faces.face_fraction == 1.0
    assert faces.crops.shape == (12, 64, 64)
    # the face stays put across frames of one take: centres move little
    centres = faces.boxes[:, :2] + faces.boxes[:, 2:] / 2
    assert np.ptp(centres, axis=0).max() < 0.25 * frames.shape[2]


@pytest.mark.shared
def test_face_corpora_crops():
    for path in sorted(shared_path("faces", "jaffe", "jaffedbase").glob("*.tiff"))[::20]:
        assert face_crops(sample_frames(path)).status == ["detected"], path.name
    for path in sorted(shared_path("faces", "fer2013", "test", "happy").glob("*.jpg"))[:20]:
        faces = face_crops(sample_frames(path))   # detected, or the 48x48 crop used whole
        assert faces.status[0] in ("detected", "whole") and faces.crops.shape == (1, 64, 64)
