"""Telegram's HTML parsing rules as the sandbox applies them to bot messages."""

from __future__ import annotations

import pytest

from bot.sandbox.errors import BotAPIError
from bot.sandbox.textmarkup import bot_command_entities, format_text, parse_html, utf16_len


def test_entities_use_utf16_offsets() -> None:
    text, entities = parse_html("📈 <b>BTC</b> +5%")

    assert text == "📈 BTC +5%"
    # the emoji is two UTF-16 code units, so BTC starts at 3
    assert entities == [{"type": "bold", "offset": 3, "length": 3}]
    assert utf16_len("📈") == 2


def test_nested_tags_links_pre_and_entities() -> None:
    text, entities = parse_html(
        '<b>Sig<i>nal</i></b> <a href="https://ex.com/?a=1&amp;b=2">chart</a> '
        '<pre><code class="language-python">x = 1</code></pre> &lt;&amp;&gt;&quot; &#128200; &copy;'
    )

    assert text == 'Signal chart x = 1 <&>" 📈 &copy;'
    assert entities == [
        {"type": "bold", "offset": 0, "length": 6},
        {"type": "italic", "offset": 3, "length": 3},
        {"type": "text_link", "offset": 7, "length": 5, "url": "https://ex.com/?a=1&b=2"},
        {"type": "pre", "offset": 13, "length": 5, "language": "python"},
    ]


def test_unsafe_links_lose_their_entity() -> None:
    text, entities = parse_html('<a href="javascript:alert(1)">click</a>')
    assert (text, entities) == ("click", [])


@pytest.mark.parametrize(
    ("html", "detail"),
    [
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("bold</b>", "Unexpected end tag at byte offset 4"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<br>", 'Unsupported start tag "br" at byte offset 0'),
        ("é<div>", 'Unsupported start tag "div" at byte offset 2'),  # bytes, not chars
        ("<b", "Unclosed start tag at byte offset 0"),
        ('<span class="x">s</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
def test_malformed_html_is_rejected_like_telegram(html: str, detail: str) -> None:
    with pytest.raises(BotAPIError) as caught:
        parse_html(html)
    assert caught.value.error_code == 400
    assert caught.value.description == f"Bad Request: can't parse entities: {detail}"


def test_text_is_trimmed_and_entities_shift() -> None:
    text, entities = format_text("\n  <b> Filled </b>  \n", "HTML")
    assert text == "Filled"
    assert entities == [{"type": "bold", "offset": 0, "length": 6}]


def test_markdown_is_kept_literally_and_plain_entities_pass_through() -> None:
    assert format_text("*bold*", "MarkdownV2") == ("*bold*", [])
    given = [{"type": "bold", "offset": 0, "length": 2}]
    assert format_text("hi there", None, given) == ("hi there", given)
    with pytest.raises(BotAPIError, match="unsupported parse_mode"):
        format_text("x", "BBCode")


def test_bot_command_entities() -> None:
    assert bot_command_entities("/close BTC now /pause@desk_bot, a/b") == [
        {"type": "bot_command", "offset": 0, "length": 6},
        {"type": "bot_command", "offset": 15, "length": 15},
    ]
    assert bot_command_entities("no commands here") == []


def test_commands_in_bot_text_are_detected_outside_code() -> None:
    text, entities = format_text("Try /positions or <code>/pause</code>.", "HTML")
    assert text == "Try /positions or /pause."
    assert entities == [
        {"type": "bot_command", "offset": 4, "length": 10},
        {"type": "code", "offset": 18, "length": 6},
    ]
