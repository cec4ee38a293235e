"""The documentation site (docs/, mkdocs.yml): every page in the nav, every block runs."""

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages():
    """The pages mkdocs.yml's nav lists, in order."""
    return re.findall(r":\s*(\S+\.(?:md|ipynb))\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)


def test_the_nav_covers_every_page_and_names_no_missing_one():
    pages = nav_pages()
    assert len(pages) == len(set(pages))
    assert set(pages) == {p.name for p in (*DOCS.glob("*.md"), *DOCS.glob("*.ipynb"))}


def test_every_python_block_of_the_guides_runs_in_nav_order():
    """One namespace across the guides, in the nav's order, as a reader working
    through them would; a block marked ``<!-- not run: ... -->`` (it needs several
    processes) is the exception, and the porting guide's blocks run on their own
    (tests/test_readme.py)."""
    namespace: dict = {}
    ran = skipped = 0
    for page in nav_pages():
        if page in ("porting.md", "tutorial.ipynb"):  # run by their own tests
            continue
        text = (DOCS / page).read_text()
        blocks = re.findall(r"(<!-- not run[^>]*-->\n)?( *)```python\n(.+?)\n *```", text, re.S)
        for marker, _indent, code in blocks:
            if marker:
                skipped += 1
                continue
            exec(compile(textwrap.dedent(code), f"docs/{page} block {ran}", "exec"), namespace)
            ran += 1
    assert ran >= 6 and skipped == 1
    assert int(namespace["opt"].iterations) == 1  # the optimiser guide's block trained a step
