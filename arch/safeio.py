"""Defensive reading and atomic writing of user files; shared by every package (like :mod:`arch.errors`).

Every reader of a user file goes through here, so one set of rules holds everywhere:

- a missing path, a folder, or an unreadable file is an :class:`InputError` naming the path;
- **gzip** files are read transparently (routing logs are often stored compressed): the gzip
  signature decides, not the name, so ``trace.jsonl`` that is really gzip is read as text;
- **binary** data (a NUL byte in the first 8 KiB) is refused as "binary, not text";
- text must be **UTF-8** (a leading byte-order mark is dropped); a bad byte is reported with its
  line and column;
- sizes are bounded: a whole-file read (YAML, config.json, placement and sweep files) stops at
  ``max_bytes`` (default 64 MiB), and a JSON-lines reader refuses a line longer than
  ``max_line_bytes`` (default 16 MiB) without reading the rest of it into memory;
- JSON: ``NaN`` / ``Infinity`` and duplicate keys are refused, and nesting deeper than Python's
  recursion limit is a clear error rather than a crash.

Writers replace files **atomically** (a temporary file in the same folder, then ``os.replace``),
so an interrupted run never leaves a truncated file that a later resume would trust. A written file
gets the mode the umask gives a new file (0644 under umask 022), not the temporary's 0600. A write the
system refuses (a full disk, a quota, ``ulimit -f``, a read-only file system) is an
:class:`OutputError` naming the file, the reason and what was kept. Temporaries are named
``.NAME.~PID@HOST.XXXXXXXX.tmp``, so that :func:`remove_stale_temporaries` can remove those of a killed
writer (its process gone from this host) without touching a live one's.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import HetmoeError

MAX_TEXT_BYTES = 64 * 2**20
MAX_LINE_BYTES = 16 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 8192


class InputError(HetmoeError):
    """A user file cannot be read as the kind of file it was given as; the message names file and position."""


class OutputError(HetmoeError):
    """An output path cannot be written (a missing or read-only folder, a file where a folder should be)."""


def _a(what: str) -> str:
    """``what`` with its indefinite article (an expert counts file, a routing trace)."""
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def check_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path when it is a readable regular file; an :class:`InputError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file ({what})")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected {_a(what)} file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot read ({what}): permission denied")
    return path


def is_gzip(path: str | Path) -> bool:
    """Whether the file starts with the gzip signature (whatever its name)."""
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def text_bytes(path: str | Path, gzip_ratio: int = 8) -> tuple[int, str]:
    """The size of a file's text (bytes) and how it was known: the file's size; for gzip, the size its
    trailer records (modulo 4 GiB, so a trailer smaller than the compressed file means it wrapped), else
    ``gzip_ratio`` x the compressed size."""
    size = os.path.getsize(path)
    if not is_gzip(path):
        return size, "its size"
    with open(path, "rb") as fh:
        fh.seek(max(size - 4, 0))
        recorded = int.from_bytes(fh.read(4), "little")
    if recorded >= size:
        return recorded, "the size its gzip trailer records"
    return size * gzip_ratio, f"gzip counted at {gzip_ratio}x its size"


def is_zip(path: str | Path) -> bool:
    """Whether the file starts with the zip signature (``.npz`` archives are zip files)."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"PK"


