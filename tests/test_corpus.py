import pandas as pd
import pytest

from mer_pipeline import ParameterError, discover, parse_filename
from mer_pipeline.config import EMOTIONS, canonical_label

from .conftest import shared_path


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, fields", [
    ("03-01-05-01-02-01-12.wav", dict(emotion="angry", actor="12", gender="female",
                                       vocal_channel="speech", intensity="normal",
                                       statement=2, repetition=1)),
    ("03-02-06-02-01-02-07.flac", dict(emotion="fearful", actor="07", gender="male",
                                        vocal_channel="song", intensity="strong")),
    ("01-01-08-02-02-02-24.mp4", dict(emotion="surprised", actor="24", gender="female")),
])
def test_ravdess_names_parse_fully(name, fields):
    rec = parse_filename(name)
    assert rec["corpus"] == "ravdess"
    for key, value in fields.items():
        assert rec[key] == value, key


@pytest.mark.parametrize("name, reason", [
    ("03-01-09-01-02-01-12.wav", "emotion code 09"),
    ("04-01-05-01-02-01-12.wav", "modality code 04"),
    ("03-01-05-03-02-01-12.wav", "intensity code 03"),
    ("01-01-05-01-02-01-12.wav", "audio file"),
])
def test_ravdess_bad_codes_say_why(name, reason):
    with pytest.raises(ParameterError, match=reason):
        parse_filename(name)


def test_other_corpora_names():
    assert parse_filename("1001_DFA_ANG_XX.wav")["emotion"] == "angry"
    assert parse_filename("1001-DFA-SAD-XX.mp4")["actor"] == "1001"
    tess = parse_filename("OAF_back_ps.wav")
    assert (tess["corpus"], tess["actor"], tess["emotion"]) == ("tess", "OAF", "surprised")
    savee = parse_filename("DC_su04.wav")
    assert (savee["corpus"], savee["actor"], savee["emotion"]) == ("savee", "DC", "surprised")
    assert parse_filename("KL/sa12.wav")["actor"] == "KL"
    assert parse_filename("KL/sa12.wav")["emotion"] == "sad"
    jaffe = parse_filename("KA.AN1.39.tiff")
    assert (jaffe["corpus"], jaffe["actor"], jaffe["emotion"]) == ("jaffe", "KA", "angry")
    ck = parse_filename("CK+48/contempt/S010_004_00000017.png")
    assert (ck["corpus"], ck["actor"], ck["emotion"]) == ("ckplus", "S010", "contempt")


def test_canonical_labels():
    assert canonical_label("Fear") == "fearful"
    assert canonical_label("surprise") == "surprised"
    assert canonical_label("anger") == "angry"
    assert canonical_label("sadness") == "sad"
    assert canonical_label("happiness") == "happy"
    assert canonical_label("contempt") == "contempt"


def test_ravdess_modalities_pair_into_one_clip(tmp_path):
    a = touch(tmp_path / "Actor_03" / "03-01-02-01-01-01-03.wav")
    v = touch(tmp_path / "Actor_03" / "02-01-02-01-01-01-03.mp4")
    av = touch(tmp_path / "Actor_03" / "01-01-04-02-01-01-03.mp4")
    scan = discover(tmp_path)
    assert len(scan.clips) == 2 and len(scan.unparsed) == 0
    paired = scan.clips.loc["ravdess_01-02-01-01-01-03"]
    assert paired.audio_path == str(a) and paired.video_path == str(v)
    assert paired.media == "audio+video" and paired.emotion == "calm"
    both = scan.clips.loc["ravdess_01-04-02-01-01-03"]
    assert both.audio_path == both.video_path == str(av)
    assert both.group == "ravdess:03"


def test_face_folder_layouts_and_unparsed_never_fatal(tmp_path):
    touch(tmp_path / "fer" / "train" / "happy" / "Training_1.jpg")
    touch(tmp_path / "fer" / "test" / "surprise" / "PublicTest_2.jpg")
    touch(tmp_path / "fer" / "test" / "surprise" / "notes.txt")      # not media: ignored
    touch(tmp_path / "fer" / "misc" / "holiday.jpg")                  # no label: unparsed
    scan = discover(tmp_path / "fer")
    assert len(scan.clips) == 2
    assert set(scan.clips["split"]) == {"train", "test"}
    assert set(scan.clips["emotion"]) == {"happy", "surprised"}
    assert set(scan.clips["media"]) == {"image"}
    assert list(scan.unparsed["path"]) == [str(tmp_path / "fer" / "misc" / "holiday.jpg")]
    assert "not an emotion label" in scan.unparsed["reason"].iloc[0]
    assert scan.ignored == 1


