"""Run the numerically sensitive parts of the course under one CPU configuration.

Used by ``tests/test_machines.py``, which starts this script once per configuration, with
``ATEN_CPU_CAPABILITY`` (PyTorch's choice of CPU kernels: ``default``, ``avx2``, ``avx512``)
set in its environment and the torch thread count as argument:

    ATEN_CPU_CAPABILITY=default python tests/machine_matrix.py --threads 2

It prints one JSON object:

- ``capability``: the kernels PyTorch reports;
- ``chapters``: for every chapter cell tagged ``machine-matrix``, ``"ok"`` or the error it
  raised (the cells run after the chapter's first code cell and the set-up of
  :data:`CHAPTER_SETUP`);
- ``grader``: for every submission of the grader's tests (``tests/test_grader_<slug>.py``),
  its per-exercise scores and the feedback of its failed tests, graded in this process on
  the suites (no sandbox: the numbers are what matters here).

To reproduce a failure of another machine, run the same command with its capability.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
TAG = "machine-matrix"
SLUGS = ["ch01_normalization", "ch02_bn_forward", "ch03_bn_backward", "ch04_cnn", "ch05_covariate_shift", "ch06_beyond"]

# What a chapter's tagged cells need from its untagged cells (small and fast versions).
CHAPTER_SETUP = {
    "ch04_cnn": (
        "from solutions.ch04_cnn import BatchNorm2d, BatchNormFunction, make_cnn, evaluate\n"
        "live_data = load_data('cpu', train_size=256, test_size=128, seed=0)\n"
    ),
    "ch06_beyond": (
        "from solutions.ch06_beyond import fold_batchnorm, groupnorm_forward, layernorm_backward, "
        "layernorm_forward\n"
        "from solutions.ch04_cnn import make_cnn\n"
    ),
}


def chapter_cells(slug: str) -> list[tuple[str, str]]:
    """``[(name, source)]``: the chapter's first code cell, then its tagged cells."""
    import jupytext

    nb = jupytext.read(ROOT / "chapters" / f"{slug}.md")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    tagged = [cell for cell in code if TAG in cell.metadata.get("tags", [])]
    if not tagged:
        return []
    cells = [("setup", code[0].source)]
    cells += [(f"code cell {code.index(cell) + 1} ({cell.source.strip().splitlines()[0][:50]})", cell.source)
              for cell in tagged]
    return cells


def run_chapter(slug: str, threads: int) -> dict[str, str]:
    import torch

    cells = chapter_cells(slug)
    results: dict[str, str] = {}
    if not cells:
        return results
    namespace = {"__name__": "__main__"}
    setup = "\n".join(line for line in cells[0][1].splitlines() if not line.startswith("%"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(setup, f"{slug} setup", "exec"), namespace)
            torch.set_num_threads(threads)               # after the chapter's own choice
            exec(compile(CHAPTER_SETUP.get(slug, ""), f"{slug} matrix setup", "exec"), namespace)
    except Exception:  # noqa: BLE001 - reported
        return {"setup": traceback.format_exc(limit=3)}
    for name, source in cells[1:]:
        try:
            with contextlib.redirect_stdout(io.StringIO()):      # stdout carries the JSON answer
                exec(compile(source, f"{slug} {name}", "exec"), namespace)
            results[name] = "ok"
        except Exception:  # noqa: BLE001 - reported
            results[name] = traceback.format_exc(limit=3)
    return results


def grader_submissions(slug: str, mistakes: bool) -> dict[str, str]:
    """``{name: source}`` of the correct .py submissions of the grader's tests of ``slug``
    (``tests/test_grader_<slug>.py``; the reference alone where there is none), and with
    ``mistakes`` those with planted mistakes too."""
    if not (TESTS / f"test_grader_{slug}.py").exists():
        return {"reference.py": (ROOT / "solutions" / f"{slug}.py").read_text()}
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    module = importlib.import_module(f"test_grader_{slug}")
    if hasattr(module, "TestGrader"):
        grader = module.TestGrader
        sources = {**grader.correct, **(grader.sources if mistakes else {})}
    else:  # a module with CORRECT and BUGGY = {name: (exercise, phrase, source)}
        sources = {**module.CORRECT, **({f"{k}.py": v[2] for k, v in module.BUGGY.items()} if mistakes else {})}
    return {name: source for name, source in sources.items() if isinstance(source, str)}


def run_grader(slug: str, mistakes: bool) -> dict[str, dict]:
    from autograder.inline import _Entry
    from autograder.runner import run_suite

    namespaces = {}
    for name, source in grader_submissions(slug, mistakes).items():
        namespace = {"__name__": name}
        try:
            exec(compile(source, name, "exec"), namespace)
        except Exception:  # noqa: BLE001 - such a submission scores 0, as in the sandbox
            pass
        namespaces[name] = namespace
    with contextlib.redirect_stdout(io.StringIO()):
        results = run_suite(slug, {name: _Entry(ns) for name, ns in namespaces.items()})
    report = {}
    for name, tests in results.items():
        scores: dict[str, list[float]] = {}
        for t in tests:
            total = scores.setdefault(t.exercise, [0.0, 0.0])
            total[0] += t.score
            total[1] += t.max_score
        report[name] = {"scores": scores,
                        "failed": {t.name: [t.exercise, t.output] for t in tests if t.status != "passed"}}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--part", choices=["chapters", "grader", "all"], default="all")
    parser.add_argument("--mistakes", nargs="*", default=[], metavar="SLUG",
                        help="also grade the submissions with planted mistakes of these chapters")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    out = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads}
    if args.part in ("chapters", "all"):
        out["chapters"] = {slug: run_chapter(slug, args.threads) for slug in SLUGS
                           if (ROOT / "chapters" / f"{slug}.md").exists()}
    if args.part in ("grader", "all"):
        out["grader"], out["seconds"] = {}, {}
        for slug in SLUGS:
            torch.set_num_threads(args.threads)
            start = time.perf_counter()
            out["grader"][slug] = run_grader(slug, slug in args.mistakes)
            out["seconds"][slug] = round(time.perf_counter() - start, 1)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
