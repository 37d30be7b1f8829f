"""Generate notebooks from the one source: ``chapters/*.md`` plus ``solutions/*.py``.

A chapter's exercise cell names its reference instead of copying it::

    ### BEGIN SOLUTION
    from solutions.ch02_bn_forward import batchnorm_forward
    ### END SOLUTION

A pipeline of small named steps turns a chapter into one of three variants:

``instructor``
    every exercise expanded to the reference's full definition (signature and
    docstring, body between solution markers); thinking-exercise solutions kept.
    This is also nbgrader's *source* notebook: ``nbgrader generate_assignment``
    replaces each marked body with a stub and drops hidden tests.
``student``
    every exercise reduced to signature, docstring and ``raise NotImplementedError``
    (a docstring's ``Implementation note`` section, how the reference computes its
    result, is the instructor's: it moves into the solution body as comments);
    a removed cell after it imports the reference, so that later cells still run
    when the book executes; hidden tests and ``{solution}`` blocks dropped; the graded
    cells' outputs removed from the page (they report on the reference). No solution code
    is left in the notebook.

Command line::

    python -m autograder.notebooks student OUT_DIR   # a buildable book tree in OUT_DIR
    python -m autograder.notebooks instructor OUT_DIR
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
SOLUTIONS = ROOT / "solutions"

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
VARIANTS = ("student", "instructor")

# Files of the book besides the chapters, copied into a generated tree.
BOOK_FILES = ("_config.yml", "_toc.yml", "intro.md", "references.md", "references.bib")
BOOK_DIRS = ("_static", "_ext", "_templates")

# A docstring section that only the instructor sees (how the reference computes its result).
IMPLEMENTATION_NOTE = "Implementation note"

_IMPORT = re.compile(r"^from\s+solutions\.(\w+)\s+import\s+([\w\s,]+?)\s*$")
_GRADE_ID = re.compile(r"^[a-zA-Z0-9_\-]+$")


class SourceError(ValueError):
    """A chapter or a solution module does not follow the authoring conventions."""


# --------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class Definition:
    """A top-level function or class of a solutions module, split for rendering.

    ``pieces`` alternates between text shown to everyone (signatures, docstrings,
    class-level statements) and bodies that are the solution: a list of
    ``(kind, text)`` with kind ``"shown"`` or ``"body"``; bodies are unindented
    by nothing: they keep their indentation.
    """

    module: str
    name: str
    pieces: tuple[tuple[str, str], ...]

    def render(self, variant: str) -> str:
        out = []
        for kind, text in self.pieces:
            if kind == "shown":
                out.append(text)
                continue
            indent = _indent_of(text)
            if variant == "student":
                out.append(f'{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError("{self.name}")\n')
            else:
                out.append(f"{indent}{BEGIN_SOLUTION}\n{text}{indent}{END_SOLUTION}\n")
        return "".join(out).rstrip("\n")

    @property
    def solution_text(self) -> str:
        """The solution bodies alone (what a student writes)."""
        return "".join(text for kind, text in self.pieces if kind == "body")


def _indent_of(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line[: len(line) - len(line.lstrip())]
    return "    "


def _implementation_note(lines: list[str], node) -> tuple[int, int, list[str]] | None:
    """Where the ``Implementation note`` section of ``node``'s docstring starts and where the
    docstring ends (0-based line indices), and the section as comment lines; None without one.

    The section is the instructor's (how the reference computes its result): the stub's
    docstring ends before it and it moves into the solution body, as comments between the
    solution markers, which nbgrader's release removes with the body.
    """
    doc = node.body[0]
    doc_lines = lines[doc.lineno - 1: doc.end_lineno]
    note = next((i for i, line in enumerate(doc_lines[:-1])
                 if line.strip() == IMPLEMENTATION_NOTE and set(doc_lines[i + 1].strip()) == {"-"}), None)
    if note is None:
        return None
    closing = lines[doc.end_lineno - 1]
    if closing.strip() != '"""':
        raise SourceError(f"{node.name} (line {node.lineno}): put the closing quotes of a docstring with an "
                          f"{IMPLEMENTATION_NOTE!r} section on a line of their own")
    indent = closing[: len(closing) - len(closing.lstrip())]
    start = doc.lineno - 1 + note
    comments = [f"{indent}# {line[len(indent):] if line.startswith(indent) else line.strip()}".rstrip() + "\n"
                for line in lines[start: doc.end_lineno - 1]]
    while comments and comments[-1].strip() == "#":
        comments.pop()
    return start, doc.end_lineno, comments


def _has_docstring(node) -> bool:
    first = node.body[0]
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def _shown_docstring(lines: list[str], start: int, note: tuple[int, int, list[str]]) -> str:
    """Lines ``start`` to the end of a docstring, without its implementation note."""
    note_start, doc_end, _ = note
    return "".join(lines[start:note_start]).rstrip() + "\n" + lines[doc_end - 1]