def test_csv_listing(tmp_path):
    touch(tmp_path / "media" / "a.wav")
    touch(tmp_path / "media" / "b.png")
    listing = tmp_path / "My Set" / "listing.csv"  # the corpus is named after its folder
    listing.parent.mkdir()
    pd.DataFrame({"path": ["../media/a.wav", str(tmp_path / "media" / "b.png"),
                           "../media/gone.wav"],
                  "label": ["Fear", "contempt", "happy"],
                  "speaker": ["s1", "s2", "s1"]}).to_csv(listing, index=False)
    scan = discover(listing)
    assert sorted(scan.clips["emotion"]) == ["contempt", "fearful"]
    assert set(scan.clips["group"]) == {"my_set:s1", "my_set:s2"}
    assert len(scan.unparsed) == 1 and "not found" in scan.unparsed["reason"].iloc[0]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"file": ["media/a.wav"]}).to_csv(bad, index=False)
    with pytest.raises(ParameterError, match="path.*label"):
        discover(bad)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(ParameterError, match="no such file"):
        discover(tmp_path / "nowhere")


def test_empty_folder_gives_empty_manifest(tmp_path):
    scan = discover(tmp_path)
    assert len(scan.clips) == 0 and scan.summary()["clips"] == 0


@pytest.mark.shared
def test_shared_ravdess_speech_manifest():
    scan = discover(shared_path("ravdess_speech"))
    s = scan.summary()
    assert s["clips"] == 1200 and s["actors"] == 20 and s["unparsed"] == 0
    assert set(s["emotions"]) == set(EMOTIONS)
    assert s["emotions"]["neutral"] == 80 and s["emotions"]["angry"] == 160
    assert scan.clips.groupby("actor").size().eq(60).all()
    # odd actors are male
    genders = scan.clips.drop_duplicates("actor").set_index("actor")["gender"]
    assert genders["01"] == "male" and genders["02"] == "female"


@pytest.mark.shared
@pytest.mark.parametrize("corpus, count, subjects", [
    ("fer2013", 35887, 0), ("ckplus48", 981, 118), ("jaffe", 213, 10)])
def test_shared_face_folders_match_labels_csv(corpus, count, subjects):
    root = shared_path("faces", corpus)
    scan = discover(root)
    assert len(scan.clips) == count and len(scan.unparsed) == 0
    assert scan.summary()["actors"] == subjects
    labels = pd.read_csv(root / "LABELS.csv", dtype=str, keep_default_na=False)
    expected = {str((root / p).resolve()): canonical_label(lab)
                for p, lab in zip(labels["path"], labels["label"])}
    got = dict(zip(scan.clips["video_path"], scan.clips["emotion"]))
    assert got == expected
    if subjects:
        exp_subj = {str((root / p).resolve()): s for p, s in zip(labels["path"], labels["subject"])}
        assert dict(zip(scan.clips["video_path"], scan.clips["actor"])) == exp_subj


# ---- readers of other corpora (synthetic names in each corpus's published form) ----
@pytest.mark.parametrize("rel, corpus, actor, emotion, gender", [
    ("wav/03a01Fa.wav", "emodb", "03", "happy", "male"),
    ("wav/16b10Lb.wav", "emodb", "16", "boredom", "female"),
    ("Angry/SM1_F10_A010.wav", "urdu", "SM1", "angry", "male"),
    ("Neutral/SF3_F2_N05.wav", "urdu", "SF3", "neutral", "female"),
    ("samples/EB0_anger_1.wav", "nemo", "EB0", "angry", ""),
    ("samples/KS0_surprised_64.flac", "nemo", "KS0", "surprised", ""),
    ("Sound Source/Calm/1234_sk_bugu.flac", "turevdb", "1234", "calm", ""),
    ("f1/dis-f1-b1.wav", "emovo", "f1", "disgust", "female"),
    ("m3/gio-m3-l4.wav", "emovo", "m3", "happy", "male"),
    ("Colère/Fort/01-C-2-1.wav", "cafe", "01", "angry", "male"),
    ("Neutre/02-N-1.wav", "cafe", "02", "neutral", "female"),
    ("F_01_OISHI_S_1_ANGRY_1.wav", "subesco", "F_01", "angry", "female"),
    ("M_05_MITHUN_S_10_SURPRISE_5.wav", "subesco", "M_05", "surprised", "male"),
    ("female/F01A01.wav", "shemo", "F01", "angry", "female"),
    ("male/M12W03.wav", "shemo", "M12", "surprised", "male"),
    ("Anger_F_A_abajo.wav", "mesd", "", "angry", "female"),
    ("Sadness_C_B_zapato.wav", "mesd", "", "sad", ""),
    ("0011/Angry/0011_000351.wav", "esd", "0011", "angry", ""),
    ("0003/0003_001500.wav", "esd", "0003", "surprised", ""),
    ("female1_angry_1a_1.wav", "jlcorpus", "female1", "angry", "female"),
    ("male2_excited_10b_2.wav", "jlcorpus", "male2", "excited", "male"),
    ("anger/a01 (1).wav", "aesdd", "1", "angry", ""),
    ("sadness/s12 (5)b.wav", "aesdd", "5", "sad", ""),
    ("Audio/actor_02/03-01-05-01-01-02-02-01-01.wav", "asvpesd", "02", "angry", ""),
    ("03-02-01-02-112-14-02-03-01-16.wav", "asvpesd", "14", "boredom", ""),
    ("subject 1/anger/sentence 1/s1_an_1.avi", "enterface", "1", "angry", ""),
    ("subject 6/happiness/s6_ha_4.avi", "enterface", "6", "happy", ""),
])
def test_corpus_readers(rel, corpus, actor, emotion, gender):
    rec = parse_filename(rel)
    assert (rec["corpus"], rec["actor"], rec["emotion"], rec["gender"]) == \
        (corpus, actor, emotion, gender)


