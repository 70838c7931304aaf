"""The feature schema: one module names and parses feature columns; provenance round trips."""
import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_pipeline import _schema
from mer_pipeline.exceptions import FeatureTableError
from mer_pipeline.features import check_provenance, make_extractor, read_provenance

PACKAGE = Path(__file__).resolve().parents[1] / "mer_pipeline"


def _string_constants(tree):
    """String literals of a module that are not docstrings (f-string parts included)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node


def test_no_module_but_the_schema_spells_the_column_separator():
    """Feature column names are parsed and formatted in _schema alone: any other module that
    writes the ``__`` separator in a code string (``"audio__"``, ``.split("__")``,
    ``f"{m}__"``) fails this. Prose (messages and help that explain the naming, with
    spaces in them) and dunder names are allowed."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_schema.py":
            continue
        tree = ast.parse(path.read_text())
        for node in _string_constants(tree):
            text = node.value
            if "__" in text and not re.search(r"\s", text) \
                    and not re.fullmatch(r"__\w+__", text):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {text!r}")
    assert not offenders, "column names parsed outside _schema:\n" + "\n".join(offenders)


def test_column_names_round_trip():
    name = _schema.column("audio", "egemaps_F0_mean")
    assert name == "audio__egemaps_F0_mean"
    assert _schema.parse_column(name) == ("audio", "egemaps_F0_mean")
    assert _schema.modality_of(name) == "audio" and _schema.feature_set_of(name) == "egemaps"
    assert _schema.strip_modality(name) == "egemaps_F0_mean"
    for other in ("emotion", "face_fraction", "face_frames", "group", "__", "a__", "__b"):
        assert _schema.parse_column(other) is None and not _schema.is_feature(other)
    names = ["group", "audio__compare_x", "face__expr_a", "audio__egemaps_y", "face_fraction",
             "face__lmk_b", "face_frames"]
    assert _schema.feature_columns(names) == ["audio__compare_x", "face__expr_a",
                                              "audio__egemaps_y", "face__lmk_b"]
    assert _schema.feature_columns(names, "face") == ["face__expr_a", "face__lmk_b"]
    assert _schema.non_feature_columns(names) == ["group"]
    assert _schema.table_modalities(names) == ["audio", "face"]
    assert _schema.feature_sets(names, "audio") == ["compare", "egemaps"]
    assert _schema.modality_blocks(["audio__a", "face__b", "z"]) == {
        "audio": [0], "face": [1], "features": [2]}


def test_clip_features_row_is_named():
    clip = _schema.ClipFeatures(values=np.array([1.0, 2.0], np.float32),
                                names=("audio__a_x", "audio__a_y"))
    assert clip.row.to_dict() == {"audio__a_x": 1.0, "audio__a_y": 2.0}


def test_check_provenance_names_both_settings():
    model = {"modalities": {"face": {"extractor": "face", "version": "5",
                                     "params": {"fps": 5.0, "encoders": ["expression"]}}}}
    same = {"modalities": {"face": {"extractor": "face", "version": "5", "table": "v.csv",
                                    "params": {"fps": 5.0, "encoders": ["expression"]}}}}
    check_provenance(model, same, source="F")  # no error
    other = {"modalities": {"face": {**same["modalities"]["face"],
                                     "params": {"fps": 3.0, "encoders": ["expression"]}}}}
    with pytest.raises(FeatureTableError, match=r"F: .*fps=3\.0 there, fps=5\.0 for the model"):
        check_provenance(model, other, source="F")
    older = {"modalities": {"face": {**same["modalities"]["face"], "version": "4"}}}
    with pytest.raises(FeatureTableError, match="version 4"):
        check_provenance(model, older, source="F")
    check_provenance(None, other, source="F")   # nothing recorded: nothing to hold against
    check_provenance(model, None, source="F")


def test_extractors_rebuild_from_their_recorded_settings():
    audio = make_extractor("audio", audio_set="egemaps+librosa")
    again = make_extractor("audio", params=audio.params())
    assert again.params() == audio.params() == {"feature_set": "egemaps+librosa",
                                                 "sample_rate": 16000, "lld_rate": 25.0}
    face = make_extractor("face", face_encoders=["landmarks"], fps=5)
    assert make_extractor("face", params=face.params()).params()["fps"] == 5.0
    with pytest.raises(Exception, match="cannot be reproduced"):
        make_extractor("audio", params={**audio.params(), "sample_rate": 8000})


def test_a_features_folder_records_how_it_was_made(tmp_path, tone_corpus):
    from mer_pipeline import discover, load_features
    from mer_pipeline.features import extract_features

    out = tmp_path / "f"
    extract_features(discover(tone_corpus), out, audio_set="egemaps", n_jobs=1, progress=False)
    record = read_provenance(out)
    entry = record["modalities"]["audio"]
    assert entry["params"]["feature_set"] == "egemaps" and entry["table"] == "audio_features.csv"
    assert entry["clips"] == entry["clips_with_features"] == 20
    assert record["corpus"]["clips"] == 20 and "features.json" in record["files"]
    table = load_features(out)
    assert table.attrs["provenance"]["modalities"]["audio"]["params"] == entry["params"]
    # one CSV of the folder: its own modality's record
    assert load_features(out / "audio_features.csv").attrs["provenance"]["modalities"].keys() \
        == {"audio"}
    # a stale table of another run is not joined in: the folder's record lists what it wrote
    stale = pd.read_csv(out / "audio_features.csv").rename(
        columns=lambda c: c.replace("audio__", "face__"))
    stale.to_csv(out / "video_features.csv", index=False)
    assert not [c for c in load_features(out).columns if c.startswith("face__")]
    # and a new run into the folder removes it
    extract_features(discover(tone_corpus), out, audio_set="egemaps", n_jobs=1, progress=False)
    assert not (out / "video_features.csv").exists()
