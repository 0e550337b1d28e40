"""The parts of the performance benchmark, one module each (`python -m benchmarks.run PART`).

Each module has `run(args, workers) -> dict`: the part's measurements as JSON-ready values, which
`benchmarks/run.py` stores as RESULTS/<part>.json with the command, the machine and the load, and
`benchmarks/report.py` renders. `args` are `benchmarks.run`'s options; `workers` a `measure.Workers`.
"""