def test_each_reader_example_is_read_by_its_reader_alone():
    """No two readers accept the same name: the example of each corpus is parsed by it."""
    from mer_pipeline.corpus import _NAME_PARSERS, CORPUS_NAMES, _Unparsed

    for corpus, example in CORPUS_NAMES.items():
        name = example.split(" ")[0] if corpus != "aesdd" else example
        path = __import__("pathlib").Path("happy" if corpus == "ckplus" else "x") / name
        takers = []
        for parser in _NAME_PARSERS:
            try:
                rec = parser(path.stem, path, "audio")
            except _Unparsed:
                rec = None
            if rec is not None:
                takers.append(rec["corpus"])
        assert takers == [corpus], (example, takers)


def test_reader_names_with_bad_codes_are_unparsed(tmp_path):
    for rel in ("subesco/F_01_OISHI_S_1_BORED_1.wav", "esd/0011/0011_009999.wav",
                "asvp/03-01-42-01-01-02-02-01-01.wav"):
        touch(tmp_path / rel)
    scan = discover(tmp_path)
    assert len(scan.clips) == 0 and len(scan.unparsed) == 3
    assert scan.unparsed["reason"].str.contains("SUBESCO|ESD|ASVP").all()


def test_listing_corpus_is_its_column_else_its_folder(tmp_path):
    for corpus in ("nemo", "turev_db"):
        folder = tmp_path / corpus
        touch(folder / "a" / "x1.wav")
        pd.DataFrame({"path": ["a/x1.wav"], "label": ["sad"],
                      "speaker": [f"{corpus}_s1"]}).to_csv(folder / "LABELS.csv", index=False)
    touch(tmp_path / "mixed" / "y.wav")
    touch(tmp_path / "mixed" / "1157_kz_acik.wav")
    pd.DataFrame({"path": ["y.wav", "1157_kz_acik.wav"], "label": ["happy", "angry"],
                  "corpus": ["My Corpus", ""],
                  # columns a manifest defines itself never crash a listing
                  "gender": ["F", ""], "kind": ["x", "y"], "emotion": ["?", "?"],
                  "language": ["en", ""], "notes": ["kept", "kept"]}
                 ).to_csv(tmp_path / "mixed" / "LABELS.csv", index=False)
    scan = discover([tmp_path / "nemo" / "LABELS.csv", tmp_path / "turev_db" / "LABELS.csv",
                     tmp_path / "mixed" / "LABELS.csv"])
    clips = scan.clips.set_index("emotion")
    assert scan.summary()["corpora"] == {"my_corpus": 1, "nemo": 1, "turevdb": 2}
    assert clips.loc["happy", "gender"] == "female" and clips.loc["happy", "language"] == "en"
    assert clips.loc["happy", "notes"] == "kept"
    # a listing without a speaker for a clip: its file name gives one (TurEV-DB's reader)
    assert (clips.loc["angry", "corpus"], clips.loc["angry", "actor"]) == ("turevdb", "1157")
    assert clips.loc["angry", "language"] == "tr"


@pytest.mark.shared
def test_shared_speech_corpora_manifests():
    root = shared_path("speech_corpora")
    folders = discover([root / "nemo", root / "turev_db"])
    listings = discover([root / "nemo" / "LABELS.csv", root / "turev_db" / "LABELS.csv"])
    for scan in (folders, listings):
        s = scan.summary()
        assert s["corpora"] == {"nemo": 647, "turevdb": 550} and s["unparsed"] == 0
        assert s["actors"] == 15 and s["clips_without_actor"] == 0
    assert folders.summary()["emotions"] == listings.summary()["emotions"]
