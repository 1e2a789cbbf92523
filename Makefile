# Two commands on a fresh machine (see README):
#   make demo   create .venv, install everything, run the main job on the built-in data set
#   make test   create .venv, install everything, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= folk
# torch first, pinned (a local CPU build where one is provided); an unpinned torch would pull CUDA wheels
TORCH_PIN := torch==2.13.0
STAMP  := $(VENV)/.installed
SOURCES := pyproject.toml setup.py CMakeLists.txt $(shell find csrc -type f 2>/dev/null)

.PHONY: install demo test bench clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q "pybind11>=2.12" "cmake>=3.18" ninja
	$(BIN)/pip install -q --no-build-isolation -e ".[train,dali,triton,onnx,data,dev,ray,dist]"
	# tinysoundfont declares pyaudio (playback only; it does not build without PortAudio)
	$(BIN)/pip install -q --no-deps tinysoundfont
	touch $(STAMP)

RUN    ?= runs/$(DATA)
demo: install
	$(BIN)/mmengine data build $(DATA)
	$(BIN)/mmengine features $(DATA)
	$(BIN)/mmengine train --data $(DATA) --out $(RUN) --resume
	$(BIN)/mmengine evaluate $(RUN)
	$(BIN)/mmengine build $(RUN) -o $(RUN)/$(DATA).mme --backend native
	$(BIN)/mmengine classify $(RUN)/$(DATA).mme $$(ls $$($(BIN)/mmengine data path $(DATA))/audio/*.flac | head -n 3)
	$(BIN)/mmengine bench $(RUN)/$(DATA).mme --batches 1,8,64 --rounds 5
	@echo "report: $(RUN)/report.md (plots beside it); engine: $(RUN)/$(DATA).mme"

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python -m pytest -q bench

clean:
	rm -rf build $(VENV) *.egg-info mmengine/_C*.so
