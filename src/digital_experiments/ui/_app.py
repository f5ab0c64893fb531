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
import reprlib
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._model import layout
from .._model.where import WhereError
from .._read import query, roots
from .._read.compare import compare
from .._runs.metrics import read as read_metrics
from .._runs.observation import notes_of, status_of, tags_of
from .._store.files import settled
from ._index import REMOTE_INTERVAL, Refused, RunIndex, Watcher, labels, why

STATIC = Path(__file__).parent / "static"
PAGE = 100  # rows per page of the runs table
TEXT_PREVIEW = 200_000  # bytes of a text artefact shown inline
IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
TEXTS = {".txt", ".log", ".md", ".csv", ".json", ".yaml", ".yml", ".py", ".toml", ".cfg"}
# the names a browser on this machine reaches the view by: any other Host header
# is a page elsewhere reading it through DNS rebinding
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# an artefact is the run's, not the view's: it never runs script in the view's
# origin (sandbox), and is never read as another type than the one it is served as
ARTEFACT_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
PREVIEW = 200  # characters of a value the runs table shows; the run's page has it whole
POINTS = 4000  # runs the plots get at most (a sample beyond)
CURVES = 20  # runs whose curves one request gets at most
PLOTTED = "completed"  # the plots show completed runs only: a failed run has no result


class Root:
    """The experiments under one root, each with its index, and their watcher."""

    def __init__(self, root: Path | str, trust: bool = False) -> None:
        self.root = root  # a folder, or an s3:// URL
        self.looked = 0.0  # when a bucket was last looked at (monotonic)
        self.trust = trust
        self.single = False  # whether root is itself the experiment folder
        self.lock = threading.Lock()
        self.indexes: dict[str, RunIndex] = {}
        self.stamp: tuple[int, bool] | None = None  # root's mtime_ns at the last look, settled
        self.watcher = Watcher(self.indexes, self.rediscover)
        self.discover()

    def rediscover(self) -> None:
        """:meth:`discover` if the root changed (a folder made, removed or renamed);
        a bucket's prefix is listed again every ``REMOTE_INTERVAL`` seconds."""
        if isinstance(self.root, str):
            if time.monotonic() - self.looked >= REMOTE_INTERVAL:
                self.discover()
                self.looked = time.monotonic()
            return
        stamp = os.stat(self.root).st_mtime_ns
        if self.stamp != (stamp, True):
            self.discover()
            self.stamp = (stamp, settled(stamp))

    def discover(self) -> None:
        """Find experiment folders: new ones appear during a session, and removed or
        renamed ones go (a folder already known is not listed again)."""
        with self.lock:
            found = self._folders()
            for name in [n for n in self.indexes if n not in found]:
                del self.indexes[name]
            for name, folder in found.items():
                if name not in self.indexes:
                    self.indexes[name] = RunIndex(folder, trust=self.trust)

    def _folders(self) -> dict[str, Path | str]:
        if self.single or roots.is_experiment_folder(self.root):
            self.single = True  # once seen, for good: the check lists its records
            return {roots.name_of(self.root): self.root} if roots.exists(self.root) else {}
        if isinstance(self.root, str):
            return {roots.name_of(f): f for f in roots.experiment_folders(self.root)}
        try:
            with os.scandir(self.root) as entries:
                names = sorted(e.name for e in entries if e.name[0] != "." and e.is_dir())
        except OSError:
            return {}
        return {
            name: self.root / name
            for name in names
            if name in self.indexes or roots.is_experiment_folder(self.root / name)
        }

    def index(self, name: str) -> RunIndex:
        """The index of experiment ``name``; ``LookupError`` if there is none (now)."""
        found = self.indexes.get(name)
        if found is None or not (found.remote or found.folder.is_dir()):
            self.discover()
            found = self.indexes.get(name)
        if found is None:
            raise LookupError(f"No experiment {name!r} under {str(self.root)!r}.")
        return found


