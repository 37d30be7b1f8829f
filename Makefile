# The course's commands. On a fresh machine `make book` and `make test` do all the set-up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JB := $(VENV)/bin/jupyter-book
JOBS ?= 2
export PYTHONPATH := $(CURDIR)
export PYTHONDONTWRITEBYTECODE := 1

# A virtual environment whose tools have gone missing is rebuilt, not trusted.
ifneq ($(shell test -x $(PY) -a -x $(JB) -a -x $(VENV)/bin/pytest -a -f $(STAMP) && echo ok),ok)
.PHONY: $(STAMP)
endif

.PHONY: help venv data book instructor-book release grade autograde report gradescope test test-fast bench clean

help:
	@echo "make book             build the student website into _build/html"
	@echo "make instructor-book  build the website with solutions into _build/instructor/_build/html"
	@echo "make test             build the student website, then run every test"
	@echo "make test-fast        run the tests that need no built website"
	@echo "make release          nbgrader source and release notebooks in course/ (make release SLUGS=ch02_bn_forward)"
	@echo "make grade ASSIGNMENT=ch02_bn_forward SUBMISSIONS=dir   grade a class into _build/grades/ASSIGNMENT"
	@echo "make autograde ASSIGNMENT=ch02_bn_forward   nbgrader autograde, with the sandboxed scores in its grade book"
	@echo "make report ASSIGNMENT=ch02_bn_forward   the class report: _build/grades/ASSIGNMENT/report.html"
	@echo "make gradescope ASSIGNMENT=ch02_bn_forward   Gradescope's autograder.zip in _build/gradescope/ASSIGNMENT"
	@echo "make bench            time grade-all and nbgrader autograde on a generated class"
	@echo "make data             find Fashion-MNIST, or download and verify it"
	@echo "make clean            remove _build (keeps .venv and data)"

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; install the venv module (Debian: apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt || { echo "error: installing requirements.txt into $(VENV) failed (see above); check the network access to the package index, then run make again"; exit 1; }
	@touch $(STAMP)

data: $(STAMP)
	@$(PY) -m bnlab.data

book: $(STAMP) data
	$(PY) -m autograder.notebooks student _build/src/student
	$(JB) build _build/src/student --path-output . -W -n --keep-going
	@echo "Student website: _build/html/index.html"

instructor-book: $(STAMP) data
	$(PY) -m autograder.notebooks instructor _build/src/instructor
	$(JB) build _build/src/instructor --path-output _build/instructor -W -n --keep-going
	@echo "Instructor website: _build/instructor/_build/html/index.html"

release: $(STAMP)
	$(PY) -m autograder.release $(SLUGS)

grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade ASSIGNMENT=<slug> SUBMISSIONS=<dir> [JOBS=2]"; exit 2; }
	$(PY) -m autograder grade-all --assignment $(ASSIGNMENT) $(SUBMISSIONS) --out _build/grades/$(ASSIGNMENT) --jobs $(JOBS)
	@echo "grades: _build/grades/$(ASSIGNMENT)/grades.csv; feedback: _build/grades/$(ASSIGNMENT)/<student>/feedback.txt"

autograde: $(STAMP)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make autograde ASSIGNMENT=<slug> [JOBS=2]  (submissions in course/submitted)"; exit 2; }
	$(PY) -m autograder autograde --assignment $(ASSIGNMENT) --jobs $(JOBS)

gradescope: $(STAMP)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make gradescope ASSIGNMENT=<slug>"; exit 2; }
	$(PY) -m autograder gradescope --assignment $(ASSIGNMENT)

report: $(STAMP)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make report ASSIGNMENT=<slug>  (after make grade or make autograde)"; exit 2; }
	$(PY) -m autograder report _build/grades/$(ASSIGNMENT)

bench: $(STAMP)
	$(PY) bench/grading.py --jobs $(JOBS)

test: book
	$(PY) -m pytest -n $(JOBS) --dist loadscope

test-fast: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadscope -m "not site"

clean:
	rm -rf _build course
