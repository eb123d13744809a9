# Every target sets up its own virtual environment when missing.
PYTHON ?= python3
VENV   ?= .venv
# CI and this machine use the local CPU wheel; override for a CUDA build, e.g. TORCH_SPEC="torch>=2.2".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test test-all bench bench-color gpu-bench clean

$(BIN)/evodenoise: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

setup: $(BIN)/evodenoise

demo: setup
	$(BIN)/evodenoise denoise sample_images/camera_noisy25.npy --sigma 25 \
		--reference sample_images/camera.png -o out/camera_denoised.png --force

test: setup
	$(BIN)/pytest -q

test-all: setup
	$(BIN)/pytest -q -m "slow or not slow"

# BM3D (the optional `bench` extra, non-commercial licence) is installed for benchmarks only.
bench: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Colour: three photos scikit-image ships (free licences); noise on centre 256x256 crops, masks
# on centre 128x128 crops (inpainting trains 40 epochs: a quarter of the pixels keeps it to
# about 45 minutes in all on 2 cores).
COLOR_IMAGES := skimage:astronaut skimage:coffee skimage:chelsea
bench-color: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run.py --images $(COLOR_IMAGES) --crop 256 \
		--tasks denoise-15,denoise-25,denoise-50 --threads 2 --name color_denoise $(BENCH_ARGS)
	$(BIN)/python benchmarks/run.py --images $(COLOR_IMAGES) --crop 128 \
		--tasks inpaint-50,inpaint-80 --threads 2 --name color_inpaint $(BENCH_ARGS)

# CUDA machine only (fails with one line elsewhere): the cuda tests, then per preset compile time,
# s/epoch, kernels and syncs per step, peak memory, TFLOP/s and PSNR vs the CPU at equal seed.
# Needs a CUDA build of torch: make gpu-bench TORCH_SPEC="torch>=2.4" (in a fresh .venv).
gpu-bench: setup
	$(BIN)/python benchmarks/gpu_bench.py $(GPU_BENCH_ARGS)

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info
