"""Regenerate the 2.0.4 fixture records (run with a digital-experiments 2.0.4 install).

Usage: ``python generate.py`` from this folder, with digital-experiments==2.0.4
importable. It records two runs of :func:`legacy` with each of the pickle, json
and yaml backends into ``<backend>/legacy/``. The tests read them with the
current library to prove records written by 2.0.4 still load.
"""

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = """\
from digital_experiments import current_dir, experiment, time_block

BACKEND = __import__("os").environ["LEGACY_BACKEND"]


@experiment(backend=BACKEND)
def legacy(shape, options, text="line one\\nline two\\n"):
    with time_block("work"):
        (current_dir() / "notes.txt").write_text(text)
    return {"area": shape[0] * shape[1], "lines": text.splitlines(), "options": options}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        module = Path(work) / "legacy_module.py"
        module.write_text(SOURCE)
        sys.path.insert(0, work)
        os.chdir(work)
        for backend in ("pickle", "json", "yaml"):
            out = HERE / backend / "legacy"
            out.mkdir(parents=True, exist_ok=True)
            os.environ["DE_ROOT"] = str(out)  # 2.0.4: records go straight into $DE_ROOT
            os.environ["LEGACY_BACKEND"] = backend
            sys.modules.pop("legacy_module", None)
            import legacy_module

            legacy_module.legacy((2, 3), {"lr": 0.1, "layers": [1, 2]})
            legacy_module.legacy((4, 5), {"lr": 0.01, "layers": []}, text="single")
        (HERE / "legacy_module.py").write_text(SOURCE)


if __name__ == "__main__":
    main()
