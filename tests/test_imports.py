"""What a collector that only ingests keeps in memory: the OTLP protobuf
messages, the dashboard's templates, the HTTP client and numpy (for reads)
load on first use."""

from __future__ import annotations

import json
import os
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


_INGEST_PROBE = """
import json, sys, time
from pathlib import Path
from starlette.testclient import TestClient
from perfpulse.server import Settings, create_app
app = create_app(Settings(Path(sys.argv[1])))
now = time.time()
batch = {"batch_id": "b1", "resource": {"service": "s"}, "events": [
    {"kind": "http", "ts": now - i, "route": "/r", "method": "GET", "status": 200,
     "duration_ms": 1.0 + i} for i in range(100)]}
with TestClient(app) as client:
    sent = client.post("/api/v1/events", json=batch, headers={"Authorization": "Bearer ik"})
    rows = 0.0
    for _ in range(200):
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("perfpulse_writer_rows_total "):
                rows = float(line.split()[1])
        if rows:
            break
        time.sleep(0.05)
    after_ingest = "numpy" in sys.modules
    answer = client.get("/api/v1/percentiles", params={"metric": "http.server.duration",
        "q": "0.5", "from": now - 3600, "to": now + 60}, headers={"Authorization": "Bearer rt"})
print(json.dumps({"sent": sent.status_code, "rows": rows, "after_ingest": after_ingest,
                  "answer": answer.json(), "after_read": "numpy" in sys.modules}))
"""


def test_ingest_and_storage_run_without_numpy_and_the_first_read_loads_it(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PERFPULSE_INGEST_KEY": "ik", "PERFPULSE_READ_TOKEN": "rt"}
    out = subprocess.run(
        [sys.executable, "-c", _INGEST_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert (seen["sent"], seen["rows"]) == (202, 100)  # stored by the writer
    assert seen["after_ingest"] is False
    (group,) = seen["answer"]["groups"]
    assert group["count"] == 100
    assert abs(group["quantiles"]["0.5"] - 50.0) <= 0.5  # 1..100 ms: the median, within 1 %
    assert seen["after_read"] is True
