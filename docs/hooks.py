"""MkDocs hook: pages made of README sections, with working links.

A line ``--8<-- "README.md:name"`` includes the README's section between the comments
``--8<-- [start:name]`` and ``--8<-- [end:name]`` (``--8<-- "FILE"``: the whole file); an unknown
file or section fails the build. The included links are relative to the repository root. Here a
link into ``docs/`` becomes a link between pages (MkDocs then checks it,
and ``mkdocs build --strict`` fails on a broken one); a link to another file of the repository
becomes the file's path as code, and a link to a file that does not exist fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"\s*$', re.M)


class BrokenRepoLink(Exception):
    pass


def _fix(match: re.Match, page_src: str) -> str:
    text, target = match.group(1), match.group(2)
    if re.match(r"^[a-z]+://|^#|^mailto:", target):
        return match.group(0)
    path, _, anchor = target.partition("#")
    if path.startswith("docs/"):  # a page of the site, relative to the including page
        depth = page_src.count("/")
        return f"[{text}]({'../' * depth}{path[len('docs/') :]}{'#' + anchor if anchor else ''})"
    if (ROOT / "docs" / Path(page_src).parent / path).exists():
        return match.group(0)  # already a link between pages
    if not (ROOT / path).exists():
        raise BrokenRepoLink(f"{page_src}: link to {target!r}, which is not in the repository")
    return text if text.startswith("`") else f"{text} (`{path}`)"


def _include(match: re.Match) -> str:
    path, section = ROOT / match.group(1), match.group(2)
    if not path.is_file():
        raise BrokenRepoLink(f"include of {match.group(1)!r}: no such file")
    text = path.read_text(encoding="utf-8")
    if section is None:
        return text
    start, end = f"--8<-- [start:{section}]", f"--8<-- [end:{section}]"
    if start not in text or end not in text:
        raise BrokenRepoLink(f"include of {match.group(0)!r}: no section {section!r}")
    body = text.split(start, 1)[1].split(end, 1)[0]
    return body.split("\n", 1)[1].rsplit("\n", 1)[0]  # without the marker comments' lines


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.src_uri
    markdown = INCLUDE.sub(_include, markdown)
    return LINK.sub(lambda m: _fix(m, src), markdown)
