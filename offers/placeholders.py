"""The tiny placeholder language of tenant-editable message templates (pure: no ORM, clock or network).

Founders write templates; they must not reach anything but the values we pass. So instead of
Django or Jinja templates (tags, filters, attribute access) the language has exactly:

- ``{{ name }}``: a value. A list value standing alone on a line becomes one ``- item`` line each.
- ``{{#name}} ... {{/name}}``: a section, kept only when ``name`` has a value (e.g. an incentive).
- ``**bold**``, lines starting ``- `` (a list) and ``[Label]({{ some_url }})`` (a link/button).

Rendering produces the plain-text part, the HTML part (values and literal text are escaped; only
URL values become hrefs) and the links. A name we never provide, or a value this customer's data
does not have outside a section, is a ``TemplateProblem`` raised before anything is sent.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Value = str | Sequence[str]

_TOKEN = re.compile(r"\{\{\s*([#/]?)\s*([a-z_][a-z0-9_]*)\s*\}\}")
_ANY_BRACES = re.compile(r"\{\{|\}\}")
_SENTINEL = re.compile(r"\x00(\d+)\x00")
_LINK = re.compile(r"\[([^\]\n]+)\]\(\x00(\d+)\x00\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


class TemplateProblem(ValueError):
    """The template cannot be rendered with these values; `problems` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    links: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Node:
    kind: str  # "text", "value", "section"
    text: str = ""
    name: str = ""
    children: tuple[_Node, ...] = ()


def parse(source: str) -> tuple[_Node, ...]:
    """Parse a template into nodes; raises TemplateProblem on unbalanced sections or stray braces."""
    stack: list[tuple[str, list[_Node]]] = [("", [])]
    position = 0
    problems: list[str] = []
    for match in _TOKEN.finditer(source):
        literal = source[position : match.start()]
        if _ANY_BRACES.search(literal):
            problems.append(f"unreadable placeholder near {literal[-30:]!r}: use {{{{ name }}}}")
        stack[-1][1].append(_Node("text", text=literal))
        position = match.end()
        marker, name = match.group(1), match.group(2)
        if marker == "#":
            stack.append((name, []))
        elif marker == "/":
            if len(stack) == 1 or stack[-1][0] != name:
                problems.append(f"{{{{/{name}}}}} closes a section that is not open")
                continue
            opened, children = stack.pop()
            stack[-1][1].append(_Node("section", name=opened, children=tuple(children)))
        else:
            stack[-1][1].append(_Node("value", name=name))
    tail = source[position:]
    if _ANY_BRACES.search(tail):
        problems.append(f"unreadable placeholder near {tail[:30]!r}: use {{{{ name }}}}")
    stack[-1][1].append(_Node("text", text=tail))
    for name, _children in stack[1:]:
        problems.append(f"section {{{{#{name}}}}} is never closed")
    if problems:
        raise TemplateProblem(problems)
    return tuple(stack[0][1])


def names_in(source: str) -> set[str]:
    """Every value name a template mentions (values and sections)."""
    return {match.group(2) for match in _TOKEN.finditer(source)}


def check(source: str, *, known: set[str]) -> None:
    """Raise TemplateProblem if the template is malformed or names a value we never provide."""
    parse(source)
    unknown = sorted(names_in(source) - known)
    if unknown:
        raise TemplateProblem([f"unknown value {{{{ {name} }}}}" for name in unknown])


def _present(value: Value | None) -> bool:
    return value is not None and value != "" and (isinstance(value, str) or len(value) > 0)


