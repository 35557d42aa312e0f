"""README.md stays true: generated weights table, CI command, install line, links, quickstart code."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _generator():
    spec = importlib.util.spec_from_file_location("gen_weights_table", ROOT / "docs" / "gen_weights_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_weights_table_is_generated_from_the_manifest() -> None:
    gen = _generator()
    start, end = README.index(gen.START), README.index(gen.END) + len(gen.END)
    assert README[start:end] == gen.render(), (
        "README weights table is stale: run python docs/gen_weights_table.py"
    )


def test_model_cards_hold_their_current_manifest_facts() -> None:
    gen = _generator()
    stale = [path.name for path, text in gen.generated_files().items() if path.read_text() != text]
    assert stale == [], "generated parts are stale: run python docs/gen_weights_table.py"
    cards = [path for path in gen.generated_files() if path != gen.README]
    assert cards and all(gen.CARD_START in path.read_text() for path in cards)


def test_generator_replaces_only_the_table() -> None:
    gen = _generator()
    text = f"before\n{gen.START}\nold\n{gen.END}\nafter\n"
    assert gen.replace_table(text, "NEW") == "before\nNEW\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        gen.replace_table("no markers here", "NEW")


def test_readme_test_command_is_the_one_ci_runs() -> None:
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    command = [line for line in ci if line and not line.startswith("#")][-1]
    assert "pytest" in command
    assert command in README
    for install in ("torch==2.13.0", 'triton==3.6.0 "numpy<2.4"', '-e ".[dev]"'):
        assert any(install in line for line in ci), install
        assert install in README, install


def test_first_command_installs_pinned_cpu_torch_an_existing_extra_and_runs_the_demo() -> None:
    tomllib = pytest.importorskip("tomllib")
    first = _blocks("bash")[0].strip()
    steps = [s.strip() for s in first.split("&&")]
    assert steps[0] == "python3 -m venv .venv" and steps[1] == ". .venv/bin/activate"
    assert steps[2] == "pip install torch==2.13.0"
    assert steps[-1] == "pifnet-infer demo"
    install = shlex.split(steps[3])
    extras = re.fullmatch(r"\.\[([\w,-]+)\]", install[-1]).group(1).split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in extras:
        assert extra in declared, f"README installs .[{extra}] but pyproject.toml has no such extra"
    assert any(dep.startswith("matplotlib") for extra in extras for dep in declared[extra]), (
        "the first command must install matplotlib, which the demo figure needs"
    )


def test_relative_links_exist() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    assert local, "no relative links found: the pattern is wrong"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_anchor_of_when_to_use_what_exists() -> None:
    assert "(#when-to-use-what)" in README and "\n## When to use what\n" in README


def test_python_quickstart_runs() -> None:
    code = _blocks("python")[0]
    namespace: dict = {}
    exec(compile(code, "README.md quickstart", "exec"), namespace)  # the README's own code, verbatim
    fused, reference = namespace["fused"], namespace["reference"]
    assert fused.shape == reference.shape == (64, 24, 88)
    assert np.isfinite(fused).all()
