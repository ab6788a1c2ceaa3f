# Every target installs what it needs into $(VENV), once: the stamp files make a second run a no-op.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The CUDA build of torch unpacks to ~5.5 GB (it runs on the CPU too); checked before pip starts.
TORCH_NEED_GB ?= 7
STAMP := $(VENV)/.dualalign-install
TEST_STAMP := $(VENV)/.dualalign-test-deps
PYTEST_ARGS ?=

.PHONY: install demo test clean-venv

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: detectron2's setup.py imports it. An importable torch is kept as it is.
$(STAMP): $(PY) requirements.txt scripts/install_detectron2.py scripts/check_free_space.py pyproject.toml
	@$(PY) -c "import torch, torchvision" 2>/dev/null || { \
	  $(PY) scripts/check_free_space.py --need-gb $(TORCH_NEED_GB) --what "installing $(TORCH_SPEC)" $(VENV) && \
	  $(PIP) install -q $(TORCH_SPEC); }
	$(PIP) install -q -r requirements.txt
	$(PY) scripts/install_detectron2.py
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $@

# The report's browser test drives Debian's chromium with Selenium; without a browser it skips.
$(TEST_STAMP): $(STAMP) Makefile
	$(PIP) install -q "pytest>=7.3,<10" "pytest-timeout>=2,<3" "selenium>=4.10,<5"
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver with apt-get (the report's browser test)"; \
	  { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
	    >/dev/null 2>&1 || \
	  echo "note: apt-get could not install chromium; the report's browser test will skip"; }
	@touch $@

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(TEST_STAMP)
	$(PY) -m pytest -q -ra --durations=15 $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