@contextlib.contextmanager
def open_binary(path: str | Path, what: str) -> Iterator[IO[bytes]]:
    """Open ``path`` for reading bytes, through gzip when its first bytes are the gzip signature."""
    path = check_file(path, what)
    try:
        gz = is_gzip(path)
        fh: IO[bytes] = gzip.open(path, "rb") if gz else open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({what}): {exc.strerror or exc}") from None
    try:
        yield fh
    except (OSError, EOFError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; a gzip stream cut short raises EOFError
        kind = "gzip data is corrupt or truncated" if gz else f"read failed: {exc}"
        raise InputError(f"{path}: cannot read ({what}): {kind}") from None
    finally:
        fh.close()


def _decode(raw: bytes, path: Path, what: str, line: int | None = None) -> str:
    if b"\x00" in raw[:_SNIFF_BYTES]:
        where = f"{path}:{line}" if line else str(path)
        raise InputError(f"{where}: binary data, not text; expected {_a(what)} file (UTF-8 text)")
    try:
        return raw.decode("utf-8-sig" if line in (None, 1) else "utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        ln = (line or 1) + before.count(b"\n")
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise InputError(f"{path}:{ln}:{col}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                         f"expected {_a(what)} file") from None


def read_text(path: str | Path, what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The whole file as text (gzip read through), refusing binary, non-UTF-8 and oversized files."""
    path = Path(path)
    with open_binary(path, what) as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise InputError(f"{path}: larger than {_mib(max_bytes)}; {_a(what)} file is a few KiB")
    return _decode(raw, path, what)


def iter_lines(path: str | Path, what: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line of a text file, streamed, each line checked like :func:`read_text`."""
    path = Path(path)
    with open_binary(path, what) as fh:
        line_no = 0
        while True:
            raw = fh.readline(max_line_bytes + 1)
            if not raw:
                return
            line_no += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise InputError(f"{path}:{line_no}: line longer than {_mib(max_line_bytes)}; {_a(what)} record is "
                                 "a few hundred bytes (is this the right file?)")
            yield line_no, _decode(raw, path, what, line_no)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup!r}")
    return out


# one decoder each (json.loads with options builds a new decoder per call: 3 us a JSON-lines row)
_STRICT = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
_LENIENT = json.JSONDecoder(parse_constant=float, object_pairs_hook=_no_duplicates)


def loads_json(text: str, file: str | Path, line: int | None = None, *, allow_nan: bool = False) -> Any:
    """Parse JSON strictly (no NaN/Infinity unless ``allow_nan``, as in hetmoe's own result files; no
    duplicate keys); errors name ``file`` and the line (``line`` when the text is one line of a
    JSON-lines file, else the line inside ``text``)."""
    where = f"{file}:{line}" if line is not None else str(file)
    try:
        return (_LENIENT if allow_nan else _STRICT).decode(text)
    except json.JSONDecodeError as exc:
        at = f"{file}:{line if line is not None else exc.lineno}"
        raise InputError(f"{at}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None


def read_json(path: str | Path, what: str, max_bytes: int = MAX_TEXT_BYTES, *, allow_nan: bool = False) -> Any:
    """A whole JSON file, read with :func:`read_text` and parsed with :func:`loads_json`."""
    return loads_json(read_text(path, what, max_bytes), path, allow_nan=allow_nan)


# ----------------------------------------------------------------------------- atomic writes

def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets under the current umask (``open`` would give it): 0o666 & ~umask."""
    return 0o666 & ~_umask()


def _host_tag() -> str:
    import hashlib

    try:
        node = os.uname().nodename
    except AttributeError:  # pragma: no cover - Windows
        node = os.environ.get("COMPUTERNAME", "")
    return hashlib.sha256(node.encode()).hexdigest()[:6]


_HOST = _host_tag()
# .NAME.~PID@HOST.XXXXXXXX.tmp (this version); .NAME.XXXXXXXX.tmp (earlier versions, no writer named)
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.~(?P<pid>\d+)@(?P<host>[0-9a-f]+)\.[a-z0-9_]{8}\.tmp$")
_LEGACY_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
LEGACY_TEMP_AGE_S = 3600.0       # an unnamed writer's temporary this old is not being written any more


def _temp_prefix(path: Path) -> str:
    return f".{path.name[:180]}.~{os.getpid()}@{_HOST}."


def _final_name(path: Path) -> Path:
    """The file a temporary stands for (``.result.json.~12@ab12cd.x1y2z3w4.tmp`` -> ``result.json``), nested
    temporaries unwrapped; any other path unchanged."""
    while (m := _TEMP_NAME.match(path.name) or _LEGACY_TEMP_NAME.match(path.name)) is not None:
        path = path.with_name(m["name"])
    return path


def write_failed(path: str | Path, exc: OSError, existed: bool | None = None) -> str:
    """One line for a write the system refused: which file, why, and what was kept."""
    import errno

    path = _final_name(Path(path))
    why = exc.strerror or str(exc)
    if exc.errno == errno.EFBIG:
        why += " (the file size limit, ulimit -f)"
    elif exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        why += " (free some space or write elsewhere with --out)"
    existed = path.exists() if existed is None else existed
    kept = (f"the earlier {path.name} is kept unchanged" if existed else
            "nothing was written to it (no partial file is left)")
    return f"{path}: cannot write: {why}; {kept}"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto ``path`` (with the umask's mode) when the block ends
    without error. An ``OSError`` in the block or the rename becomes an :class:`OutputError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{_final_name(path)}: cannot write here: {exc.strerror or exc}") from None
    os.close(fd)
    existed = _final_name(path).exists()
    try:
        try:
            yield Path(tmp)
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(write_failed(path, exc, existed)) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file object whose contents replace ``path`` atomically when the block ends without error."""
    with atomic_path(path) as tmp, open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8",
                                                                                "newline": ""})) as fh:
        yield fh


def _writer_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this host (POSIX; elsewhere every writer is taken as alive)."""
    if os.name != "posix" or pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:                     # another user's process: alive
        return False
    return False


def remove_stale_temporaries(folder: str | Path, *, depth: int = 2, name: str | None = None,
                             max_entries: int = 100_000) -> int:
    """Remove the temporaries hetmoe's writers left in ``folder`` (and ``depth`` levels of sub-folders) when
    killed: those whose writer process is gone from this host, and unnamed ones of earlier versions older
    than :data:`LEGACY_TEMP_AGE_S`. ``name``: only the temporaries of that file. Links are never followed,
    and at most ``max_entries`` entries are looked at. Returns how many were removed."""
    import time

    removed = 0
    seen = 0
    now = time.time()
    stack = [(Path(folder), 0)]
    while stack:
        here, level = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries:
                return removed
            try:
                if entry.is_dir(follow_symlinks=False):
                    if level < depth and name is None:
                        stack.append((Path(entry.path), level + 1))
                    continue
                if not entry.name.endswith(".tmp") or not entry.is_file(follow_symlinks=False):
                    continue
                m = _TEMP_NAME.match(entry.name)
                if m is not None:
                    stale = m["host"] == _HOST and _writer_gone(int(m["pid"]))
                else:
                    m = _LEGACY_TEMP_NAME.match(entry.name)
                    stale = m is not None and now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_TEMP_AGE_S
                if stale and (name is None or m["name"] == name):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
    return removed


def check_output_location(path: str | Path, option: str = "--out", *, folder: bool = True) -> Path:
    """``path`` as a Path when a command can write it: a folder (``folder``) or a file that exists or can be
    made, in a folder this process can write. Checked before a command computes, so that a bad location
    costs no work; an :class:`OutputError` otherwise. Temporaries a killed run left there are removed."""
    text = os.fspath(path)
    kind = "folder" if folder else "file"
    if not text.strip():
        raise OutputError(f"{option} {text!r}: an empty path; name the output {kind}"
                          + (f" ({option} . for the current folder)" if folder else ""))
    if "\0" in text:
        raise OutputError(f"{option} {text!r}: a path cannot hold a NUL character")
    p = Path(text)
    if not folder and (text.endswith(("/", os.sep)) or p.is_dir()):
        raise OutputError(f"{p}: is a folder; {option} names a file")
    target = p if folder else p.parent
    if os.path.lexists(target) and not os.path.exists(target):
        raise OutputError(f"{target}: a broken or looping link; {option} needs a {'folder' if folder else 'file'} "
                          "it can write")
    probe = target
    while not os.path.exists(probe) and probe != probe.parent:
        probe = probe.parent
        if os.path.lexists(probe) and not os.path.exists(probe):
            raise OutputError(f"{probe}: a broken or looping link; cannot make {target} under it")
    if not probe.is_dir():
        raise OutputError(f"{probe}: exists and is not a folder" + ("" if probe == target else
                                                                     f"; cannot make {target} under it"))
    try:
        if probe == target:
            fd, name = tempfile.mkstemp(prefix=".hetmoe-probe-", dir=probe)
            os.close(fd)
            os.unlink(name)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".hetmoe-probe-", dir=probe))
    except OSError as exc:
        how = "cannot write here" if probe == target else f"cannot be made in {probe}"
        raise OutputError(f"{target}: {how}: {exc.strerror or exc}") from None
    if probe == target:
        remove_stale_temporaries(target, name=None if folder else p.name)
    return p


# ----------------------------------------------------------------------------- numpy archives

MAX_ARRAY_BYTES = 16 * 2**30


def _read_array(fh: IO[bytes], path: Path, name: str, available: int, budget: int) -> Any:
    """One ``.npy`` stream, its header checked against the bytes ``available`` and the ``budget`` left."""
    import numpy as np

    version = np.lib.format.read_magic(fh)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(fh)
    if dtype.hasobject:
        raise InputError(f"{path}: array {name!r} holds Python objects (pickles are never loaded)")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    header = fh.tell()
    if nbytes > budget:
        raise InputError(f"{path}: array {name!r} claims {nbytes / 2**30:,.1f} GiB (shape {shape}); the limit "
                         f"is {MAX_ARRAY_BYTES / 2**30:,.0f} GiB per file")
    if header + nbytes > available:
        raise InputError(f"{path}: array {name!r} is truncated: its header claims {nbytes:,} bytes, the file "
                         f"holds {max(available - header, 0):,}")
    data = fh.read(nbytes)
    if len(data) < nbytes:
        raise InputError(f"{path}: array {name!r} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def read_npy(path: str | Path, what: str, max_array_bytes: int = MAX_ARRAY_BYTES) -> Any:
    """One ``.npy`` array, checked like the members of :func:`read_npz`."""
    path = check_file(path, what)
    try:
        with open(path, "rb") as fh:
            return _read_array(fh, path, path.name, path.stat().st_size, max_array_bytes)
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({what}): {exc}") from None


def read_npz(path: str | Path, what: str, max_array_bytes: int = MAX_ARRAY_BYTES) -> dict[str, Any]:
    """Every array of a ``.npz`` archive, each checked before it is read: no pickled objects, a header
    whose shape and dtype fit in the bytes the archive holds for it, and no more than ``max_array_bytes``
    in all."""
    import zipfile

    path = check_file(path, what)
    out: dict[str, Any] = {}
    budget = max_array_bytes
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with z.open(info) as fh:
                    out[name] = _read_array(fh, path, name, info.file_size, budget)
                budget -= out[name].nbytes
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a .npz archive (not a zip file); given as {what}") from None
    except (ValueError, EOFError, OSError, zlib.error, NotImplementedError) as exc:
        raise InputError(f"{path}: cannot read as .npz ({what}): {exc}") from None
    return out


# ----------------------------------------------------------------------------- strict JSON out

def finite_json(value: Any, *, default: Any = None, _path: str = "", _nulled: dict[str, str] | None = None) -> Any:
    """``value`` with every non-finite float (NaN, +-Infinity, numpy's included) replaced by ``None``, so that
    any strict JSON parser reads what :func:`dumps_json` writes. Objects JSON cannot hold go through ``default``
    first (as ``json.dumps(default=...)`` would). ``_nulled`` collects the dotted path of each value replaced and
    what it was (``nan``, ``inf``, ``-inf``)."""
    if isinstance(value, float) or (type(value).__module__ == "numpy" and hasattr(value, "dtype")
                                    and getattr(value.dtype, "kind", "") == "f" and not getattr(value, "shape", ())):
        x = float(value)
        if x != x or x in (float("inf"), float("-inf")):
            if _nulled is not None:
                _nulled[_path] = repr(x)
            return None
        return value if isinstance(value, float) else x
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k: finite_json(v, default=default, _path=f"{_path}.{k}" if _path else str(k), _nulled=_nulled)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v, default=default, _path=f"{_path}[{i}]", _nulled=_nulled) for i, v in enumerate(value)]
    if default is not None:
        return finite_json(default(value), default=default, _path=_path, _nulled=_nulled)
    return value       # json.dumps names the type it cannot write


def dumps_json(value: Any, *, why: dict[str, str] | None = None, default: Any = None, **kwargs: Any) -> str:
    """JSON text every strict parser reads: non-finite numbers become ``null`` (:func:`finite_json`) and the text is
    made with ``allow_nan=False``, so no ``NaN`` or ``Infinity`` can slip out. ``why``: reasons by dotted path
    (``metrics.tpot_mean_us``) for values that may be undefined; given (even empty) on a mapping, the text gets a
    ``null_why`` mapping beside the data naming every value written as null and why (the reason given, else what
    the value was). Every JSON file hetmoe writes goes through here (or :func:`write_json`)."""
    nulled: dict[str, str] = {}
    clean = finite_json(value, default=default, _nulled=nulled)
    if why is not None and isinstance(clean, dict) and nulled:
        clean = {**clean, "null_why": {p: why.get(p) or f"not a finite number ({was})" for p, was in nulled.items()}}
    return json.dumps(clean, allow_nan=False, default=default, **kwargs)


def write_json(path: str | Path, value: Any, **kwargs: Any) -> Path:
    """Write ``value`` as strict JSON (:func:`dumps_json`; a final newline) to ``path`` atomically."""
    return write_text(path, dumps_json(value, **kwargs) + "\n")
