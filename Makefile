# The two commands: `make notebooks` (the main job) and `make test`. Each creates the virtual
# environment in .venv and installs everything the first time, and `make test` gets the data its tests
# need, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: notebooks test test-fast test-data test-versions set-repo-url benchmark gpu-check lint clean

notebooks: $(STAMP)
	$(BIN)/python scripts/run_notebooks.py

# pytest exits 5 when it collected nothing: that must fail, never pass silently.
test: $(STAMP) test-data
	SMOKE_TEST=1 $(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

# The edit-test loop: the unit tests without real data, other processes, kernels or notebooks (CI runs `test`).
test-fast: $(STAMP)
	SMOKE_TEST=1 $(BIN)/python -m pytest tests -m "not slow and not real_data" -q

# The real-data tests need Fashion-MNIST: find a copy, or install Debian's package, or download it.
test-data: $(STAMP)
	$(BIN)/python scripts/get_test_data.py

# The declared version range, tested at both ends (separate from `make test`): the oldest versions pyproject.toml
# allows and the newest releases, each in its own environment (.venv-oldest, .venv-newest), with the helpers
# installed from a git URL as on Colab; unit tests, then every notebook in smoke mode. The first run downloads
# several GB. One end only: make test-versions ENDS=oldest
test-versions:
	$(PYTHON) scripts/test_versions.py $(ENDS)

# The repository the Colab notebooks install from and open: make set-repo-url URL=https://github.com/you/fork
set-repo-url:
	$(PYTHON) scripts/set_repository_url.py "$(URL)"

benchmark: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# On a machine with a CUDA GPU, the one command: the CUDA tests (skipped, with the reason, without
# one), then training images/s of VGG16 and ResNet-34 with mixed precision and channels-last on and off.
gpu-check: $(STAMP)
	CUBLAS_WORKSPACE_CONFIG=:4096:8 $(BIN)/python -m pytest tests/test_cuda.py -rs -p no:cacheprovider
	$(BIN)/python benchmarks/bench_gpu.py

lint: $(STAMP)
	$(BIN)/ruff check .

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	    echo "Could not create $(VENV) with $(PYTHON). On Debian or Ubuntu: sudo apt install python3-venv;"; \
	    echo "or name another Python 3.11+: make PYTHON=python3.12 ..."; exit 1; }
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

clean:
	rm -rf outputs checkpoints .pytest_cache
