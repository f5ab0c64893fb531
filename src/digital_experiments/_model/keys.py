"""Canonical keys: when two configs (and two versions of the code) are the same.

The cache, sweeps and :class:`~digital_experiments.controllers.GridSearch` ask
"has this config already run with this code?". A config comes back from a
record in whatever form its backend stores, so the answer cannot come from
``==`` on user values (a numpy array has no truth value, ``(1, 2) != [1, 2]``)
nor from ``repr`` (numpy elides big arrays with ``...``). Instead every value
is encoded into one canonical byte string, and keys are digests of it.

The canonical form identifies what every backend round-trips:

* tuples and lists are the same (JSON and YAML store tuples as lists);
* numpy arrays are their nested lists of Python numbers, numpy scalars their
  Python number (the dtype is not part of the key); numpy is never imported;
* ``int``, ``float``, ``bool``, ``str``, ``None`` and ``bytes`` stay distinct
  (``1``, ``1.0``, ``True`` and ``"1"`` are four configs); ``nan`` equals
  ``nan``, and ``-0.0`` is not ``0.0``;
* dict keys are compared as JSON writes them: ``{1: "a"}`` and ``{"1": "a"}``
  are one config, since a JSON record cannot tell them apart. A dict whose
  keys are not all ``str``/``int``/``float``/``bool``/``None``, or whose keys
  collide once written as strings (``{1: "a", "1": "b"}``), is keyed by its
  exact items instead. Key order never matters;
* sets are compared by their elements, dates and times by their ISO form;
* an instance of a subclass of ``dict``, ``list``, ``tuple``, ``str``, ``int``
  or ``float`` (an ``OrderedDict``, a named tuple, an ``IntEnum``) is its plain
  value, as JSON stores it;
* any other object (only the pickle backend can store it) is keyed by its
  pickled bytes (protocol 4). Two equal objects that pickle differently (such
  as objects holding sets of strings, whose order changes between processes)
  get different keys, so the cache may run them again; two objects pickling
  alike are the same config. An object that cannot be pickled at all is keyed
  by its identity: it only matches itself, within one process.
"""

from __future__ import annotations

import datetime
import hashlib
import pickle
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

__all__ = ["canonical", "config_key", "is_numpy", "plain", "same_code", "same_config"]

_PICKLE_PROTOCOL = 4  # fixed: keys must not change when Python's default does
_SCALAR_KEYS = (str, int, float, type(None))  # bool is an int
_PLAIN = (dict, list, tuple, str, int, float)
# ids of the containers being encoded, to spot one that holds itself
_OPEN: ContextVar[set[int] | None] = ContextVar("digital_experiments_keys_open", default=None)
_FLOAT_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # as json writes them


def is_numpy(value: Any) -> bool:
    """Whether ``value`` is a numpy array or scalar (checked without importing numpy)."""
    return type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None))


