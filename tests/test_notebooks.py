"""The notebook generator: one source (chapters + solutions), no duplicated reference code."""

import re
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbgrader.preprocessors import ClearSolutions

from autograder import notebooks as nbgen

ROOT = nbgen.ROOT
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
SLUGS = [p.stem for p in CHAPTERS]


def distinctive_lines(text: str) -> set[str]:
    """Lines of solution code long and specific enough that prose would not contain them."""
    lines = set()
    for line in text.splitlines():
        line = line.strip()
        if len(line) >= 25 and not line.startswith(("#", '"', "'")):
            lines.add(line)
    return lines


def exercise_names(nb) -> list[tuple[str, str]]:
    return [pair for cell in nb.cells if nbgen.is_exercise(cell) for pair in nbgen.exercise_imports(cell)]


def test_every_toc_chapter_exists():
    toc = (ROOT / "_toc.yml").read_text()
    for file in re.findall(r"file:\s*(chapters/\S+)", toc):
        assert (ROOT / f"{file}.md").is_file(), f"_toc.yml names {file} but chapters/ has no such file"


@pytest.mark.parametrize("path", CHAPTERS, ids=SLUGS)
def test_chapter_defines_no_reference_by_hand(path):
    """Exercise code lives in solutions/ only: no chapter cell redefines an exercise name."""
    nb = nbgen.read_chapter(path)
    names = set(nbgen.load_definitions(path.stem))
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for name in names:
            assert not re.search(rf"^\s*(def|class)\s+{name}\b", cell.source, re.M), (
                f"{path.name} defines {name} by hand; name it in an exercise cell instead"
            )


@pytest.mark.parametrize("path", CHAPTERS, ids=SLUGS)
def test_chapter_has_every_exercise_of_its_module(path):
    """Each public name of solutions/<slug>.py is an exercise of chapter <slug>, with a check."""
    nb = nbgen.read_chapter(path)
    pairs = exercise_names(nb)
    own = [n for m, n in pairs if m == path.stem]
    assert sorted(own) == sorted(nbgen.load_definitions(path.stem))
    for module, name in pairs:  # earlier chapters' exercises may be reused (students paste their own)
        assert module <= path.stem, f"{path.name} uses {module}.{name} from a later chapter"
    pairs = [(m, n) for m, n in pairs if m == path.stem]
    grade_ids = {nbgen.nbgrader_meta(c).get("grade_id") for c in nb.cells if nbgen.nbgrader_meta(c).get("grade")}
    for _, name in pairs:
        assert f"check_{name}" in grade_ids, f"exercise {name} has no public check cell check_{name}"


@pytest.mark.parametrize("path", CHAPTERS, ids=SLUGS)
def test_student_variant_has_no_solution_code(path):
    nb = nbgen.generate(path, "student")
    text = "\n".join(cell.source for cell in nb.cells)
    chapter_text = path.read_text()
    for module, name in exercise_names(nbgen.read_chapter(path)):
        for line in distinctive_lines(nbgen.load_definitions(module)[name].solution_text):
            if line not in chapter_text:
                assert line not in text, f"solution line of {name} in the student notebook: {line}"
    assert nbgen.BEGIN_SOLUTION not in text and nbgen.BEGIN_HIDDEN not in text
    assert "{solution}" not in text


@pytest.mark.parametrize("path", CHAPTERS, ids=SLUGS)
def test_instructor_variant_is_the_reference(path):
    """The expanded definitions are the reference's source, and nbgrader can clear them."""
    nb = nbgen.generate(path, "instructor")
    chapter_cells = nbgen.read_chapter(path).cells
    for cell, source_cell in zip([c for c in nb.cells if nbgen.is_exercise(c)],
                                 [c for c in chapter_cells if nbgen.is_exercise(c)]):
        module = nbgen.exercise_imports(source_cell)[0][0]
        definitions = nbgen.load_definitions(module)
        # the reference's source without its docstrings' implementation notes (the instructor
        # version carries them as comments in the body) and without comment lines
        module_source = re.sub(r"\n\s*" + nbgen.IMPLEMENTATION_NOTE + r"\n\s*-+\n.*?(?=\n\s*\"\"\"\n)", "",
                               (ROOT / "solutions" / f"{module}.py").read_text(), flags=re.S)
        module_source = "\n".join(line for line in module_source.splitlines() if not line.strip().startswith("#"))
        unmarked = "\n".join(
            line for line in cell.source.splitlines()
            if line.strip() not in (nbgen.BEGIN_SOLUTION, nbgen.END_SOLUTION) and not line.strip().startswith("#")
        )
        for block in unmarked.split("\n\n\n"):
            assert block.strip() in module_source
        cleared = ClearSolutions().preprocess_cell(cell, {"language": "python"}, 0)[0]
        assert "raise NotImplementedError" in cleared.source
        for name in definitions:
            for line in distinctive_lines(definitions[name].solution_text):
                assert line not in cleared.source


