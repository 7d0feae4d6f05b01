"""What the command line shows (umamba_seg.log): plain info lines, ``warning:``/``error:``
prefixes, ``--quiet`` and ``--verbose`` on every command, and a library that configures nothing."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

import numpy as np
from PIL import Image

from umamba_seg import log as umlog
from umamba_seg.cli import build_parser, main

LINES = {
    logging.DEBUG: "a detail",
    logging.INFO: "a progress line",
    logging.WARNING: "a step fell back",
    logging.ERROR: "a step broke",
}


def _emit() -> None:
    lib = logging.getLogger("umamba_seg.some.module")  # what library code does: a logger, no setup
    for level, text in LINES.items():
        lib.log(level, text)


def test_default_shows_info_as_written_and_prefixes_warnings(capsys):
    with umlog.command_logging():
        _emit()
        assert umlog.show_progress()
    out, err = capsys.readouterr()
    assert out == "a progress line\n"  # no level, no logger name
    assert err == "warning: a step fell back\nerror: a step broke\n"


def test_quiet_hides_info_and_progress_but_not_warnings(capsys):
    with umlog.command_logging(quiet=True):
        _emit()
        assert not umlog.show_progress()
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "warning: a step fell back\nerror: a step broke\n"


def test_verbose_shows_details_with_logger_names(capsys):
    with umlog.command_logging(verbose=True):
        _emit()
    out, err = capsys.readouterr()
    assert out == "debug: umamba_seg.some.module: a detail\ninfo: umamba_seg.some.module: a progress line\n"
    assert err == ("warning: umamba_seg.some.module: a step fell back\nerror: umamba_seg.some.module: a step broke\n")


def test_a_nested_command_keeps_the_outer_verbosity_and_the_setup_is_restored(capsys):
    package = logging.getLogger("umamba_seg")
    before = (package.level, list(package.handlers))
    with umlog.command_logging(quiet=True):
        with umlog.command_logging():  # the demo runs its steps through the CLI without flags
            _emit()
            assert not umlog.show_progress()
        with umlog.command_logging(verbose=True):  # explicit flags win
            logging.getLogger("umamba_seg.x").debug("inner detail")
        logging.getLogger("umamba_seg.x").info("still quiet")
    assert (package.level, package.handlers) == before
    out, err = capsys.readouterr()
    assert out == "debug: umamba_seg.x: inner detail\n"
    assert err == "warning: a step fell back\nerror: a step broke\n"  # one handler: nothing twice


def _subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_takes_quiet_and_verbose_and_they_exclude_each_other(capsys):
    from umamba_seg.convert import CONVERTERS
    from umamba_seg.convert.common import build_parser as converter_parser

    parsers = _subcommand_parsers(build_parser())
    assert len(parsers) >= 15
    parsers |= {f"convert {name}": converter_parser("", 1, name) for name in CONVERTERS}
    for name, p in parsers.items():  # `convert` takes them before NAME, its converters after it
        options = {o for a in p._actions for o in a.option_strings}
        assert {"--quiet", "--verbose"} <= options, name
    capsys.readouterr()
    assert main(["evaluate", "-r", "a", "-p", "b", "--quiet", "--verbose"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: bad usage (argument --verbose: not allowed with argument --quiet)"
    ), err


def test_importing_the_package_configures_no_logging():
    code = """
import importlib, logging
from umamba_seg import import_graph
for m in sorted(import_graph.module_files()):
    if not m.endswith("__main__"):
        importlib.import_module(m)
configured = {n: l.handlers for n, l in logging.Logger.manager.loggerDict.items()
              if n.startswith("umamba_seg") and isinstance(l, logging.Logger) and (l.handlers or l.level)}
assert not configured and not logging.getLogger().handlers, (configured, logging.getLogger().handlers)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_a_real_command_logs_by_default_and_is_silent_with_quiet(tmp_path, capsys):
    src = tmp_path / "instances"
    src.mkdir()
    for name, n in (("a", 2), ("b", 3)):
        inst = np.zeros((12, 16), np.uint8)
        for i in range(n):
            inst[2:6, 1 + 5 * i : 5 + 5 * i] = i + 1
        Image.fromarray(inst).save(src / f"{name}.png")
    capsys.readouterr()
    assert main(["instances-to-semantic", "-i", str(src), "-o", str(tmp_path / "default")]) == 0
    out = capsys.readouterr().out
    assert "a.png: 2 cell(s)\nb.png: 3 cell(s)\n" in out and "[instances-to-semantic] done in" in out
    assert "instances-to-semantic" in out and "INFO" not in out and "umamba_seg." not in out
    assert main(["instances-to-semantic", "-i", str(src), "-o", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert sorted(p.name for p in (tmp_path / "quiet").iterdir()) == ["a.png", "b.png"]  # it did its work
    assert main(["instances-to-semantic", "-i", str(src), "-o", str(tmp_path / "verbose"), "--verbose"]) == 0
    assert "info: umamba_seg.instance_labels: a.png: 2 cell(s)" in capsys.readouterr().out
    # a result is not a log line: evaluate --quiet still prints its table, without the "wrote" line
    assert (
        main(
            [
                "evaluate",
                "-r",
                str(tmp_path / "default"),
                "-p",
                str(tmp_path / "quiet"),
                "-o",
                str(tmp_path / "eval"),
                "-np",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "Dice" in out and "1.000" in out and "wrote" not in out and "done in" not in out and err == ""


def test_quiet_keeps_nnunets_training_log_file_and_only_leaves_the_console(tmp_path, capsys):
    from umamba_seg.training.trainer import umambaTrainer

    trainer = object.__new__(umambaTrainer)  # only what print_to_log_file reads
    trainer.local_rank, trainer.log_file = 0, tmp_path / "training_log.txt"
    for shown in (True, False):
        trainer.show_progress = shown
        trainer.print_to_log_file(f"epoch line, console {shown}", add_timestamp=False)
    assert trainer.log_file.read_text() == "epoch line, console True \nepoch line, console False \n"
    assert capsys.readouterr().out == "epoch line, console True\n"