def _split_function(lines: list[str], node: ast.FunctionDef) -> list[tuple[str, str]]:
    """Signature and docstring shown; the rest of the body is the solution."""
    start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
    if not _has_docstring(node):
        raise SourceError(f"{node.name} (line {node.lineno}) has no docstring: students need one")
    if len(node.body) == 1:
        raise SourceError(f"{node.name} (line {node.lineno}) has a docstring but no body")
    split = node.body[0].end_lineno
    body = "".join(lines[split: node.end_lineno])
    note = _implementation_note(lines, node)
    if note is None:
        return [("shown", "".join(lines[start:split])), ("body", body)]
    return [("shown", _shown_docstring(lines, start, note)), ("body", "".join(note[2]) + body)]


def _split_class(lines: list[str], node: ast.ClassDef) -> list[tuple[str, str]]:
    """Class header, docstring and attributes shown; each method split like a function (the
    class docstring's implementation note goes into the first method's body)."""
    start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
    note = _implementation_note(lines, node) if _has_docstring(node) else None
    pieces: list[tuple[str, str]] = []
    cursor = start
    for item in node.body:
        if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        item_start = (item.decorator_list[0].lineno if item.decorator_list else item.lineno) - 1
        if item_start > cursor:
            if note and cursor == start:
                shown = _shown_docstring(lines, start, note) + "".join(lines[note[1]:item_start])
            else:
                shown = "".join(lines[cursor:item_start])
            pieces.append(("shown", shown))
        method = _split_function(lines, item)
        if note and not any(kind == "body" for kind, _ in pieces):
            body_indent = _indent_of(method[1][1])
            method[1] = ("body", "".join(body_indent + c.lstrip() for c in note[2]) + method[1][1])
        pieces.extend(method)
        cursor = item.end_lineno
    if cursor < node.end_lineno:
        pieces.append(("shown", "".join(lines[cursor: node.end_lineno])))
    if not any(kind == "body" for kind, _ in pieces):
        raise SourceError(f"class {node.name} has no methods to implement")
    return pieces


def load_definitions(module: str, solutions_dir: Path = SOLUTIONS) -> dict[str, Definition]:
    """Every top-level function and class of ``solutions/<module>.py``, by name."""
    path = solutions_dir / f"{module}.py"
    if not path.is_file():
        raise SourceError(f"no reference module {path}")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    definitions = {}
    for node in ast.parse(text, filename=str(path)).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            pieces = _split_function(lines, node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            pieces = _split_class(lines, node)
        else:
            continue
        definitions[node.name] = Definition(module, node.name, tuple(pieces))
    return definitions


# --------------------------------------------------------------------------- cells

def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_exercise(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("solution"))


def exercise_imports(cell) -> list[tuple[str, str]]:
    """The ``(module, name)`` pairs an exercise cell names between its markers."""
    lines = [line.strip() for line in cell.source.strip().splitlines()]
    if len(lines) < 3 or lines[0] != BEGIN_SOLUTION or lines[-1] != END_SOLUTION:
        raise SourceError(
            f"exercise cell {nbgrader_meta(cell).get('grade_id')!r} must be exactly "
            f"'{BEGIN_SOLUTION}', imports from solutions, '{END_SOLUTION}'; got:\n{cell.source}"
        )
    pairs = []
    for line in lines[1:-1]:
        match = _IMPORT.match(line)
        if not match:
            raise SourceError(f"exercise cell line is not 'from solutions.MODULE import NAME': {line!r}")
        pairs += [(match.group(1), name.strip()) for name in match.group(2).split(",")]
    return pairs


def new_code_cell(source: str, tags: list[str]) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = tags
    return cell


def _strip_marked(source: str, begin: str, end: str) -> str:
    kept, inside = [], False
    for line in source.splitlines(keepends=True):
        if line.strip() == begin:
            inside = True
        elif line.strip() == end:
            inside = False
        elif not inside:
            kept.append(line)
    return "".join(kept)


SOLUTION_BLOCK = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{solution\}.*?^(?P=fence)[ \t]*$\n?", re.M | re.S
)


# --------------------------------------------------------------------------- steps
# Each step takes a notebook and returns it changed; the pipeline is their order.

class CheckMetadata:
    """nbgrader cells have valid, unique grade ids; exercise cells follow the convention."""

    def __call__(self, nb, variant):
        seen = set()
        for cell in nb.cells:
            meta = nbgrader_meta(cell)
            if not meta:
                continue
            grade_id = meta.get("grade_id", "")
            if not _GRADE_ID.match(grade_id):
                raise SourceError(f"invalid nbgrader grade_id {grade_id!r}")
            if grade_id in seen:
                raise SourceError(f"duplicate nbgrader grade_id {grade_id!r}")
            seen.add(grade_id)
            for key in ("schema_version", "grade", "solution", "locked"):
                if key not in meta:
                    raise SourceError(f"cell {grade_id!r}: nbgrader metadata lacks {key!r}")
            if meta["grade"] and "points" not in meta:
                raise SourceError(f"graded cell {grade_id!r} has no points")
            if is_exercise(cell):
                exercise_imports(cell)
        return nb


