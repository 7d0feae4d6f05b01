"""Print registers, shared memory and spills of every Triton kernel configuration.

Compiles each kernel module's ``AOT_CONFIGS`` ahead of time for sm_80 (A100) and sm_90a
(H100) with Triton's bundled ptxas; needs no GPU. Exit status 1 when any kernel spills.

    python scripts/triton_resources.py [--arch 80 90] [--module umamba_seg.ops.selective_scan.triton_kernels]
"""

from __future__ import annotations

import argparse
import importlib
import sys

from umamba_seg.ops.triton_aot import SUPPORTED_ARCHS, compile_configs, format_table

DEFAULT_MODULES = ("umamba_seg.ops.selective_scan.triton_kernels", "umamba_seg.ops.mlstm.triton_kernels")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(SUPPORTED_ARCHS), choices=SUPPORTED_ARCHS)
    parser.add_argument(
        "--module",
        nargs="+",
        default=None,
        help="kernel modules exposing AOT_CONFIGS (default: every known one that imports)",
    )
    args = parser.parse_args(argv)
    modules = args.module or DEFAULT_MODULES
    rows = []
    for name in modules:
        try:
            mod = importlib.import_module(name)
            configs = list(mod.AOT_CONFIGS)
        except (ImportError, AttributeError) as exc:
            if args.module:
                raise
            print(f"# skipped {name}: {exc}", file=sys.stderr)
            continue
        print(f"# {name}: {len(configs)} configurations x {len(args.arch)} architectures", file=sys.stderr)
        rows += compile_configs(configs, archs=args.arch)
    print(format_table(rows))
    spilling = [r for r in rows if r.spills]
    if spilling:
        print(f"\n{len(spilling)} kernel configuration(s) spill registers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
