"""A griffe extension for the API reference: the docstrings use a few reST habits (``:class:`~a.B```
roles, ``::`` before a literal block); shown as Markdown they become code spans and a plain colon."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`(~?)\.?([^`]+)`")


def role_to_code(match: re.Match) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def markdown_of(text: str) -> str:
    text = ROLE.sub(role_to_code, text)
    lines = []
    for line in text.split("\n"):
        if line.strip() == "::":
            lines.append("")
        elif line.endswith("::"):
            lines.append(line[:-1])
        else:
            lines.append(line)
    return "\n".join(lines)


class RstToMarkdown(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
