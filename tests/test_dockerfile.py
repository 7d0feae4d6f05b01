"""The Dockerfile (no container engine here, so it is parsed, not built): CUDA runtime base, the same
package spec as the README's first install command and pyproject.toml, entry point ``umamba-seg``,
and a .dockerignore that keeps the files the install needs."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package, if present
    tomllib = pytest.importorskip("tomli", reason="needs tomllib (Python 3.11+) or tomli to read pyproject.toml")

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"

# pip options that take a value (so the next token is not a requirement)
_PIP_VALUE_OPTIONS = {
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "-c",
    "--constraint",
    "-r",
    "--requirement",
    "--target",
    "-t",
    "--prefix",
    "--root",
    "--platform",
    "--python-version",
    "--implementation",
    "--abi",
    "--progress-bar",
    "--timeout",
    "--retries",
    "--cache-dir",
    "--src",
    "--upgrade-strategy",
    "--config-settings",
    "-C",
    "--trusted-host",
    "--proxy",
    "--cert",
    "--client-cert",
    "--log",
}
# options that change *what* gets installed
_SPEC_OPTIONS = {"-e", "--editable", "--no-deps", "--pre", "-U", "--upgrade", "--force-reinstall"}
# Python of each Ubuntu release's python3 package
_UBUNTU_PYTHON = {"20.04": "3.8", "22.04": "3.10", "24.04": "3.12"}


# ---- small parsers ----------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    return out


def expand_args(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def _install_start(tokens: list[str], i: int) -> int | None:
    """Index after ``pip install`` / ``python -m pip install`` starting at ``tokens[i]``, else None."""
    if re.fullmatch(r"(\S*/)?pip3?", tokens[i]) and tokens[i + 1 : i + 2] == ["install"]:
        return i + 2
    if re.fullmatch(r"(\S*/)?python3?(\.\d+)?", tokens[i]) and tokens[i + 1 : i + 4] == ["-m", "pip", "install"]:
        return i + 4
    return None


def pip_installs(shell: str) -> list[tuple[list[str], set[str]]]:
    """Every ``pip install`` in a shell line: (requirement tokens, spec-changing options)."""
    found = []
    for command in re.split(r"&&|\|\||;|\n", shell):
        tokens = shlex.split(command)
        for i in range(len(tokens)):
            start = _install_start(tokens, i)
            if start is None:
                continue
            reqs, opts, skip = [], set(), False
            for tok in tokens[start:]:
                if skip:
                    skip = False
                elif tok.startswith("-"):
                    name = tok.split("=", 1)[0]
                    if name in _PIP_VALUE_OPTIONS and "=" not in tok:
                        skip = True
                    if name in _SPEC_OPTIONS:
                        opts.add("-e" if name == "--editable" else name)
                else:
                    reqs.append(tok)
            found.append((reqs, opts))
            break
    return found


def split_extras(requirement: str) -> tuple[str, frozenset[str]]:
    m = re.fullmatch(r"(.*?)(\[([^\]]*)\])?", requirement)
    extras = frozenset(e.strip() for e in (m.group(3) or "").split(",") if e.strip())
    return m.group(1), extras


def readme_first_install(text: str) -> tuple[str, set[str]]:
    """The first ``pip install`` of the README's first ```bash block: (requirement, options)."""
    m = re.search(r"```bash\n(.*?)```", text, re.S)
    assert m, "README.md has no ```bash block"
    installs = pip_installs(m.group(1))
    assert installs, "the README's first bash block has no pip install"
    reqs, opts = installs[0]
    assert len(reqs) == 1, f"expected one requirement in the README's first pip install, got {reqs}"
    return reqs[0], opts


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also excludes what lies below it."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.strip("/")
        if pat.startswith("**/"):
            candidates = [pat, pat[3:]]
        else:
            candidates = [pat]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates) or any(
            fnmatch.fnmatchcase(p.split("/")[-1], c[3:]) for p in prefixes for c in candidates if c.startswith("**/")
        ):
            excluded = not neg
    return excluded


# ---- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _build_args(instructions) -> dict[str, str]:
    args = {}
    for kw, value in instructions:
        if kw == "ARG" and "=" in value:
            k, v = value.split("=", 1)
            args[k.strip()] = v.strip().strip('"')
    return args


def _copy_destination_of_context(instructions) -> str:
    for kw, value in instructions:
        if kw == "COPY":
            tokens = [t for t in shlex.split(value) if not t.startswith("--")]
            if tokens[:-1] == ["."]:
                return tokens[-1].rstrip("/")
    raise AssertionError("the Dockerfile does not COPY . (the project) into the image")


def _package_installs(instructions) -> list[tuple[list[str], set[str]]]:
    out = []
    for kw, value in instructions:
        if kw == "RUN":
            out.extend(pip_installs(value))
    return out


