"""Budgets against a static build folder: file sizes raw, gzip and brotli.

Every file under the folder (less ``exclude`` globs, ``*.map`` by default) gets
a type from ``static.types`` globs, else from its extension (``.js`` script,
``.css`` stylesheet, images, fonts, ``.html`` document, audio/video media,
anything else other) and three sizes: raw bytes, gzip (level 9) and brotli
(quality 11) — what a server sending precompressed assets transfers. Resource
budgets add up a type's files (``total`` adds up all of them) in the file's
compression (``static.compression``, gzip by default); file budgets check each
file matching a glob. Globs are shell-style on the path relative to the folder
(``*`` also matches ``/``). Example::

    build = scan(Path("dist"), budgets)
    for result in check_static(build, budgets): ...
"""

from __future__ import annotations

import fnmatch
import gzip
from dataclasses import dataclass
from pathlib import Path

import brotli

from perfpulse.budgets.config import Budgets
from perfpulse.budgets.report import Result

EXTENSIONS = {
    "script": (".js", ".mjs", ".cjs"),
    "stylesheet": (".css",),
    "image": (".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".svg", ".ico", ".bmp"),
    "font": (".woff", ".woff2", ".ttf", ".otf", ".eot"),
    "document": (".html", ".htm"),
    "media": (".mp4", ".webm", ".ogg", ".mp3", ".wav", ".m4a"),
}


@dataclass(frozen=True, slots=True)
class BuiltFile:
    path: str
    type: str
    raw: int
    gzip: int
    brotli: int

    def size(self, compression: str) -> int:
        return {"raw": self.raw, "gzip": self.gzip, "brotli": self.brotli}[compression]


def file_type(rel: str, budgets: Budgets) -> str:
    for glob, t in budgets.types.items():
        if fnmatch.fnmatchcase(rel, glob):
            return t
    lower = rel.lower()
    for t, exts in EXTENSIONS.items():
        if lower.endswith(exts):
            return t
    return "other"


def measure(data: bytes) -> tuple[int, int, int]:
    """(raw, gzip, brotli) sizes of ``data``."""
    return len(data), len(gzip.compress(data, 9, mtime=0)), len(brotli.compress(data, quality=11))


def scan(folder: Path, budgets: Budgets) -> list[BuiltFile]:
    """Every file of the build with its type and sizes, in path order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(
            fnmatch.fnmatchcase(rel, g) or fnmatch.fnmatchcase(path.name, g)
            for g in budgets.exclude
        ):
            continue
        raw, gz, br = measure(path.read_bytes())
        out.append(BuiltFile(rel, file_type(rel, budgets), raw, gz, br))
    return out


def _verdict(name: str, measured: float, limit: float, unit: str, detail: str = "") -> Result:
    status = "pass" if measured <= limit else "fail"
    return Result(name, "static", measured, limit, unit, status, detail)


def check_static(files: list[BuiltFile], budgets: Budgets) -> list[Result]:
    out = []
    comp = budgets.compression
    for r in budgets.resources:
        chosen = [f for f in files if r.type == "total" or f.type == r.type]
        if r.size is not None:
            total = sum(f.size(comp) for f in chosen)
            out.append(
                _verdict(f"{r.type} size ({comp})", total, r.size, "bytes", f"{len(chosen)} files")
            )
        if r.count is not None:
            out.append(_verdict(f"{r.type} count", len(chosen), r.count, "1"))
    for fb in budgets.files:
        matched = [f for f in files if fnmatch.fnmatchcase(f.path, fb.glob)]
        if not matched:
            out.append(
                Result(
                    f"file {fb.glob} ({fb.compression})",
                    "static",
                    None,
                    fb.size,
                    "bytes",
                    "skip",
                    "no file matches",
                )
            )
        for f in matched:
            out.append(
                _verdict(
                    f"file {f.path} ({fb.compression})", f.size(fb.compression), fb.size, "bytes"
                )
            )
    return out


__all__ = ["BuiltFile", "check_static", "file_type", "measure", "scan"]
