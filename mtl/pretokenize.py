"""Words of raw text the way WNUT-16 (tweets, the entity task's data) is tokenized.

Design note. An entity is a run of whole words, so what a "word" is decides what a span can be.
Whitespace alone makes "Paris." one word and the served entity `Paris.`, full stop included. The
training data (CoNLL files) already comes as words, tokenized Twitter-style: punctuation apart,
runs of it ("!!!", "...") one word, an @mention, a #hashtag, a URL, an emoticon or an HTML entity
one word, contractions ("I'm", "don't") one word but the possessive "'s" its own. `word_spans`
cuts raw text at serving time the same way, as (start, end) character offsets into the ORIGINAL
string (Python indices, so exact for any non-ASCII text), which is what entity offsets must be.
Tokens never straddle these boundaries for the WordPiece tokenizers we ship (they split every
punctuation mark), and `mtl.spans` copes when one does.

Pure Python (`re`): the gateway decodes spans without torch.
"""
from __future__ import annotations

import re

# A letter or digit with any combining marks after it (decomposed "é" is "e" + U+0301).
_CHAR = r"[^\W_][\u0300-\u036f]*"
# Emoji: a pictograph with its skin tone / variation selector, joined by ZWJ into one sequence;
# a pair of regional indicators is one flag.
_EMOJI_BASE = r"[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF]"
_EMOJI_MOD = r"[\uFE0F\u20E3\U0001F3FB-\U0001F3FF]*"
_EMOJI = rf"[\U0001F1E6-\U0001F1FF]{{2}}|{_EMOJI_BASE}{_EMOJI_MOD}(?:\u200D{_EMOJI_BASE}{_EMOJI_MOD})*"
# Trailing punctuation after a URL belongs to the sentence, not the URL.
_URL = r"(?:https?://|www\.)\S+?(?=[.,;:!?)\]}'\"]*(?:\s|$))"

_WORD = re.compile(
    "|".join([
        _URL,
        r"[\w.+-]+@\w+(?:\.\w+)+",                    # e-mail address
        r"[@#]\w+",                                  # @mention, #hashtag
        r"&(?:amp|lt|gt|quot|apos|#\d+);",           # HTML entity (tweets keep them escaped)
        r"(?<!\w)[:;=][-o*']?[)\](\[dDpP/\\|}{@*]+(?!\w)",  # emoticon :) ;-) :D :/
        r"\d+(?:[.,:]\d+)+",                          # 3.5, 1,000, 12:30
        r"(?:[^\W\d_]\.){2,}",                         # U.S., e.g.
        rf"['\u2019][sS](?!{_CHAR})",                # the possessive 's, its own word
        # A word, with inner hyphens (Jay-Z) and apostrophes (I'm, don't; not a possessive 's).
        rf"(?:{_CHAR})+(?:(?:-|['\u2019](?![sS](?!{_CHAR})))(?:{_CHAR})+)*",
        _EMOJI,
        r"([!?.])\1+|[!?]{2,}",                      # runs: "!!!", "...", "?!"
        r"\S",                                       # any other mark, on its own
    ]),
)


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the words of `text`, in order, never overlapping."""
    return [m.span() for m in _WORD.finditer(text)]


def words(text: str) -> list[str]:
    return [text[s:e] for s, e in word_spans(text)]
