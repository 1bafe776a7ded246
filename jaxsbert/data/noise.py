"""TSDAE's input noise: delete words, as sentence-transformers' ``DenoisingAutoEncoderDataset.delete``.

``delete(text, del_ratio=0.6, rng)`` splits ``text`` into words with NLTK's Treebank word tokenizer, keeps
each word with probability ``1 - del_ratio`` (``rng.rand(n) > del_ratio``; when none is kept, one word
drawn by ``rng.choice(n)``), and joins the kept words with NLTK's Treebank detokenizer. The draws are
those of sentence-transformers' function on numpy's global random state, so with ``np.random.seed(s)``
there and ``numpy.random.RandomState(s)`` here the same texts get the same words deleted.

The tokenizer and detokenizer are NLTK's regular expressions (``NLTKWordTokenizer``,
``TreebankWordDetokenizer``, NLTK 3.10; Apache License 2.0), so nltk is not needed. sentence-transformers
calls ``nltk.word_tokenize``, which first splits a text into sentences with the Punkt model (the
``punkt_tab`` data, downloaded separately); here a text is one line (``word_tokenize(text,
preserve_line=True)``): the same words, except that in a text of several sentences a sentence-final
period inside the text stays on its word ("York." rather than "York", ".").

:func:`add_noise` damages a dataset's text column once, giving the (damaged, original) columns that
:class:`jaxsbert.losses.DenoisingAutoEncoderLoss` trains on. sentence-transformers' dataset damages a
sentence again each time it is read (each epoch differently); here the damage is fixed by ``seed``
(call it again with another seed for another draw).
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import numpy as np

# --- NLTKWordTokenizer (nltk/tokenize/destructive.py) -------------------------------------------------
_CONTRACTIONS2 = [r"(?i)\b(can)(?#X)(not)\b", r"(?i)\b(d)(?#X)('ye)\b", r"(?i)\b(gim)(?#X)(me)\b",
                  r"(?i)\b(gon)(?#X)(na)\b", r"(?i)\b(got)(?#X)(ta)\b", r"(?i)\b(lem)(?#X)(me)\b",
                  r"(?i)\b(more)(?#X)('n)\b", r"(?i)\b(wan)(?#X)(na)(?=\s)"]
_CONTRACTIONS3 = [r"(?i) ('t)(?#X)(is)\b", r"(?i) ('t)(?#X)(was)\b"]

_STARTING_QUOTES = [
    (re.compile("([«“‘„]|[`]+)", re.U), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", re.U), r"\1 "),
]
_ENDING_QUOTES = [
    (re.compile("([»”’])", re.U), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_PUNCTUATION = [
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*+)\s*$", re.U), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}", re.U), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]", re.U), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]", re.U), r" \g<0> "),
]
_PARENS_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
_TOKENIZER_CONTRACTIONS = [re.compile(p) for p in _CONTRACTIONS2 + _CONTRACTIONS3]

# --- TreebankWordDetokenizer (nltk/tokenize/treebank.py) ----------------------------------------------
_DETOK_CONTRACTIONS = [re.compile(p.replace("(?#X)", r"\s")) for p in _CONTRACTIONS3 + _CONTRACTIONS2]
_DETOK_ENDING_QUOTES = [
    (re.compile(r"([^' ])\s('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1\2 "),
    (re.compile(r"([^' ])\s('[sS]|'[mM]|'[dD]|') "), r"\1\2 "),
    (re.compile(r"([^'\s])\s(\'\')"), r"\1\2"),
    (re.compile(r"([,.;:!?'])\s+(\"|\'\')"), r"\1\2"),
    (re.compile(r"(\'\')\s([.,:)\]>};%])"), r"\1\2"),
    (re.compile(r"''"), '"'),
    (re.compile(r'([,.;:!?])"(\')'), r"\1\2" '"'),
]
_DETOK_DOUBLE_DASHES = (re.compile(r" -- "), r"--")
_DETOK_PARENS_BRACKETS = [
    (re.compile(r"([\[\(\{\<])\s"), r"\g<1>"),
    (re.compile(r"\s([\]\)\}\>])"), r"\g<1>"),
    (re.compile(r"([\]\)\}\>])\s([:;,.])"), r"\1\2"),
]
_DETOK_PUNCTUATION = [
    (re.compile(r"([^'])\s'\s"), r"\1' "),
    (re.compile(r"\s([?!])"), r"\g<1>"),
    (re.compile(r'([^\.])\s(\.)(?!\.)([\]\)}>"\']*)'), r"\1\2\3"),
    (re.compile(r"([#$])\s"), r"\g<1>"),
    (re.compile(r"\s([;%])"), r"\g<1>"),
    (re.compile(r"\s\.\.\.\s"), r"..."),
    (re.compile(r"\s([:,])"), r"\1"),
]
_DETOK_STARTING_QUOTES = [
    (re.compile(r"([ (\[{<])\s``"), r"\1``"),
    (re.compile(r"(``)\s"), r"\1"),
    (re.compile(r"``"), r'"'),
]


def word_tokenize(text: str) -> list[str]:
    """NLTK's ``word_tokenize(text, preserve_line=True)``: Treebank words, punctuation split off."""
    for regexp, substitution in _STARTING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp, substitution in _PUNCTUATION:
        text = regexp.sub(substitution, text)
    text = _PARENS_BRACKETS[0].sub(_PARENS_BRACKETS[1], text)
    text = _DOUBLE_DASHES[0].sub(_DOUBLE_DASHES[1], text)
    text = " " + text + " "
    for regexp, substitution in _ENDING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp in _TOKENIZER_CONTRACTIONS:
        text = regexp.sub(r" \1 \2 ", text)
    return text.split()


