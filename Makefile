# slideserver: two commands on a fresh machine.
#   make serve   virtual environment, viewer, sample slides, server at http://127.0.0.1:8000
#   make test    what the tests need (Debian packages included), then ruff, mypy and pytest

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SAMPLES := sample_data/generated
VIEWER_STAMP := slideserver/static/viewer/index.html
APT_PACKAGES := redis-server chromium postgresql nginx-light wrk dcmtk orthanc orthanc-dicomweb poppler-utils
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test install viewer sample sample-large lint typecheck pytest bench bench-catalog system-deps clean wheel cluster loadtest soak bench-annotations

serve: install viewer sample
	$(BIN)/slideserver serve $(SAMPLES) --host $(HOST) --port $(PORT)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

viewer: $(VIEWER_STAMP)

$(VIEWER_STAMP): $(wildcard viewer/package.json viewer/package-lock.json viewer/*.html viewer/vite.config.* viewer/src/* viewer/src/*/*)
	@if [ -f viewer/package.json ]; then \
		cd viewer && npm ci --no-audit --no-fund --loglevel=error && npm run build; \
	else echo "no viewer yet"; fi

sample: install
	$(BIN)/slideserver sample $(SAMPLES)

sample-large: install
	$(BIN)/slideserver sample --large $(SAMPLES)

# Debian packages the tests run for real: Redis, Chromium, PostgreSQL, nginx and wrk (bench);
# dcmtk (storescu) and Orthanc with its DICOMweb plugin (DICOM networking, a PACS);
# poppler-utils (pdftoppm renders report PDFs); libmagic for the IIIF validator's python-magic.
system-deps:
	@missing=""; \
	for cmd in redis-server:redis-server chromium:chromium nginx:nginx-light wrk:wrk storescu:dcmtk Orthanc:orthanc pdftoppm:poppler-utils; do \
		c=$${cmd%%:*}; p=$${cmd##*:}; command -v $$c >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	ldconfig -p 2>/dev/null | grep -q 'libmagic\.so\.1' || missing="$$missing libmagic1"; \
	ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || missing="$$missing orthanc-dicomweb"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

lint: install
	$(BIN)/ruff check slideserver tests sample_data bench deploy
	$(BIN)/ruff format --check slideserver tests sample_data bench deploy
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

FHIR_SERVER := tests/fhir_server/node_modules/.package-lock.json
DMV_PAGE := tests/browser/dmv/dist/main.js
# Two worker processes (pytest-xdist), each test file on one worker so that its module fixtures
# (live servers, browsers) start once: most tests wait on the servers they start, so on two cores
# two workers take the suite from about 18 to 11 minutes. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
pytest: install viewer $(FHIR_SERVER) $(DMV_PAGE)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

test: system-deps install viewer lint typecheck pytest

# The medplum FHIR server the EHR tests run (issue 14).
$(FHIR_SERVER): tests/fhir_server/package-lock.json
	cd tests/fhir_server && npm ci --no-audit --no-fund --loglevel=error

# Slim's viewer library on a test page, for tests/browser/test_dicomweb_slim.py (issue 13).
$(DMV_PAGE): $(wildcard tests/browser/dmv/package-lock.json tests/browser/dmv/build.mjs tests/browser/dmv/src/*)
	cd tests/browser/dmv && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent

bench: system-deps install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.export
	$(BIN)/python -m bench.annotations

bench-annotations: install
	$(BIN)/python -m bench.annotations

bench-catalog: system-deps install
	$(BIN)/python -m bench.catalog

# dist/slideserver-*.whl (and the sdist): what `pip install` and the Dockerfile install.
wheel: install viewer
	$(BIN)/python -m build --outdir dist

# Two instances behind nginx over one PostgreSQL and one Redis, on loopback; Ctrl-C stops all.
cluster: system-deps install viewer sample
	$(BIN)/python -m deploy.cluster $(SAMPLES)

# The shift change on the cluster layout: 200 pathologists sign in within a minute, open a case,
# its first slide, and pan (locust); p50/p95/p99 of each step against the goals (~4 min).
loadtest: system-deps install sample
	$(BIN)/python -m deploy.loadtest shift --samples $(SAMPLES)

# Ten minutes of 64 connections of mixed traffic; memory, open files and threads of every process.
soak: system-deps install sample
	$(BIN)/python -m deploy.loadtest soak --samples $(SAMPLES)

clean:
	rm -rf $(VENV) viewer/node_modules slideserver/static/viewer $(SAMPLES) .mypy_cache .ruff_cache .pytest_cache
