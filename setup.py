"""The one compiled part of perfpulse: the ASGI middleware's per-request path.

Everything else about the package is in pyproject.toml. The extension is
optional: without a C compiler the install still succeeds and
perfpulse.agent.asgi uses its Python middleware.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "perfpulse.agent._speedups",
            ["src/perfpulse/agent/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ]
)
