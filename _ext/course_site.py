"""Sphinx settings of the course website that its configuration file cannot express.

Jupyter Book always loads sphinx-thebe, which puts an inline script (declaring
``THEBE_JS_URL``, an address on a CDN) into every page, twice with Sphinx 7, so that every
page logs "Identifier 'THEBE_JS_URL' has already been declared". The course has no live
code (``launch_buttons.thebe: false``, and the site works offline), so its assets go.

The text cites author-year ("Ioffe and Szegedy, 2015"), but sphinxcontrib-bibtex's default
bibliography style labels its entries alpha-style ("[IS15]"), so a reader cannot find a
citation in the list. The style ``course`` sorts the list by author, year and title and labels
each entry as the text cites it.
"""

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _last_name(person) -> str:
    return Text.from_latex(" ".join(person.last_names)).render_as("text")


def author_year(entry) -> str:
    """The label sphinxcontrib-bibtex's ``author_year`` citations print for ``entry``."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if len(names) == 0:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    """Labels as the text cites; equal labels get a, b, ... after the year."""

    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        for label in set(labels):
            same = [i for i, other in enumerate(labels) if other == label]
            if len(same) > 1:
                for letter, i in zip("abcdefghijklmnopqrstuvwxyz", same):
                    labels[i] = label + letter
        return iter(labels)


class CourseStyle(PlainStyle):
    """pybtex's ``plain`` entries, sorted by author, year and title, with author-year labels."""

    default_label_style = "course_author_year"


pybtex.plugin.register_plugin("pybtex.style.labels", "course_author_year", AuthorYearLabels)
pybtex.plugin.register_plugin("pybtex.style.formatting", "course", CourseStyle)


def _is_thebe(asset) -> bool:
    filename = getattr(asset, "filename", None) or (asset[0] if isinstance(asset, tuple) else None)
    attributes = getattr(asset, "attributes", None) or (asset[1] if isinstance(asset, tuple) else {})
    return str(filename).endswith("sphinx-thebe.js") or "THEBE_JS_URL" in str(attributes.get("body", ""))


def drop_thebe(app, env, docnames):
    """Remove sphinx-thebe's scripts (added just before, on the same event)."""
    app.registry.js_files[:] = [a for a in app.registry.js_files if not _is_thebe(a)]
    builder_files = getattr(app.builder, "_js_files", None)
    if builder_files is not None:
        builder_files[:] = [a for a in builder_files if not _is_thebe(a)]


def setup(app):
    app.connect("env-before-read-docs", drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
