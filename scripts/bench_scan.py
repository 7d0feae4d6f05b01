"""Benchmark the selective scan against a memory/exp lower bound (not a test); the code is
:mod:`umamba_seg.benchmark.scan_bound` (its docstring describes the bound and the targets).

    python scripts/bench_scan.py [--backend torch] [--repeats 3] [--shapes small|all] [--threads N] [--no-gpu]
"""

from umamba_seg.benchmark.scan_bound import main

if __name__ == "__main__":
    main()
