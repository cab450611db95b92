"""The compiled parts of perfpulse: the ASGI middleware's per-request path and
the collector's path for the usual browser beacon.

Everything else about the package is in pyproject.toml. The extensions are
optional: without a C compiler the install still succeeds, perfpulse.agent.asgi
uses its Python middleware and every beacon takes the Python path of
perfpulse.ingest.normalize.
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
    ]
)