def create_app(
    root: str | os.PathLike[str], *, trust: bool = False, hosts: Iterable[str] | None = None
) -> Starlette:
    """The web view of ``root`` (an experiment folder, or a folder of them) as an ASGI app.

    Mount it in another Starlette or FastAPI app, or serve it with uvicorn
    (``digital-experiments ui`` does). It only reads: no endpoint writes or
    deletes anything.

    Parameters
    ----------
    root : str or os.PathLike
        An experiment folder, or a folder of them, or an ``s3://bucket/prefix``
        of either (looked at every few seconds; artefacts are downloaded to
        ``$DE_CACHE`` when a run's page is opened).
    trust : bool
        Load pickle records even in folders digital-experiments 3.x did not
        record (it reserved no ids in their ``.de/ids/``). Loading a pickle runs
        any code in it, so without ``trust`` such a folder is listed with the
        reason its runs are not shown.
    hosts : iterable of str, optional
        The host names requests may be addressed to (their ``Host`` header);
        others are refused (400). Default: the loopback names ``127.0.0.1``,
        ``localhost`` and ``::1``. Pass ``"testserver"`` for Starlette's test
        client.
    """
    state = Root(roots.located(root), trust=trust)
    allowed = _host_names(LOOPBACK if hosts is None else hosts)

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
                    "refused": sorted(index.refused.values()),
                    "problem": index.problem,
                }
            )
        return _json({"root": str(state.root), "experiments": found})

    async def runs(request: Request) -> Response:
        index = state.index(request.path_params["name"])
        params = request.query_params
        try:
            offset = max(_whole(params, "offset", 0, "a row number from 0, such as 100"), 0)
            limit = min(max(_whole(params, "limit", PAGE, "1 to 1000 rows, such as 100"), 1), 1000)
            answer = await anyio.to_thread.run_sync(
                _runs, index, params.get("where", ""), params.get("sort", ""), offset, limit
            )
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(answer)

    async def points(request: Request) -> Response:
        """Columns of the completed runs that match, for the plots (not paged; sampled
        past ``limit`` runs, keeping those at both ends of ``keep`` and runs ``ids``)."""
        index = state.index(request.path_params["name"])
        params = request.query_params
        wanted = [c for c in params.get("columns", "").split(",") if c]
        chosen = [i for i in params.get("ids", "").split(",") if i]
        try:
            limit = max(_whole(params, "limit", POINTS, f"a number of runs, such as {POINTS}"), 2)
            answer = await anyio.to_thread.run_sync(
                _points, index, params.get("where", ""), wanted, limit, params.get("keep"), chosen
            )
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(answer)

    async def curves(request: Request) -> Response:
        """The metric curves of runs ``ids`` (at most :data:`CURVES`), each thinned to
        ``points`` points, with a legend name for each run (what differs)."""
        index = state.index(request.path_params["name"])
        params = request.query_params
        ids = list(dict.fromkeys(i for i in params.get("ids", "").split(",") if i))
        if not all(layout.is_id(i) for i in ids):
            return _json({"error": "curves takes run ids: ?ids=ID1,ID2"}, 400)
        try:
            most = max(_whole(params, "points", 2000, "a number of points, such as 2000"), 2)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(await anyio.to_thread.run_sync(_curves, index, ids[:CURVES], most))

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
        except Refused as exc:
            return _json({"id": id, "unreadable": str(exc)})
        except Exception as exc:
            return _json({"id": id, "unreadable": why(exc)})
        artefacts = []
        folder = layout.artefacts(index.folder, id)
        for path in observation_artefacts(index, id):
            relative = path.relative_to(folder).as_posix()
            artefacts.append({"path": relative, "size": path.stat().st_size, "kind": _kind(path)})
        with warnings.catch_warnings():  # odd tags or notes are left out, as everywhere
            warnings.simplefilter("ignore")
            tags, notes = tags_of(observation), notes_of(observation)
        metadata = dict(observation.metadata)
        metadata.pop("tags", None)
        metadata.pop("notes", None)
        environment = metadata.pop("environment", None)
        if not isinstance(environment, dict):
            environment = {}
        return _json(
            {
                "id": id,
                "status": status_of(observation),
                "config": observation.config,
                "result": observation.result,
                "tags": tags,
                "notes": notes,
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
        for step, name, value, _ in read_metrics(index.store, id):
            curve = curves.setdefault(name, {"steps": [], "values": []})
            curve["steps"].append(step)
            curve["values"].append(value)
        return _json({"id": id, "metrics": curves})

    async def artefact(request: Request) -> Response:
        index = state.index(request.path_params["name"])
        id, relative = request.path_params["id"], request.path_params["path"]
        path = safe_artefact(index.folder, id, relative)
        if path is None:
            response = _json({"error": "No such artefact."}, 404)
            response.headers.update(ARTEFACT_HEADERS)
            return response
        kind = _kind(path)
        if kind == "text" and path.stat().st_size > TEXT_PREVIEW:
            with open(path, "rb") as file:
                text = file.read(TEXT_PREVIEW)
            return Response(text, media_type="text/plain; charset=utf-8", headers=ARTEFACT_HEADERS)
        if kind == "image":  # previewed in an <img>, where an SVG's script never runs
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return FileResponse(path, media_type=media, headers=ARTEFACT_HEADERS)
        if kind == "text":
            return FileResponse(
                path, media_type="text/plain; charset=utf-8", headers=ARTEFACT_HEADERS
            )
        # anything else (HTML above all) is downloaded, never rendered by the view
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers=ARTEFACT_HEADERS,
            filename=path.name,
            content_disposition_type="attachment",
        )

    async def differences(request: Request) -> Response:
        index = state.index(request.path_params["name"])
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        if len(ids) < 2 or not all(layout.is_id(i) for i in ids):
            return _json({"error": "compare takes two run ids or more: ?ids=ID1,ID2"}, 400)
        loaded = []
        for i in ids:
            message = index.unreadable.get(i)
            if message is None:
                try:
                    loaded.append(await anyio.to_thread.run_sync(index.load, i))
                except FileNotFoundError:
                    return _json({"error": f"No run {i!r}."}, 404)
                except Refused as exc:
                    message = str(exc)
                except Exception as exc:  # a torn record the index has not seen yet
                    message = why(exc)
            if message is not None:
                error = f"Run {i!r} is unreadable ({message}): compare readable runs."
                return _json({"error": error}, 400)
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
                if index is not None and state.indexes.get(name) is not index:
                    index, seen = None, -1  # its folder was removed or renamed
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

    async def favicon(request: Request) -> Response:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    async def missing(request: Request, exc: Exception) -> Response:
        return _json({"error": str(exc)}, 404)

    routes = [
        Route("/", home),
        Route("/api/experiments", experiments),
        Route("/api/experiments/{name}/runs", runs),
        Route("/api/experiments/{name}/points", points),
        Route("/api/experiments/{name}/curves", curves),
        Route("/api/experiments/{name}/compare", differences),
        Route("/api/experiments/{name}/events", events),
        Route("/api/experiments/{name}/runs/{id}", run),
        Route("/api/experiments/{name}/runs/{id}/metrics", metrics),
        Route("/api/experiments/{name}/runs/{id}/artefacts/{path:path}", artefact),
        Route("/static/plotly.min.js", plotly_js),
        Route("/favicon.ico", favicon),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={LookupError: missing},
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed, www_redirect=False)],
    )
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


