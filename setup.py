"""The compiled parts of perfpulse: the ASGI middleware's per-request path and
the collector's path for the usual browser beacon, the spool's framing of a
group of records, and the writer's reading of beacon documents into Arrow
columns.

Everything else about the package is in pyproject.toml. The extensions are
optional: without a C compiler the install still succeeds, perfpulse.agent.asgi
uses its Python middleware, every beacon takes the Python path of
perfpulse.ingest.normalize, the spool frames records one by one in Python, and
DuckDB parses every beacon document. The spool's framing needs zlib's headers
(zlib1g-dev).
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension(
            "perfpulse.agent._speedups",
            ["src/perfpulse/agent/_speedups.c"],
            optional=True,
            extra_compile_args=FLAGS,
        ),
        Extension(
            "perfpulse.ingest._beacon",
            ["src/perfpulse/ingest/_beacon.c"],
            optional=True,
            extra_compile_args=FLAGS,
        ),
        Extension(
            "perfpulse.spool._frame",
            ["src/perfpulse/spool/_frame.c"],
            libraries=["z"],
            optional=True,
            extra_compile_args=FLAGS,
        ),
        Extension(
            "perfpulse.store._columns",
            ["src/perfpulse/store/_columns.c"],
            optional=True,
            extra_compile_args=FLAGS,
        ),
    ]
)
