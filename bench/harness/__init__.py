"""What every benchmark in bench/ shares, in one place so the figures they print are taken the
same way: the machine and its load (`machine`), a Keyless server of its own (`server`), the
wrk load generator (`wrk`) and the JSON document every benchmark prints (`report`).

The benchmarks are scripts (`.venv/bin/python bench/NAME.py`), so bench/ is first on sys.path
and they import this package as `harness`.
"""
