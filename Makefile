# Everything a developer or CI needs, from a fresh Debian machine with Python:
#   make up     venv + install + run `tailscale-wsl2 up`
#   make test   venv + Debian packages + lint + types + frozen build + whole suite
#   make build  dist/tailscale-wsl2 (PyInstaller, one file)
#   make bench  the relay benchmark against a socat chain (never part of `make test`)
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# curl and socat: real clients and the comparison relay; binutils: objdump.
DEBIAN_PACKAGES := curl socat binutils
SOURCES := $(shell find tailscale_wsl2 -name '*.py') build.spec

.PHONY: up test lint build bench debian-packages clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

debian-packages:
	tools/ensure-debian-packages $(DEBIAN_PACKAGES)

up: $(INSTALLED)
	$(BIN)/tailscale-wsl2 up

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# Windows-only code sits behind sys.platform checks that hide it from a
	# Linux run; type-check it as Windows code too.
	$(BIN)/mypy --platform win32 tailscale_wsl2/_windows_pipe.py tests/windows tools/wine_trio_patch.py

build: dist/tailscale-wsl2

dist/tailscale-wsl2: $(INSTALLED) $(SOURCES)
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build build.spec
	$(BIN)/python tools/glibc_needs.py dist/tailscale-wsl2

test: $(INSTALLED) debian-packages lint build
	$(BIN)/pytest

bench: $(INSTALLED) debian-packages build
	$(BIN)/python bench/relay_bench.py

clean:
	rm -rf build dist $(VENV)
