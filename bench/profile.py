"""Sampling profiles of a server process with py-spy, when it is installed.

py-spy is not a dependency of perfpulse (``pip install py-spy`` into the
virtualenv to get profiles in the results). :func:`record` samples a running
process for a while in py-spy's raw (collapsed stacks) format, without pausing
it; :func:`summarize` turns that into a Markdown table of where the samples were::

    with record(server.pid, 10, out) as ok:
        blast(...)
    print(summarize(out))
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.report import table


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def record(pid: int, seconds: float, out: Path, rate: int = 100) -> Iterator[bool]:
    """Sample ``pid`` for ``seconds``; yields whether a profiler is running."""
    exe = py_spy()
    if exe is None:
        yield False
        return
    argv = [exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate),
            "-f", "raw", "--threads", "--nonblocking", "-o", str(out)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield True
    finally:
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_LINE = re.compile(r":\d+\)")


def summarize(raw: Path, top: int = 12) -> str:
    """Threads, then functions by inclusive and by self share of the samples."""
    if not raw.exists():
        return "(no profile: py-spy produced nothing)"
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        name = frames[0].split(": ", 1)[-1] if ": " in frames[0] else frames[0]
        threads[name] += n
        for f in set(frames[1:]):
            inclusive[f] += n
        own[frames[-1]] += n
    if not total:
        return "(no samples)"
    # Frames every request or thread passes through say nothing about where time goes.
    skip = ("threading.py", "runpy", "<module>", "perfpulse/cli.py", "asyncio/runners.py",
            "starlette/", "uvicorn/", "perfpulse/server.py")  # fmt: skip
    incl = [(f, n) for f, n in inclusive.most_common() if not any(s in f for s in skip)][:top]
    rows = [["thread", name, f"{n / total:.0%}"] for name, n in threads.most_common(4)]
    rows += [["inclusive", f"`{f}`", f"{n / total:.0%}"] for f, n in incl]
    rows += [["self", f"`{f}`", f"{n / total:.0%}"] for f, n in own.most_common(top)]
    return table(["", "where", "share of samples"], rows)
