"""Sphinx configuration: builds offline (no intersphinx) with warnings as errors."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath("../src"))

from digital_experiments import __version__

project = "digital-experiments"
author = "digital-experiments developers"
copyright = "2026, digital-experiments developers"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
# types are spelled out in the numpy docstrings; signatures stay readable
autodoc_typehints = "none"
autodoc_default_options = {"members": True}
# names in signatures that nitpicky mode cannot resolve without intersphinx
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(pandas|pd|anyio|filelock|concurrent|os|pathlib|datetime|typing|collections)\..*"),
    (r"py:.*", r"(P|R|R_co|B|Status|Where|Any|Path|TextIO|Token|ParamSpec|TypeVar)"),
    (r"py:.*", r"(P\.args|P\.kwargs|optional|callable|mapping|collection|sequence|iterable)"),
    (r"py:.*", r"(distribution|function|list of .*|str or .*|.* or .*|Experiment|Observation)"),
    (r"py:.*", r"(digital_experiments\..*\.(P|R|R_co|B|Status|Where))"),
    (r"py:class", r"(NamedTuple|Generic|Protocol|ABC|Exception|BaseException)"),
    # napoleon turns prose types ("decorated function", "datetime") into references
    (r"py:class", r"(datetime|date|decorated function|executor|array-like)"),
    (r"py:class", r"(bool|int|float|str|dict)"),
    (r"py:class", r"(_contextvars\..*|contextvars\..*|io\..*|builtins\..*)"),
]

html_theme = "furo"
html_title = f"digital-experiments {release}"
exclude_patterns = ["_build"]
