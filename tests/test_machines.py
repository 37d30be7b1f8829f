"""The course computes the same on every machine: a matrix of CPU configurations.

Float32 results depend on the CPU kernels PyTorch picks (``ATEN_CPU_CAPABILITY``: ``default``,
``avx2``, ``avx512``) and on the number of threads, which change the order of reductions. A
check that passes on one machine and fails on another is a defect, so the numerically
sensitive parts run here under every configuration this CPU supports (``tests/machine_matrix.py``
does the work in a fresh process per configuration):

- the chapter cells tagged ``machine-matrix`` (the comparisons of implementations), with 1 and
  2 torch threads;
- the grader on the correct submissions of its tests, chapters 1 to 6: full marks everywhere
  (the grader runs its suites and the sandboxed student code with one torch thread whatever
  the machine has, so its configurations differ by the kernels alone);
- under the configuration farthest from the native one (``default`` kernels), the planted
  mistakes of the PyTorch chapters too: each is still caught on its exercise.

A failure names the configuration; ``ATEN_CPU_CAPABILITY=... python tests/machine_matrix.py``
reproduces it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TORCH_CHAPTERS = ["ch04_cnn", "ch05_covariate_shift"]


def supported(capability: str) -> bool:
    """Whether this CPU runs PyTorch's kernels of ``capability``. An unsupported request is not
    refused: PyTorch reports it, and some of its kernels then die of an illegal instruction."""
    checks = {"default": lambda: True,
              "avx2": getattr(torch.cpu, "_is_avx2_supported", lambda: False),
              "avx512": getattr(torch.cpu, "_is_avx512_supported", lambda: False)}
    return bool(checks[capability]())


CONFIGS = [(cap, threads) for cap in ("default", "avx2", "avx512") for threads in (1, 2)]


def config_id(config) -> str:
    return f"{config[0]}-{config[1]}thread{'s' if config[1] > 1 else ''}"


@lru_cache(maxsize=None)
def run_matrix(capability: str, threads: int, part: str = "all", mistakes: tuple = ()) -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "machine_matrix.py"), "--threads", str(threads),
                           "--part", part, "--mistakes", *mistakes],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["capability"].lower() == capability, result["capability"]
    return result


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_same_results_on_every_cpu_configuration(config):
    capability, threads = config
    if not supported(capability):
        pytest.skip(f"this CPU has no {capability} kernels")
    result = run_matrix(capability, threads, "all" if threads == 1 else "chapters")
    where = f"ATEN_CPU_CAPABILITY={capability}, {threads} torch thread(s)"
    failed_cells = {f"{slug} {cell}": error for slug, cells in result["chapters"].items()
                    for cell, error in cells.items() if error != "ok"}
    assert not failed_cells, f"{where}: chapter cells failed:\n" + "\n".join(f"{k}: {v}" for k, v in failed_cells.items())
    assert sum(len(cells) for cells in result["chapters"].values()) >= 5, result["chapters"]
    if threads > 1:
        return
    for slug, reports in result["grader"].items():
        for name, report in reports.items():
            assert not report["failed"], f"{where}: correct submission {slug}/{name} lost points: {report['failed']}"
            assert all(score == total > 0 for score, total in report["scores"].values()), (slug, name, report)
    assert set(result["grader"]) >= {"ch02_bn_forward", "ch03_bn_backward", "ch04_cnn", "ch05_covariate_shift",
                                     "ch06_beyond"}


def test_mistakes_are_caught_with_the_default_kernels():
    """The planted mistakes of the PyTorch chapters, under the kernels farthest from a vector
    CPU's native ones: each still costs points on its exercise and is named."""
    sys.path.insert(0, str(ROOT / "tests"))
    import importlib

    result = run_matrix("default", 1, "grader", tuple(TORCH_CHAPTERS))
    for slug in TORCH_CHAPTERS:
        grader = importlib.import_module(f"test_grader_{slug}").TestGrader
        reports = result["grader"][slug]
        for mistake, (submission, exercise, phrase, may_lose) in grader.mistakes.items():
            report = reports[submission]
            score, total = report["scores"][exercise]
            assert score < total, f"{slug}: mistake {mistake} was not caught with the default kernels"
            feedback = "\n".join(text for where, text in report["failed"].values() if where == exercise)
            assert phrase in feedback, (mistake, feedback[:2000])
            for other, (score, total) in report["scores"].items():
                if other != exercise and other not in may_lose:
                    assert score == total, (mistake, other, report["failed"])


def test_sandboxed_student_code_computes_with_the_graders_kernels():
    """ATEN_CPU_CAPABILITY reaches the sandbox worker (through its fork server), so student code
    and the reference run the same kernels; the worker runs one torch thread."""
    probe = ("import torch\n"
             "def probe(x):\n"
             "    return {'capability': torch.backends.cpu.get_cpu_capability(), 'threads': torch.get_num_threads()}\n")
    script = ("import json\nfrom autograder.sandbox import Sandbox\n"
              f"with Sandbox([('probe.py', {probe!r})]) as sandbox:\n"
              "    print(json.dumps(sandbox.request('basic.call', 'probe', 0)))\n")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"capability": "DEFAULT", "threads": 1}
