"""The documentation cannot go stale: every command it shows parses, every link resolves.

README.md and docs/*.md are read as a user reads them. In each fenced shell block (```bash,
```sh, ```console, a bare ```), and in the ``run:`` steps of a ```yaml block, every command
line that starts with one of the console scripts (also as ``.venv-serve/bin/twins-bench``)
is split with shlex and handed to that command's real argparse parser (``build_parser()``
of the module ``[project.scripts]`` names); ``make TARGET`` must name a target of the
Makefile. Fenced python blocks must compile. Every link to a local file must exist (and its
``#anchor`` be a heading there). The README stays a newcomer's page: at most 250 lines, and
its table of deployment routes lists exactly the routes of ``twins_deploy.engines.routes``.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

SHELL_FENCES = {"", "bash", "sh", "shell", "console", "shell-session"}
PYTHON_FENCES = {"python", "py"}
YAML_FENCES = {"yaml", "yml"}
OPERATORS = {"&&", "||", ";", "|", "&"}  # a line may chain commands; each is checked


def console_scripts() -> dict[str, str]:
    """Console script name -> module, from pyproject.toml's [project.scripts]."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert section, "pyproject.toml has no [project.scripts]"
    return {name: target.split(":")[0]
            for name, target in re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section.group(1), re.M)}


SCRIPTS = console_scripts()


def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([^\s:=#$][^:=#$]*?)\s*:(?!=)", line)
        if m and not line.startswith("\t"):
            targets.update(m.group(1).split())
    return targets - {".PHONY"}


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the block's first line, lines) of every fenced block."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start, body = m.group(1), m.group(2).lower(), i + 2, []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        blocks.append((lang, start, body))
        i += 1  # the closing fence
    return blocks


def logical_lines(body: list[str], start: int) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the number of its first line."""
    out: list[tuple[int, str]] = []
    pending, first = "", start
    for n, line in enumerate(body, start):
        if not pending:
            first = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def split_commands(line: str) -> list[list[str]]:
    """A shell line as commands (argv lists): comments dropped, split at && || ; | &, each
    cut at its first redirection, leading VAR=value assignments and a ``$`` prompt removed."""
    lex = shlex.shlex(re.sub(r"^\s*\$\s+", "", line), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands, current = [], []
    redirected = False
    for tok in lex:
        if tok in OPERATORS:
            commands.append(current)
            current, redirected = [], False
        elif redirected or (tok and set(tok) <= set("<>&|;()")):
            redirected = True  # a redirection: the rest of this command is not its arguments
        else:
            current.append(tok)
    commands.append(current)
    out = []
    for argv in commands:
        while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
            argv = argv[1:]
        if argv:
            out.append(argv)
    return out


def script_of(word: str) -> str | None:
    """The console script a command word runs (``twins-bench``, ``.venv-serve/bin/twins-bench``)."""
    base = word.rsplit("/", 1)[-1]
    return base if base in SCRIPTS else None


def parse_error(script: str, argv: list[str]) -> str | None:
    """What the real parser of ``script`` says about ``argv``; None when it accepts them."""
    parser = importlib.import_module(SCRIPTS[script]).build_parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as e:  # parser.error() exits 2; --help exits 0
            if e.code not in (0, None):
                return err.getvalue().strip() or f"exit {e.code}"
    return None


def check_command_line(line: str, where: str, targets: set[str]) -> list[str]:
    problems = []
    try:
        commands = split_commands(line)
    except ValueError as e:  # unbalanced quotes: only a problem where it is a command we check
        first = line.split()[0] if line.split() else ""
        return [f"{where}: cannot split {line.strip()!r}: {e}"] if script_of(first) or first == "make" else []
    for argv in commands:
        script = script_of(argv[0])
        if script:
            error = parse_error(script, argv[1:])
            if error:
                problems.append(f"{where}: {shlex.join(argv)}\n    {script} rejects it: {error}")
        elif argv[0] == "make":
            unknown = [t for t in argv[1:] if not t.startswith("-") and "=" not in t and t not in targets]
            if unknown:
                problems.append(f"{where}: {shlex.join(argv)}\n    no Makefile target {', '.join(unknown)} "
                                f"(targets: {', '.join(sorted(targets))})")
    return problems


def check_commands(text: str, name: str) -> list[str]:
    """Problems with the commands and python snippets in the fenced blocks of one doc."""
    problems, targets = [], make_targets()
    for lang, start, body in fenced_blocks(text):
        if lang in PYTHON_FENCES:
            try:
                compile("\n".join(body) + "\n", f"{name}:{start}", "exec")
            except SyntaxError as e:
                problems.append(f"{name}:{start + (e.lineno or 1) - 1}: python block does not compile: {e.msg}")
            continue
        for n, line in logical_lines(body, start):
            if lang in YAML_FENCES:
                m = re.match(r"^\s*-?\s*run:\s*(.+)$", line)
                if not m:
                    continue
                line = m.group(1)
            elif lang not in SHELL_FENCES:
                continue
            problems += check_command_line(line, f"{name}:{n}", targets)
    return problems


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """The lines outside fenced blocks, with inline code spans blanked unless asked not to."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})(.*)$", line)
        if m and fence is None:
            fence = m.group(1)
            continue
        if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not m.group(2).strip():
            fence = None
            continue
        if fence is None:
            out.append((n, re.sub(r"`[^`]*`", "``", line) if blank_code else line))
    return out


def anchors(text: str) -> set[str]:
    return {github_anchor(line.lstrip("#")) for _, line in prose(text, blank_code=False)
            if re.match(r"^#{1,6} ", line)}


def check_links(text: str, name: str, doc: Path) -> list[str]:
    """Problems with links to local files (and their #anchors) in one doc, which lives at ``doc``."""
    problems = []
    for n, line in prose(text):
        targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)
        targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", line)
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
                continue
            path_part, _, anchor = target.partition("#")
            path = doc.parent / path_part
            if path_part and not path.exists():
                problems.append(f"{name}:{n}: link to {target}: {path_part} does not exist")
            elif anchor and (not path_part or path.suffix == ".md"):
                headings = anchors(text if not path_part else path.read_text())
                if anchor not in headings:
                    problems.append(f"{name}:{n}: link to {target}: no heading #{anchor} in "
                                    f"{path_part or name}")
    return problems


