"""Reads step ranges of the store's arrays straight from their chunk files, without zarr's event loop.

zarr 3 runs every open and every read through its own event-loop thread. Opening a 200-step
episode's array and reading it back costs ~7 ms that way on a busy 2-core box, where reading the
chunk file and decoding it take ~0.3 ms; a restarted learner re-reads thousands of such arrays
(bench/learner_reread.py). So ReplayReader.read takes this path for arrays in the layout
ReplayWriter writes: a regular chunk grid split along steps only, default chunk keys, and the
`bytes` (little-endian) codec optionally followed by `blosc`. Anything else — another codec,
sharding, a transformer — gives None from `ChunkedArray.open`, and the reader uses zarr.

Like zarr, a chunk file that does not exist reads as the fill value. Files are replaced atomically
by the writer (replay/atomic.py), so a read sees a chunk's old or new bytes, never half of them.

On an object store the reader fetches the chunk objects itself (all keys' chunks in one concurrent
round, replay/location.py) and hands them to `assemble`: zarr would spend several requests per
array on checks and metadata (bench/s3_store.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import Blosc

from replay.schema import StoreError

_BLOSC = Blosc()  # decoding reads cname/shuffle/typesize from each chunk's own header
_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class ChunkedArray:
    def __init__(self, directory: Path | str, dtype: np.dtype, chunk_shape: tuple[int, ...], separator: str,
                 blosc: bool, fill: Any) -> None:
        self.directory = directory  # a Path, or the array's key on an object store (for messages)
        self.dtype = dtype
        self.chunk_shape = chunk_shape
        self.separator = separator
        self.blosc = blosc
        self.fill = fill
        self._chunk_bytes = math.prod(chunk_shape) * dtype.itemsize

    @classmethod
    def open(cls, directory: Path) -> ChunkedArray | None:
        """The array in `directory` if its layout is one this reader decodes; None otherwise
        (also when it has no readable zarr.json: zarr then gives the error)."""
        try:
            raw = (directory / "zarr.json").read_bytes()
        except OSError:
            return None
        return cls.from_document(directory, raw)

    @classmethod
    def from_document(cls, where: Path | str, raw: bytes | None) -> ChunkedArray | None:
        """The array whose zarr.json holds `raw` (None: missing) if this reader decodes its layout."""
        try:
            meta = json.loads(raw) if raw is not None else None
        except ValueError:
            return None
        if not isinstance(meta, dict):
            return None
        try:
            return cls._from_meta(where, meta)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    @classmethod
    def _from_meta(cls, directory: Path | str, meta: dict[str, Any]) -> ChunkedArray | None:
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array" or meta.get("storage_transformers"):
            return None
        grid, keys = meta["chunk_grid"], meta["chunk_key_encoding"]
        if grid.get("name") != "regular" or keys.get("name") != "default":
            return None
        shape = tuple(int(n) for n in meta["shape"])
        chunks = tuple(int(n) for n in grid["configuration"]["chunk_shape"])
        if len(shape) != len(chunks) or not shape or chunks[1:] != shape[1:] or chunks[0] < 1:
            return None  # only chunked along steps
        codecs = meta["codecs"]
        if not codecs or codecs[0].get("name") != "bytes" or any(c.get("name") != "blosc" for c in codecs[1:]):
            return None
        if len(codecs) > 2:
            return None
        if not isinstance(meta["data_type"], str):
            return None
        dtype = np.dtype(meta["data_type"])
        if dtype.kind not in "biuf":
            return None
        endian = (codecs[0].get("configuration") or {}).get("endian", "little")
        if dtype.itemsize > 1 and endian != "little":
            return None
        dtype = dtype.newbyteorder("<")
        fill = meta.get("fill_value", 0)
        fill = _FLOATS.get(fill, fill) if isinstance(fill, str) else fill
        if not isinstance(fill, bool | int | float):
            return None
        separator = (keys.get("configuration") or {}).get("separator", "/")
        return cls(directory, dtype, chunks, separator, len(codecs) == 2, fill)

    def chunk_keys(self, start: int, stop: int) -> list[str]:
        """The chunk keys (relative to the array) holding steps [start, stop)."""
        n = self.chunk_shape[0]
        return [self._key(c) for c in range(start // n, -(-stop // n))] if stop > start else []

    def read(self, start: int, stop: int) -> np.ndarray:
        """Steps [start, stop) from the chunk files (the caller clips to the committed length)."""
        assert isinstance(self.directory, Path)
        raws = {}
        for key in self.chunk_keys(start, stop):
            try:
                raws[key] = (self.directory / key).read_bytes()
            except FileNotFoundError:
                raws[key] = None
        return self.assemble(start, stop, raws)

    def assemble(self, start: int, stop: int, raws: Mapping[str, bytes | None]) -> np.ndarray:
        """Steps [start, stop) decoded from the chunks `chunk_keys(start, stop)` named (None: absent)."""
        n = self.chunk_shape[0]
        out = np.empty((max(0, stop - start), *self.chunk_shape[1:]), self.dtype)
        for c in range(start // n, -(-stop // n)) if stop > start else ():
            lo, hi = max(start, c * n), min(stop, (c + 1) * n)
            dest = out[lo - start : hi - start]
            whole = hi - lo == n
            chunk = self._decode(c, raws[self._key(c)], dest if whole else None)
            if chunk is None:
                dest[...] = self.fill
            elif not whole:
                dest[...] = chunk[lo - c * n : hi - c * n]
        return out

    def _key(self, index: int) -> str:
        return self.separator.join(["c", str(index), *("0" * (len(self.chunk_shape) - 1))])

    def _decode(self, index: int, raw: bytes | None, into: np.ndarray | None) -> np.ndarray | None:
        """Chunk `index` decoded (into `into` when given, a whole chunk); None if it has no file."""
        if raw is None:
            return None
        try:
            if self.blosc:
                target = into if into is not None else np.empty(self.chunk_shape, self.dtype)
                if len(raw) < 16 or int.from_bytes(raw[4:8], "little") != self._chunk_bytes:
                    raise ValueError(f"holds {int.from_bytes(raw[4:8], 'little')} bytes")
                _BLOSC.decode(raw, out=target)
                return target
            if len(raw) != self._chunk_bytes:
                raise ValueError(f"holds {len(raw)} bytes")
            chunk = np.frombuffer(raw, self.dtype).reshape(self.chunk_shape)
        except (ValueError, RuntimeError) as exc:
            where = f"{self.directory}/{self._key(index)}"
            raise StoreError(f"chunk {where} is corrupt: {exc} (expected {self._chunk_bytes})") from None
        if into is not None:
            into[...] = chunk
        return chunk
