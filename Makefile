# Every target sets up its own virtual environment when missing.
PYTHON ?= python3
VENV   ?= .venv
# CI and this machine use the local CPU wheel; override for a CUDA build, e.g. TORCH_SPEC="torch>=2.2".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo lint test test-all bench bench-color bench-real bench-pg gpu-bench clean

$(BIN)/evodenoise: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

setup: $(BIN)/evodenoise

demo: setup
	$(BIN)/evodenoise denoise sample_images/camera_noisy25.npy --sigma 25 \
		--reference sample_images/camera.png -o out/camera_denoised.png \
		--compare out/camera_compare.png --force

# ruff (lint and format) and mypy on the library core, configured in pyproject.toml; CI runs
# them before the tests.
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: setup
	$(BIN)/pytest -q

test-all: setup
	$(BIN)/pytest -q -m "slow or not slow"

# BM3D (the optional `bench` extra, non-commercial licence) is installed for benchmarks only.
# Suites are defined in benchmarks/run.py (SUITES); BENCH_ARGS adds or overrides options.
bench: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run.py --suite gray $(BENCH_ARGS)

# Colour: three photos scikit-image ships (free licences); noise on centre 256x256 crops, masks
# on centre 128x128 crops (inpainting trains 40 epochs: a quarter of the pixels keeps it to
# about 45 minutes in all on 2 cores).
bench-color: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run.py --suite color $(BENCH_ARGS)
	$(BIN)/python benchmarks/run.py --suite inpaint $(BENCH_ARGS)

# Real noise: noisy/reference pairs kept outside the repository (never copy them in); no σ is
# given; default settings (σ estimated from the image, photon-counting noise of the microscope
# frames detected and transformed), centre 256x256 crops, a few minutes each; the peers on the same
# crops: (C)BM3D with σ estimated as a user would, at the best σ of a grid (an expert at
# best), NL-means with its strength calibrated on the noisy image (calibrate_denoiser), and,
# for the microscope frames, BM3D after the generalised Anscombe transform.
REAL_DIR ?= ../shared/benchmark/real
bench-real: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/real.py $(REAL_DIR)/camera $(REAL_DIR)/repro --crop 256 --threads 2 \
		--methods input,evodenoise,cbm3d,cbm3d-best,nlm-cal --name real-camera $(BENCH_ARGS)
	$(BIN)/python benchmarks/real.py $(REAL_DIR)/microscopy --crop 256 --threads 2 \
		--methods input,evodenoise,cbm3d,cbm3d-best,gat-bm3d,nlm-cal \
		--name real-microscopy $(BENCH_ARGS)

# Synthetic Poisson–Gaussian noise (photon counting) on two clean gray images, centre 256x256
# crops, at peaks of 1, 4, 10 and 30 photons with a read noise of 2/255; no σ given. Peers:
# BM3D after the generalised Anscombe transform (exact unbiased inverse) and NL-means with its
# strength calibrated on the noisy image (calibrate_denoiser). About an hour on 2 cores.
bench-pg: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/poisson.py ../shared/benchmark/images/house.png sample_images/camera.png \
		--crop 256 --peaks 1,4,10,30 --threads 1 --name poisson $(BENCH_ARGS)

# CUDA machine only (fails with one line elsewhere): the cuda tests, then per preset compile time,
# s/epoch, kernels and syncs per step, peak memory, TFLOP/s and PSNR vs the CPU at equal seed.
# Needs a CUDA build of torch: make gpu-bench TORCH_SPEC="torch>=2.4" (in a fresh .venv); its
# CPU reference runs alone take half an hour or more. On a lent GPU machine: make gpu-check.
gpu-bench: setup
	$(BIN)/python benchmarks/gpu_bench.py $(GPU_BENCH_ARGS)

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info

# The GPU check sized for a 15-minute lease (docs/gpu.md), with the lent machine's own python3
# (CUDA torch, no network; no venv is built): cuda tests, per preset compile time, s/epoch,
# kernels and syncs per step, peak memory and PSNR against the CPU, one 12 MP CLI run; at most
# 8 minutes, JSON into $OUT (or benchmarks/results/gpu-check). Fetch its wheels beforehand on
# a machine with internet: bash benchmarks/fetch_wheels.sh. Try it on any CPU first:
# make gpu-check GPU_CHECK_ARGS=--cpu-smoke
.PHONY: gpu-check
gpu-check:
	PYTHON="$(PYTHON)" bash benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)