def check_doc(path: Path, text: str | None = None) -> list[str]:
    text = path.read_text() if text is None else text
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    return check_commands(text, name) + check_links(text, name, path)


def route_table(text: str) -> list[tuple[str, str]]:
    """(route name, whole row) of the README's table whose first column is 'route'."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip().lower() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0] == "route":
            rows = []
            for row in lines[i + 2:]:
                if not row.lstrip().startswith("|"):
                    break
                first = row.strip().strip("|").split("|")[0]
                m = re.search(r"`([^`]+)`", first)
                rows.append(((m.group(1) if m else first).strip(), row))
            return rows
    return []


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_doc_commands_parse_and_links_resolve(doc: Path) -> None:
    problems = check_doc(doc)
    assert not problems, "\n".join(problems)


def test_readme_is_a_short_page() -> None:
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail into docs/"


def test_readme_route_table_is_the_route_table() -> None:
    from twins_deploy.engines.routes import ROUTES

    rows = route_table(README.read_text())
    names = [name for name, _ in rows]
    assert rows, "README.md has no table whose first column is 'route'"
    assert len(names) == len(set(names)), f"routes listed twice in README.md: {names}"
    assert sorted(names) == sorted(ROUTES), (f"README.md's route table lists {names}; "
                                             f"twins_deploy.engines.routes.ROUTES has {list(ROUTES)}")
    for name, row in rows:
        route = ROUTES[name]
        if route.extra:
            assert f"[{route.extra}]" in row, f"README.md: route {name} needs the [{route.extra}] extra: {row}"
        for alias in route.aliases:
            assert f"`{alias}`" in row, f"README.md: route {name}'s alias {alias} is not in its row: {row}"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_has_build_parser(script: str) -> None:
    parser = importlib.import_module(SCRIPTS[script]).build_parser()
    assert parser.prog == script


def test_checker_catches_planted_mistakes(tmp_path: Path) -> None:
    """The checks fail where they should: a bad flag in a copy of a real doc, and each kind of mistake."""
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text() + "\n```bash\ntwins-export --model svt_s --no-such-flag\n```\n")
    problems = check_commands(copy.read_text(), "README.md")
    n = len(README.read_text().splitlines()) + 3
    assert any(p.startswith(f"README.md:{n}:") and "--no-such-flag" in p for p in problems), problems

    text = "\n".join([
        "```bash",
        "twins-export --model svt_s --precision fp16   # fine",
        "twins-export --model svt_s --no-such-flag     # line 3",
        "twins-export --model svt_s && twins-bench --backends torch --batch 0   # line 4: the second one",
        "make test export",
        "make no-such-target                            # line 6",
        ".venv-serve/bin/twins-serve repo --http-port 70000 &   # line 7",
        "pip install 'twins-deploy[trt]'                # not ours: not parsed",
        "twins-validate a.onnx \\",
        "    --backend trt-fp42                          # line 9, continued",
        "```",
        "```console",
        "$ twins-inspect                                 # line 13: the ONNX path is required",
        "```",
        "```yaml",
        "- run: twins-predict --top-k 0 m.onnx cat.jpg   # line 16",
        "```",
        "```python",
        "print('unclosed'                                # line 19",
        "```",
        "See [the design](no-such-page.md), [ok](#here), [missing anchor](#nowhere), `[code](x.md)`.",
        "# here",
    ])
    where = [p.split(":")[1] for p in check_commands(text, "planted.md")]
    assert where == ["3", "4", "6", "7", "9", "13", "16", "19"], check_commands(text, "planted.md")
    links = check_links(text, "planted.md", tmp_path / "planted.md")
    assert len(links) == 2 and "no-such-page.md" in links[0] and "#nowhere" in links[1], links

    table = "| route | needs |\n|---|---|\n| `ort-cpu` (also `ort`) | base |\n| `trt-fp32` | `[trt]` |\n"
    assert [name for name, _ in route_table(table)] == ["ort-cpu", "trt-fp32"]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_help_names_the_exit_codes(script: str) -> None:
    """--help states the exit codes, interruptions included: 130 (Ctrl-C) and 143 (SIGTERM)."""
    parser = importlib.import_module(SCRIPTS[script]).build_parser()
    text = " ".join(parser.format_help().split())
    assert re.search(r"\bexit (codes|status)\b", text, re.I), f"{script} --help names no exit codes"
    for code in ("130", "143"):
        assert re.search(rf"\b{code}\b", text), f"{script} --help does not say when it exits {code}"


def step_counters(block: list[str]) -> list[tuple[int, int]]:
    return [(int(m[1]), int(m[2])) for m in (re.match(r"^\[(\d+)/(\d+)\] ", line) for line in block) if m]


def test_readme_step_output_adds_up() -> None:
    """Every output the README quotes with [i/N] step counters reads [1/N]..[N/N], and the
    steps it shows are the pipeline's labels."""
    blocks = [lines for _, _, lines in fenced_blocks(README.read_text()) if step_counters(lines)]
    assert blocks, "README.md quotes no step output"
    for lines in blocks:
        counters = step_counters(lines)
        n = len(counters)
        assert counters == [(i, n) for i in range(1, n + 1)], lines
    labels = [line.split("] ", 1)[1] for line in blocks[0] if line.startswith("[")]
    assert labels[0].startswith("build svt_s (classifier)") and labels[1].startswith("export svt_s to ONNX (fp32")
    assert labels[2].startswith("validate ONNX Runtime vs PyTorch FP32 (fp32 thresholds)")


def test_step_counter_checker_reads_a_bad_count() -> None:
    assert step_counters(["[1/3] a ...", "      done in 1 s", "[2/2] b ..."]) == [(1, 3), (2, 2)]
