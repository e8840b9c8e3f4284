"""Speed and memory targets, measured against a baseline taken in the same run.

``python -m benchmarks --help`` lists the options; ``benchmarks/README.md`` says what
each benchmark measures and what its targets are.
"""
