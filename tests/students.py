"""Students' notebooks for the tests: a released notebook filled in with the reference."""

import copy

from autograder import notebooks as nbgen


def fill(release_nb, slug, replacements=None, drop=()):
    """A student's notebook of assignment ``slug``: the stubs replaced by the reference, with
    optional bugs (``{old: new}`` text replacements) and exercises left undone (``drop``)."""
    nb = copy.deepcopy(release_nb)
    definitions = nbgen.load_definitions(slug)
    for cell in nb.cells:
        meta = nbgen.nbgrader_meta(cell)
        if meta.get("solution") and meta.get("grade_id") in definitions and meta["grade_id"] not in drop:
            source = definitions[meta["grade_id"]].render("instructor")
            for old, new in (replacements or {}).items():
                if old in source:
                    source = source.replace(old, new)
            cell.source = source
    return nb


def complete(release_nb, source_nb):
    """A student's notebook in which every code exercise is done as in the nbgrader source
    ``source_nb`` (the reference, between its solution markers); answer cells stay empty."""
    nb = copy.deepcopy(release_nb)
    reference = {nbgen.nbgrader_meta(c)["grade_id"]: c.source for c in source_nb.cells
                 if c.cell_type == "code" and nbgen.nbgrader_meta(c).get("solution")}
    for cell in nb.cells:
        meta = nbgen.nbgrader_meta(cell)
        if cell.cell_type == "code" and meta.get("solution"):
            cell.source = reference[meta["grade_id"]]
    return nb
