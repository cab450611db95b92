"""perfpulse benchmarks: each measures a baseline in the same run and reports a ratio.

Run them with ``python -m bench.run [name ...] [--quick] [--write]``; see
``docs/benchmarks.md`` for what each one measures and the latest results.
"""
