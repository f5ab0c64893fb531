"""Run digital-experiments 2.0.4's own test suite against the installed package.

A drop-in replacement must pass the suite 2.0.4 shipped, unchanged. This script
downloads the 2.0.4 sdist from PyPI with pip (once: it is kept, checked by its
sha256, in ``tests/compat/.cache/``, which git ignores), unpacks only its
``tests/`` folder and runs it with pytest against whatever ``digital_experiments``
this interpreter imports. Only ``test_root`` is deselected: 3.0 puts each
experiment in ``$DE_ROOT/<name>`` on purpose, where 2.0.4 used ``$DE_ROOT`` itself.

Usage (``make compat`` runs it; extra arguments go to pytest)::

    python tests/compat/run_v2_suite.py [-v]
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "2.0.4"
# the sdist on PyPI never changes: a different file is not the suite we mean to run
SHA256 = "8d56ededcf3dfbfb71e73e9dc265f7d455eeefa4b5c8dfa521602645d91a5ba8"
CACHE = Path(__file__).resolve().parent / ".cache"
DESELECT = ["tests/test_experiment.py::test_root"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download() -> Path:
    """The 2.0.4 sdist, downloaded into the cache unless already there."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for archive in CACHE.glob(f"digital*experiments-{VERSION}.tar.gz"):
        if _sha256(archive) == SHA256:
            return archive
        archive.unlink()  # a torn or foreign download: fetch it again
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"digital-experiments=={VERSION}",
                "-d",
                tmp,
            ],
            check=True,
        )
        (archive,) = Path(tmp).glob("*.tar.gz")
        if _sha256(archive) != SHA256:
            raise SystemExit(
                f"{archive.name!r} from PyPI has sha256 {_sha256(archive)}, "
                f"expected {SHA256}: refusing to run it."
            )
        return Path(shutil.move(str(archive), CACHE / archive.name))


def unpack(archive: Path) -> Path:
    """Extract only the sdist's ``tests/`` (never its package) into a fresh folder."""
    target = CACHE / f"digital-experiments-{VERSION}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and "/tests/" in m.name]
        for member in members:
            member.name = member.name.split("/", 1)[1]  # drop the top folder
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, members=members, filter="data")
        else:  # no extraction filters in this Python; the archive is pinned by its sha256
            tar.extractall(target, members=members)
    # an empty config: run the suite as its authors did, not under ours
    (target / "pytest.ini").write_text("[pytest]\n")
    return target


def main(argv: list[str]) -> int:
    import digital_experiments

    if digital_experiments.__version__.startswith("2."):
        raise SystemExit(f"{digital_experiments.__file__} is 2.x: install this project first.")
    print(
        f"2.0.4's test suite against digital_experiments {digital_experiments.__version__} "
        f"from {Path(digital_experiments.__file__).parent}",
        flush=True,
    )
    suite = unpack(download())
    command = [sys.executable, "-m", "pytest", "tests", "-c", "pytest.ini", "--rootdir", "."]
    command += ["-p", "no:cacheprovider", "-p", "no:asyncio"]
    for test in DESELECT:
        command += ["--deselect", test]
    # run inside the fresh folder: whatever the tests leave in cwd goes with it next time
    return subprocess.run([*command, *argv], cwd=suite).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
