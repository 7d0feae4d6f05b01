"""``umamba-seg benchmark`` and the benchmark scripts: every architecture on the CNN's plan.

A fair comparison changes one thing: the network. Each benchmarked architecture gets a
plans file that is the CNN's plans with only the ``architecture`` block swapped
(:mod:`same_plan`), so spacing, patch (or the nearest patch the network accepts, noted),
batch and preprocessed data are the CNN's. Around that:

* :mod:`cnn_plan` the CNN plan the scripts measure on (a planned or a generated dataset);
* :mod:`timing`   warm-up, medians, interleaved rounds (A, B, C, A, B, C: a load drift hits
  every network alike);
* :mod:`networks` planned networks built from those plans, forward / forward+backward /
  sliding-window closures (``scripts/bench_networks.py``, ``scripts/bench_predict.py``);
* :mod:`ratios`   ratios to the CNN (within each round; median and spread over the rounds) and
  the inference-time target (SSM <= 1.3x the CNN);
* :mod:`timed_steps` what ``benchmark`` times of a trained network: one step of its recipe's
  trainer, one case's sliding-window prediction;
* :mod:`runner`   the ``benchmark`` command: plan, train (``--recipe``), predict, evaluate, time;
* :mod:`report`   Markdown table, CSV, JSON and the Dice-vs-time plot.

The kernel benchmarks (``scripts/bench_scan.py``, ``scripts/bench_scan_gpu.py``,
``scripts/bench_mlstm.py``) time one op alone: :mod:`scan_inputs` the scan's shapes and inputs,
:mod:`scan_bound` the scan against a memory/exp lower bound on the CPU, :mod:`scan_gpu` Triton vs
torch and GB/s on a GPU, :mod:`mlstm_bound` the chunkwise mLSTM against its bound and the
parallel form's memory.
"""
