"""Every citation of a repository file resolves, and no path of a machine is in the repository.

Scanned: the tracked text files under python/, csrc/, tests/, docs/ and README.md. A citation is
- a path that starts with one of the repository's directories (``docs/engine.md``, ``csrc/cuda/schedule.h``,
  ``tests/test_isa.py``; also relative to csrc/ and csrc/include/, as the C++ comments write them);
- any ``.md`` file name (the docs are ours: ``see cuda.md``), looked up next to the citing file, in docs/
  and at the root;
- a bare source file name (``kernels.h``, ``ops.py``), looked up by name anywhere in the repository;
- a section of a Markdown file (``docs/formulas.md section 7c``, ``sections 5 and 8``, ``formulas.md 7b``):
  the file must have a heading numbered so (``## 5.``, ``### 7c.``);
- a relative Markdown link ``[...](path#anchor)``: the file, and the anchor among its headings.
Files of public reference code (cited with their repository) and system headers are listed in
:data:`EXTERNAL` below; anything else that does not resolve fails with the file that cites it.
"""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tracked(*paths: str) -> list:
    try:
        out = subprocess.run(["git", "ls-files", "-z", *paths], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return [p for p in out.stdout.decode().split("\0") if p]


ALL_FILES = _tracked()
pytestmark = pytest.mark.skipif(not ALL_FILES, reason="needs a git checkout (the tracked files)")

SCANNED_ROOTS = ("python", "csrc", "tests", "docs", "README.md")
BINARY_SUFFIXES = {".png", ".so", ".npz", ".npy", ".pt", ".pth", ".pkl", ".gz", ".whl", ".pdf"}

# Cited but not ours: public reference code (with its repository) and system / third-party headers.
EXTERNAL = {
    "wae.py",               # tolstikhin/wae
    "mmd_vae.py",           # ShengjiaZhao/MMD-Variational-Autoencoder
    "vae/main.py",          # pytorch/examples
    "main.py",              # pytorch/examples vae/main.py
    "src/metrics/cw.py",    # gmum/cwae-pytorch
    "cw.py",                # gmum/cwae-pytorch src/metrics/cw.py
    "swae/trainer.py",      # eifuentes/swae-pytorch
    "trainer.py",
    "omp.h", "xmmintrin.h", "immintrin.h", "cuda_runtime.h", "cuda.h", "pybind11/pybind11.h",
    "pybind11/stl.h", "pybind11.h", "stl.h",
    "driver.cpp",           # a file tests/test_special.py writes into a temporary directory
    "MINIMAL.md",           # rbalestr-lab/lejepa (SIGReg's reference listing)
    "lejepa/univariate/epps_pulley.py", "epps_pulley.py",  # rbalestr-lab/lejepa
    "lejepa/multivariate/slicing.py", "slicing.py",        # rbalestr-lab/lejepa
}
# Files the program writes (named in the docs, not in the repository).
OUTPUTS = {"report.md"}

_EXT = r"(?:md|py|h|hpp|cpp|cu|cuh|sh|toml|cfg)"
_PATH = re.compile(r"(?<![\w./-])((?:[\w-][\w.-]*/)*[\w-][\w.-]*\." + _EXT + r")(?![\w/(])")
_SECTION = re.compile(r"([\w./-]*[\w-]\.md)(?:,|:)?\s+(?:sections?|s\.)?\s*"
                      r"(\d+[a-z]?(?:(?:\s*,\s*|\s+and\s+|\s*-\s*)\d+[a-z]?)*)(?![\w.])")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _scanned_files():
    for f in _tracked(*SCANNED_ROOTS):
        p = ROOT / f
        if p.suffix in BINARY_SUFFIXES or f.startswith("tests/data/") or not p.is_file():
            continue
        try:
            yield f, p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def _resolve(cited: str, citing: str):
    """The tracked file a citation names, or None."""
    files = set(ALL_FILES)
    here = str(pathlib.PurePosixPath(citing).parent)
    candidates = [cited, f"{here}/{cited}", f"csrc/{cited}", f"csrc/include/{cited}", f"python/{cited}", f"docs/{cited}"]
    for c in candidates:
        c = str(pathlib.PurePosixPath(c))
        while "/../" in c or c.startswith("../"):  # normalise docs/../README.md
            c = re.sub(r"[^/]+/\.\./", "", c, count=1)
            if c.startswith("../"):
                break
        if c in files:
            return c
    if "/" not in cited:
        named = [f for f in files if f.rsplit("/", 1)[-1] == cited]
        if named:
            return named[0]
    return None


def _is_citation(cited: str) -> bool:
    top_dirs = {f.split("/", 1)[0] for f in ALL_FILES if "/" in f}
    first = cited.split("/", 1)[0]
    if cited.endswith(".md"):
        return True
    if "/" not in cited:
        return True  # a bare file name: ours unless external
    return first in top_dirs | {"cpu", "cuda", "include", "latentdiv", "cpp"}


def test_every_cited_repository_file_exists():
    missing = []
    for f, text in _scanned_files():
        for m in _PATH.finditer(text):
            cited = m.group(1)
            if cited in EXTERNAL or cited in OUTPUTS or cited.rsplit("/", 1)[-1] in OUTPUTS:
                continue
            if not _is_citation(cited):
                continue
            if _resolve(cited, f) is None:
                line = text.count("\n", 0, m.start()) + 1
                missing.append(f"{f}:{line}: {cited}")
    assert not missing, ("citations of files that are not in the repository (fix the citation, or add the "
                         "file; public reference code belongs in EXTERNAL with its repository):\n  "
                         + "\n  ".join(missing))


def _headings(md_file: str) -> list:
    text = (ROOT / md_file).read_text(encoding="utf-8")
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


def _numbers(heading: str):
    m = re.match(r"(\d+[a-z]?)\.", heading)
    return m.group(1) if m else None


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.lower())
    return s.replace(" ", "-")


