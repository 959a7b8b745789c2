# Every target installs what it needs first (a virtualenv in .venv), so a fresh clone needs
# only Python 3.11+, Java 17 and access to PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= spark,airflow,report,serve,dev

# Spark runs its Python workers with $PYSPARK_PYTHON; point it at the venv, and keep Spark on
# loopback (it otherwise binds to whatever address the host name resolves to).
export PYSPARK_PYTHON        := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export SPARK_LOCAL_IP        ?= 127.0.0.1
export HF_HUB_OFFLINE        := 1
export TRANSFORMERS_OFFLINE  := 1
export PATH                  := $(abspath $(BIN)):$(PATH)

DEMO_QUERIES := "read a file line by line" "compress data with gzip" \
                "parse a date from a string" "random number from a normal distribution"

.PHONY: setup demo test e2e cluster-test lint bench bench-scale bench-quality bench-dag clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the pinned CPU build; an unpinned torch would pull GBs of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

setup: $(STAMP)

demo: setup
	curindex build --conf conf/demo.toml --master 'local[2]' --publish
	curindex search --store store --k 5 --budget 100 $(DEMO_QUERIES)

test: setup
	$(BIN)/python -m pytest

# The package as users get it: a wheel built from this checkout, installed into a new
# virtualenv outside it, builds and searches an index with `curindex build` / `curindex
# search`, and the DAG file copied alone into an empty DAGs folder runs with dag.test().
e2e: setup
	$(BIN)/python -m pytest -m e2e

cluster-test: setup
	$(BIN)/python -m pytest -m cluster

lint: setup
	$(BIN)/ruff check lib jobs dags tests bench

bench: setup
	$(BIN)/python bench/scoring.py

bench-scale: setup
	$(BIN)/python bench/scale.py

bench-quality: setup
	$(BIN)/python bench/quality.py

bench-dag: setup
	$(BIN)/python bench/dag.py

clean:
	rm -rf store .work spark-warehouse
