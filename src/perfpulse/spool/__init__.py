"""The durable queue between ingest and storage.

Ingest awaits :meth:`Spool.append` before it answers 202; the storage writer thread
reads, stores, and commits. :class:`FileSpool` keeps records in segment files;
:class:`MemorySpool` keeps them in a list, for tests of the parts around it.
"""

from perfpulse.spool.base import MemorySpool, Spool, SpoolFull, SpoolLocked, SpoolStats
from perfpulse.spool.file import FileSpool

__all__ = ["FileSpool", "MemorySpool", "Spool", "SpoolFull", "SpoolLocked", "SpoolStats"]
