"""The plain-data protocol between the grader and a submission's sandbox.

A message is a frame: a fixed prefix (magic, header length, payload length), a JSON header and a
payload of raw tensor bytes. The header holds one value tree whose nodes are JSON scalars or
objects with exactly one tag: ``{"$list": [...]}``, ``{"$tuple": [...]}``,
``{"$dict": [[key, value], ...]}``, ``{"$tensor": i}`` (the i-th entry of the header's tensor
table: dtype, shape, requires_grad, offset and length in the payload) and, from the grader only,
``{"$built": recipe, "params": {...}}`` (a callable described by a registered recipe).

Nothing is ever unpickled. Everything read is validated before it is used: the frame's lengths
against caps before anything is allocated, every node's tag, the tree's depth and size, every
tensor's dtype (a fixed list), shape and byte count.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from dataclasses import dataclass

from .calls import Built, is_tensor

MAGIC = b"MLG1"
PREFIX = struct.Struct(">4sIQ")   # magic, header bytes, payload bytes
DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128",
               "int8", "int16", "int32", "int64", "uint8", "bool")


class ProtocolError(ValueError):
    """A frame or a value that breaks the protocol (malformed, too large, wrong type)."""


class Timeout(TimeoutError):
    """The other side did not answer in time."""


class Closed(EOFError):
    """The other side closed its end (it exited, or was killed)."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one message may hold; the reader enforces them before allocating."""

    header_bytes: int = 4 << 20
    payload_bytes: int = 64 << 20
    depth: int = 32
    nodes: int = 200_000
    string_chars: int = 100_000
    ndim: int = 16


DEFAULT = Limits()


# --- values to frames --------------------------------------------------------------------------

def pack(value, allow_built: bool = False) -> bytes:
    """One frame holding ``value``. Raises ProtocolError for anything that is not plain data."""
    tensors, chunks, size, count = [], [], 0, 0

    def node(v, depth):
        nonlocal size, count
        count += 1
        if depth > DEFAULT.depth:
            raise ProtocolError(f"the value is nested more than {DEFAULT.depth} levels deep")
        if count > DEFAULT.nodes:
            raise ProtocolError(f"the value holds more than {DEFAULT.nodes:,} numbers, strings and containers "
                                "(send big data as tensors)")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            if abs(v) >= 2 ** 63:
                raise ProtocolError("an integer beyond 64 bits")
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"$float": repr(v)}
        if is_tensor(v):   # (torch is imported: a tensor exists)
            import torch

            t = v.detach()
            name = str(t.dtype).removeprefix("torch.")
            if t.layout != torch.strided or name not in DTYPE_NAMES or type(t) is not torch.Tensor:
                raise ProtocolError(f"a {type(v).__name__} of layout {t.layout} and dtype {t.dtype} cannot be sent")
            t = t.to("cpu").contiguous()
            data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            tensors.append({"dtype": name, "shape": list(t.shape), "requires_grad": bool(v.requires_grad),
                            "offset": size, "nbytes": len(data)})
            chunks.append(data)
            size += len(data)
            return {"$tensor": len(tensors) - 1}
        if isinstance(v, tuple):
            return {"$tuple": [node(x, depth + 1) for x in v]}
        if isinstance(v, list):
            return {"$list": [node(x, depth + 1) for x in v]}
        if isinstance(v, dict):
            items = []
            for k, x in v.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise ProtocolError(f"dict keys must be strings or integers, got {type(k).__name__}")
                items.append([k, node(x, depth + 1)])
            return {"$dict": items}
        if allow_built and isinstance(v, Built):
            return {"$built": v.recipe, "params": node(dict(v.params), depth + 1)}
        raise ProtocolError(f"a value of type {type(v).__name__} cannot be sent (plain data and tensors only)")

    body = node(value, 0)
    header = json.dumps({"body": body, "tensors": tensors}, allow_nan=False).encode()
    if len(header) > DEFAULT.header_bytes or size > DEFAULT.payload_bytes:
        raise ProtocolError(f"the message is too large ({len(header) + size:,} bytes)")
    return PREFIX.pack(MAGIC, len(header), size) + header + b"".join(chunks)


