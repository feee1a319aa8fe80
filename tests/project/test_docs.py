"""The README and docs/ say only what exists: every `msagent` command they show parses with
the flags it uses (``msagent <cmd> --help`` would list them), and every relative link (and
its ``#anchor`` in a Markdown page) resolves."""

import re
import shlex
from pathlib import Path

import pytest

from msagent.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(msagent [^`]+|python -m msagent [^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def _logical_lines(block: str) -> list[str]:
    return block.replace("\\\n", " ").splitlines()


def _command(line: str) -> list[str] | None:
    """The argv after ``msagent`` (or ``python -m msagent``), or None for other lines."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    while words and (ENV.match(words[0]) or words[0] in ("$", "export")):
        words = words[1:]
    if words[:3] == ["python", "-m", "msagent"]:
        words = words[2:]
    if not words or words[0] != "msagent":
        return None
    return [w for w in words[1:] if w != "..."]


def shown_commands() -> list[tuple[str, list[str], bool]]:
    """(where, argv, whole): ``whole`` for a command line in a code block (it must parse as
    given); an inline mention in the text may leave out required arguments."""
    found = []
    for page in PAGES:
        text = page.read_text()
        lines = [(line, True) for block in FENCE.findall(text) for line in _logical_lines(block)]
        lines += [(m.group(1), False) for m in INLINE.finditer(FENCE.sub("", text))]
        for line, whole in lines:
            argv = _command(line)
            if argv and not argv[0].isupper():  # `msagent COMMAND --help` names a placeholder
                found.append((f"{page.relative_to(ROOT)}: {line.strip()}", argv, whole))
    return found


COMMANDS = shown_commands()


def test_the_pages_show_every_subcommand():
    shown = {argv[0] for _, argv, _ in COMMANDS}
    assert {"plugins", "segment", "eval", "generate", "export", "stats", "serve"} <= shown


def _subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("where, argv, whole", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_every_command_shown_exists_with_its_flags(where, argv, whole, capsys):
    commands = _subparsers()
    assert argv[0] in commands, f"{where}: no command {argv[0]!r}; commands: {sorted(commands)}"
    known = commands[argv[0]]._option_string_actions
    flags = [w.split("=")[0] for w in argv[1:] if w.startswith("--")]
    assert all(f in known for f in flags), f"{where}: unknown flag(s) {set(flags) - set(known)}"
    if whole:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:  # --help exits 0; a missing argument or bad value exits 2
            message = capsys.readouterr().err.strip().splitlines()[-1:]
            assert exc.code == 0, f"{where}: {message}"


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


LINKS = [(page, target) for page in PAGES for target in LINK.findall(FENCE.sub("", page.read_text()))
         if not re.match(r"^[a-z]+:", target)]


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_relative_links_resolve(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), f"{page.relative_to(ROOT)}: no heading for #{anchor}"
