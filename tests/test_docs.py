"""README and docs/ say what holds: README stays a first screen a newcomer can read, every
link resolves, every `python -m …` command shown at least parses, every config option is
named in the option table, and the site builds."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

REPO = Path(__file__).parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PAGES = [page for page in PAGES if page.name != "index.md"]  # generated from README
TEMPLATE = re.compile(r"[<>…]|\.\.\.")


def test_readme_is_a_first_screen() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name}: {target}"


def commands() -> list[tuple[str, list[str]]]:
    """(page, argv after `python -m`) of every command in a bash block of the pages."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                match = re.search(r"python -m (\S+)(.*)$", line)
                if match:
                    found.append((page.name, [match[1], *shlex.split(match[2])]))
    return found


def test_the_pages_show_commands_of_every_tool() -> None:
    modules = {argv[0] for _, argv in commands()}
    assert {"cnn_study", "cnn_study.study", "cnn_study.study.report", "cnn_study.predict",
            "cnn_study.explain", "cnn_study.export"} <= modules  # fmt: skip


def test_every_run_command_composes() -> None:
    """`python -m cnn_study …` lines: every override parses (Hydra's own parser) and the
    plain ones compose (groups, options and keys exist); sweeps and hydra.* are parsed."""
    parser = OverridesParser.create()
    checked = 0
    with initialize_config_module(version_base="1.3", config_module="cnn_study.conf"):
        for _, argv in commands():
            if argv[0] != "cnn_study" or any(TEMPLATE.search(a) for a in argv):
                continue  # a template (`<run dir>`) shows the form, not a value
            overrides = [a for a in argv[1:] if not a.startswith("-") and "=" in a]
            parsed = parser.parse_overrides(overrides)
            plain = [
                o.input_line
                for o in parsed
                if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")
            ]
            compose("config", plain)
            checked += 1
    assert checked >= 10


def test_every_study_command_parses() -> None:
    from cnn_study.study.__main__ import parse
    from cnn_study.study.definition import bundled_studies, read_study, study_path

    for _, argv in commands():
        if argv[0] != "cnn_study.study" or argv[1:] in ([], ["--help"]):
            continue
        name, settings, _, _ = parse(argv[1:])
        settings.pop("dir", None)
        if name in bundled_studies():
            read_study(study_path(name), settings)


def test_every_other_tool_answers_help() -> None:
    modules = sorted({argv[0] for _, argv in commands()} - {"cnn_study", "cnn_study.study"})
    for module in modules:
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                              text=True, timeout=120, cwd=REPO)  # fmt: skip
        assert done.returncode == 0, (module, done.stderr[-500:])


def test_every_config_option_is_in_the_option_table() -> None:
    table = (REPO / "docs" / "cli.md").read_text()
    conf = REPO / "conf"
    for group in ("data", "arch", "regularization", "optimizer", "scheduler", "augmentation",
                  "loss", "mixing", "ema", "tta", "finetune", "trainer", "logger", "callbacks",
                  "experiment", "hparams_search", "debug"):  # fmt: skip
        row = next(line for line in table.splitlines() if line.startswith(f"| `{group}` |"))
        for option in sorted(p.stem for p in (conf / group).glob("*.yaml")):
            assert f"`{option}`" in row, f"{group}={option} is not in docs/cli.md"


def test_the_site_builds(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in (REPO / "docs").glob("*.md"):
        (docs / page.name).write_text(page.read_text())
    readme = (REPO / "README.md").read_text()
    (docs / "index.md").write_text(readme.replace("](docs/", "]("))
    config = (
        (REPO / "mkdocs.yml").read_text().replace("site_dir: site", f"site_dir: {tmp_path}/site")
    )
    (tmp_path / "mkdocs.yml").write_text(config)
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "site" / "studies" / "index.html").is_file()


def test_the_layout_names_every_module() -> None:
    layout = (REPO / "docs" / "development.md").read_text()
    for path in sorted((REPO / "cnn_study").rglob("*.py")):
        relative = path.relative_to(REPO)
        named = f"`{relative}`" in layout or (
            f"`{relative.parent}/`" in layout and f"`{path.name}`" in layout
        )
        assert named or path.name == "__init__.py", f"{relative} is not in docs/development.md"
