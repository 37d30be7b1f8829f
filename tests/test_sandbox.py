"""Hostile and broken submissions: each costs only the affected tests, with a clear message.

Every hostile submission below is the chapter 2 reference with one exercise (or the
top level) replaced by an attack. The attacked exercise must lose its points with a
message that says what happened; the other exercises must keep full marks; a correct
submission graded in the same session must be unaffected; nothing may outlive grading.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from autograder import protocol
from autograder.runner import grade_many
from autograder.sandbox import Limits, Sandbox, SubmissionError, allowed_paths

ROOT = Path(__file__).resolve().parents[1]
SLUG = "ch02_bn_forward"
REFERENCE = (ROOT / "solutions" / f"{SLUG}.py").read_text()
EXERCISES = ("batchnorm_forward", "update_running_stats", "batchnorm_inference", "spatial_batchnorm_forward")
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="privilege separation needs root")


def replacing(name: str, body: str) -> str:
    """The reference with exercise ``name`` redefined by ``body`` (appended: the last def wins)."""
    return REFERENCE + f"\n\ndef {name}(*args, **kwargs):\n" + "".join(f"    {line}\n" for line in body.splitlines())


HOSTILE = {
    # name: (source, attacked exercise or None, phrase expected in its feedback)
    "loop_swallowing": (replacing("batchnorm_inference", "while True:\n    try:\n        pass\n    except BaseException:\n        pass"),
                        "batchnorm_inference", "infinite loop"),
    "sys_exit_in_call": (replacing("update_running_stats", "import sys\nsys.exit(0)"), "update_running_stats", "sys.exit"),
    "os_exit_in_call": (replacing("spatial_batchnorm_forward", "import os\nos._exit(3)"), "spatial_batchnorm_forward",
                        "process ended"),
    "kills_itself": (replacing("batchnorm_inference", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
                                                      "os.kill(os.getppid(), signal.SIGKILL)\nraise SystemExit"),
                     "batchnorm_inference", ""),
    "kills_parent_and_all": (replacing("update_running_stats", "import os, signal\nfor pid in (os.getppid(), -1):\n"
                                                                "    try:\n        os.kill(pid, signal.SIGKILL)\n"
                                                                "    except OSError:\n        pass\nreturn None"),
                             "update_running_stats", ""),
    "fork_bomb": (replacing("batchnorm_inference", "import os\nwhile True:\n    try:\n        os.fork()\n"
                                                   "    except OSError:\n        pass"), "batchnorm_inference", "infinite loop"),
    "memory_bomb": (replacing("spatial_batchnorm_forward", "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 28))"),
                    "spatial_batchnorm_forward", "MemoryError|no answer within"),
    "forged_array": (REFERENCE + "\n\nimport numpy as np\nclass Always(np.ndarray):\n    def __eq__(self, other):\n"
                     "        return True\n    def __array_eq__(self, other):\n        return True\n"
                     "def batchnorm_inference(x, *args, **kwargs):\n    return np.zeros_like(x).view(Always)\n",
                     "batchnorm_inference", "is wrong"),
    "prints_passed": (REFERENCE + "\n\nimport sys\ndef batchnorm_inference(*args, **kwargs):\n"
                      "    print('PASSED 100/100 all tests passed')\n    sys.stdout.flush()\n"
                      "    import os\n    os.write(1, b'{\"ok\": true, \"value\": 1.0}')\n    return 'passed'\n",
                      "batchnorm_inference", "expected an array"),
    "wrong_types": (replacing("update_running_stats", "return 'mean', 'var'"), "update_running_stats", "expected an array"),
    "wrong_shape": (replacing("batchnorm_inference", "import numpy as np\nreturn np.zeros((2, 2))"), "batchnorm_inference",
                    "has shape"),
}

TOP_LEVEL = {
    # attacks at import: the rest of the file must still be graded where it ran
    "monkeypatch": (REFERENCE + "\n\nimport numpy as np\nnp.allclose = lambda *a, **k: True\n"
                    "np.testing.assert_allclose = lambda *a, **k: None\nnp.array_equal = lambda *a, **k: True\n", None),
    "reads_reference": ("try:\n    SOURCE = open(%r).read()\nexcept OSError as err:\n    SOURCE = str(err)\n"
                        "try:\n    import solutions.ch02_bn_forward as s\n    batchnorm_forward = s.batchnorm_forward\n"
                        "except ImportError:\n    pass\n" % str(ROOT / "solutions" / f"{SLUG}.py"), "all"),
    "writes_files": ("import os\nfor path in (%r, %r, '/tmp/grades.csv'):\n    try:\n        open(path, 'a').write('x')\n"
                     "    except OSError:\n        pass\n" % (str(ROOT / "solutions" / f"{SLUG}.py"),
                                                            str(ROOT / "autograder" / "runner.py")) + REFERENCE, None),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for name, (source, *_rest) in {**HOSTILE, **TOP_LEVEL}.items():
        paths[name] = folder / f"{name}.py"
        paths[name].write_text(source)
    paths["correct"] = folder / "correct.py"
    paths["correct"].write_text(REFERENCE)
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "solutions").glob("*.py")}
    start = time.monotonic()
    reports = grade_many(SLUG, paths, limits=Limits(timeout_s=3, load_timeout_s=10))
    elapsed = time.monotonic() - start
    after = {p: p.stat().st_mtime_ns for p in (ROOT / "solutions").glob("*.py")}
    return reports, elapsed, before == after


def exercise_scores(report):
    return {e: earned / possible for e, (earned, possible) in report.by_exercise().items()}


def test_correct_submission_is_unaffected(graded):
    reports, _, _ = graded
    assert reports["correct"].score == reports["correct"].max_score > 0


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_attack_costs_only_the_attacked_exercise(graded, name):
    reports, _, _ = graded
    _, attacked, phrase = HOSTILE[name]
    report = reports[name]
    scores = exercise_scores(report)
    assert scores[attacked] < 0.5, f"{name}: the attacked exercise kept {scores[attacked]:.0%} of its points"
    for exercise in EXERCISES:
        if exercise != attacked:
            assert scores[exercise] == 1.0, f"{name}: {exercise} lost points ({report.tests})"
    failed = [t for t in report.tests if t.exercise == attacked and t.status == "failed"]
    assert failed and all(t.output for t in failed)
    assert any(re.search(phrase, t.output) for t in failed), f"{name}: no failure mentions {phrase!r}: {failed[0].output}"


def test_monkeypatching_numpy_changes_nothing(graded):
    reports, _, _ = graded
    assert reports["monkeypatch"].score == reports["monkeypatch"].max_score


def test_reference_cannot_be_read_or_imported(graded):
    reports, _, _ = graded
    assert reports["reads_reference"].score == 0
    assert any("batchnorm_forward" in t.output and "does not define" in t.output for t in reports["reads_reference"].tests)


def test_grader_files_cannot_be_written(graded):
    reports, _, unchanged = graded
    assert unchanged, "a submission modified the reference solutions"
    assert reports["writes_files"].score == reports["writes_files"].max_score
    assert not Path("/tmp/grades.csv").exists() or "x" not in Path("/tmp/grades.csv").read_text()[-1:]


def test_hostile_class_is_graded_in_bounded_time(graded):
    _, elapsed, _ = graded
    assert elapsed < 240, f"grading the hostile class took {elapsed:.0f} s"


# --------------------------------------------------------------------------- files


def grade_file(tmp_path, name, content, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(content)
    else:
        path.write_text(content)
    return grade_many(SLUG, {"s": path})["s"]


def test_syntax_error_is_reported_with_its_line(tmp_path):
    report = grade_file(tmp_path, "syntax.py", REFERENCE + "\ndef broken(:\n    pass\n")
    assert report.score == 0
    assert any("SyntaxError" in m and "line" in m for m in report.messages)


def test_notebook_cells_run_independently(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(REFERENCE), nbformat.v4.new_code_cell("def broken(:\n    pass"),
                nbformat.v4.new_code_cell("%timeit 1 + 1\n!ls /\nx = 1"), nbformat.v4.new_code_cell("while True:\n    pass")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    report = grade_many(SLUG, {"s": path}, limits=Limits(timeout_s=3, load_timeout_s=5))["s"]
    assert report.score == report.max_score
    assert any("cell 2" in m and "SyntaxError" in m for m in report.messages)
    assert any("cell 4" in m and "skipped" in m for m in report.messages)


def test_non_utf8_source(tmp_path):
    report = grade_file(tmp_path, "latin.py", "x = 'caf\xe9'\n".encode("latin-1"), mode="wb")
    assert report.score == 0 and any("not UTF-8" in m and "line 1" in m for m in report.messages)


@pytest.mark.parametrize("content, phrase", [
    ("", "is empty"),
    ('{"cells": [', "not a valid notebook"),
    ('{"nbformat": 4}', "not a Jupyter notebook"),
])
def test_corrupt_or_empty_notebook(tmp_path, content, phrase):
    report = grade_file(tmp_path, "bad.ipynb", content)
    assert report.score == 0 and any(phrase in m for m in report.messages)
    assert {t.exercise for t in report.tests} == set(EXERCISES)


def test_missing_exercise_scores_zero_only_there(tmp_path):
    source = REFERENCE.replace("def batchnorm_inference(", "def batchnorm_inference_renamed(")
    report = grade_file(tmp_path, "missing.py", source)
    scores = exercise_scores(report)
    assert scores["batchnorm_inference"] == 0 and all(scores[e] == 1 for e in EXERCISES if e != "batchnorm_inference")
    assert any("does not define 'batchnorm_inference'" in t.output for t in report.tests)


# --------------------------------------------------------------------------- sandbox


PROBE = """
import os, socket