class ExpandExercises:
    """Replace each exercise cell's imports by the references' definitions."""

    def __init__(self, solutions_dir: Path = SOLUTIONS):
        self.solutions_dir = solutions_dir
        self._modules: dict[str, dict[str, Definition]] = {}

    def definition(self, module: str, name: str) -> Definition:
        if module not in self._modules:
            self._modules[module] = load_definitions(module, self.solutions_dir)
        try:
            return self._modules[module][name]
        except KeyError:
            raise SourceError(f"solutions.{module} defines no function or class {name!r}") from None

    def __call__(self, nb, variant):
        cells = []
        for cell in nb.cells:
            if not is_exercise(cell):
                cells.append(cell)
                continue
            pairs = exercise_imports(cell)
            rendered = [self.definition(m, n).render(variant) for m, n in pairs]
            cell.source = "\n\n\n".join(rendered)
            cells.append(cell)
            if variant == "student":
                imports = "\n".join(f"from solutions.{m} import {n}" for m, n in pairs)
                cells.append(new_code_cell(
                    "# The book runs on with the reference; your notebook runs your code.\n" + imports,
                    ["remove-cell"],
                ))
        nb.cells = cells
        return nb


class ClearHiddenTests:
    """Drop ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` (student only)."""

    def __call__(self, nb, variant):
        if variant == "student":
            for cell in nb.cells:
                if cell.cell_type == "code" and BEGIN_HIDDEN in cell.source:
                    cell.source = _strip_marked(cell.source, BEGIN_HIDDEN, END_HIDDEN)
        return nb


class ClearThinkingSolutions:
    """Drop ``{solution}`` directive blocks from markdown (student only)."""

    def __call__(self, nb, variant):
        if variant == "student":
            for cell in nb.cells:
                if cell.cell_type == "markdown":
                    cell.source = SOLUTION_BLOCK.sub("", cell.source)
        return nb


class QuietChecks:
    """In the student website, a graded cell shows its call but not its output (student only):
    the site runs the reference, so the checks would say "passed" under an empty stub, which
    is not what the student's notebook says."""

    def __call__(self, nb, variant):
        if variant == "student":
            for cell in nb.cells:
                meta = nbgrader_meta(cell)
                if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
                    tags = cell.metadata.setdefault("tags", [])
                    if "remove-output" not in tags:
                        tags.append("remove-output")
        return nb


class StableCellIds:
    """Number the cells: the same chapter always gives the same notebook, byte for byte."""

    def __call__(self, nb, variant):
        for index, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{index}"
        return nb


PIPELINE = (CheckMetadata(), ExpandExercises(), ClearHiddenTests(), ClearThinkingSolutions(), QuietChecks(),
            StableCellIds())


def read_chapter(path: Path) -> nbformat.NotebookNode:
    try:
        return jupytext.read(path, fmt="md:myst")
    except Exception as err:  # jupytext raises many kinds
        raise SourceError(f"{path}: cannot be read as a MyST notebook ({err})") from err


def generate(path: Path, variant: str, steps=PIPELINE) -> nbformat.NotebookNode:
    """The ``variant`` notebook of chapter ``path``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    nb = copy.deepcopy(read_chapter(path))
    for step in steps:
        try:
            nb = step(nb, variant)
        except SourceError as err:
            raise SourceError(f"{path.name}: {type(step).__name__}: {err}") from err
    return nb


def write_book_tree(variant: str, out: Path, root: Path = ROOT) -> list[Path]:
    """Write a buildable Jupyter Book tree of ``variant`` into ``out``.

    Chapters become ``out/chapters/<slug>.ipynb``; only changed files are rewritten,
    so the execution cache and Sphinx see unchanged notebooks as unchanged.
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        _copy_if_changed(root / name, out / name)
    for name in BOOK_DIRS:
        if (root / name).is_dir():
            shutil.copytree(root / name, out / name, dirs_exist_ok=True)
    written = []
    for path in sorted((root / "chapters").glob("*.md")):
        nb = generate(path, variant)
        target = out / "chapters" / (path.stem + ".ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        text = nbformat.writes(nb)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        written.append(target)
    stale = {p for p in (out / "chapters").glob("*.ipynb")} - set(written)
    for path in stale:
        path.unlink()
    return written


def _copy_if_changed(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise SourceError(f"the book needs {src}")
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("out", type=Path, help="directory of the generated book tree")
    args = parser.parse_args(argv)
    try:
        written = write_book_tree(args.variant, args.out)
    except SourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.variant}: {len(written)} chapters in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
