"""The repo describes itself truly: every section of docs/METHODS.md and docs/DESIGN.md the code cites exists, and
the README's layout names only files that exist and every part of the backend."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED_DOCS = ("METHODS", "DESIGN")  # docs whose sections the code cites by number
CITATION = re.compile(r"(?:docs/)?(" + "|".join(CHECKED_DOCS) + r")\.md §(\d+(?:\.\d+)?)")


def _sections(doc: str) -> set[str]:
    """Section numbers of a doc: "## 2. Methods" -> "2", "### 2.4 ISM" -> "2.4"."""
    text = (ROOT / "docs" / f"{doc}.md").read_text(encoding="utf-8")
    return {m.group(1).rstrip(".") for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.MULTILINE)}


def _sources() -> list[Path]:
    files = [p for d in ("backend", "addon", "tests", "scripts") for p in (ROOT / d).rglob("*.py")]
    return files + [p for d in ("backend", "docs") for p in (ROOT / d).rglob("*.md")] + [ROOT / "README.md"]


def test_every_cited_section_exists():
    sections = {doc: _sections(doc) for doc in CHECKED_DOCS}
    assert {"1.2", "2.1", "2.8", "3.4", "4", "6"} <= sections["METHODS"]
    assert {"3", "4", "5"} <= sections["DESIGN"]
    missing, count = [], 0
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for m in CITATION.finditer(text):
            count += 1
            if m.group(2) not in sections[m.group(1)]:
                line = text.count("\n", 0, m.start()) + 1
                missing.append(f"{path.relative_to(ROOT)}:{line} {m.group(0)}")
    assert count > 90, count  # the code does cite them
    assert not missing, "citations of sections that do not exist: " + ", ".join(missing)


def test_citations_name_the_docs_folder():
    # A bare document name with a section names no file of the repo from backend/ or tests/: the docs live in docs/.
    bare = re.compile(r"(?<![/\w])(METHODS|DESIGN|RELIABILITY)\.md §")
    offenders = [f"{p.relative_to(ROOT)}:{p.read_text(encoding='utf-8').count(chr(10), 0, m.start()) + 1}"
                 for p in _sources() if p.suffix == ".py" for m in bare.finditer(p.read_text(encoding="utf-8"))]
    assert not offenders, offenders


def _layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_layout_names_what_exists():
    named: set[str] = set()
    parent = ""
    for line in _layout_block():
        indent = len(line) - len(line.lstrip())  # 0: a top-level entry, 2: inside it, more: a continued comment
        head = line.split()[0].rstrip(",")
        if indent == 0:
            parent = head if head.endswith("/") else ""
            path = head
        elif indent == 2:
            path = parent + head
        else:
            continue
        named.add(path.rstrip("/"))
        assert (ROOT / path).exists(), f"README layout names {path}, which does not exist"
    backend = {f"backend/{p.name}" for p in (ROOT / "backend").iterdir()
               if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    backend -= {"backend/__main__.py"}  # named with cli.py on one line
    assert backend <= named | {"backend/cli.py"}, sorted(backend - named)
    for folder in ("methods", "priors", "renderers", "representations", "jobs"):
        assert (ROOT / "backend" / folder / "design.md").exists(), folder