# ---- tests of the parsers themselves ----------------------------------------------------
def test_parsers_on_known_text() -> None:
    ins = dockerfile_instructions('# c\nARG X=1\nRUN a \\\n  && pip install -e ".[test]" --index-url u q\n')
    assert ins == [("ARG", "X=1"), ("RUN", 'a  && pip install -e ".[test]" --index-url u q')]
    assert pip_installs(ins[1][1]) == [([".[test]", "q"], {"-e"})]
    assert pip_installs("python3 -m pip install --no-deps /opt/x; echo") == [(["/opt/x"], {"--no-deps"})]
    assert pip_installs("pip install . && umamba-seg demo") == [(["."], set())]
    assert split_extras(".[test, docs]") == (".", frozenset({"test", "docs"}))
    assert dockerignore_excludes(["**/__pycache__"], "umamba_seg/__pycache__/x.pyc")
    assert dockerignore_excludes(["umamba_seg", "!umamba_seg/cli.py"], "umamba_seg/cli.py") is False
    assert dockerignore_excludes(["*.md"], "README.md")


# ---- the Dockerfile ---------------------------------------------------------------------
def test_base_image_is_a_cuda_runtime_with_a_supported_python(instructions, pyproject) -> None:
    args = _build_args(instructions)
    froms = [expand_args(v, args) for kw, v in instructions if kw == "FROM"]
    assert froms, "no FROM"
    image = froms[-1].split()[0]
    assert image.startswith("nvidia/cuda:") and "runtime" in image, image
    ubuntu = re.search(r"ubuntu(\d\d\.\d\d)", image)
    assert ubuntu and ubuntu.group(1) in _UBUNTU_PYTHON, f"unknown Ubuntu release in {image}"
    python = _UBUNTU_PYTHON[ubuntu.group(1)]
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(python), (
        f"{image} ships Python {python}, pyproject requires {pyproject['project']['requires-python']}"
    )


def test_installs_only_the_project_from_the_copied_context(instructions) -> None:
    dest = _copy_destination_of_context(instructions)
    installs = _package_installs(instructions)
    assert installs, "the Dockerfile never runs pip install"
    targets = [r for reqs, _ in installs for r in reqs]
    assert [split_extras(t)[0].rstrip("/") for t in targets] == [dest], (
        f"pip installs {targets}; every dependency must come from pyproject.toml through {dest}"
    )


def spec_differences(readme_text: str, instructions) -> list[str]:
    """What differs between the README's first install and the Dockerfile's (empty when the same)."""
    readme_req, readme_opts = readme_first_install(readme_text)
    readme_path, readme_extras = split_extras(readme_req)
    problems = []
    if readme_path not in (".", "./"):
        problems.append(f"the README's first install is not the project itself: {readme_req}")
    ((docker_reqs, docker_opts),) = _package_installs(instructions)
    docker_extras = split_extras(docker_reqs[0])[1]
    if docker_extras != readme_extras:
        problems.append(f"extras differ: README {sorted(readme_extras)}, Dockerfile {sorted(docker_extras)}")
    if docker_opts != readme_opts:
        problems.append(f"pip options differ: README {sorted(readme_opts)}, Dockerfile {sorted(docker_opts)}")
    return problems


_PLANNED_README = 'Intro\n\n```bash\npip install . && umamba-seg demo\npip install -e ".[test]" && pytest\n```\n'


def test_spec_comparison_on_the_planned_readme_lines(instructions) -> None:
    assert spec_differences(_PLANNED_README, instructions) == []
    swapped = _PLANNED_README.replace("pip install . &&", 'pip install -e ".[test]" &&', 1)
    assert len(spec_differences(swapped, instructions)) == 2  # extras and -e both differ


def test_same_package_spec_as_readme(instructions) -> None:
    if not README.exists():
        pytest.skip(
            "README.md does not exist yet (the lead writes it); the Dockerfile is checked against "
            "pyproject.toml and the planned README lines only"
        )
    assert spec_differences(README.read_text(), instructions) == []


def test_extras_named_in_the_dockerfile_exist(instructions, pyproject) -> None:
    known = set(pyproject["project"].get("optional-dependencies", {}))
    for reqs, _ in _package_installs(instructions):
        for r in reqs:
            assert split_extras(r)[1] <= known, f"{r} names extras not in pyproject.toml ({sorted(known)})"


def test_entrypoint_is_the_console_script(instructions, pyproject) -> None:
    entry = [v for kw, v in instructions if kw == "ENTRYPOINT"]
    assert entry and entry[-1] == '["umamba-seg"]', entry
    assert pyproject["project"]["name"] == "umamba-seg"
    assert pyproject["project"]["scripts"]["umamba-seg"] == "umamba_seg.cli:main"


def test_dockerignore_keeps_what_the_install_needs() -> None:
    patterns = [
        l.strip()
        for l in (ROOT / ".dockerignore").read_text().splitlines()
        if l.strip() and not l.strip().startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "README.md",
        "umamba_seg/__init__.py",
        "umamba_seg/cli.py",
        "umamba_seg/convert/brats2023.py",
    ]  # `umamba-seg convert` runs in the image too (datasets.md)
    for path in needed:
        assert not dockerignore_excludes(patterns, path), f".dockerignore drops {path}, which pip install needs"
    for path in [".git/HEAD", "umamba_seg/__pycache__/cli.cpython-311.pyc", "umamba_workdir/raw/x.nii.gz"]:
        assert dockerignore_excludes(patterns, path), f".dockerignore should keep {path} out of the build context"