def test_every_cited_section_exists():
    missing = []
    for f, text in _scanned_files():
        for m in _SECTION.finditer(text):
            target = _resolve(m.group(1), f)
            if target is None:
                continue  # reported by test_every_cited_repository_file_exists
            numbered = {_numbers(h) for h in _headings(target)} - {None}
            # a section "7" exists when "7." or any of "7a.", "7b." ... does
            numbered |= {re.sub(r"[a-z]$", "", n) for n in numbered}
            for part in re.split(r"\s*,\s*|\s+and\s+|\s*-\s*", m.group(2)):
                if part not in numbered:
                    line = text.count("\n", 0, m.start()) + 1
                    missing.append(f"{f}:{line}: {m.group(1)} section {part}")
    assert not missing, "citations of sections that do not exist:\n  " + "\n  ".join(missing)


def test_markdown_links_and_anchors_resolve():
    missing = []
    for f, text in _scanned_files():
        if not f.endswith(".md"):
            continue
        for m in _LINK.finditer(text):
            link = m.group(1)
            if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
                continue
            path, _, anchor = link.partition("#")
            target = _resolve(path, f) if path else f
            line = text.count("\n", 0, m.start()) + 1
            if target is None:
                missing.append(f"{f}:{line}: {link} (no such file)")
            elif anchor and target.endswith(".md") and anchor not in {_slug(h) for h in _headings(target)}:
                missing.append(f"{f}:{line}: {link} (no heading with anchor #{anchor} in {target})")
    assert not missing, "Markdown links that do not resolve:\n  " + "\n  ".join(missing)


_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|tmp|Users|root|mnt|scratch|private/var)/")


def test_no_path_of_a_machine_in_the_tracked_files():
    found = []
    for f in ALL_FILES:
        p = ROOT / f
        if p.suffix in BINARY_SUFFIXES or not p.is_file():
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for m in _MACHINE_PATH.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{f}:{line}: {text[m.start():m.start() + 40].splitlines()[0]}")
    assert not found, ("absolute paths of a machine in the repository (use paths relative to the repository, "
                       "or tempfile / pytest's tmp_path):\n  " + "\n  ".join(found))
