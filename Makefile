# known-ops: the two commands are `make test` and `make demo`; both work on a fresh clone.
#
#   make venv    create .venv (if missing) and install torch and the development tools
#   make build   build the compiled extension known_ops._C, only when it is missing or stale
#   make test    build, then run the test suite
#   make demo    build, then project / back-project Shepp-Logan (writes benchmarks/results/demo.png)
#   make bench   build, then run the operator benchmark (writes benchmarks/results/operators.{json,md})
#   make clean   remove build outputs (keeps .venv); `make distclean` also removes .venv
#
# Torch is installed once, by the first rule that applies:
#   1. the venv's python already imports torch: it is kept as is;
#   2. the system python ($(PYTHON)) has a CUDA build of torch (e.g. a GPU machine with no
#      network): the venv is made with --system-site-packages so that torch is used as is;
#   3. otherwise $(TORCH_SPEC) is installed (the CPU build torch==2.13.0 on the CI machines).

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip

# Needed to build, test and run the demo.
DEPS := numpy scipy pytest hypothesis expecttest matplotlib ninja setuptools wheel tqdm
# Cross-checks that the tests skip (with a reason) when they are missing; installing them may
# fail on some machines, which is not fatal. odl (1.0's API) adds ~6 s to a venv that has the DEPS.
OPTIONAL_DEPS := astra-toolbox scikit-image odl==1.0.0
# Installed with --no-deps: pyronn 0.1.0 (pure NumPy geometry and trajectories, ~2 s) would pull
# TensorFlow and PYRO-NN-Layers (CUDA kernels), which the interop tests do not need.
OPTIONAL_NODEPS := pyronn==0.1.0

TORCH_STAMP := $(VENV)/.known-ops-torch.stamp
DEPS_STAMP  := $(VENV)/.known-ops-deps.stamp
# Pins the torch that the venv uses, so that no later install replaces it.
TORCH_PIN   := $(VENV)/known-ops-torch-constraint.txt

.PHONY: venv build test demo bench clean distclean

venv: $(DEPS_STAMP)

$(TORCH_STAMP):
	@if [ -x "$(PY)" ] && "$(PY)" -c "import torch" 2>/dev/null; then \
		echo "venv: keeping the torch already in $(VENV)"; \
	elif "$(PYTHON)" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
		echo "venv: $(PYTHON) has a CUDA build of torch; creating $(VENV) with --system-site-packages to use it"; \
		"$(PYTHON)" -m venv --system-site-packages "$(VENV)"; \
	else \
		if [ ! -x "$(PY)" ]; then echo "venv: creating $(VENV)"; "$(PYTHON)" -m venv "$(VENV)"; fi; \
		echo "venv: installing $(TORCH_SPEC)"; \
		"$(PY)" -m pip install -q "$(TORCH_SPEC)"; \
	fi
	"$(PY)" -c "from importlib.metadata import version; print('torch==' + version('torch'))" > "$(TORCH_PIN)"
	@"$(PY)" -W ignore -c "import torch; print('venv: torch', torch.__version__, '(CUDA', str(torch.version.cuda) + ')')"
	@touch "$@"

$(DEPS_STAMP): $(TORCH_STAMP)
	$(PIP) install -q -c "$(TORCH_PIN)" $(DEPS)
	@for pkg in $(OPTIONAL_DEPS); do \
		$(PIP) install -q -c "$(TORCH_PIN)" "$$pkg" \
			|| echo "venv: WARNING: could not install $$pkg; the tests that need it will be skipped"; \
	done
	@for pkg in $(OPTIONAL_NODEPS); do \
		$(PIP) install -q --no-deps "$$pkg" \
			|| echo "venv: WARNING: could not install $$pkg; the tests that need it will be skipped"; \
	done
	@touch "$@"

# The import check is the one known_ops runs itself: it fails when known_ops._C is missing, was
# built against another torch, or csrc/ changed since the build (see known_ops/_ops.py).
build: $(DEPS_STAMP)
	@if "$(PY)" -c "import known_ops" >/dev/null 2>&1; then \
		echo "build: known_ops._C is up to date"; \
	else \
		echo "build: building known_ops._C (pip install --no-build-isolation -e .)"; \
		$(PIP) install -q --no-build-isolation --no-deps -e . && "$(PY)" -c "import known_ops"; \
	fi

test: build
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

demo: build
	$(PY) benchmarks/demo.py

bench: build
	$(PY) benchmarks/operators.py

clean:
	rm -rf build *.egg-info .pytest_cache .hypothesis
	rm -f known_ops/_C*.so known_ops/_build_info.py
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
