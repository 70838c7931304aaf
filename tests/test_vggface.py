import numpy as np
import pytest

from mer_pipeline import MerError

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from mer_pipeline.vggface import (  # noqa: E402
    STAGES,
    build_resnet50,
    layer_names,
    load_vggface_weights,
    preprocess,
    vggface_weights_path,
)


def conv_shapes():
    """Keras kernel shapes (HWIO) of every layer, from the architecture's definition."""
    shapes = {"conv1/7x7_s2": (7, 7, 3, 64)}
    cin = 64
    for stage, (blocks, (f1, f2, f3), _) in STAGES.items():
        for b in range(1, blocks + 1):
            base = f"conv{stage}_{b}"
            shapes[f"{base}_1x1_reduce"] = (1, 1, cin, f1)
            shapes[f"{base}_3x3"] = (3, 3, f1, f2)
            shapes[f"{base}_1x1_increase"] = (1, 1, f2, f3)
            if b == 1:
                shapes[f"{base}_1x1_proj"] = (1, 1, cin, f3)
            cin = f3
    return shapes


def write_standin(path, *, skip=None, bad_shape=None, seed=0):
    """A stand-in .h5 in keras save_weights layout: same layer names, random weights."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        names = []
        for name, shape in conv_shapes().items():
            if name == skip:
                continue
            if name == bad_shape:
                shape = shape[:-1] + (shape[-1] + 1,)
            g = h5.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode()]
            g.create_dataset(f"{name}/kernel:0", data=rng.normal(0, 0.05, shape).astype("f4"))
            bn = h5.create_group(f"{name}/bn")
            c = shape[-1]
            for suffix, value in (("gamma", rng.uniform(0.5, 1.5, c)), ("beta", rng.normal(0, .1, c)),
                                  ("moving_mean", rng.normal(0, .1, c)),
                                  ("moving_variance", rng.uniform(0.5, 2, c))):
                bn.create_dataset(f"{name}/bn/{suffix}:0", data=value.astype("f4"))
            names += [name, f"{name}/bn"]
        h5.attrs["layer_names"] = [n.encode() for n in names]
    return path


def test_every_layer_is_mapped_and_loaded(tmp_path):
    path = write_standin(tmp_path / "standin.h5")
    model = build_resnet50()
    loaded = load_vggface_weights(model, path)
    assert loaded == layer_names() and len(loaded) == 1 + 3 * 16 + 4
    modules = model.keras_modules()
    with h5py.File(path) as h5:
        for name in ("conv1/7x7_s2", "conv3_1_1x1_reduce", "conv5_3_1x1_increase"):
            kernel = np.asarray(h5[name][f"{name}/kernel:0"])
            conv, bn = modules[name]
            assert np.allclose(conv.weight.detach().numpy(), kernel.transpose(3, 2, 0, 1))
            assert np.allclose(bn.running_var.numpy(), h5[f"{name}/bn"][f"{name}/bn/moving_variance:0"])
            assert bn.eps == 1e-3 and conv.bias is None
    # the stride sits on the 1x1 reduce (and the projection), not on the 3x3
    assert modules["conv3_1_1x1_reduce"][0].stride == (2, 2)
    assert modules["conv3_1_3x3"][0].stride == (1, 1)
    with torch.no_grad():
        out = model(torch.from_numpy(preprocess(np.full((2, 224, 224, 3), 128, np.uint8))))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()


def test_missing_or_misshapen_layers_are_refused(tmp_path):
    with pytest.raises(MerError, match="conv4_2_3x3"):
        load_vggface_weights(build_resnet50(), write_standin(tmp_path / "a.h5", skip="conv4_2_3x3"))
    with pytest.raises(MerError, match="does not fit"):
        load_vggface_weights(build_resnet50(),
                             write_standin(tmp_path / "b.h5", bad_shape="conv2_1_1x1_proj"))


def test_weights_path_is_required_and_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("MER_VGGFACE_WEIGHTS", raising=False)
    with pytest.raises(MerError, match="rcmalli_vggface_tf_notop_resnet50.h5"):
        vggface_weights_path(None)
    with pytest.raises(MerError, match="not found"):
        vggface_weights_path(tmp_path / "nope.h5")
    monkeypatch.setenv("MER_VGGFACE_WEIGHTS", str(write_standin(tmp_path / "c.h5")))
    assert vggface_weights_path(None) == tmp_path / "c.h5"


def test_preprocessing_is_bgr_minus_means():
    x = np.zeros((1, 2, 2, 3), np.uint8)
    x[..., 0] = 200  # red
    out = preprocess(x)
    assert out.shape == (1, 3, 2, 2)
    assert np.isclose(out[0, 2, 0, 0], 200 - 131.0912)  # red is the last BGR channel
    assert np.isclose(out[0, 0, 0, 0], -91.4953)


def test_vggface_frame_encoder_in_the_face_stage(tmp_path):
    pytest.importorskip("cv2")
    from PIL import Image

    from mer_pipeline import discover, load_features
    from mer_pipeline.features import extract_features

    root = tmp_path / "faces" / "happy"
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / f"f{i}.png")
    weights = write_standin(tmp_path / "w.h5")
    _, run = extract_features(discover(tmp_path / "faces"), tmp_path / "out",
                              modalities=["face"], face_encoders=["vggface"],
                              vggface_weights=weights, n_jobs=1, progress=False)
    assert len(run.failures) == 0
    table = load_features(tmp_path / "out")
    vgg = [c for c in table.columns if c.startswith("face__vgg_")]
    assert len(vgg) == 4 * 2048 and np.isfinite(table[vgg].to_numpy()).all()
    # other weights -> another cache key -> recomputed
    _, again = extract_features(discover(tmp_path / "faces"), tmp_path / "out",
                                modalities=["face"], face_encoders=["vggface"],
                                vggface_weights=write_standin(tmp_path / "w2.h5", seed=1),
                                n_jobs=1, progress=False)
    assert again.n_computed == 2
