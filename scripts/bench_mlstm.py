"""Benchmark the chunkwise mLSTM against the quadratic parallel form (not a test); the code is
:mod:`umamba_seg.benchmark.mlstm_bound` (its docstring describes the bound and the memory fit).

    python scripts/bench_mlstm.py [--lengths 1024 4096 ...] [--heads 4] [--head-dim 64]
                                  [--parallel-max-len 4096] [--repeats 2] [--device cpu] [--threads N]
"""

from umamba_seg.benchmark.mlstm_bound import main

if __name__ == "__main__":
    main()
