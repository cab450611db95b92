"""``perfpulse serve`` moves what its start-up made out of the garbage collector's way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from perfpulse.server import GC_YOUNG_THRESHOLD

_PROBE = """
import gc, json, sys
from pathlib import Path
default = gc.get_threshold()[0]
from starlette.testclient import TestClient
from perfpulse.server import Settings, create_app
app = create_app(Settings(Path(sys.argv[1])), freeze_gc=sys.argv[2] == "1")
before = gc.get_freeze_count()
with TestClient(app) as client:
    assert client.get("/healthz").status_code == 200
    serving = gc.get_freeze_count()
    young = gc.get_threshold()[0]
print(json.dumps({"before": before, "serving": serving, "young": young, "default": default}))
"""


def _freeze_counts(data_dir: Path, freeze_gc: bool) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _PROBE, str(data_dir), "1" if freeze_gc else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    counts: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return counts


def test_a_started_collector_freezes_what_start_up_made(tmp_path: Path) -> None:
    # a full collection walked every object of the libraries and the storage (57 ms
    # each under beacon load, the event loop stalled); frozen, they are not walked;
    # and the youngest generation is collected less often than Python's default
    frozen = _freeze_counts(tmp_path / "a", freeze_gc=True)
    assert frozen["before"] == 0 and frozen["serving"] > 10_000
    assert frozen["young"] == GC_YOUNG_THRESHOLD > frozen["default"]
    # an app embedded in another process leaves that process's collector alone
    embedded = _freeze_counts(tmp_path / "b", freeze_gc=False)
    assert embedded["before"] == embedded["serving"] == 0
    assert embedded["young"] == embedded["default"]
