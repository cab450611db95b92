"""Load generators: ``wrk`` when installed, else a raw asyncio HTTP/1.1 client.

Every request body is ``prefix + unique id + suffix``, from pre-encoded bytes:
each batch or beacon gets its own ``batch_id``/``id`` (the collector stores a
retried id once, which would hide the work) at almost no client cost, and the
suffixes (the events) cycle through a few variants so the data is not one
batch repeated. The generator runs in its own process; on a 2-core machine it
still competes with the server for CPU, which is why ``wrk`` (C, one thread) is
preferred and why each result reports the cores each side used.

Example::

    t = Template("/api/v1/events", {"Authorization": "Bearer k"}, b'{"batch_id":"', (b'",...}',))
    result = blast(server.base, t, connections=16, duration_s=20)
    result.ok_per_s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.servers import child_env

_WRK_SCRIPT = r"""
local counter, threads, n = 0, 0, 0
local prefix, path, run
local suffixes = {}

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local function slurp(name)
  local f = assert(io.open(name, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  prefix, n, path, run = slurp(args[1]), tonumber(args[3]), args[4], args[5]
  for i = 1, n do
    suffixes[i] = slurp(args[2] .. "." .. (i - 1))
  end
end

function request()
  counter = counter + 1
  local body = prefix .. run .. "-" .. tid .. "-" .. counter .. suffixes[counter % n + 1]
  return wrk.format("POST", path, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\nRESULT {\"requests\": %d, \"duration_us\": %d, \"connect\": %d, \"read\": %d, " ..
    "\"write\": %d, \"status\": %d, \"timeout\": %d, \"p50_us\": %d, \"p99_us\": %d}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True, slots=True)
class Template:
    """POSTs whose bodies are ``prefix + <unique id> + suffixes[i % len(suffixes)]``."""

    path: str
    headers: dict[str, str]
    prefix: bytes
    suffixes: tuple[bytes, ...]

    def body(self, unique: str, i: int = 0) -> bytes:
        return self.prefix + unique.encode() + self.suffixes[i % len(self.suffixes)]

    @property
    def size(self) -> int:
        """Average body size in bytes."""
        return len(self.prefix) + 24 + sum(map(len, self.suffixes)) // len(self.suffixes)

    def save(self, d: Path) -> None:
        (d / "prefix").write_bytes(self.prefix)
        for i, suffix in enumerate(self.suffixes):
            (d / f"suffix.{i}").write_bytes(suffix)

    @classmethod
    def load(cls, d: Path, path: str, headers: dict[str, str], n: int) -> Template:
        suffixes = tuple((d / f"suffix.{i}").read_bytes() for i in range(n))
        return cls(path, headers, (d / "prefix").read_bytes(), suffixes)


@dataclass(frozen=True, slots=True)
class LoadResult:
    tool: str
    connections: int
    requests: int
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.errors

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s


def has_wrk() -> bool:
    return shutil.which("wrk") is not None


def blast(
    base: str, t: Template, *, connections: int, duration_s: float, tool: str = "auto"
) -> LoadResult:
    """Closed-loop load: ``connections`` keep-alive connections, each sending the
    next request as soon as the last answer arrived, for ``duration_s``."""
    use_wrk = tool == "wrk" or (tool == "auto" and has_wrk())
    with tempfile.TemporaryDirectory(prefix="perfpulse-load-") as tmp:
        d = Path(tmp)
        t.save(d)
        run = uuid.uuid4().hex[:12]
        if use_wrk:
            return _wrk(base, t, d, run, connections, duration_s)
        return _python(base, t, d, run, connections, duration_s)


def _wrk(base: str, t: Template, d: Path, run: str, conns: int, duration_s: float) -> LoadResult:
    script = d / "post.lua"
    script.write_text(_WRK_SCRIPT)
    argv = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
    ]
    for name, value in t.headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv += [base, "--", str(d / "prefix"), str(d / "suffix"), str(len(t.suffixes)), t.path, run]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    r = json.loads(line.removeprefix("RESULT "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return LoadResult(
        "wrk",
        conns,
        r["requests"],
        errors,
        r["duration_us"] / 1e6,
        r["p50_us"] / 1e3,
        r["p99_us"] / 1e3,
    )


def _python(base: str, t: Template, d: Path, run: str, conns: int, duration_s: float) -> LoadResult:
    argv = [
        sys.executable,
        "-m",
        "bench.load",
        base,
        t.path,
        json.dumps(t.headers),
        str(d),
        str(len(t.suffixes)),
        run,
        str(conns),
        str(duration_s),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=child_env()).stdout
    return LoadResult(**json.loads(out.strip().splitlines()[-1]))


# --- the asyncio client (runs as ``python -m bench.load ...``) ---------------------


async def _worker(
    host: str,
    port: int,
    head: bytes,
    t: Template,
    run: str,
    wid: int,
    stop_at: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    try:
        while time.perf_counter() < stop_at:
            n += 1
            body = t.body(f"{run}-{wid}-{n}", n)
            started = time.perf_counter()
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not status_line.split(b" ")[1].startswith(b"2"):
                errors[0] += 1
    finally:
        writer.close()


async def _main(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.base)
    headers = json.loads(args.headers)
    t = Template.load(Path(args.dir), args.path, headers, args.n)
    head = f"POST {t.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode()
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    head += b"Content-Length: "
    latencies: list[float] = []
    errors = [0]
    started = time.perf_counter()
    stop_at = started + args.duration
    await asyncio.gather(
        *(
            _worker(
                parts.hostname or "",
                parts.port or 80,
                head,
                t,
                args.run,
                i,
                stop_at,
                latencies,
                errors,
            )
            for i in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pick(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else 0.0
        )

    result = LoadResult(
        "python-asyncio",
        args.connections,
        len(latencies),
        errors[0],
        elapsed,
        pick(0.5),
        pick(0.99),
    )
    return asdict(result)


def main() -> None:
    p = argparse.ArgumentParser(description="closed-loop POST load (the fallback for wrk)")
    for name in ("base", "path", "headers", "dir"):
        p.add_argument(name)
    p.add_argument("n", type=int)
    p.add_argument("run")
    p.add_argument("connections", type=int)
    p.add_argument("duration", type=float)
    args = p.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(_main(args))))


if __name__ == "__main__":
    main()