class _Expander:
    """Replaces placeholders by sentinels so markup is applied to the founder's text only."""

    def __init__(self, values: Mapping[str, Value]) -> None:
        self.values = values
        self.slots: list[str] = []
        self.slot_names: list[str] = []
        self.missing: list[str] = []

    def slot(self, name: str, value: str) -> str:
        self.slots.append(value)
        self.slot_names.append(name)
        return f"\x00{len(self.slots) - 1}\x00"

    def expand(self, nodes: Sequence[_Node]) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "section":
                if _present(self.values.get(node.name)):
                    out.append(self.expand(node.children))
            else:
                value = self.values.get(node.name)
                if not _present(value):
                    self.missing.append(node.name)
                elif isinstance(value, str):
                    out.append(self.slot(node.name, value))
                elif value is not None:
                    # A list is a bulleted list; the line the placeholder sits on supplies no bullet.
                    out.append("\n".join("- " + self.slot(node.name, str(item)) for item in value))
        return "".join(out)


def _fill(text: str, slots: list[str], escape: bool) -> str:
    return _SENTINEL.sub(lambda m: html.escape(slots[int(m.group(1))]) if escape else slots[int(m.group(1))], text)


def _to_text(body: str, slots: list[str], *, links_inline: bool) -> str:
    lines = []
    for line in body.split("\n"):
        line = _BOLD.sub(r"\1", line)
        if not links_inline and _LINK.fullmatch(line.strip()):
            continue  # a call-to-action line; in-app prompts show it as a button instead
        line = _LINK.sub(lambda m: f"{m.group(1)}: \x00{m.group(2)}\x00", line)
        lines.append(line.rstrip())
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return _fill(text, slots, escape=False)


def _to_html(body: str, slots: list[str], url_slots: set[int]) -> str:
    def inline(line: str) -> str:
        escaped = html.escape(line, quote=False)
        escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)

        def link(match: re.Match[str]) -> str:
            index = int(match.group(2))
            if index not in url_slots:
                return match.group(0)
            href = html.escape(slots[index])
            return f'<a href="{href}" style="{_BUTTON_STYLE}">{match.group(1)}</a>'

        return _LINK.sub(link, escaped)

    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", body.strip()):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        paragraph: list[str] = []
        items: list[str] = []
        for line in lines:
            if line.startswith("- "):
                if paragraph:
                    blocks.append("<p>" + "<br>".join(paragraph) + "</p>")
                    paragraph = []
                items.append("<li>" + inline(line[2:]) + "</li>")
            else:
                if items:
                    blocks.append("<ul>" + "".join(items) + "</ul>")
                    items = []
                paragraph.append(inline(line))
        if paragraph:
            blocks.append("<p>" + "<br>".join(paragraph) + "</p>")
        if items:
            blocks.append("<ul>" + "".join(items) + "</ul>")
    return _fill("\n".join(blocks), slots, escape=True)


_BUTTON_STYLE = "background:#4f46e5;color:#fff;padding:10px 18px;border-radius:6px;text-decoration:none"


def render(
    *,
    subject: str,
    body: str,
    values: Mapping[str, Value],
    known: set[str],
    url_names: set[str],
    links_inline: bool = True,
) -> Rendered:
    """Render subject and body with `values`; raises TemplateProblem naming every problem at once."""
    problems: list[str] = []
    for source in (subject, body):
        try:
            check(source, known=known)
        except TemplateProblem as exc:
            problems.extend(exc.problems)
    if problems:
        raise TemplateProblem(problems)
    subject_expander, body_expander = _Expander(values), _Expander(values)
    subject_source = subject_expander.expand(parse(subject))
    body_source = body_expander.expand(parse(body))
    missing = sorted(set(subject_expander.missing + body_expander.missing))
    if missing:
        raise TemplateProblem([f"no value for {{{{ {name} }}}} in this customer's data" for name in missing])
    slots = body_expander.slots
    url_slots = {i for i, name in enumerate(body_expander.slot_names) if name in url_names}
    links = tuple(
        (_fill(match.group(1), slots, escape=False), slots[int(match.group(2))])
        for match in _LINK.finditer(body_source)
        if int(match.group(2)) in url_slots
    )
    return Rendered(
        subject=_to_text(subject_source, subject_expander.slots, links_inline=True).replace("\n", " "),
        text=_to_text(body_source, slots, links_inline=links_inline),
        html=_to_html(body_source, slots, url_slots),
        links=links,
    )
