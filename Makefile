# ebpf-lab: two commands for an instructor,
#
#   sudo make lab        set the machine up (idempotent), then start JupyterLab on 127.0.0.1:8888
#   sudo make test       set up, lint, run the tests on the real kernel
#   sudo make test-kernels   the tests on the kernel matrix: this machine's kernel + VMs
#   sudo make vm-run KERNEL=6.1 CMD='...'   a shell command as root in the repo, in a VM
#
# Variables: PORT=8888, LAB_HOST=127.0.0.1, LAB_ALLOW_REMOTE=1 (for `lab`, see scripts/lab.sh);
# PYTEST_ARGS (for `test` and `test-kernels`, e.g. PYTEST_ARGS="-k hello -x");
# KERNELS (for `test-kernels`: host, 6.1, 6.12; default all three), KERNEL and CMD (for `vm-run`).
# Running as root is required for setup/lab/test/bench (eBPF and apt); `sudo` is never called here.

VENV   := .venv
PY     := $(VENV)/bin/python
RUFF   := $(VENV)/bin/ruff
PYTEST_ARGS ?=
KERNELS ?= host 6.1 6.12
KERNEL  ?= 6.1
CMD     ?= .venv/bin/python -m ebpf_lab doctor
export CMD  # passed through the environment, so quotes in CMD survive

.PHONY: help setup lab test lint format bench check-root check-venv vm-setup test-kernels vm-run

help:
	@echo "sudo make lab      set up, then start JupyterLab (PORT=8888; LAB_HOST/LAB_ALLOW_REMOTE=1 to bind wider)"
	@echo "sudo make test     set up, ruff, then pytest on the real kernel (PYTEST_ARGS=...)"
	@echo "sudo make test-kernels   the suite on this kernel + its portable part in VMs (KERNELS='host 6.1 6.12')"
	@echo "sudo make vm-run KERNEL=6.1 CMD='...'   a shell command as root in the repo, in a VM"
	@echo "sudo make setup    only the (idempotent) setup: apt packages, headers, mounts, .venv, kernelspec"
	@echo "make lint          ruff check, ruff format --check, notebooks without outputs"
	@echo "make format        ruff format, strip outputs from notebooks/*.ipynb"
	@echo "sudo make bench    set up, then run benchmarks/run.py"

check-root:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "run as root: sudo make $(or $(MAKECMDGOALS),setup)  (the lab loads eBPF programs and installs packages)" >&2; \
		exit 1; \
	fi

setup: check-root
	bash scripts/setup.sh

lab: setup
	bash scripts/lab.sh

test: setup
	$(RUFF) check .
	$(RUFF) format --check .
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5); treated as success"; rc=0; fi; \
	exit $$rc

check-venv:
	@[ -x $(RUFF) ] && [ -x $(PY) ] || { echo "no $(VENV) with ruff yet: run sudo make setup" >&2; exit 1; }

lint: check-venv
	$(RUFF) check .
	$(RUFF) format --check .
	$(PY) scripts/strip_notebooks.py --check

format: check-venv
	$(RUFF) format .
	$(PY) scripts/strip_notebooks.py

bench: setup
	@if [ -f benchmarks/run.py ]; then \
		$(PY) benchmarks/run.py; \
	else \
		echo "no benchmarks yet (benchmarks/run.py does not exist)"; \
	fi

# ---------------------------------------------------------------- the kernel matrix (scripts/kernels.py)
vm-setup: setup
	$(PY) scripts/kernels.py setup

# `host` runs the whole suite here; every other kernel runs `pytest -m matrix` in a VM.
# The kernel lint of `make test` is not repeated: run `make test` for ruff.
test-kernels: vm-setup
	$(PY) scripts/kernels.py matrix $(KERNELS) --pytest-args "$(PYTEST_ARGS)"

vm-run: vm-setup
	@$(PY) scripts/kernels.py run $(KERNEL) "$$CMD"
