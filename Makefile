# Warden. `make run` starts it; `make test` runs the whole suite. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := qbittorrent-nox chromium ffmpeg

.PHONY: run test soak lint format bench install install-dev system-packages demo-packages apt-missing clean

run: $(VENV)/.installed demo-packages
	$(BIN)/warden run

test: $(VENV)/.installed-dev system-packages
	$(BIN)/python -m pytest

# The load and fault tests at full size and length (make test runs their short variant).
soak: $(VENV)/.installed-dev system-packages
	$(BIN)/python -m pytest --soak -m soak

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy supervisor

bench: $(VENV)/.installed-dev system-packages
	$(BIN)/python -m bench.page_latency
	$(BIN)/python -m bench.stash_sync
	$(BIN)/python -m bench.video_analysis
	$(BIN)/python -m bench.status_cost
	$(BIN)/python -m bench.start_idle
	$(BIN)/python -m bench.fanout

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "python3-venv is missing; installing it"; rm -rf $(VENV); \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
		$(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $@ $(VENV)/.installed

# Debian packages the tests drive for real; installed only when missing.
system-packages:
	@$(MAKE) --no-print-directory apt-missing PACKAGES="$(APT_PACKAGES)"

# The demo library's videos are made with ffmpeg.
demo-packages:
	@$(MAKE) --no-print-directory apt-missing PACKAGES="ffmpeg"

apt-missing:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
