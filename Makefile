# Everything a developer or CI needs, from a fresh Debian machine with Python:
#   make up     venv + install + run `tailscale-wsl2 up`
#   make test   venv + Debian packages + lint + types + frozen build + whole suite
#   make build  dist/tailscale-wsl2 (PyInstaller, one file)
#   make build-windows       dist/tailscale-wsl2.exe: build.spec under Wine, no test hooks
#   make build-windows-test  build/wine-dist/tailscale-wsl2-test-hooks.exe: the same with the
#                            Wine trio patch and ProcessPrng stand-in, for the tests (never a
#                            release artifact)
#   make dist   build/pypi: the sdist and wheel, checked (twine) and tried in a fresh venv
#   make bench  the relay benchmark against a socat chain (never part of `make test`)
#   make mutation  how many broken versions of each pure-logic module its tests catch
#                  (mutmut, tools/mutation.py; slow, never part of `make test`);
#                  MODULES="windows/ipconfig.py ..." measures only those
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# curl and socat: real clients and the comparison relay; binutils: objdump; systemd:
# systemd-analyze, which checks the unit `install` writes.
DEBIAN_PACKAGES := curl socat binutils systemd
SOURCES := $(shell find tailscale_wsl2 -name '*.py') build.spec tools/windows_exe_resources.py
# The Wine builds also depend on the Windows Python's packages (PyInstaller's version among
# them) and, for the test build, on the patch and the stand-in DLL it carries.
WINE_BUILD_INPUTS := $(SOURCES) tools/wine-pyinstaller tools/wine-env tools/wine-requirements.txt \
	tools/wine-processprng.c
WINE_TEST_EXE := build/wine-dist/tailscale-wsl2-test-hooks.exe
# The Python packages go under build/, never dist/: dist/ holds the release binaries.
PYPI_DIST := build/pypi
WHEEL_VENV := build/wheel-venv

.PHONY: up test lint build build-windows build-windows-test dist bench mutation debian-packages clean

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
	# The layering in docs/design.md, as import-linter contracts (pyproject.toml).
	$(BIN)/lint-imports
	# Windows-only code sits behind sys.platform checks that hide it from a
	# Linux run; type-check it as Windows code too.
	$(BIN)/mypy --platform win32 tailscale_wsl2 tests/in_wine tests/windows_ci \
		tools/wine_trio_patch.py tools/windows_exe_resources.py
	tools/lint-workflows .github/workflows/ci.yml .github/workflows/release.yml

build: dist/tailscale-wsl2

dist/tailscale-wsl2: $(INSTALLED) $(SOURCES)
	PYTHONNODEBUGRANGES=1 $(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build build.spec
	$(BIN)/python tools/glibc_needs.py dist/tailscale-wsl2

build-windows: dist/tailscale-wsl2.exe

dist/tailscale-wsl2.exe: $(WINE_BUILD_INPUTS) | $(INSTALLED)
	tools/wine-pyinstaller release

build-windows-test: $(WINE_TEST_EXE)

# Without Wine (and no way to install it) outside CI this makes no .exe and says so; the
# tests that need it then skip.
$(WINE_TEST_EXE): $(WINE_BUILD_INPUTS) tools/wine_trio_patch.py | $(INSTALLED)
	tools/wine-pyinstaller test

# What PyPI gets, as a user gets it: build the sdist and the wheel (the wheel from the sdist, so
# the sdist is complete), check their metadata and README, then install the wheel alone into a
# fresh venv and run the program from there: --version, and doctor's JSON report as detected and
# as each half (doctor exits 1 on a machine without WSL2 or Windows, as here).
dist: $(INSTALLED)
	rm -rf $(PYPI_DIST) $(WHEEL_VENV)
	$(BIN)/python -m build --quiet --outdir $(PYPI_DIST) .
	$(BIN)/twine check --strict $(PYPI_DIST)/*
	# One pure-Python wheel serves Windows and Linux alike.
	ls $(PYPI_DIST)/tailscale_wsl2-*-py3-none-any.whl
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --disable-pip-version-check $(PYPI_DIST)/*.whl
	$(WHEEL_VENV)/bin/tailscale-wsl2 --version
	$(WHEEL_VENV)/bin/tailscale-wsl2 --show-completion bash | grep _TAILSCALE_WSL2_COMPLETE >/dev/null
	$(BIN)/python tools/check_doctor_report.py $(WHEEL_VENV)/bin/tailscale-wsl2

test: $(INSTALLED) debian-packages lint build build-windows-test dist
	$(BIN)/pytest

bench: $(INSTALLED) debian-packages build
	$(BIN)/python bench/relay_bench.py --bars later --compare-auth

mutation: $(INSTALLED)
	$(BIN)/python tools/mutation.py $(MODULES)

clean:
	rm -rf build dist $(VENV)