def _readable(path):
    try:
        with open(path, "rb") as f:
            return f.read(1 << 16)
    except OSError:
        return None

def probe(x):
    found, walked = [], 0
    for top, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev")]
        for name in files:
            walked += 1
            if name.endswith((".py", ".ipynb", ".md", ".csv", ".json")):
                text = _readable(os.path.join(top, name)) or b""
                if b"def batchnorm_forward" in text or b"student_secret" in text:
                    found.append(os.path.join(top, name))
    try:
        socket.create_connection(("127.0.0.1", 22), timeout=1)
        net = "connected"
    except OSError as err:
        net = type(err).__name__
    listing = {}
    for path in ("/", "/home", "/root", "/srv", "/etc", "/work", %(root)r):
        try:
            listing[path] = sorted(os.listdir(path))
        except OSError as err:
            listing[path] = type(err).__name__
    return {"found": found, "walked": walked, "net": net, "uid": os.getuid(), "cwd": os.getcwd(),
            "passwd": _readable("/etc/passwd") is not None, "listing": repr(listing),
            "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "root_of_1": sorted(os.listdir("/proc/1/root"))}
"""


@pytest.fixture(scope="module")
def planted_copies(tmp_path_factory):
    """Copies of the reference where an instructor's machine has them: another clone of the
    course (in /tmp and beside the project), an nbgrader course/source with the solutions,
    and another student's submission in the grader's output."""
    folders = [tmp_path_factory.mktemp("clone"), Path(tempfile.mkdtemp(prefix=".bngrade-clone-", dir=ROOT.parent))]
    for folder in folders:
        (folder / "solutions").mkdir()
        (folder / "solutions" / f"{SLUG}.py").write_text(REFERENCE)
        source = folder / "course" / "source" / SLUG
        source.mkdir(parents=True)
        (source / f"{SLUG}.py").write_text("### BEGIN SOLUTION\n" + REFERENCE)
        (folder / "student_secret.csv").write_text("student_secret,73\n")
    yield folders
    shutil.rmtree(folders[1], ignore_errors=True)


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_worker_sees_only_the_interpreter_and_its_libraries(planted_copies, monkeypatch, zygote):
    """The worker's file system is an allow-list: walking it from / finds no copy of the
    reference anywhere, no /etc/passwd, no /home, no other process; and it has no network."""
    monkeypatch.setenv("BNGRADE_ZYGOTE", zygote)
    with Sandbox([("probe.py", PROBE % {"root": str(ROOT)})], limits=Limits(timeout_s=120)) as sandbox:
        result = sandbox.request("basic.call", "probe", 0)
        assert isinstance(sandbox._process, subprocess.Popen) == (zygote == "0")
    assert result["found"] == [], result["found"]
    assert result["walked"] > 1000  # the walk did run (the venv's files are there)
    assert result["net"] != "connected"
    assert not result["passwd"]
    listing = eval(result["listing"])  # noqa: S307 - a repr of str/list values from our own probe
    assert listing["/home"] == "FileNotFoundError" and listing["/srv"] == "FileNotFoundError"
    assert listing["/etc"] in ("PermissionError", ["ld.so.cache"])
    assert set(listing["/"]) <= {"dev", "etc", "lib", "lib32", "lib64", "proc", "sandbox", "tmp", "usr", "bin", "sbin",
                                 *(Path(p).parts[1] for p in allowed_paths())}
    assert listing[str(ROOT)] in ("PermissionError", [".venv"], [])
    assert result["processes"] == [1] and result["root_of_1"] == sorted(listing["/"])
    if os.geteuid() == 0:
        assert result["uid"] != 0
    assert not result["cwd"].startswith(str(ROOT))


FINDS_THE_REFERENCE = """
import importlib.util, os, sys

def _search():
    places = ["/", "/work", "/home", "/srv", "/tmp", "/var/tmp", "/root", os.path.expanduser("~"),
              os.environ.get("VIRTUAL_ENV", "/"), *%(planted)r,
              *{os.path.dirname(getattr(m, "__file__", None) or "/") for m in list(sys.modules.values())}]
    for place in places:
        for top, dirs, files in os.walk(place):
            dirs[:] = [d for d in dirs if not os.path.join(top, d).startswith(("/proc", "/sys", "/dev"))]
            if "%(slug)s.py" in files:
                spec = importlib.util.spec_from_file_location("ref", os.path.join(top, "%(slug)s.py"))
                module = importlib.util.module_from_spec(spec)
                try:
                    spec.loader.exec_module(module)
                    return module
                except Exception:
                    continue
    return None

REF = _search()

def _delegate(name):
    def call(*args, **kwargs):
        if REF is None:
            raise RuntimeError("no reference found")
        return getattr(REF, name)(*args, **kwargs)
    return call

batchnorm_inference = _delegate("batchnorm_inference")
spatial_batchnorm_forward = _delegate("spatial_batchnorm_forward")
"""


def test_submission_that_delegates_to_a_copy_of_the_reference_earns_only_its_own_points(planted_copies, tmp_path):
    """Its own (correct) batchnorm_forward and update_running_stats earn their points; the two
    exercises it delegates to whatever copy of the reference it can find earn nothing."""
    path = tmp_path / "delegates.py"
    own = REFERENCE.split("\ndef batchnorm_inference(")[0]
    path.write_text(own + FINDS_THE_REFERENCE % {"planted": [str(p) for p in planted_copies], "slug": SLUG})
    report = grade_many(SLUG, {"delegates": path}, limits=Limits(timeout_s=10, load_timeout_s=120))["delegates"]
    scores = exercise_scores(report)
    assert scores["batchnorm_forward"] == scores["update_running_stats"] == 1, scores
    assert scores["batchnorm_inference"] == scores["spatial_batchnorm_forward"] == 0, scores
    assert any("no reference found" in t.output for t in report.tests)


def test_grading_refuses_to_run_unisolated_where_the_sandbox_is_missing(tmp_path, monkeypatch):
    """No bwrap: one line that says why and what to do, exit 2; --no-sandbox grades anyway."""
    path = tmp_path / "student.py"
    path.write_text(REFERENCE)
    env = dict(os.environ, PATH=str(tmp_path / "nothing"))  # bwrap cannot be found
    command = [sys.executable, "-m", "autograder", "grade", "--assignment", SLUG, str(path), "--format", "json"]
    refused = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "bubblewrap" in refused.stderr and "--no-sandbox" in refused.stderr
    graded = subprocess.run(command + ["--no-sandbox"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert graded.returncode == 0, graded.stderr
    data = json.loads(graded.stdout)
    assert data["score"] == data["max_score"]
    checked = subprocess.run([sys.executable, "-m", "autograder", "check", str(path), "--assignment", SLUG],
                             capture_output=True, text=True, cwd=ROOT, env=env)
    assert checked.returncode == 0 and "without the sandbox" in checked.stderr


@ROOT_ONLY
def test_no_process_outlives_the_sandbox():
    source = "import os, time\ndef spawn(x):\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(600)\n    return x\n"
    with Sandbox([("spawn.py", source)]) as sandbox:
        sandbox.request("basic.call", "spawn", 1)
        uid = sandbox.uid
    time.sleep(0.3)
    left = subprocess.run(["ps", "-o", "pid=", "-u", str(uid)], capture_output=True, text=True).stdout.split()
    assert left == []


def test_worker_restarts_after_a_crash():
    source = "import os\ndef crash(x):\n    os._exit(1)\ndef ok(x):\n    return x + 1\n"
    with Sandbox([("crash.py", source)]) as sandbox:
        with pytest.raises(SubmissionError) as err:
            sandbox.request("basic.call", "crash", 1)
        assert err.value.kind == "crash"
        assert sandbox.request("basic.call", "ok", 1) == 2


def test_protocol_refuses_objects_and_oversized_messages():
    import io

    with pytest.raises(protocol.ProtocolError):
        protocol.encode(object())
    with pytest.raises(protocol.ProtocolError):
        protocol.encode(np.array([object()], dtype=object))
    header = json.dumps({"value": {"__array__": 0}, "arrays": [{"dtype": "|O", "shape": [1]}]}).encode()
    with pytest.raises(protocol.ProtocolError):
        protocol.read_message(io.BytesIO(len(header).to_bytes(8, "big") + header + b"\0" * 8))
    header = json.dumps({"value": None, "arrays": [{"dtype": "<f8", "shape": [1 << 40]}]}).encode()
    with pytest.raises(protocol.ProtocolError):
        protocol.read_message(io.BytesIO(len(header).to_bytes(8, "big") + header))
    value = {"a": (np.arange(3.0), 1, "s", None, float("nan")), "b": [np.ones((2, 2), np.float32)]}
    decoded = protocol.read_message(io.BytesIO(protocol.encode(value)))
    np.testing.assert_array_equal(decoded["a"][0], np.arange(3.0))
    assert decoded["a"][1:4] == (1, "s", None) and np.isnan(decoded["a"][4])


def test_cli_grade_json_contract(tmp_path):
    path = tmp_path / "student.py"
    path.write_text(REFERENCE.replace("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps"))
    result = subprocess.run([sys.executable, "-m", "autograder", "grade", "--assignment", SLUG, str(path),
                             "--format", "json", "--timeout", "5"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"assignment", "score", "max_score", "execution_time", "tests"} <= set(data)
    assert 0 < data["score"] < data["max_score"]
    for test in data["tests"]:
        assert {"name", "exercise", "score", "max_score", "status", "output"} <= set(test)
        assert test["status"] in ("passed", "failed")
    assert any("sqrt(var + eps)" in t["output"] for t in data["tests"] if t["status"] == "failed")


@pytest.mark.parametrize("args, phrase", [
    (["grade", "--assignment", "no_such", "x.py"], "unknown assignment 'no_such'; known: ch01_normalization,"),
    (["grade-all", "--assignment", SLUG, "/nonexistent", "--out", "/tmp/x"], "is not a directory"),
])
def test_cli_fails_only_when_the_grader_cannot_run(args, phrase):
    result = subprocess.run([sys.executable, "-m", "autograder", *args], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and phrase in result.stderr


def test_every_submission_gets_the_same_cases(tmp_path):
    """Seeds do not depend on a submission's position in the class."""
    source = REFERENCE + "\nimport numpy as _np\n_seen = []\ndef batchnorm_inference(x, *a, **k):\n    raise ValueError(repr(_np.asarray(x).sum()))\n"
    paths = {name: tmp_path / f"{name}.py" for name in ("a", "b", "c")}
    for path in paths.values():
        path.write_text(source)
    reports = grade_many(SLUG, paths)
    outputs = [[t.output.splitlines()[-1] for t in reports[name].tests if t.exercise == "batchnorm_inference"]
               for name in paths]
    assert outputs[0] == outputs[1] == outputs[2]


def test_scalars_stay_scalars():
    import io

    decoded = protocol.read_message(io.BytesIO(protocol.encode(np.float64(2.5))))
    assert np.shape(decoded) == () and float(decoded) == 2.5


def test_cli_check_prints_the_students_table(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(REFERENCE.replace("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps"))]
    path = tmp_path / "my_ch02_bn_forward.ipynb"
    nbformat.write(nb, path)
    result = subprocess.run([sys.executable, "-m", "autograder", "check", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1, result.stderr  # a public check failed
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["exercise", "status", "hint"]
    rows = {line.split()[0]: line for line in lines[2:] if line.strip() and not line.startswith(" ")}
    assert "FAILED" in rows["batchnorm_forward"] and "eps" in rows["batchnorm_forward"]
    assert rows["update_running_stats"].split()[1] == "ok"


def test_cli_check_exits_zero_when_every_public_check_passes(tmp_path):
    path = tmp_path / "mine.py"  # nothing in the name: the content says which chapter it is
    path.write_text(REFERENCE)
    result = subprocess.run([sys.executable, "-m", "autograder", "check", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout


def _other_chapter_notebook(path: Path) -> Path:
    """A released-style chapter 3 notebook: its graded cell names its assignment."""
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("def batchnorm_backward(dout, cache):\n    raise NotImplementedError")
    code.metadata["nbgrader"] = {"grade": False, "grade_id": "batchnorm_backward", "solution": True, "locked": False}
    test = nbformat.v4.new_code_cell('from autograder.inline import check\ncheck("ch03_bn_backward", "batchnorm_backward")')
    test.metadata["nbgrader"] = {"grade": True, "grade_id": "check_batchnorm_backward", "points": 10,
                                 "solution": False, "locked": True}
    nb.cells = [code, test]
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("command", ["grade", "check"])
@pytest.mark.parametrize("make, phrase", [
    (lambda tmp: tmp / "missing.ipynb", "no such file"),
    (lambda tmp: tmp, "is a directory"),
    (lambda tmp: (tmp / "notes.txt", (tmp / "notes.txt").write_text("my answers"))[0], "not a submission"),
    (lambda tmp: _other_chapter_notebook(tmp / "ch02_bn_forward.ipynb"), "ch03_bn_backward, not ch02_bn_forward"),
], ids=["missing", "directory", "txt", "other-chapter"])
def test_cli_usage_errors_are_one_line_and_exit_2(tmp_path, command, make, phrase):
    path = make(tmp_path)
    args = ["grade", "--assignment", SLUG, str(path)] if command == "grade" else ["check", str(path), "--assignment", SLUG]
    result = subprocess.run([sys.executable, "-m", "autograder", *args], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert phrase in result.stderr


def test_check_recognises_the_chapter_from_the_notebook(tmp_path):
    """Without --assignment, a notebook of chapter 3 saved under any name is checked as chapter 3."""
    path = _other_chapter_notebook(tmp_path / "homework.ipynb")
    result = subprocess.run([sys.executable, "-m", "autograder", "check", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert "batchnorm_backward" in result.stdout and "batchnorm_forward " not in result.stdout


def test_grade_all_counts_the_mistakes_of_a_class(tmp_path):
    """mistakes.csv: one row per failed test with its stable tag; a correct student has none."""
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "ada.py").write_text(REFERENCE)
    (folder / "bob.py").write_text(REFERENCE.replace("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps"))
    result = subprocess.run([sys.executable, "-m", "autograder", "grade-all", "--assignment", SLUG, str(folder),
                             "--out", str(tmp_path / "out"), "--jobs", "1"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "mistakes.csv")))
    assert rows and {r["student"] for r in rows} == {"bob"}
    assert {r["mistake"] for r in rows if r["exercise"] == "batchnorm_forward"} == {"eps_outside"}


def test_a_class_member_who_submitted_another_chapter_is_told_so(tmp_path):
    """grade-all goes on with the class; that student's report says which notebook it was."""
    path = _other_chapter_notebook(tmp_path / "ch02_bn_forward.ipynb")
    report = grade_many(SLUG, {"carol": path})["carol"]
    assert report.score == 0
    assert any("holds the exercises of ch03_bn_backward, not ch02_bn_forward" in m for m in report.messages)
    assert all("wrong notebook" in t.output for t in report.tests)


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_packages_of_the_user_site_are_seen_by_the_worker(tmp_path, monkeypatch, zygote):
    """A student who installed the kit with ``pip install --user``: the user's site-packages is
    bound read-only into the sandbox and put on the isolated worker's path."""
    from autograder import sandbox as sandbox_module

    user_site = tmp_path / "user-site"
    user_site.mkdir()
    (user_site / "usersite_probe.py").write_text("VALUE = 42\n")
    monkeypatch.setenv("BNGRADE_ZYGOTE", zygote)
    monkeypatch.setattr(sandbox_module.site, "ENABLE_USER_SITE", True)
    monkeypatch.setattr(sandbox_module.site, "getusersitepackages", lambda: str(user_site))
    assert str(user_site) in allowed_paths()
    sandbox_module._close_zygotes()  # a zygote started before the user site existed has no bind of it
    try:
        code = "import usersite_probe\n\ndef probe(x):\n    return usersite_probe.VALUE + x\n"
        with Sandbox([("probe.py", code)], limits=Limits(timeout_s=60)) as sandbox:
            assert sandbox.request("basic.call", "probe", 1) == 43
    finally:
        sandbox_module._close_zygotes()


COURSE_LIBRARY = """
import os
import bnlab
from bnlab.experiments import load_result
from bnlab.train import load_data

def library():
    return sorted(os.listdir(os.path.dirname(bnlab.__file__)))
"""


def test_the_worker_imports_the_course_library_as_the_students_kernel_does():
    """A released notebook's chapter cells import bnlab (students have it from the kit): the worker
    finds it, its modules only (no recorded results, nothing of the solutions)."""
    with Sandbox([("course.py", COURSE_LIBRARY)], limits=Limits(timeout_s=60, load_timeout_s=120)) as sandbox:
        assert sandbox.loaded().get("errors", {}) == {}
        files = sandbox.request("basic.call", "library")
    assert files == sorted(p.name for p in (ROOT / "bnlab").glob("*.py")), files