FAKE_MODULE = textwrap.dedent('''
    """A fake solutions module."""
    import numpy as np


    def double(x):
        """Twice ``x``.

        Parameters
        ----------
        x : ndarray
        """
        # the body starts here
        y = np.asarray(x) * 2.0
        return y


    class Counter:
        """Counts calls."""

        start = 0

        def __init__(self):
            """Start at zero."""
            self.count = self.start

        @property
        def twice(self):
            """Twice the count."""
            return 2 * self.count


    def _private():
        return 1
''')


@pytest.fixture
def fake_solutions(tmp_path):
    (tmp_path / "fake_mod.py").write_text(FAKE_MODULE)
    return tmp_path


def test_definitions_split_signature_docstring_and_body(fake_solutions):
    defs = nbgen.load_definitions("fake_mod", fake_solutions)
    assert sorted(defs) == ["Counter", "double"]
    student = defs["double"].render("student")
    assert student.startswith("def double(x):") and '"""Twice ``x``.' in student
    assert "np.asarray" not in student and "raise NotImplementedError" in student
    instructor = defs["double"].render("instructor")
    namespace = {"np": np}
    exec(instructor, namespace)
    np.testing.assert_array_equal(namespace["double"]([1, 2]), [2.0, 4.0])
    assert "    ### BEGIN SOLUTION\n    # the body starts here" in instructor


def test_class_methods_are_split_and_attributes_kept(fake_solutions):
    counter = nbgen.load_definitions("fake_mod", fake_solutions)["Counter"]
    student = counter.render("student")
    assert "start = 0" in student and "@property" in student
    assert student.count("raise NotImplementedError") == 2 and "self.count = " not in student
    namespace = {}
    exec(counter.render("instructor"), namespace)
    assert namespace["Counter"]().twice == 0


NOTE_MODULE = textwrap.dedent('''\
    import numpy as np


    def center(x):
        """Subtract the mean of each column.

        Parameters
        ----------
        x : np.ndarray, shape (N, D)

        Implementation note
        -------------------
        One line::

            return x - x.mean(axis=0)
        """
        return np.asarray(x) - np.asarray(x).mean(axis=0)


    class Scaler:
        """Scale by a constant.

        Implementation note
        -------------------
        multiply in __call__
        """

        factor = 2

        def __call__(self, x):
            """Scaled ``x``."""
            return self.factor * x
''')


def test_implementation_note_is_the_instructors(tmp_path):
    """The docstring section "Implementation note" is left out of the stub and kept, as comments
    inside the solution markers, in the instructor's (nbgrader's source) version, where the
    release removes it with the body; the reference keeps working."""
    (tmp_path / "note_mod.py").write_text(NOTE_MODULE)
    defs = nbgen.load_definitions("note_mod", tmp_path)
    for name in ("center", "Scaler"):
        student = defs[name].render("student")
        assert "Implementation note" not in student and "x.mean(axis=0)" not in student
        assert "multiply" not in student and student.count('"""') % 2 == 0
        instructor = defs[name].render("instructor")
        assert instructor.index(nbgen.BEGIN_SOLUTION) < instructor.index("# Implementation note")
        namespace = {"np": np}
        exec(instructor, namespace)
        exec(student, {"np": np})
    assert "        #     return x - x.mean(axis=0)" not in defs["center"].render("instructor")
    assert "    #     return x - x.mean(axis=0)" in defs["center"].render("instructor")
    np.testing.assert_array_equal(namespace["Scaler"]()(np.ones(2)), [2.0, 2.0])


CODE_STATEMENT = re.compile(r"^\s*[\w\[\], .]+\s*=\s*.*(\.mean\(|\.var\(|\.sum\(|\bnp\.|\btorch\.)")


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "solutions").glob("ch0*.py")))
def test_no_stub_gives_the_solution_away(module):
    """A stub states the contract, not the code: none of its lines is a line of the reference's
    body, and its docstring spells no NumPy/PyTorch computation as a statement."""
    for name, definition in nbgen.load_definitions(module).items():
        stub = definition.render("student")
        body = {re.sub(r"\s+", "", line) for line in definition.solution_text.splitlines()
                if len(line.strip()) >= 12 and not line.strip().startswith("#")}
        leaked = [line.strip() for line in stub.splitlines() if re.sub(r"\s+", "", line) in body]
        assert not leaked, f"{module}.{name}: the stub shows reference lines {leaked}"
        statements = [line.strip() for line in stub.splitlines() if CODE_STATEMENT.match(line)]
        assert not statements, f"{module}.{name}: the stub's docstring spells the code: {statements}"


