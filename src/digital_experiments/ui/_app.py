"""The web view: a Starlette app over one root, read-only, with a JSON API.

Every page of the browser app is drawn from ``/api/`` (documented in
``docs/ui.md``); the app itself is static files shipped in the package, with
plotly.js served from the ``plotly`` wheel, so it works offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import mimetypes
import os
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import _layout as layout
from .. import _query as query
from .._compare import compare
from .._metrics import read as read_metrics
from .._records import status_of
from .._where import WhereError
from ._index import RunIndex, Watcher

STATIC = Path(__file__).parent / "static"
PAGE = 100  # rows per page of the runs table
TEXT_PREVIEW = 200_000  # bytes of a text artefact shown inline
IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
TEXTS = {".txt", ".log", ".md", ".csv", ".json", ".yaml", ".yml", ".py", ".toml", ".cfg"}


class Root:
    """The experiments under one root, each with its index, and their watcher."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.indexes: dict[str, RunIndex] = {}
        self.watcher = Watcher(self.indexes)
        self.discover()

    def discover(self) -> None:
        """Find experiment folders (new ones appear during a session)."""
        if query.is_experiment_folder(self.root):
            folders = [self.root]
        else:
            try:
                folders = query.experiment_folders(self.root)
            except OSError:
                folders = []
        for folder in folders:
            self.indexes.setdefault(folder.name, RunIndex(folder))

    def index(self, name: str) -> RunIndex:
        if name not in self.indexes:
            self.discover()
        try:
            return self.indexes[name]
        except KeyError:
            raise LookupError(f"No experiment {name!r} under {str(self.root)!r}.") from None


