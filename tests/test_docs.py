"""The README stays a front door and the documentation holds together: short README with the set-up
commands near the top, a CLI reference that matches the CLI, and no broken relative link or anchor in
README.md, docs/*.md and the other READMEs. Nothing is fetched from the network."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest


def _repo_root() -> Path:
    """The folder holding pyproject.toml, wherever below it this file lives."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(f"no pyproject.toml above {__file__}")


REPO = _repo_root()
README = REPO / "README.md"
DOCS = REPO / "docs"
GENERATOR = DOCS / "make_cli_reference.py"

DEMO_COMMAND = 'pip install -e ".[train]" && dualkd-edge demo'
TEST_COMMAND = 'pip install -e ".[train,test]" && pytest -q'


def markdown_files() -> list[Path]:
    files = [README, *sorted(DOCS.glob("*.md"))]
    for extra in ("benchmarks/README.md", "export/README.md", "calib_data/README.md"):
        if (REPO / extra).is_file():
            files.append(REPO / extra)
    return files


# --- a small markdown reader: prose lines, headings, links ---------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_TARGET = re.compile(r"(?<!\\)\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_HTML_TARGET = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_HTML_ANCHOR = re.compile(r"""<[a-z]+\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans removed."""
    return [(number, _CODE_SPAN.sub("", line)) for number, line in outside_fences(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation but '-' removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link can point at in a markdown file (GitHub numbers repeated headings -1, -2, ...)."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in outside_fences(text):
        heading = _HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(_HTML_ANCHOR.findall(line))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image, reference definition and HTML src/href."""
    result = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for regex in (_INLINE_TARGET, _REFERENCE_DEF, _HTML_TARGET):
            result.extend((number, target) for target in regex.findall(line))
    return result


def broken_links(path: Path) -> list[str]:
    """What is wrong with the relative links of one markdown file, one line per problem."""
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
            continue  # http(s), mailto, ...: not fetched
        file_part, _, anchor = target.partition("#")
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{number}: {target}"
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and dest.is_file() and dest.suffix.lower() == ".md":
            if unquote(anchor).lower() not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


# --- the README is a front door -----------------------------------------------------------------

def test_readme_has_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_setup_commands_are_in_the_first_40_lines():
    top = README.read_text(encoding="utf-8").splitlines()[:40]
    for command in (DEMO_COMMAND, TEST_COMMAND):
        assert any(command in line for line in top), f"`{command}` is not in README.md's first 40 lines"


def test_readme_and_docs_index_link_every_docs_page():
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    for index in (README, DOCS / "README.md"):
        linked = {(index.parent / t.partition("#")[0]).resolve() for _, t in links(index)}
        missing = sorted(name for name in pages if (DOCS / name).resolve() not in linked)
        assert not missing, f"{index.relative_to(REPO)} does not link {missing}"


# --- the CLI reference is generated and current -------------------------------------------------

def test_cli_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, str(GENERATOR), "--check"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_cli_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_check_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    generator = _load_generator()
    stale = tmp_path / "cli.md"
    stale.write_text(generator.render().replace("## dualkd-edge train", "## dualkd-edge train-old"))
    monkeypatch.setattr(generator, "OUT", stale)
    monkeypatch.setattr(generator, "REPO", tmp_path)
    assert generator.main(["--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stale" in err
    assert generator.main([]) == 0 and generator.main(["--check"]) == 0


def test_cli_reference_covers_every_command():
    import typer

    from dualkd_edge.cli import app

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        if getattr(command, "hidden", False):
            continue
        assert f"\n## dualkd-edge {name}\n" in text
        for param in command.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("-"):
                    assert f"`{opt}`" in text, f"{name} {opt} missing from docs/cli.md"


# --- links ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_link_checker_sees_broken_links_and_anchors(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## On the line: MQTT, Modbus TCP, webhook\n\n## Repeat\n\n## Repeat\n")
    (tmp_path / "pic.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) [ok](other.md#on-the-line-mqtt-modbus-tcp-webhook) [ok](other.md#repeat-1) "
        "[ok](#page) ![ok](pic.png) [ok](https://example.com/missing) [ok](./)\n"
        "[bad file](missing.md) [bad anchor](other.md#nowhere) ![bad image](nope.png) [bad](#nothing)\n"
        "`[not a link](missing-in-code.md)`\n\n"
        "```\n[not a link](missing-in-fence.md)\n```\n"
    )
    problems = broken_links(page)
    assert len(problems) == 4, problems
    assert all(":4: " in p for p in problems)
