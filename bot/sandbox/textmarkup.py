"""Telegram's HTML formatting and text rules, as the Bot API applies them to bot messages.

Telegram does not store the HTML a bot sends: it parses ``parse_mode=HTML`` into plain text
plus ``MessageEntity`` objects (offsets and lengths in UTF-16 code units), trims surrounding
whitespace and rejects malformed markup with ``400 Bad Request: can't parse entities: ...``.
This module reproduces that (modelled on TDLib's ``parse_html``), so a bot that forgets to
escape a ``<`` fails here exactly as it would against the real Telegram.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.sandbox.errors import BotAPIError

__all__ = [
    "MAX_TEXT_LENGTH",
    "bot_command_entities",
    "check_url",
    "format_text",
    "parse_html",
    "utf16_len",
]

MAX_TEXT_LENGTH = 4096
"""Telegram's limit for a message text after entity parsing, in UTF-16 code units."""

_SUPPORTED_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    }
)
_TAG_TO_ENTITY = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
}
_SPACES = " \t\r\n\0\v\f"
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_LINK_SCHEMES = ("http://", "https://", "tg://", "ton://", "mailto:")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:\d+)?([/?#].*)?$")
_BOT_COMMAND_RE = re.compile(r"(?:^|(?<=\s))/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w@/])")


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (the unit of Telegram entity offsets)."""
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _parse_error(detail: str) -> BotAPIError:
    return BotAPIError.bad_request(f"can't parse entities: {detail}")


def _decode_entity(text: str, pos: int) -> tuple[str, int] | None:
    """Decode the HTML entity at ``text[pos] == "&"``; ``None`` when it is not one."""
    n = len(text)
    end = pos + 1
    if end < n and text[end] == "#":
        end += 1
        value = 0
        if end < n and text[end] == "x":
            end += 1
            start = end
            while end < n and text[end] in "0123456789abcdefABCDEF":
                end += 1
            digits = text[start:end]
            value = int(digits, 16) if digits else 0
        else:
            start = end
            while end < n and text[end].isdigit() and text[end].isascii():
                end += 1
            digits = text[start:end]
            value = int(digits) if digits else 0
        if value == 0 or value >= 0x10FFFF or end - pos >= 10 or 0xD800 <= value <= 0xDFFF:
            return None
        char = chr(value)
    else:
        start = end
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _NAMED_ENTITIES.get(text[start:end])
        if named is None:
            return None
        char = named
    if end < n and text[end] == ";":
        end += 1
    return char, end


def check_url(url: str) -> str | None:
    """Telegram keeps a link entity only for a valid URL (``javascript:`` and the like drop)."""
    url = url.strip()
    if not url:
        return None
    lowered = url.lower()
    if lowered.startswith(_LINK_SCHEMES):
        return url
    if _DOMAIN_RE.match(url):
        return f"http://{url}"
    return None


@dataclass
class _OpenTag:
    name: str
    begin: int  # byte offset of "<" in the source, for error messages
    utf16_start: int
    attrs: dict[str, str] = field(default_factory=dict)


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram-flavoured HTML into ``(plain_text, entities)``.

    Follows the Bot API's "HTML style" rules: the tags ``b/strong, i/em, u/ins,
    s/strike/del, span class="tg-spoiler", tg-spoiler, a href, tg-emoji, code, pre
    (with an inner ``code class="language-x"``), blockquote [expandable]``; only the named
    entities ``&lt; &gt; &amp; &quot;`` plus numeric ones; a bare ``&`` stays literal.
    ``entities`` are Bot API ``MessageEntity`` dicts (``type``, ``offset``, ``length`` in
    UTF-16 code units, plus ``url`` / ``language`` / ``custom_emoji_id``), sorted by offset.
    Raises :class:`BotAPIError` 400 ``can't parse entities: ...`` like Telegram.
    """
    out: list[str] = []
    utf16 = 0
    stack: list[_OpenTag] = []
    entities: list[dict[str, Any]] = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            decoded = _decode_entity(text, i)
            if decoded is not None:
                char, i = decoded
                out.append(char)
                utf16 += utf16_len(char)
                continue
        if c != "<":
            out.append(c)
            utf16 += 2 if ord(c) > 0xFFFF else 1
            i += 1
            continue
        begin = i
        i += 1
        if i < n and text[i] == "/":
            # an end tag
            byte_begin = _byte_offset(text, begin)
            if not stack:
                raise _parse_error(f"Unexpected end tag at byte offset {byte_begin}")
            j = i + 1
            while j < n and text[j] not in _SPACES and text[j] != ">":
                j += 1
            end_name = text[i + 1 : j].lower()
            while j < n and text[j] in _SPACES:
                j += 1
            if j >= n or text[j] != ">":
                raise _parse_error(f"Unclosed end tag at byte offset {byte_begin}")
            i = j + 1
            opened = stack.pop()
            if end_name and end_name != opened.name:
                raise _parse_error(
                    f"Unmatched end tag at byte offset {byte_begin}, "
                    f'expected "</{opened.name}>", found "</{end_name}>"'
                )
            _close_tag(opened, utf16, "".join(out), entities)
            continue
        # a start tag
        j = i
        while j < n and text[j] not in _SPACES and text[j] != ">":
            j += 1
        byte_begin = _byte_offset(text, begin)
        if j >= n:
            raise _parse_error(f"Unclosed start tag at byte offset {byte_begin}")
        name = text[i:j].lower()
        if name not in _SUPPORTED_TAGS:
            raise _parse_error(f'Unsupported start tag "{name}" at byte offset {byte_begin}')
        attrs, i = _parse_attributes(text, j, name, byte_begin)
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise _parse_error(
                f'Tag "span" must have class "tg-spoiler" at byte offset {byte_begin}'
            )
        stack.append(_OpenTag(name=name, begin=byte_begin, utf16_start=utf16, attrs=attrs))
    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    cleaned = [{k: v for k, v in e.items() if not k.startswith("_")} for e in entities]
    cleaned.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), cleaned


def _parse_attributes(text: str, i: int, tag: str, byte_begin: int) -> tuple[dict[str, str], int]:
    """Parse the attributes of a start tag from ``i``; return them and the index after ``>``."""
    n = len(text)
    attrs: dict[str, str] = {}
    while True:
        while i < n and text[i] in _SPACES:
            i += 1
        if i >= n:
            raise _parse_error(f"Unclosed start tag at byte offset {byte_begin}")
        if text[i] == ">":
            return attrs, i + 1
        name_start = i
        while i < n and text[i] not in _SPACES and text[i] not in "=>":
            i += 1
        attr_name = text[name_start:i].lower()
        while i < n and text[i] in _SPACES:
            i += 1
        if i >= n:
            raise _parse_error(f"Unclosed start tag at byte offset {byte_begin}")
        if text[i] != "=":
            if tag == "blockquote" and attr_name == "expandable":
                attrs["expandable"] = ""
                continue
            raise _parse_error(
                "Expected equal sign in declaration of an attribute of the tag "
                f'"{tag}" at byte offset {byte_begin}'
            )
        i += 1
        while i < n and text[i] in _SPACES:
            i += 1
        if i >= n:
            raise _parse_error(f"Unclosed start tag at byte offset {byte_begin}")
        value_chars: list[str] = []
        if text[i] in "'\"":
            quote = text[i]
            i += 1
            while i < n and text[i] != quote:
                if text[i] == "&":
                    decoded = _decode_entity(text, i)
                    if decoded is not None:
                        value_chars.append(decoded[0])
                        i = decoded[1]
                        continue
                value_chars.append(text[i])
                i += 1
            if i < n:
                i += 1
            value = "".join(value_chars)
        else:
            token_start = i
            while i < n and (text[i].isalnum() or text[i] in ".-"):
                i += 1
            value = text[token_start:i].lower()
            if i < n and text[i] not in _SPACES and text[i] != ">":
                raise _parse_error(
                    f"Unexpected end of name token at byte offset {_byte_offset(text, token_start)}"
                )
        if i >= n:
            raise _parse_error(f"Unclosed start tag at byte offset {byte_begin}")
        attrs[attr_name] = value


def _close_tag(
    opened: _OpenTag, utf16_end: int, plain: str, entities: list[dict[str, Any]]
) -> None:
    """Turn a closed tag into its entity (Telegram drops empty entities)."""
    length = utf16_end - opened.utf16_start
    if length <= 0:
        return
    entity: dict[str, Any] = {"offset": opened.utf16_start, "length": length}
    name = opened.name
    if name == "a":
        href = opened.attrs.get("href")
        if href is None:
            # <a> without href links its own text, as in TDLib
            href = plain.encode("utf-16-le")[opened.utf16_start * 2 :].decode("utf-16-le")
        url = check_url(href)
        if url is None:
            return
        entity.update(type="text_link", url=url)
    elif name == "tg-emoji":
        emoji_id = opened.attrs.get("emoji-id")
        if not emoji_id:
            return
        entity.update(type="custom_emoji", custom_emoji_id=emoji_id)
    elif name == "blockquote":
        entity["type"] = "expandable_blockquote" if "expandable" in opened.attrs else "blockquote"
    elif name == "pre":
        entity["type"] = "pre"
        # <pre><code class="language-x">...</code></pre> is one pre entity with a language
        for k, other in enumerate(entities):
            if (
                other["type"] == "code"
                and other["offset"] == entity["offset"]
                and other["length"] == entity["length"]
            ):
                language = other.pop("_language", None)
                if language:
                    entity["language"] = language
                del entities[k]
                break
    elif name == "code":
        entity["type"] = "code"
        css_class = opened.attrs.get("class", "")
        if css_class.startswith("language-") and len(css_class) > len("language-"):
            entity["_language"] = css_class[len("language-") :]
    else:
        entity["type"] = _TAG_TO_ENTITY[name]
    entities.append(entity)


def _trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip surrounding whitespace as Telegram does, shifting and clipping the entities."""
    stripped_left = text.lstrip()
    lead = utf16_len(text) - utf16_len(stripped_left)
    result = stripped_left.rstrip()
    total = utf16_len(result)
    trimmed: list[dict[str, Any]] = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, total)
        if end <= start:
            continue
        trimmed.append({**entity, "offset": start, "length": end - start})
    return result, trimmed


def format_text(
    text: str | None,
    parse_mode: str | None,
    entities: list[dict[str, Any]] | None = None,
    *,
    too_long: str = "message is too long",
    limit: int = MAX_TEXT_LENGTH,
) -> tuple[str, list[dict[str, Any]]]:
    """Apply Telegram's rules for a bot's message text; return ``(plain_text, entities)``.

    ``parse_mode`` ``HTML`` (case-insensitive) is parsed with :func:`parse_html`;
    ``MarkdownV2`` / ``Markdown`` are accepted but their markup is kept literally (the sandbox
    does not parse Markdown); explicit ``entities`` are used as given when there is no
    parse_mode. The result is trimmed; an empty result raises 400 ``message text is empty``
    and more than ``limit`` (:data:`MAX_TEXT_LENGTH`; a caption: 1024) UTF-16 units raises
    400 ``too_long``.
    """
    if text is None or text == "":
        raise BotAPIError.bad_request("message text is empty")
    mode = (parse_mode or "").strip().lower()
    if mode == "html":
        plain, found = parse_html(text)
    elif mode in ("markdown", "markdownv2"):
        plain, found = text, []
    elif not mode:
        plain, found = text, [dict(e) for e in entities or []]
    else:
        raise BotAPIError.bad_request(f"unsupported parse_mode {parse_mode!r}")
    plain, found = _trim(plain, found)
    found = _with_detected_commands(plain, found)
    if not plain:
        raise BotAPIError.bad_request("message text is empty")
    if utf16_len(plain) > limit:
        raise BotAPIError.bad_request(too_long)
    return plain, found


def _with_detected_commands(text: str, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the ``bot_command`` entities Telegram detects in a bot's text too, except inside
    code, pre and links."""
    opaque = [
        (e["offset"], e["offset"] + e["length"])
        for e in entities
        if e["type"] in ("code", "pre", "text_link")
    ]
    detected = [
        c
        for c in bot_command_entities(text)
        if not any(start < c["offset"] + c["length"] and c["offset"] < end for start, end in opaque)
    ]
    if not detected:
        return entities
    return sorted([*entities, *detected], key=lambda e: (e["offset"], -e["length"]))


def bot_command_entities(text: str) -> list[dict[str, Any]]:
    """``bot_command`` entities Telegram attaches to a user's text (``/start``, ``/pos@bot``).

    Offsets and lengths are in UTF-16 code units.
    """
    found: list[dict[str, Any]] = []
    for match in _BOT_COMMAND_RE.finditer(text):
        found.append(
            {
                "type": "bot_command",
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group(0)),
            }
        )
    return found