def create_app(root: str | os.PathLike[str]) -> Starlette:
    """The web view of ``root`` (an experiment folder, or a folder of them) as an ASGI app.

    Mount it in another Starlette or FastAPI app, or serve it with uvicorn
    (``digital-experiments ui`` does). It only reads: no endpoint writes or
    deletes anything.
    """
    state = Root(Path(root).expanduser().absolute())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(state.watcher.start)
        try:
            yield
        finally:
            state.watcher.close()

    async def experiments(request: Request) -> Response:
        await anyio.to_thread.run_sync(state.discover)
        found = []
        for name, index in sorted(state.indexes.items()):
            rows = index.snapshot()
            counts: dict[str, int] = {}
            for row in rows:
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            found.append(
                {
                    "name": name,
                    "runs": len(rows),
                    "statuses": counts,
                    "unreadable": len(index.unreadable),
                    "latest": rows[-1]["id"] if rows else None,
                }
            )
        return _json({"root": str(state.root), "experiments": found})

    async def runs(request: Request) -> Response:
        index = state.index(request.path_params["name"])
        params = request.query_params
        rows = index.snapshot()
        total = len(rows)
        try:
            rows = _filter(rows, params.get("where", ""))
            rows = _sort(rows, params.get("sort", ""))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        offset = max(int(params.get("offset", 0) or 0), 0)
        limit = min(max(int(params.get("limit", PAGE) or PAGE), 1), 1000)
        columns = _columns(rows)
        return _json(
            {
                "version": index.version,
                "total": total,
                "matched": len(rows),
                "offset": offset,
                "columns": columns,
                "numeric": [c for c in columns if _numeric(rows, c)],
                "rows": rows[offset : offset + limit],
                "unreadable": [{"id": k, "error": v} for k, v in sorted(index.unreadable.items())],
            }
        )

    async def points(request: Request) -> Response:
        """Columns of every matching run, for the plots (not paged)."""
        index = state.index(request.path_params["name"])
        params = request.query_params
        try:
            rows = _filter(index.snapshot(), params.get("where", ""))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        wanted = [c for c in params.get("columns", "").split(",") if c]
        return _json(
            {"ids": [r["id"] for r in rows], **{c: [r.get(c) for r in rows] for c in wanted}}
        )

    async def run(request: Request) -> Response:
        index = state.index(request.path_params["name"])
        id = request.path_params["id"]
        if not layout.is_id(id):
            return _json({"error": f"{id!r} is not a run id."}, 404)
        if id in index.unreadable:
            return _json({"id": id, "unreadable": index.unreadable[id]})
        try:
            observation = await anyio.to_thread.run_sync(index.load, id)
        except FileNotFoundError:
            return _json({"error": f"No run {id!r}."}, 404)
        except Exception as exc:
            return _json({"id": id, "unreadable": f"{type(exc).__name__}: {exc}"})
        artefacts = []
        folder = layout.artefacts(index.folder, id)
        for path in observation_artefacts(index, id):
            relative = path.relative_to(folder).as_posix()
            artefacts.append({"path": relative, "size": path.stat().st_size, "kind": _kind(path)})
        metadata = dict(observation.metadata)
        environment = metadata.pop("environment", None)
        if not isinstance(environment, dict):
            environment = {}
        return _json(
            {
                "id": id,
                "status": status_of(observation),
                "config": observation.config,
                "result": observation.result,
                "timing": metadata.pop("timing", None),
                "error": metadata.pop("error", None),
                "code": metadata.pop("code", None),
                "git": environment.get("git") if isinstance(environment, dict) else None,
                "packages": environment.get("pip_freeze")
                if isinstance(environment, dict)
                else None,
                "system": environment.get("system") if isinstance(environment, dict) else None,
                "metadata": metadata,
                "artefacts": artefacts,
            }
        )

    async def metrics(request: Request) -> Response:
        index = state.index(request.path_params["name"])
        id = request.path_params["id"]
        if not layout.is_id(id):
            return _json({"error": f"{id!r} is not a run id."}, 404)
        curves: dict[str, dict[str, list[Any]]] = {}
        for step, name, value, _ in read_metrics(index.folder, id):
            curve = curves.setdefault(name, {"steps": [], "values": []})
            curve["steps"].append(step)
            curve["values"].append(value)
        return _json({"id": id, "metrics": curves})

    async def artefact(request: Request) -> Response:
        index = state.index(request.path_params["name"])
        id, relative = request.path_params["id"], request.path_params["path"]
        path = safe_artefact(index.folder, id, relative)
        if path is None:
            return _json({"error": "No such artefact."}, 404)
        if _kind(path) == "text" and path.stat().st_size > TEXT_PREVIEW:
            with open(path, "rb") as file:
                return Response(file.read(TEXT_PREVIEW), media_type="text/plain; charset=utf-8")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if _kind(path) == "text":
            media = "text/plain; charset=utf-8"
        return FileResponse(path, media_type=media)

    async def differences(request: Request) -> Response:
        index = state.index(request.path_params["name"])
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        if len(ids) < 2 or not all(layout.is_id(i) for i in ids):
            return _json({"error": "compare takes two run ids or more: ?ids=ID1,ID2"}, 400)
        try:
            loaded = [await anyio.to_thread.run_sync(index.load, i) for i in ids]
        except FileNotFoundError as exc:
            return _json({"error": f"No run {exc}."}, 404)
        frame = compare(loaded)
        return _json(
            {"ids": ids, "fields": list(frame.index), "values": {i: list(frame[i]) for i in ids}}
        )

    async def events(request: Request) -> Response:
        """Server-sent events: ``{"version": n}`` each time the experiment's runs change
        (an experiment not there yet is waited for: a sweep may be about to start it)."""
        name = request.path_params["name"]

        async def stream() -> AsyncIterator[str]:
            index, seen, quiet = None, -1, 0.0
            while not await request.is_disconnected():
                if index is None:
                    with contextlib.suppress(LookupError):
                        index = await anyio.to_thread.run_sync(state.index, name)
                if index is not None and index.version != seen:
                    seen = index.version
                    yield f"data: {json.dumps({'version': seen})}\n\n"
                    quiet = 0.0
                elif quiet >= 15:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await asyncio.sleep(0.1 if index is not None else 0.5)  # the disk is the watcher's
                quiet += 0.1

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def home(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def plotly_js(request: Request) -> Response:
        bundle = resources.files("plotly") / "package_data" / "plotly.min.js"
        with resources.as_file(bundle) as path:
            return FileResponse(path, media_type="text/javascript")

    async def missing(request: Request, exc: Exception) -> Response:
        return _json({"error": str(exc)}, 404)

    routes = [
        Route("/", home),
        Route("/api/experiments", experiments),
        Route("/api/experiments/{name}/runs", runs),
        Route("/api/experiments/{name}/points", points),
        Route("/api/experiments/{name}/compare", differences),
        Route("/api/experiments/{name}/events", events),
        Route("/api/experiments/{name}/runs/{id}", run),
        Route("/api/experiments/{name}/runs/{id}/metrics", metrics),
        Route("/api/experiments/{name}/runs/{id}/artefacts/{path:path}", artefact),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={LookupError: missing})
    app.state.root = state
    return app


def observation_artefacts(index: RunIndex, id: str) -> list[Path]:
    """The run's files (:meth:`Backend.artefacts`), less links pointing out of its folder."""
    folder = layout.artefacts(index.folder, id)
    backend = next(iter(index.backends.values()), None)
    found = backend.artefacts(id) if backend is not None else []
    return [p for p in found if safe_artefact(index.folder, id, p.relative_to(folder).as_posix())]


def safe_artefact(folder: Path, id: str, relative: str) -> Path | None:
    """``relative`` inside run ``id``'s artefact folder, or ``None`` if it would leave
    it (``..``, an absolute path, a link pointing out) or is not a file."""
    if not layout.is_id(id) or not relative or "\0" in relative or "\\" in relative:
        return None
    if relative.startswith("/") or any(part in ("", ".", "..") for part in relative.split("/")):
        return None
    base = layout.artefacts(folder, id).resolve()
    try:
        path = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGES:
        return "image"
    if suffix in TEXTS:
        return "text"
    return "binary"


def _filter(rows: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [rows[i] for i in query.matching(rows, text)] if text.strip() else rows


def _sort(rows: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if not text.strip():
        return rows
    return [rows[i] for i in query.sort_order(rows, text)]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {"id": None, "status": None, "duration": None}
    for row in rows[:2000]:  # the shape of a sweep shows in its first runs
        for key, value in row.items():
            if value is not None and key.split(".")[0] in ("config", "result", "metrics", "tags"):
                seen[key] = None
    return list(seen)


def _numeric(rows: list[dict[str, Any]], column: str) -> bool:
    values = [r.get(column) for r in rows[:2000] if r.get(column) is not None]
    return bool(values) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )


def _json(data: Any, status: int = 200) -> Response:
    text = json.dumps(_clean(data), default=_plain, allow_nan=False)
    return Response(text, status_code=status, media_type="application/json")


def _clean(value: Any) -> Any:
    """``value`` with every float a browser's JSON can read (nan and inf become null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return _clean(sorted(value, key=repr))
    if isinstance(value, Path):
        return str(value)
    return repr(value)


__all__ = ["WhereError", "create_app"]
