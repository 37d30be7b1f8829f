"""Sphinx settings of the course website that its configuration file cannot express.

Jupyter Book always loads sphinx-thebe, which puts an inline script (declaring
``THEBE_JS_URL``, an address on a CDN) into every page, twice with Sphinx 7, so that every
page logs "Identifier 'THEBE_JS_URL' has already been declared". The course has no live
code (``launch_buttons.thebe: false``, and the site works offline), so its assets go.
"""


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
