"""The text a person sees in a Mastodon status's HTML `content`.

Mastodon serves sanitised HTML: `<p>` paragraphs, `<br>` line breaks, `<a>` links and `<span>`s (see "Formatting"
in its API guidelines); other servers add lists, quotes and code. This gives:

- paragraphs and other blocks separated by a blank line, `<br>` as a newline;
- a link as its full address: Mastodon shows `example.com/page…` and hides the rest in `invisible` spans, so the
  text of a link whose shown part is a piece of its `href` becomes the `href`; a link with words of its own
  (`<a href=...>my blog</a>`) keeps its words;
- mentions (`@user`) and hashtags (`#tag`) as the text shown, entities (`&amp;`, `&quot;`) unescaped, custom
  emoji as their `:shortcode:` (the text Mastodon already puts there).
"""

from __future__ import annotations

from html.parser import HTMLParser

BLOCKS = {"p", "blockquote", "li", "pre", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "div"}


def html_to_text(content: str) -> str:
    parser = _TextParser()
    parser.feed(content)
    parser.close()
    return parser.text()


class _TextParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.link: dict | None = None  # the <a> being read: its href, classes and shown text

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "br":
            self._emit("\n")
        elif tag in BLOCKS:
            self._emit("\n\n")
        elif tag == "a" and self.link is None:
            classes = (attributes.get("class") or "").split() + (attributes.get("rel") or "").split()
            self.link = {
                "href": attributes.get("href") or "",
                "plain": bool({"mention", "hashtag", "tag"} & set(classes)),
                "shown": [],
            }

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag in BLOCKS:
            self._emit("\n\n")
        elif tag == "a" and self.link is not None:
            link, self.link = self.link, None
            shown = "".join(link["shown"])
            self._emit(shown if link["plain"] or not _is_piece_of(shown, link["href"]) else link["href"])

    def handle_data(self, data):
        if self.link is not None:
            self.link["shown"].append(data)
        else:
            self._emit(data)

    def _emit(self, text: str) -> None:
        self.parts.append(text)

    def text(self) -> str:
        lines = "".join(self.parts).split("\n")
        text = "\n".join(line.strip(" ") for line in lines)
        while "\n\n\n" in text:
            text = text.replace("\n\n\n", "\n\n")
        return text.strip()


def _is_piece_of(shown: str, href: str) -> bool:
    """Whether the shown text of a link is (a shortened form of) its address rather than words of its own."""
    piece = shown.strip().rstrip("…").strip()
    if not piece or " " in piece:
        return False
    bare = href.split("://", 1)[-1]
    return piece in href or piece.split("://", 1)[-1] in bare