def _host_names(hosts: Iterable[str]) -> list[str]:
    """``hosts`` as Host headers name them: an IPv6 address in brackets too."""
    names: list[str] = []
    for host in hosts:
        host = host.lower()
        names.append(host)
        if ":" in host and not host.startswith("["):
            names.append(f"[{host}]")
    return list(dict.fromkeys(names))


def _whole(params: Mapping[str, str], name: str, default: int, fix: str) -> int:
    """Query parameter ``name`` as a whole number (``default`` if absent).

    Raises
    ------
    ValueError
        Naming the value and what to pass instead.
    """
    text = params.get(name, "")
    if not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number: pass {fix}.") from None


def _previews(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with each long value cut to a short text ending in "…" (a 100,000-point
    curve is not sent to every table refresh); the run's page shows it whole."""
    return {key: _preview(value) for key, value in row.items()}


def _preview(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= PREVIEW else value[:PREVIEW] + "…"
    if not isinstance(value, (list, tuple, dict)):
        return _preview(_plain(value))
    text, size = [], 0
    try:  # encoded piece by piece, so a long list costs its first few items only
        for chunk in json.JSONEncoder(default=_plain).iterencode(value):
            text.append(chunk)
            size += len(chunk)
            if size > PREVIEW:
                return "".join(text)[:PREVIEW] + "…"
    except (TypeError, ValueError):  # keys JSON cannot name, or a cycle
        return _preview(reprlib.repr(value))
    return value


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGES:
        return "image"
    if suffix in TEXTS:
        return "text"
    return "binary"


def _runs(index: RunIndex, where: str, sort: str, offset: int, limit: int) -> dict[str, Any]:
    """The runs endpoint's answer: one page of the rows ``where`` keeps, in ``sort``
    order, each with its extras (``duration``, ``error``; a running run's ``elapsed``
    seconds and last ``step``).

    Raises
    ------
    ValueError
        For a bad ``where`` or ``sort`` (the message points at it).
    """
    rows = index.snapshot()
    total = len(rows)
    rows = _sort(_filter(rows, where), sort)
    columns = index.columns()
    now = time.time()
    page = []
    for row in rows[offset : offset + limit]:
        shown = _previews(row)
        extra = index.extra(row["id"])
        shown["duration"] = extra.get("duration")
        if "error" in extra:
            shown["error"] = _preview(extra["error"])
        if "started" in extra:
            shown["elapsed"] = max(0.0, now - extra["started"])
        if "step" in extra:
            shown["step"] = extra["step"]
        page.append(shown)
    return {
        "version": index.version,
        "total": total,
        "matched": len(rows),
        "offset": offset,
        "columns": columns.columns,
        "numeric": columns.numeric,
        "varying": columns.varying,
        "filled": columns.filled,
        "sorts": {"duration": columns.duration} if columns.duration else {},
        "rows": page,
        "unreadable": [{"id": k, "error": v} for k, v in sorted(index.unreadable.items())],
        "refused": sorted(index.refused.values()),
        "problem": index.problem,
    }


def _points(
    index: RunIndex, where: str, columns: list[str], limit: int, keep: str | None, ids: list[str]
) -> dict[str, Any]:
    """The points endpoint's answer: ``columns`` of the completed runs ``where`` keeps,
    at most ``limit`` of them (a sample: the runs at both ends of column ``keep``, runs
    ``ids``, and an even spread of the others), with how many were left out and why."""
    matched = _filter(index.snapshot(), where)
    plotted = [row for row in matched if row["status"] == PLOTTED]
    left_out: dict[str, int] = {}
    for row in matched:
        if row["status"] != PLOTTED:
            left_out[row["status"]] = left_out.get(row["status"], 0) + 1
    shown = _sample(plotted, limit, keep, set(ids))

    def value(row: dict[str, Any], column: str) -> Any:
        if column == "duration":
            return index.extra(row["id"]).get("duration")
        return _preview(row.get(column))

    return {
        "ids": [row["id"] for row in shown],
        **{c: [value(row, c) for row in shown] for c in columns},
        "matched": len(matched),
        "plotted": len(plotted),
        "shown": len(shown),
        "left_out": left_out,
    }


def _sample(
    rows: list[dict[str, Any]], limit: int, keep: str | None, ids: set[str]
) -> list[dict[str, Any]]:
    """At most ``limit`` of ``rows`` in their order: every run of ``ids``, the tenth of
    ``limit`` at each end of column ``keep`` (the best runs, whichever way is best),
    then an even spread of the rest."""
    if len(rows) <= limit:
        return rows
    kept = {i for i, row in enumerate(rows) if row["id"] in ids}
    if keep:
        ranked = [i for i, row in enumerate(rows) if _plain_number(row.get(keep))]
        ranked.sort(key=lambda i: rows[i][keep])
        ends = max(1, limit // 10)
        kept.update(ranked[:ends] + ranked[-ends:])
    rest = [i for i in range(len(rows)) if i not in kept]
    room = max(0, limit - len(kept))
    if room:
        step = len(rest) / room
        kept.update(rest[int(n * step)] for n in range(min(room, len(rest))))
    return [rows[i] for i in sorted(kept)]


def _plain_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _curves(index: RunIndex, ids: list[str], most: int) -> dict[str, Any]:
    """The curves endpoint's answer: ``{ids, labels, metrics: {name: {id: {steps,
    values}}}}``, each curve thinned to ``most`` points (its last one kept)."""
    with index.lock:
        rows = [index.rows.get(i) for i in ids]
    metrics: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for id in ids:
        for step, name, value, _ in read_metrics(index.store, id):
            curve = metrics.setdefault(name, {}).setdefault(id, {"steps": [], "values": []})
            curve["steps"].append(step)
            curve["values"].append(value)
    for runs in metrics.values():
        for curve in runs.values():
            count = len(curve["steps"])
            if count > most:
                every = math.ceil((count - 1) / (most - 1))  # with the last: `most` at most
                picked = [*range(0, count - 1, every), count - 1]
                curve["steps"] = [curve["steps"][i] for i in picked]
                curve["values"] = [curve["values"][i] for i in picked]
    return {"ids": ids, "labels": labels(rows, ids), "metrics": metrics}


def _filter(rows: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [rows[i] for i in query.matching(rows, text)] if text.strip() else rows


def _sort(rows: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if not text.strip():
        return rows
    return [rows[i] for i in query.sort_order(rows, text)]


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
