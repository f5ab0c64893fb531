"""A tiny PEP 517/660 build backend, so test packages install offline."""

import base64
import hashlib
import os
import zipfile

with open("NAME") as file:
    NAME, VERSION = file.read().split()
DIST = NAME.replace("-", "_")


def _wheel(directory: str, files: dict[str, bytes]) -> str:
    stem = f"{DIST}-{VERSION}"
    info = f"{stem}.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = "\n".join([*lines, f"{info}/RECORD,,", ""]).encode()
    name = f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return name


def build_wheel(
    wheel_directory: str, config_settings: object = None, metadata_directory: object = None
) -> str:
    with open(f"{DIST}.py", "rb") as module:
        return _wheel(wheel_directory, {f"{DIST}.py": module.read()})


def build_editable(
    wheel_directory: str, config_settings: object = None, metadata_directory: object = None
) -> str:
    return _wheel(wheel_directory, {f"_{DIST}_editable.pth": f"{os.getcwd()}\n".encode()})


def build_sdist(sdist_directory: str, config_settings: object = None) -> str:
    raise NotImplementedError
