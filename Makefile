# ssl_hf — the two commands a newcomer needs: `make pretrain` and `make test`. Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHECK_DIRS := src tests examples benchmarks
RUN ?= runs/msbreg-digit-scenes
EXPORT ?= $(RUN)/export
PRETRAIN_STEPS ?= 700
# a tenth of the steps, and no fewer than 60: at 300 steps a 30-step warm-up let the embedding rank fall faster and the
# export k-NN end at 21.9 % against the floor's 15.6 %; 60 steps gave 29.5 % (benchmarks/results/sweeps/msbreg_cpu)
PRETRAIN_WARMUP ?= 70

.PHONY: install pretrain evaluate test test-slow test-all bench bench-speed bench-quality sweep style quality clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of torch first, so that no CUDA build is pulled in on machines without a GPU
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# pre-train MSBReg with its CPU preset on the built-in digit-scenes set (PRETRAIN_STEPS steps, ~7 minutes on 2 cores),
# export the encoder, evaluate it (k-NN + linear probe on digits) next to its calibrated floor (the same network at
# step 0, BatchNorm statistics from the data); the loss and online k-NN curves are in $(RUN)/training_curves.png
pretrain: install
	$(VENV)/bin/ssl-hf pretrain --preset msbreg-cpu --max_steps $(PRETRAIN_STEPS) --warmup_steps $(PRETRAIN_WARMUP) \
		--output_dir $(RUN) --resume_from_checkpoint latest
	$(VENV)/bin/ssl-hf export $(RUN)/final --output_dir $(EXPORT)
	$(VENV)/bin/ssl-hf evaluate $(EXPORT) --dataset digits --protocol knn,linear --compare_random_init \
		--output $(RUN)/eval_digits.json --update_card
	@echo "Loss and online k-NN curves: $(RUN)/training_curves.png"

# every evaluation protocol on the export of `make pretrain` (k-NN, linear, few-shot, fine-tune, dense, diagnostics
# with plots in $(EXPORT)/plots), results in $(RUN)/eval_all.json and in the model card
evaluate: install
	$(VENV)/bin/ssl-hf evaluate $(EXPORT) --dataset digits --protocol all --output $(RUN)/eval_all.json --update_card

# fast CPU suite (every commit, CI)
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -m "not slow" tests

# slower end-to-end checks (the sustainable chain example; the two-process test runs in `make test`)
test-slow: install
	$(PY) -m pytest -m slow tests || test $$? -eq 5

test-all: test test-slow

# benchmarks: training-step speed and memory of every method, then representation quality of every `-cpu` preset
# (up to 20 minutes per method and seed on 2 CPU cores; one result file per method and seed, reused when present, so
# methods can run in separate sittings: `make bench-quality BENCH_METHODS=mae,tec`). Run nothing else meanwhile.
BENCH_SEEDS ?= 0,1
BENCH_METHODS ?= mae,asl,tec,byol,msbreg,dino,selfpatch
BENCH_DATASET ?= digit-scenes
bench: bench-speed bench-quality

bench-speed: install
	$(PY) benchmarks/speed.py && $(PY) benchmarks/report.py

bench-quality: install
	$(PY) benchmarks/quality.py --methods $(BENCH_METHODS) --seeds $(BENCH_SEEDS) --dataset $(BENCH_DATASET) \
		&& $(PY) benchmarks/report.py

# recipe sweeps with the online k-NN monitor (one result file per variant in benchmarks/results/sweeps)
SWEEP ?= benchmarks/sweeps/byol_cpu.yaml
sweep: install
	$(PY) benchmarks/sweep.py $(SWEEP)

style: install
	$(VENV)/bin/ruff format $(CHECK_DIRS) && $(VENV)/bin/ruff check --fix $(CHECK_DIRS)

quality: install
	$(VENV)/bin/ruff format --check $(CHECK_DIRS) && $(VENV)/bin/ruff check $(CHECK_DIRS)

clean:
	rm -rf runs build dist src/*.egg-info .pytest_cache .ruff_cache
