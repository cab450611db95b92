"""``perfpulse budget check --build`` as a subprocess: sizes raw, gzip and brotli,
each exit code, and the JUnit XML and Markdown it writes."""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import brotli
import pytest

from perfpulse.budgets.config import parse_budgets
from perfpulse.budgets.static import check_static, scan


@pytest.fixture
def build(tmp_path: Path) -> Path:
    rng = random.Random(3)
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    words = ["const", "function", "return", "perfpulse", "budget", "value", "=>", "{", "}"]
    js = " ".join(rng.choice(words) for _ in range(20_000)).encode()
    (root / "assets" / "app-3f2a.js").write_bytes(js)
    (root / "assets" / "vendor.mjs").write_bytes(js[:30_000])
    (root / "assets" / "app-3f2a.js.map").write_bytes(b"x" * 500_000)  # excluded
    (root / "assets" / "site.css").write_bytes(b"body { margin: 0 }\n" * 2000)
    (root / "img").mkdir()
    (root / "img" / "hero.webp").write_bytes(rng.randbytes(40_000))  # incompressible
    (root / "fonts.woff2").write_bytes(rng.randbytes(20_000))
    (root / "index.html").write_bytes(b"<!doctype html><title>shop</title>" * 50)
    return root


def sizes(path: Path) -> tuple[int, int, int]:
    data = path.read_bytes()
    return len(data), len(gzip.compress(data, 9, mtime=0)), len(brotli.compress(data, quality=11))


def run(tmp_path: Path, config: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    cfg = tmp_path / "perfpulse-budgets.yaml"
    cfg.write_text(config)
    junit = tmp_path / "budgets.xml"
    junit.unlink(missing_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perfpulse.cli",
            "budget",
            "check",
            "--config",
            str(cfg),
            "--junit",
            str(junit),
            "--markdown",
            str(tmp_path / "budgets.md"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, junit


def cases(junit: Path) -> dict[str, ET.Element]:
    root = ET.parse(junit).getroot()
    return {c.attrib["name"]: c for c in root.iter("testcase")}


def test_sizes_per_type_and_file_match_gzip_and_brotli(build: Path) -> None:
    budgets = parse_budgets(
        "resources:\n  - {type: script, size: 1MiB, count: 5}\n  - {type: total, size: 2MiB}\n"
        "files:\n  - {glob: 'assets/app-*.js', size: 1KiB, compression: brotli}\n"
        "static: {compression: gzip}\n"
    )
    files = {f.path: f for f in scan(build, budgets)}
    assert "assets/app-3f2a.js.map" not in files
    assert files["assets/vendor.mjs"].type == "script" and files["fonts.woff2"].type == "font"
    assert files["img/hero.webp"].type == "image" and files["index.html"].type == "document"
    app = build / "assets" / "app-3f2a.js"
    assert (
        files["assets/app-3f2a.js"].raw,
        files["assets/app-3f2a.js"].gzip,
        files["assets/app-3f2a.js"].brotli,
    ) == sizes(app)
    results = {r.name: r for r in check_static(list(files.values()), budgets)}
    script_gz = sizes(app)[1] + sizes(build / "assets" / "vendor.mjs")[1]
    assert results["script size (gzip)"].measured == script_gz
    assert results["script count"].measured == 2 and results["script count"].status == "pass"
    total = sum(f.gzip for f in files.values())
    assert results["total size (gzip)"].measured == total
    file_result = results["file assets/app-3f2a.js (brotli)"]
    assert file_result.measured == sizes(app)[2] and file_result.status == "fail"


def test_exit_0_when_all_pass_with_junit_and_markdown(tmp_path: Path, build: Path) -> None:
    done, junit = run(
        tmp_path,
        "resources:\n  - {type: script, size: 200KiB, count: 3}\n  - {type: image, size: 50KiB}\n"
        "  - {type: total, size: 1MiB, count: 10}\n",
        "--build",
        str(build),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "budgets passed: 5 passed, 0 failed, 0 skipped" in done.stdout
    root = ET.parse(junit).getroot()
    assert root.attrib["tests"] == "5" and root.attrib["failures"] == "0"
    got = cases(junit)
    assert set(got) == {
        "script size (gzip)",
        "script count",
        "image size (gzip)",
        "total size (gzip)",
        "total count",
    }
    assert all(c.find("failure") is None for c in got.values())
    assert got["script count"].attrib["classname"] == "budgets.static"
    md = (tmp_path / "budgets.md").read_text()
    assert md.startswith("## perfpulse budgets")
    assert "| image size (gzip) | static | 39." in md and "✅ pass" in md


def test_exit_1_on_a_breach_names_it_in_junit(tmp_path: Path, build: Path) -> None:
    hero_br = sizes(build / "img" / "hero.webp")[2]
    done, junit = run(
        tmp_path,
        "resources:\n  - {type: stylesheet, size: 10KiB}\n"
        "files:\n  - {glob: 'img/*', size: 30KiB, compression: brotli}\n"
        "  - {glob: 'nothing/*.js', size: 1KiB}\n",
        "--build",
        str(build),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "budgets FAILED: 1 passed, 1 failed, 1 skipped" in done.stdout
    got = cases(junit)
    failure = got["file img/hero.webp (brotli)"].find("failure")
    assert failure is not None
    assert failure.attrib["message"] == f"{hero_br / 1024:.1f} KiB against a limit of 30.0 KiB"
    skipped = got["file nothing/*.js (gzip)"].find("skipped")
    assert skipped is not None and skipped.attrib["message"] == "no file matches"
    assert got["stylesheet size (gzip)"].find("failure") is None
    assert "❌ fail" in (tmp_path / "budgets.md").read_text()


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        (
            "resources:\n  - {type: scripts, size: 1KiB}\n",
            ["--build", "B"],
            "perfpulse-budgets.yaml:2:12: resources: 'type' must be one of",
        ),
        (
            "resources:\n  - {type: script, size: 12 parsecs}\n",
            ["--build", "B"],
            "resources: 'size': bad size '12 parsecs'",
        ),
        ("resources: []\n", [], "give --build DIR, --url URL or both"),
        ("resources: []\n", ["--build", "B", "--baseline", "release=1"], "--baseline needs"),
        ("resources: []\n", ["--build", "/nonexistent/dist"], "is not a folder"),
    ],
)
def test_exit_2_on_usage_or_config_errors(
    tmp_path: Path, build: Path, config: str, args: list[str], message: str
) -> None:
    done, junit = run(tmp_path, config, *[str(build) if a == "B" else a for a in args])
    assert done.returncode == 2
    assert message in done.stderr
    assert not junit.exists()
