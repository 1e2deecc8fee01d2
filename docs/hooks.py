r"""MkDocs hooks of the documentation site (`hooks:` in mkdocs.yml).

The experiments' write-ups stay where they are (`experiments/*/README.md` and the tables
beside them, written by the scripts that measure them); the site includes those files
themselves, never copies, so a rerun of an experiment updates the site.

- `on_files` adds every Markdown file, image and CSV file under `experiments/` to the site
  at the same relative path (`experiments/ials/README.md` is the page `experiments/ials/`),
  so links between the experiments' files resolve as they do on GitHub. A folder of Markdown
  files without a README.md gets a generated index page listing them, where a link to the
  folder lands.
- `on_page_markdown` rewrites relative links that leave the docs folder, as GitHub reads
  them: a link from `docs/results.md` to `../experiments/ials/README.md`, or to a folder,
  points to the page the site holds for it. A link to a repository file that is not part
  of the site (a script, a config) becomes its text and the file's path in code, since the
  site has no copy of it and names no hosted repository. Links inside the docs folder are
  left to MkDocs, whose `--strict` build reports any that are broken.
- In a table row, `\|` inside a code span becomes `|`. GitHub needs the escape there (it splits
  a row at every unescaped pipe, code spans included); Python-Markdown splits around code spans
  and would print the backslash. So `\|R(u)\|` in a table cell reads as |R(u)| on both.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

# under MkDocs' logger: its warnings count in --strict
log = logging.getLogger("mkdocs.hooks.mfzoo")

REPO = Path(__file__).resolve().parents[1]
INCLUDED = ("experiments",)  # repository folders served by the site at the same path
SUFFIXES = {".md", ".png", ".jpg", ".jpeg", ".svg", ".csv"}
INDEX_NAMES = ("index.md", "README.md")

# a fenced code block (left alone) or an inline link / image: [text](target "title")
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_TABLE_ROW = re.compile(r"^[ \t]*\|.*$", re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(
    r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]\((?P<target>[^()\s]+)(?P<title>\s+\"[^\"]*\")?\)"
)


def _included(path: Path) -> bool:
    """Whether a repository file is served by the site (under an included folder, a kept suffix)."""
    rel = path.relative_to(REPO)
    return (
        rel.parts[0] in INCLUDED
        and path.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in rel.parts)
    )


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the included repository files, and an index page for each folder among them that
    holds Markdown files but neither index.md nor README.md."""
    folders: dict[Path, list[Path]] = {}
    for folder in INCLUDED:
        for path in sorted((REPO / folder).rglob("*")):
            if not path.is_file() or not _included(path):
                continue
            files.append(
                File(
                    path.relative_to(REPO).as_posix(),
                    src_dir=str(REPO),
                    dest_dir=config.site_dir,
                    use_directory_urls=config.use_directory_urls,
                )
            )
            folders.setdefault(path.parent, []).append(path)
    for folder, members in folders.items():
        has_index = any(p.name in INDEX_NAMES for p in members)
        if has_index or not any(p.suffix == ".md" for p in members):
            continue
        rel = folder.relative_to(REPO).as_posix()
        lines = [f"# `{rel}`", "", "The files of this folder:", ""]
        for path in members:
            lines.append(
                f"- [{path.name}]({path.name})" if path.suffix == ".md" else f"- `{path.name}`"
            )
        files.append(File.generated(config, f"{rel}/index.md", content="\n".join(lines) + "\n"))
    return files


def _site_uri(repo_path: str, files: Files) -> str | None:
    """The site file (src_uri) that stands for a repository path, or None when the site has none:
    `docs/X` is X, an included folder's file is itself, a folder is its index page."""
    if repo_path.startswith("docs/"):
        uri = repo_path[len("docs/") :]
    elif repo_path.split("/")[0] in INCLUDED:
        uri = repo_path
    else:
        return None
    candidates = [uri]
    if (REPO / repo_path).is_dir():
        candidates = [f"{uri}/{name}" for name in INDEX_NAMES]
    return next((c for c in candidates if files.get_file_from_path(c) is not None), None)


def _rewrite(markdown: str, page: Page, files: Files) -> str:
    """The page's Markdown with the links that leave the docs folder pointed into the site."""
    if page.file.abs_src_path is None:  # a generated page: its links are site paths already
        return markdown
    try:
        here = Path(page.file.abs_src_path).resolve().relative_to(REPO).parent.as_posix()
    except ValueError:  # a file from outside the repository: nothing to map
        return markdown

    def replace(match: re.Match) -> str:
        target = match["target"]
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return match[0]
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(here, path))
        if repo_path.startswith("docs/") and here.startswith("docs"):
            return match[0]  # inside the docs folder: MkDocs checks it
        uri = _site_uri(repo_path, files)
        if uri is None and not (REPO / repo_path).exists():
            # a link to nothing: a warning, which fails the strict build
            log.warning(
                "Doc file '%s' links to '%s', which does not exist", page.file.src_uri, target
            )
            return match[0]
        if uri is None:
            if match["bang"]:
                return match[0]  # an image the site lacks: MkDocs reports it
            text = match["text"]
            return text if text.strip("`") == repo_path else f"{text} (`{repo_path}`)"
        relative = posixpath.relpath(uri, posixpath.dirname(page.file.src_uri) or ".")
        new = relative + (f"#{anchor}" if anchor else "")
        return f"{match['bang']}[{match['text']}]({new}{match['title'] or ''})"

    def prose(text: str) -> str:
        text = _LINK.sub(replace, text)
        return _TABLE_ROW.sub(
            lambda row: _CODE_SPAN.sub(lambda code: code[0].replace("\\|", "|"), row[0]), text
        )

    out, last = [], 0
    for fence in _FENCE.finditer(markdown):
        out.append(prose(markdown[last : fence.start()]))
        out.append(fence[0])
        last = fence.end()
    out.append(prose(markdown[last:]))
    return "".join(out)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Point relative links that leave the docs folder at the site's pages (module docstring)."""
    return _rewrite(markdown, page, files)
