"""GPU section of the selective-scan benchmark: Triton kernels vs the torch path (not a test);
the code is :mod:`umamba_seg.benchmark.scan_gpu`.

    python scripts/bench_scan_gpu.py [--repeats 5] [--dtypes bf16 fp32] [--shapes all|small] [--sweep]
"""

from umamba_seg.benchmark.scan_gpu import main

if __name__ == "__main__":
    main()
