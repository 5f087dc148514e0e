# make demo: install, train the CPU preset on photo2guohua, write the test gallery.
# make test: install with test extras, run the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_NAME ?= photo2guohua_cpu
DEMO_DATA ?= datasets/photo2guohua

.PHONY: install test demo clean-demo

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# visdom 0.2.4 (a source package) needs setuptools<81 to build, so we install it up front
	$(PY) -m pip install --quiet "setuptools<81" wheel
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# Re-running `make demo` resumes an unfinished demo run instead of starting over.
demo: $(STAMP)
	@if [ -f checkpoints/$(DEMO_NAME)/training_state.pt ]; then resume=--continue_train; fi; \
	$(PY) train.py --dataroot $(DEMO_DATA) --name $(DEMO_NAME) --preset cpu $$resume
	$(PY) test.py --dataroot $(DEMO_DATA) --name $(DEMO_NAME)
	@echo "Gallery: results/$(DEMO_NAME)/test_latest/index.html"

clean-demo:
	rm -rf checkpoints/$(DEMO_NAME) results/$(DEMO_NAME)