def detokenize(tokens: Sequence[str]) -> str:
    """NLTK's ``TreebankWordDetokenizer().detokenize(tokens)``: the words joined, the tokenizer's spaces undone."""
    text = " " + " ".join(tokens) + " "
    for regexp in _DETOK_CONTRACTIONS:
        text = regexp.sub(r"\1\2", text)
    for regexp, substitution in _DETOK_ENDING_QUOTES:
        text = regexp.sub(substitution, text)
    text = text.strip()
    text = _DETOK_DOUBLE_DASHES[0].sub(_DETOK_DOUBLE_DASHES[1], text)
    for table in (_DETOK_PARENS_BRACKETS, _DETOK_PUNCTUATION, _DETOK_STARTING_QUOTES):
        for regexp, substitution in table:
            text = regexp.sub(substitution, text)
    return text.strip()


def delete(text: str, del_ratio: float = 0.6, rng: Optional[np.random.RandomState] = None) -> str:
    """``text`` with each word deleted with probability ``del_ratio`` (at least one word kept); ``text`` itself
    when it has no word. ``rng``: a ``numpy.random.RandomState`` (None: numpy's global state, as
    sentence-transformers)."""
    rng = np.random.mtrand._rand if rng is None else rng
    words = word_tokenize(text)
    n = len(words)
    if n == 0:
        return text
    keep = rng.rand(n) > del_ratio
    if not keep.any():
        keep[rng.choice(n)] = True
    return detokenize([w for w, k in zip(words, keep) if k])


def add_noise(dataset: Any, del_ratio: float = 0.6, seed: int = 0, column: Optional[str] = None,
              noisy_column: str = "noisy"):
    """A dataset of (damaged, original) pairs for TSDAE: the columns ``noisy_column`` (``column``'s texts with
    words deleted by :func:`delete`) and ``column``, in that order.

    ``dataset``: a ``datasets.Dataset`` (``column`` defaults to its only column) or a list of strings (the
    column is then ``"text"``). The texts are damaged in order with one ``RandomState(seed)``: the result is
    ``[ST.delete(t) for t in texts]`` after ``np.random.seed(seed)`` in sentence-transformers."""
    import datasets as hf_datasets

    if not 0.0 <= float(del_ratio) <= 1.0:
        raise ValueError(f"add_noise: del_ratio must be in [0, 1], got {del_ratio!r}")
    if isinstance(dataset, hf_datasets.Dataset):
        names = dataset.column_names
        if column is None:
            if len(names) != 1:
                raise ValueError(f"add_noise: the dataset has columns {names}; name the text column with column=")
            column = names[0]
        if column not in names:
            raise ValueError(f"add_noise: no column {column!r}; the dataset has {names}")
        texts = list(dataset[column])
    else:
        texts = list(dataset)
        column = column or "text"
    if noisy_column == column:
        raise ValueError(f"add_noise: noisy_column and column are both {column!r}")
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"add_noise: column {column!r}, row {row}: expected a string, got {type(text).__name__}")
    rng = np.random.RandomState(seed)
    noisy = [delete(text, del_ratio, rng) for text in texts]
    return hf_datasets.Dataset.from_dict({noisy_column: noisy, column: texts})
