"""systemd's quoting rules, written once: how a value goes onto an Exec*= line or a
Key= line so that systemd reads back exactly that value and nothing else.

  exec_arg(text, specifiers=False) -> str      one argument on an Exec*= line
  value_problem(text) -> str | None            why text cannot be a Key= value (None: it can)
  escape_value(text, specifiers=False) -> str  the Key= value (check value_problem first)
  split_words(value, escapes=...) -> list[str] a value read back as words (WordsError)

Used by the template filters (fleetpy.unitfile.template) and by container units
(fleetpy.unitfile.container), so both quote alike; unit (fleetpy.unitfile.unit) and container
values are read back into words by the same split_words. Pure: no fleetpy imports; its
only error, WordsError, carries the text of the problem, and callers raise their own
error types with it.

References: systemd.service(5) "COMMAND LINES", systemd.unit(5) "SPECIFIERS".
"""

from __future__ import annotations

import re

# Arguments made only of these characters need no quoting on an Exec line: no
# whitespace, quotes, backslash, '$' (environment expansion), '%' (specifier) or ';'.
_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_BARE_WITH_SPECIFIERS = re.compile(r"[A-Za-z0-9_@+=:,./%-]+")
_C_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\v": "\\v",
}


def _escape_char(char: str, specifiers: bool) -> str:
    if char in _C_ESCAPES:
        return _C_ESCAPES[char]
    if char == "$":
        return "$$"  # systemd expands $VAR and ${VAR}; $$ is a literal $
    if char == "%" and not specifiers:
        return "%%"
    if not char.isprintable():
        # Control and line-separator characters go in as C escapes, never raw.
        code = ord(char)
        if code < 0x80:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def exec_arg(text: str, specifiers: bool = False) -> str:
    """Quote one argument for an Exec*= line so systemd passes exactly `text`.

    systemd splits Exec lines itself (no shell): double quotes group, C escapes
    are decoded, then %-specifiers are expanded and, at exec time, $VAR/${VAR}.
    So: wrap in double quotes, backslash-escape `\\` and `"`, write control
    characters (newline!) as C escapes, `$` as `$$` and `%` as `%%`; an unquoted
    `;` would end the command, a quoted one is data. `specifiers=True` keeps `%`
    for values written by fleetpy or a template author, such as `%m`.
    `text` must not hold a NUL (systemd cannot pass one; callers refuse it).
    """
    if text and (_BARE_WITH_SPECIFIERS if specifiers else _BARE).fullmatch(text):
        return text
    return '"' + "".join(_escape_char(char, specifiers) for char in text) + '"'


def value_problem(text: str) -> str | None:
    """Why `text` cannot be written as the value of a non-Exec `Key=` line, or None.

    Such lines have no quoting: what cannot be written on one line that reads back
    the same is refused: line breaks and other control characters, a trailing
    backslash (it would continue the line), an empty value (it would reset the key).
    """
    for char in text:
        if char != "\t" and not char.isprintable():
            return f"value {text!r} contains {char!r}; a Key= line holds one line of text"
    if not text.strip(" \t"):
        return "empty value; Key= with nothing after it resets the key"
    # systemd strips the blanks around a value first: "x\\ " ends with a backslash too.
    if text.rstrip(" \t").endswith("\\"):
        return f"value {text!r} ends with a backslash, which would continue the line"
    return None


def escape_value(text: str, specifiers: bool = False) -> str:
    """`text` as a Key= value: `%` doubled unless `specifiers` (checked by value_problem)."""
    return text if specifiers else text.replace("%", "%%")


def container_word(text: str) -> str:
    """One word of a [Container] list key (Exec=, Environment=, Label=, DockerArgs=), as
    fleetpy.unitfile.container.split_words reads it back: double quotes, C escapes. `$` and `%`
    stay: fleetpy escapes them when it expands the section."""
    out = []
    for char in text:
        if char in _C_ESCAPES:
            out.append(_C_ESCAPES[char])
        elif not char.isprintable() and ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


class WordsError(ValueError):
    """Why a value cannot be split into words (the text; callers add where it was)."""


_READ_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "s": " ",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


def split_words(value: str, escapes: bool, whitespace: str = " \t") -> list[str]:
    """Split on whitespace outside quotes ("a b", 'x' group; the quotes go). With
    `escapes`, C escapes are decoded as on a systemd command line (container units);
    without, a backslash is an ordinary character (fleet's [X-Fleet] values)."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote: str | None = None
    i = 0
    while i < len(value):
        char = value[i]
        if escapes and char == "\\":
            if i + 1 == len(value):
                raise WordsError("a backslash at the end of the value")
            code = value[i + 1]
            if code == "x":
                digits = value[i + 2 : i + 4]
                if not re.fullmatch(r"[0-9a-fA-F]{2}", digits) or digits == "00":
                    raise WordsError(f"bad escape \\x{digits} (two hex digits, not 00)")
                word.append(chr(int(digits, 16)))
                i += 4
            elif code in _READ_ESCAPES:
                word.append(_READ_ESCAPES[code])
                i += 2
            else:
                raise WordsError(
                    f"unknown escape \\{code} (known: \\n \\t \\s \\\\ \\\" \\' \\xHH ...)"
                )
            in_word = True
            continue
        if quote:
            if char == quote:
                quote = None
            else:
                word.append(char)
        elif char in "\"'":
            quote, in_word = char, True
        elif char in whitespace:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(char)
            in_word = True
        i += 1
    if quote:
        raise WordsError(f"unterminated {quote} quote")
    if in_word:
        words.append("".join(word))
    return words
