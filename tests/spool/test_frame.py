"""The compiled framing of a group of records (perfpulse.spool._frame) against the
spool's Python framing: the same bytes, so segments written either way read alike."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from perfpulse.spool import FileSpool, file
from perfpulse.spool._frame import frame  # built by make test (setup.py)
from perfpulse.spool.file import HEADER, MAGIC, _crc


def test_the_spool_uses_the_compiled_framing() -> None:
    assert file._frame is frame


def _python(payloads: list[bytes], seq: int) -> bytes:
    return b"".join(
        HEADER.pack(MAGIC, len(p), seq + i, _crc(seq + i, p)) + p for i, p in enumerate(payloads)
    )


def test_frame_is_the_python_framing() -> None:
    rng = random.Random(7)
    sizes = [0, 1, 7, 8, 64, 255, 256, 2300, 65_536, 200_003]
    payloads = [rng.randbytes(n) for n in sizes]
    for seq in (1, 255, 256, 1 << 32, (1 << 64) - len(payloads) - 1):
        assert frame(payloads, seq) == _python(payloads, seq)
    assert frame([], 5) == b""
    with pytest.raises(TypeError):
        frame([b"a", "b"], 1)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        frame((b"a",), 1)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        frame([b"a"], -1)
    with pytest.raises(OverflowError):  # the last record's seq would pass 2**64 - 1
        frame([b"a", b"b"], (1 << 64) - 1)
    assert frame([b"a"], (1 << 64) - 1) == _python([b"a"], (1 << 64) - 1)


def test_bytes_like_payloads_are_appended_with_the_others(tmp_path: Path) -> None:
    """A bytearray or memoryview in a group does not fail the group's other appends."""
    spool = FileSpool(tmp_path, fsync="never")

    async def main() -> list[int]:
        seqs = await asyncio.gather(
            spool.append(b"ok-1"),
            spool.append(bytearray(b"other")),  # type: ignore[arg-type]
            spool.append(memoryview(b"view")),  # type: ignore[arg-type]
            spool.append(b"ok-2"),
        )
        await spool.close()
        return list(seqs)

    assert asyncio.run(main()) == [1, 2, 3, 4]
    spool = FileSpool(tmp_path)
    try:
        assert spool.read(0) == [(1, b"ok-1"), (2, b"other"), (3, b"view"), (4, b"ok-2")]
    finally:
        asyncio.run(spool.close())


def _segments(directory: Path, groups: list[list[bytes]], segment_bytes: int) -> dict[str, bytes]:
    spool = FileSpool(directory, fsync="never", segment_bytes=segment_bytes)

    async def main() -> None:
        for group in groups:  # the appends of one loop iteration go out as one group
            await asyncio.gather(*(spool.append(p) for p in group))
        await spool.close()

    asyncio.run(main())
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.seg"))}


def test_segments_are_the_same_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups that fit the active segment (framed in one call) and groups that
    start new segments (framed one by one) write the bytes the Python framing does."""
    rng = random.Random(11)
    groups = [[rng.randbytes(rng.randrange(1, 900)) for _ in range(rng.randrange(1, 40))]
              for _ in range(30)]  # fmt: skip
    compiled = _segments(tmp_path / "compiled", groups, segment_bytes=16_384)
    monkeypatch.setattr(file, "_frame", None)
    python = _segments(tmp_path / "python", groups, segment_bytes=16_384)
    assert len(compiled) > 3  # rotation happened
    assert compiled == python
    spool = FileSpool(tmp_path / "compiled")
    try:
        assert [p for _, p in spool.read(0, max_records=10_000)] == [p for g in groups for p in g]
    finally:
        asyncio.run(spool.close())
