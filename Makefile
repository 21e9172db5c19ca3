# The daily verbs. `make test` and `make demo` work on a fresh machine: they create .venv and
# install what they need on first use. `make tools` (run by test, check and statecharts) adds
# the system tools some tests use, Graphviz's dot and Chromium, where it can (apt-get as root,
# or `sudo -n`, never a prompt) and otherwise prints how to install them and carries on; see
# .ci/install-tools. Everything is a no-op when already in place.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv tools test demo lint typecheck statecharts bench soak mutate mutate-sample check clean

all: check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

tools:
	@sh .ci/install-tools

# pytest exits 5 when it collected no test: that is a failure, said as one.
test: tools $(STAMP)
	@$(PY) -m pytest -q; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no test" >&2; fi; \
	  exit $$status

demo: $(STAMP)
	$(VENV)/bin/qqconn demo

lint: $(STAMP)
	$(VENV)/bin/ruff check qqconn tests bench
	$(VENV)/bin/ruff format --check qqconn tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict qqconn

statecharts: tools $(STAMP)
	$(PY) -m qqconn.statecharts statecharts

bench: $(STAMP)
	$(PY) bench/run.py

# SECONDS_TO_SOAK (600): the one-manager soaks get 0.3 of it; FIFTY_SECONDS (3660, issue 14's
# hour and a minute): the fifty-manager soak. Both print memory/fds/tasks at the start, every
# ten minutes and at the end, with a flatness verdict;
# then the crash soak, CRASH_KILLS (60) SIGKILLs of `qqconn run --output` under random faults.
soak: $(STAMP)
	$(PY) -m pytest -q -s tests/test_soak.py --soak-seconds=$${SECONDS_TO_SOAK:-600} \
	  --soak-fifty-seconds=$${FIFTY_SECONDS:-3660}
	$(PY) -m pytest -q -s tests/test_crash_soak.py --crash-kills=$${CRASH_KILLS:-60}

# Mutation testing (mutmut 3, config in pyproject's [tool.mutmut]: machine, endings, policy,
# protocol, checkpoint and the driver package against their deterministic tests). Slow: the
# clean and the coverage runs take a few minutes, then each of the ~5,200 mutants runs the tests
# that reach its function: 10-35 mutants a minute on two shared cores, so a full run takes hours.
# MUTANTS narrows it (names or fnmatch patterns, e.g. 'qqconn.checkpoint*').
# It works in mutants/ and resumes where it stopped; `mutmut results` lists the survivors.
mutate: $(STAMP)
	$(VENV)/bin/mutmut run --max-children $${MUTMUT_CHILDREN:-2} $(MUTANTS)
	$(VENV)/bin/mutmut results

# The score from a uniform random sample (SAMPLE mutants, 800; SAMPLE_SEED, 20261204): within
# about 3 points at 95 %, in one to two hours on two shared cores (bench/mutation_sample.py).
# mutmut writes mutants/ on its first run, here one over the 18 mutants of qqconn.driver.flag.
mutate-sample: $(STAMP)
	test -d mutants || $(VENV)/bin/mutmut run --max-children 1 'qqconn.driver.flag.*'
	$(VENV)/bin/mutmut run --max-children $${MUTMUT_CHILDREN:-2} $$($(PY) bench/mutation_sample.py \
	  names --size $${SAMPLE:-800} --seed $${SAMPLE_SEED:-20261204})
	$(PY) bench/mutation_sample.py score --size $${SAMPLE:-800} --seed $${SAMPLE_SEED:-20261204}

# What CI runs (.ci/run): the habits first, then the tests.
check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis mutants
