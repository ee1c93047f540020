"""Real question -> answer pairs: the Python FAQ (PSF licence) and the Perl FAQ (Artistic licence).

Each FAQ entry (one question and its answer) is one source item. The markup (reStructuredText,
POD) is reduced to plain text: roles and links keep their visible words, directives are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

from .common import apt_fetch

NAME = "faq"
PACKAGES = ["python3.11-doc=3.11.2-6+deb12u9", "perl-doc=5.36.0-7+deb12u4"]
VERSION = "Python 3.11.2 FAQ (Debian python3.11-doc 3.11.2-6+deb12u9); Perl 5.36.0 perlfaq1-9 (perl-doc 5.36.0-7+deb12u4)"
LICENSE = "Python FAQ: PSF License Agreement; Perl FAQ: same terms as Perl (Artistic License 1.0 or GPL-1+, shipped under Artistic)"
MIN_ANSWER_WORDS = 8
_RST_ROLE = re.compile(r":[a-z:]+:`(?:[^`<]*<)?~?([^`>]+)>?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")
_POD_CODE = re.compile(r"[CBIFLSE]<+\s*(.*?)\s*>+")
_POD_INDEX = re.compile(r"X<[^>]*>\n?")  # index entries: not part of the visible answer


def _clean_rst(text: str) -> str:
    text = _RST_LINK.sub(r"\1", text)
    text = _RST_ROLE.sub(lambda m: m.group(1).lstrip(".~!"), text)
    text = text.replace("``", "").replace("::\n", ":\n")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(".. ")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def python_faq(faq_dir: Path) -> list[dict]:
    """Entries of the Python FAQ sources: a question is a section title ending with '?'."""
    records = []
    for path in sorted(faq_dir.glob("*.rst.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        titles = [i for i in range(len(lines) - 1)
                  if lines[i].strip() and set(lines[i + 1].strip()) <= set("-=~^") and len(lines[i + 1].strip()) >= len(lines[i].strip()) > 0]
        for k, start in enumerate(titles):
            question = lines[start].strip()
            end = titles[k + 1] if k + 1 < len(titles) else len(lines)
            answer = _clean_rst("\n".join(lines[start + 2: end]))
            if question.endswith("?") and len(answer.split()) >= MIN_ANSWER_WORDS:
                records.append(dict(id=f"python/{path.name.split('.')[0]}/{k}", question=_clean_rst(question), answer=answer))
    return records


def perl_faq(pod_dir: Path) -> list[dict]:
    """Entries of perlfaq1-9: a question is a ``=head2`` heading."""
    records = []
    for number in range(1, 10):
        text = (pod_dir / f"perlfaq{number}.pod").read_text(encoding="utf-8", errors="replace")
        for k, chunk in enumerate(re.split(r"^=head2 ", text, flags=re.M)[1:]):
            question, _, body = chunk.partition("\n")
            body = re.split(r"^=head1 ", body, flags=re.M)[0]
            body = "\n".join(line for line in body.splitlines() if not line.startswith("="))
            answer = re.sub(r"\n{3,}", "\n\n", _POD_CODE.sub(r"\1", _POD_INDEX.sub("", body))).strip()
            if len(answer.split()) >= MIN_ANSWER_WORDS:
                records.append(dict(id=f"perl/perlfaq{number}/{k}", question=_POD_CODE.sub(r"\1", question).strip(), answer=answer))
    return records


def extract(workdir: Path) -> list[dict]:
    root = apt_fetch(PACKAGES, workdir)
    return sorted(python_faq(root / "usr/share/doc/python3.11/html/_sources/faq")
                  + perl_faq(root / "usr/share/perl/5.36.0/pod"), key=lambda r: r["id"])