def test_function_without_docstring_is_refused(tmp_path):
    (tmp_path / "bad.py").write_text("def f(x):\n    return x\n")
    with pytest.raises(nbgen.SourceError, match="f .*no docstring"):
        nbgen.load_definitions("bad", tmp_path)


def chapter_with(tmp_path, cells_md: str) -> Path:
    path = tmp_path / "ch99_test.md"
    header = "---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n\n"
    path.write_text(header + textwrap.dedent(cells_md))
    return path


EXERCISE = """
```{{code-cell}} ipython3
---
nbgrader: {{grade: false, grade_id: {gid}, locked: false, schema_version: 3, solution: true, task: false}}
---
{body}
```
"""


def test_malformed_exercise_cell_is_a_clear_error(tmp_path):
    path = chapter_with(tmp_path, EXERCISE.format(gid="standardize", body="def standardize(X):\n    return X"))
    with pytest.raises(nbgen.SourceError, match="ch99_test.md: CheckMetadata: exercise cell 'standardize' must be"):
        nbgen.generate(path, "student")


def test_unknown_reference_name_is_a_clear_error(tmp_path):
    body = "### BEGIN SOLUTION\nfrom solutions.ch01_normalization import no_such_thing\n### END SOLUTION"
    path = chapter_with(tmp_path, EXERCISE.format(gid="x", body=body))
    with pytest.raises(nbgen.SourceError, match="defines no function or class 'no_such_thing'"):
        nbgen.generate(path, "student")


def test_duplicate_grade_ids_are_refused(tmp_path):
    body = "### BEGIN SOLUTION\nfrom solutions.ch01_normalization import standardize\n### END SOLUTION"
    path = chapter_with(tmp_path, EXERCISE.format(gid="a", body=body) * 2)
    with pytest.raises(nbgen.SourceError, match="duplicate nbgrader grade_id 'a'"):
        nbgen.generate(path, "instructor")


def test_student_variant_drops_hidden_tests_and_thinking_solutions(tmp_path):
    path = chapter_with(tmp_path, """
        ```{code-cell} ipython3
        ---
        nbgrader: {grade: true, grade_id: check, locked: true, points: 1, schema_version: 3, solution: false, task: false}
        ---
        assert 1 == 1
        ### BEGIN HIDDEN TESTS
        assert 2 == 2
        ### END HIDDEN TESTS
        ```

        ````{exercise}
        :label: ex-a
        Prove it.
        ````

        ````{solution} ex-a
        :class: dropdown
        THE ANSWER
        ````

        After.
        """)
    student = nbformat.writes(nbgen.generate(path, "student"))
    assert "assert 1 == 1" in student and "assert 2 == 2" not in student
    assert "Prove it." in student and "THE ANSWER" not in student and "After." in student
    instructor = nbformat.writes(nbgen.generate(path, "instructor"))
    assert "assert 2 == 2" in instructor and "THE ANSWER" in instructor


def test_book_tree_rewrites_only_changed_notebooks(tmp_path):
    out = tmp_path / "book"
    written = nbgen.write_book_tree("student", out)
    assert [p.stem for p in written] == SLUGS
    mtimes = {p: p.stat().st_mtime_ns for p in written}
    nbgen.write_book_tree("student", out)
    assert {p: p.stat().st_mtime_ns for p in written} == mtimes
    for name in nbgen.BOOK_FILES:
        assert (out / name).is_file()


def test_cli_reports_source_errors_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nbgen, "BOOK_FILES", ("no-such-file.yml",))
    assert nbgen.main(["student", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith("error: the book needs")


CHECK_CELL = (
    'from autograder.inline import check\n'
    'check("{slug}", "{name}")\n'
    '### BEGIN HIDDEN TESTS\n'
    'from autograder.inline import grade\n'
    'grade("{slug}", "{name}")\n'
    '### END HIDDEN TESTS'
)


@pytest.mark.parametrize("path", CHAPTERS, ids=SLUGS)
def test_check_cells_run_the_suite_with_its_points(path):
    """Graded cells call the grader's suite, and promise nbgrader the suite's points."""
    from autograder.runner import suite_points

    points = suite_points(path.stem)
    nb = nbgen.read_chapter(path)
    graded = [c for c in nb.cells if nbgen.nbgrader_meta(c).get("grade")]
    assert graded, f"{path.name} has no graded cells"
    for cell in graded:
        meta = nbgen.nbgrader_meta(cell)
        name = meta["grade_id"].removeprefix("check_")
        assert cell.source.strip() == CHECK_CELL.format(slug=path.stem, name=name), (
            f"{path.name}: graded cell {meta['grade_id']} must be exactly the check/grade call (CONTRIBUTING.md)")
        assert meta["points"] == points[name], (
            f"{path.name}: {meta['grade_id']} promises {meta['points']} points, the suite counts {points[name]}")
