# make try:    install, render the example photos with every shipped culture model (under a minute).
# make demo:   install, train the CPU preset on photo2guohua (~11 min on 2 cores of a Zen 4 EPYC; README), write the test gallery.
# make test:   install with test extras, run the test suite.
# make visdom: install, then start the live-monitoring server on http://127.0.0.1:8097 (offline).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_NAME ?= photo2guohua_cpu
DEMO_DATA ?= datasets/photo2guohua

.PHONY: install test try demo visdom visdom-assets clean-demo

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# visdom 0.2.4 is a source package whose build needs setuptools<81 (pkg_resources): install that first,
	# build without isolation, and keep it pinned in the same resolution so nothing upgrades it
	$(PY) -m pip install --quiet "setuptools<81" wheel
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test,visdom,app]" "setuptools<81"
	$(MAKE) visdom-assets
	touch $(STAMP)

install: $(STAMP)

# Visdom's front-end files from the npm registry (never from CDNs at server start). Without npm, monitoring
# tests skip and `cyclegan-culture visdom` says what to install.
visdom-assets:
	@if command -v npm >/dev/null 2>&1; then $(PY) -m cyclegan_culture visdom --install_assets; \
	else echo "note: npm not found; Visdom's front-end files not installed (apt-get install npm, then make visdom-assets)"; fi

test: $(STAMP)
	$(PY) -m pytest

try: $(STAMP)
	$(PY) -m cyclegan_culture stylize --culture all cyclegan_culture/pretrained/examples --out results/try
	@echo "Renderings: results/try/<culture>/ (the photos: cyclegan_culture/pretrained/examples/)"

# Re-running `make demo` resumes an unfinished demo run (from any training state a crash left: .pt, .pt.new,
# .prev.pt) instead of starting over; weights without any state (a kill inside the first save) are moved aside.
demo: $(STAMP)
	@if ls checkpoints/$(DEMO_NAME)/training_state* >/dev/null 2>&1; then resume=--continue_train; \
	elif ls checkpoints/$(DEMO_NAME)/*_net_*.pth >/dev/null 2>&1; then resume=--start_over; fi; \
	$(PY) train.py --dataroot $(DEMO_DATA) --name $(DEMO_NAME) --preset cpu $$resume
	$(PY) test.py --dataroot $(DEMO_DATA) --name $(DEMO_NAME)
	@echo "Gallery: results/$(DEMO_NAME)/test_latest/index.html"

visdom: $(STAMP)
	$(PY) -m cyclegan_culture visdom

clean-demo:
	rm -rf checkpoints/$(DEMO_NAME) results/$(DEMO_NAME)