def needs_torch(value) -> bool:
    """Whether a value holds tensors or described callables (whose recipes build with torch)."""
    if is_tensor(value) or isinstance(value, Built):
        return True
    if isinstance(value, dict):
        return any(needs_torch(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(needs_torch(v) for v in value)
    return False


# --- frames to values --------------------------------------------------------------------------

def unpack(header: bytes, payload: bytes, limits: Limits = DEFAULT, allow_built: bool = False,
           grad_flags: bool = True):
    """The value of one frame's header and payload, validated node by node. ``grad_flags``: keep
    the senders' requires_grad flags (the grader's inputs), or drop them (the sandbox's outputs)."""
    try:
        document = json.loads(header.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ProtocolError(f"the header is not valid JSON ({type(err).__name__})") from None
    if not isinstance(document, dict) or set(document) != {"body", "tensors"} or not isinstance(
            document["tensors"], list):
        raise ProtocolError("the header must be an object with a body and a tensor table")
    if len(document["tensors"]) > limits.nodes:
        raise ProtocolError("too many tensors in one message")
    tensors = [_tensor(entry, payload, limits, grad_flags) for entry in document["tensors"]]
    count = 0

    def node(v, depth):
        nonlocal count
        count += 1
        if count > limits.nodes or depth > limits.depth:
            raise ProtocolError("the value is too large or too deeply nested")
        if v is None or isinstance(v, (bool, int)):
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2 ** 63:
                raise ProtocolError("an integer beyond 64 bits")
            return v
        if isinstance(v, float):
            return v
        if isinstance(v, str):
            if len(v) > limits.string_chars:
                raise ProtocolError(f"a string longer than {limits.string_chars:,} characters")
            return v
        tags = [k for k in v if k != "params"] if isinstance(v, dict) else []
        if len(tags) != 1 or len(v) != (2 if tags[0] == "$built" else 1):
            raise ProtocolError("a node must be a scalar or an object with one tag")
        tag, inner = tags[0], v[tags[0]]
        if tag in ("$list", "$tuple") and isinstance(inner, list):
            items = [node(x, depth + 1) for x in inner]
            return items if tag == "$list" else tuple(items)
        if tag == "$dict" and isinstance(inner, list):
            out = {}
            for pair in inner:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
                        and not isinstance(pair[0], bool)):
                    raise ProtocolError("a dict entry must be a [key, value] pair with a string or integer key")
                out[pair[0]] = node(pair[1], depth + 1)
            return out
        if tag == "$tensor" and isinstance(inner, int) and not isinstance(inner, bool) and 0 <= inner < len(tensors):
            return tensors[inner]
        if tag == "$float" and inner in ("nan", "inf", "-inf"):
            return float(inner)
        if tag == "$built" and allow_built and isinstance(inner, str) and "params" in v:
            params = node(v["params"], depth + 1)
            if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
                raise ProtocolError("a built callable's params must be a dict with string keys")
            return Built(inner, **params)
        raise ProtocolError(f"unknown or malformed node {tag!r}")

    return node(document["body"], 0)


def _refuse_constant(name):
    raise ValueError(f"{name} is not allowed")


def _tensor(entry, payload: bytes, limits: Limits, grad_flags: bool):
    import torch

    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "requires_grad", "offset", "nbytes"}:
        raise ProtocolError("a tensor entry needs dtype, shape, requires_grad, offset and nbytes")
    if entry["dtype"] not in DTYPE_NAMES:
        raise ProtocolError(f"tensor dtype {str(entry['dtype'])[:40]!r} is not one of {', '.join(DTYPE_NAMES)}")
    dtype, shape = getattr(torch, entry["dtype"]), entry["shape"]
    if not (isinstance(shape, list) and len(shape) <= limits.ndim
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2 ** 40 for n in shape)):
        raise ProtocolError(f"tensor shape {str(shape)[:80]} is not a list of at most {limits.ndim} sizes")
    offset, nbytes = entry["offset"], entry["nbytes"]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (offset, nbytes)):
        raise ProtocolError("tensor offset and nbytes must be non-negative integers")
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if numel * itemsize != nbytes or offset + nbytes > len(payload):
        raise ProtocolError(f"tensor of shape {shape} and dtype {entry['dtype']} does not match its {nbytes} bytes")
    if numel == 0:
        t = torch.empty(shape, dtype=dtype)
    else:
        t = torch.frombuffer(bytearray(payload[offset:offset + nbytes]), dtype=dtype).reshape(shape)
    if grad_flags and entry["requires_grad"] is True and (t.is_floating_point() or t.is_complex()):
        t.requires_grad_(True)
    return t


# --- frames over file descriptors, with deadlines ----------------------------------------------

def send(fd: int, value, deadline: float | None = None, allow_built: bool = False) -> None:
    write_all(fd, pack(value, allow_built), deadline)


def receive(fd: int, deadline: float | None = None, limits: Limits = DEFAULT, allow_built: bool = False,
            grad_flags: bool = True):
    magic, header_bytes, payload_bytes = PREFIX.unpack(read_exact(fd, PREFIX.size, deadline))
    if magic != MAGIC:
        raise ProtocolError("the frame does not start with the protocol's magic bytes")
    if header_bytes > limits.header_bytes or payload_bytes > limits.payload_bytes:
        raise ProtocolError(f"the frame announces {header_bytes + payload_bytes:,} bytes, more than allowed")
    header = read_exact(fd, header_bytes, deadline)
    payload = read_exact(fd, payload_bytes, deadline)
    return unpack(header, payload, limits, allow_built, grad_flags)


def _wait(fd: int, deadline: float | None, write: bool) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Timeout("no answer in time")
    ready = select.select([], [fd], [], remaining) if write else select.select([fd], [], [], remaining)
    if not (ready[1] if write else ready[0]):
        raise Timeout("no answer in time")


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytes:
    chunks, got = [], 0
    while got < n:
        _wait(fd, deadline, write=False)
        try:
            chunk = os.read(fd, min(n - got, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise Closed("the other side closed the channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes, deadline: float | None = None) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, deadline, write=True)
        try:
            written = os.write(fd, view[:1 << 20])
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise Closed("the other side closed the channel") from None
        view = view[written:]
