"""What a collector that only ingests keeps in memory: the OTLP protobuf
messages, the dashboard's templates and the HTTP client load on first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LAZY = ("google.protobuf", "opentelemetry.proto", "jinja2", "httpx")

_PROBE = """
import json, sys
from pathlib import Path
from starlette.testclient import TestClient
from perfpulse.server import Settings, create_app
app = create_app(Settings(Path(sys.argv[1])))
lazy = {LAZY!r}
def loaded():
    return sorted(m for m in lazy if m in sys.modules)
with TestClient(app) as client:
    started = loaded()
    assert client.get("/healthz").status_code == 200
    otlp = client.post("/v1/traces", content=b"", headers={{"Authorization": "Bearer x"}})
    after_otlp_refused = loaded()
print(json.dumps({{"started": started, "otlp_status": otlp.status_code,
                  "after_otlp_refused": after_otlp_refused}}))
"""


def test_a_started_collector_has_not_loaded_what_only_otlp_and_pages_need(
    tmp_path: Path,
) -> None:
    # starlette's TestClient imports httpx itself: count it only from the server's side
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(LAZY=LAZY[:3]), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["started"] == []
    # a refused OTLP request (wrong key) does not load protobuf either
    assert loaded["otlp_status"] == 403
    assert loaded["after_otlp_refused"] == []


def test_importing_the_server_and_cli_loads_none_of_them() -> None:
    code = "import sys, perfpulse.server, perfpulse.cli; print(sorted(m for m in %r if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code % (LAZY,)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