def plain(value: Any) -> Any:
    """``value`` as the plain Python value JSON would store, one level deep.

    A numpy array or scalar becomes lists and Python numbers (``tolist()``),
    an instance of a subclass of ``dict``, ``list``, ``tuple``, ``str``,
    ``int`` or ``float`` becomes an instance of that base type; any other
    value is returned unchanged. The JSON and YAML backends store values so.
    """
    if is_numpy(value):
        return value.tolist()
    for base in (dict, list, tuple):
        if isinstance(value, base):
            return value if type(value) is base else base(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return value


def canonical(value: Any) -> bytes:
    """The canonical encoding of ``value``: equal for values that are the same config.

    Examples
    --------
    >>> canonical((1, 2)) == canonical([1, 2])
    True
    >>> canonical({1: "a"}) == canonical({"1": "a"})
    True
    >>> canonical(1) == canonical(1.0)
    False
    """
    out: list[bytes] = []
    if _OPEN.get() is not None:  # a set's element or a dict's exact key, within an encoding
        _encode(value, out)
        return b"".join(out)
    token = _OPEN.set(set())
    try:
        _encode(value, out)
    finally:
        _OPEN.reset(token)
    return b"".join(out)


def config_key(code: Any, config: Mapping[str, Any]) -> str:
    """A hex digest of ``code`` (a code identity) and ``config``, the same in every process.

    Parameters
    ----------
    code : Any
        The code identity, such as ``digital_experiments.util.code_identity``.
    config : mapping
        The complete config of a call.
    """
    return hashlib.sha256(canonical([code, dict(config)])).hexdigest()


def same_config(a: Any, b: Any) -> bool:
    """Whether configs ``a`` and ``b`` are the same once stored (never ``a == b``).

    Examples
    --------
    >>> same_config({"shape": (2, 3)}, {"shape": [2, 3]})
    True
    """
    return a is b or canonical(a) == canonical(b)


def same_code(metadata: Any, code: Mapping[str, Any] | str | None) -> bool:
    """Whether a record's ``metadata`` says it ran with the code identity ``code``.

    ``code`` holds the fields an experiment writes to each record's metadata
    (``{"code": source}``, or ``{"code": None, "code_hash": digest}`` for a
    function without source, see ``digital_experiments.util.code_identity``);
    a record matches when it holds the same values. So a record of a function
    without source written before code hashes existed matches no code. A
    plain string (or ``None``) is compared with ``metadata["code"]`` alone.
    """
    # exact types first: the ABC checks cost more than the comparison (once a record)
    if type(metadata) is not dict and not isinstance(metadata, Mapping):
        return False
    if type(code) is not dict and not isinstance(code, Mapping):
        code = {"code": code}
    missing = object()
    for name, value in code.items():
        stored = metadata.get(name, missing)
        # our own strings (or None): plain == is safe here
        if stored is missing or type(stored) is not type(value) or stored != value:
            return False
    return True


def _encode(value: Any, out: list[bytes]) -> None:
    kind = type(value)
    if value is None:
        out.append(b"N")
    elif kind is bool:
        out.append(b"T" if value else b"F")
    elif kind is int:
        out.append(b"i%d;" % value)
    elif kind is float:
        out.append(b"f" + repr(value).encode() + b";")
    elif kind is str:
        _encode_text(b"s", value, out)
    elif kind is list or kind is tuple:
        if _enter(value, out):
            out.append(b"l%d[" % len(value))
            for item in value:
                _encode(item, out)
            out.append(b"]")
            _leave(value)
    elif kind is dict:
        if _enter(value, out):
            _encode_dict(value, out)
            _leave(value)
    elif kind is bytes:
        out.append(b"b%d:" % len(value) + value)
    elif is_numpy(value) or isinstance(value, _PLAIN):
        converted = plain(value)  # numpy, or a subclass: as JSON stores it
        if converted is value:
            _encode_object(value, out)
        else:
            _encode(converted, out)
    elif kind is set or kind is frozenset:
        items = sorted(canonical(item) for item in value)
        out.append(b"S%d[" % len(items))
        out.extend(items)
        out.append(b"]")
    elif kind in (datetime.datetime, datetime.date, datetime.time):
        _encode_text(b"t" + kind.__name__.encode(), value.isoformat(), out)
    else:
        _encode_object(value, out)


def _enter(container: Any, out: list[bytes]) -> bool:
    """Whether to encode ``container``: not if it is inside itself (then it is its identity)."""
    open_ids = _OPEN.get()
    assert open_ids is not None
    if id(container) in open_ids:  # nothing stores a cycle alike: only this object matches
        out.append(b"o%d;" % id(container))
        return False
    open_ids.add(id(container))
    return True


def _leave(container: Any) -> None:
    open_ids = _OPEN.get()
    assert open_ids is not None
    open_ids.discard(id(container))


def _encode_text(tag: bytes, text: str, out: list[bytes]) -> None:
    data = text.encode("utf-8", "surrogatepass")
    out.append(tag + b"%d:" % len(data) + data)


def _json_key(key: Any) -> str:
    """``key`` as a JSON object key: what a JSON record turns it into."""
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float):
        return _FLOAT_NAMES.get(repr(key), repr(key))
    return str(int(key))


def _encode_dict(value: dict[Any, Any], out: list[bytes]) -> None:
    if all(isinstance(key, _SCALAR_KEYS) for key in value):
        named = {_json_key(plain(key)): item for key, item in value.items()}
        if len(named) == len(value):
            out.append(b"d%d{" % len(named))
            for name in sorted(named):
                _encode_text(b"s", name, out)
                _encode(named[name], out)
            out.append(b"}")
            return
    # exact items: keys that JSON could not write, or that would collide
    pairs = sorted((canonical(key), canonical(item)) for key, item in value.items())
    out.append(b"D%d{" % len(pairs))
    for key_bytes, item_bytes in pairs:
        out.append(key_bytes)
        out.append(item_bytes)
    out.append(b"}")


def _encode_object(value: Any, out: list[bytes]) -> None:
    try:
        data = pickle.dumps(value, protocol=_PICKLE_PROTOCOL)
    except Exception:  # nothing can store it: only the object itself is the same
        out.append(b"o%d;" % id(value))
        return
    out.append(b"p%d:" % len(data) + data)
