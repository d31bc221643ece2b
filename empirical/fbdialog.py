"""Dialogues, and a strict reader for ParlAI "fbdialog" text (ConvAI2 / Persona-Chat files).

The format (ParlAI fbdialog): one record per line, ``N text``, where ``N`` counts up from 1
within an episode and restarts at 1 for the next episode. Persona lines come first::

    1 your persona: i read twenty books a year.
    2 partner's persona: i like to ski.            (only in ``both_*`` files)
    3 hello what are doing today ?<TAB>i am good , i just got off work .
    4 partner utterance<TAB>reply<TAB><TAB>cand_1|cand_2|...|cand_20

Turn lines hold the partner's utterance and the reply of "self" (the speaker whose persona is
``your persona``); files with candidates add an (empty) reward field and ``|``-separated
candidates, one of which is the reply. Unlike the paper's released scripts, the last episode of a
file is kept.

Anything that does not fit the format raises :class:`DataError`, naming the file and line; no line
is ever skipped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataError", "Dialogue", "read_fbdialog"]

_SELF_PERSONA = "your persona:"
_PARTNER_PERSONA = "partner's persona:"


class DataError(ValueError):
    """Malformed data: the message names the file and the line (``path:line: problem``).

    Attributes
    ----------
    path : str
        The file (or data source) that holds the problem.
    line : int or None
        1-based line number in ``path``, where there is one.
    """

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Dialogue:
    """One conversation, the unit that tasks are made of and that evaluation holds out.

    Attributes
    ----------
    turns : tuple of str
        The utterances, oldest first. In an fbdialog episode they alternate partner, self,
        partner, self, ... (ConvAI2 writes ``__SILENCE__`` where self speaks first).
    targets : tuple of int
        Indices into ``turns`` of the replies a model must pick (each >= 1, increasing); the
        context of target ``i`` is ``turns[:i]``.
    candidates : tuple of tuple of str, or None
        Candidate replies from the file, one tuple per target (each contains the true reply), or
        None when the source has none and distractors must be sampled.
    persona : tuple of str
        The ``your persona:`` sentences (text after the prefix), in file order; empty if none.
    partner_persona : tuple of str
        The ``partner's persona:`` sentences, in file order; empty if none.
    speakers : tuple of str, or None
        A speaker id per turn, where the source has them (chitchat-dataset); None otherwise.
    origin : str
        Where the dialogue starts (``path:line`` or a conversation id), for error messages.
    """

    turns: tuple[str, ...]
    targets: tuple[int, ...]
    candidates: tuple[tuple[str, ...], ...] | None = None
    persona: tuple[str, ...] = ()
    partner_persona: tuple[str, ...] = ()
    speakers: tuple[str, ...] | None = None
    origin: str = ""

    @property
    def n_examples(self) -> int:
        """Number of (context, reply) examples the dialogue yields."""
        return len(self.targets)


class _EpisodeBuilder:
    """Accumulates the lines of one episode and checks them as they come."""

    def __init__(self, path: str, line: int) -> None:
        self.path = path
        self.start = line
        self.persona: list[str] = []
        self.partner_persona: list[str] = []
        self.turns: list[str] = []
        self.candidates: list[tuple[str, ...]] = []
        self.has_candidates: bool | None = None

    def add(self, text: str, line: int) -> None:
        if "\t" not in text:
            if text.startswith(_SELF_PERSONA) or text.startswith(_PARTNER_PERSONA):
                if self.turns:
                    raise DataError(self.path, line, "persona line after the dialogue turns began")
                if text.startswith(_SELF_PERSONA):
                    self.persona.append(self._persona_text(text, _SELF_PERSONA, line))
                else:
                    self.partner_persona.append(self._persona_text(text, _PARTNER_PERSONA, line))
                return
            raise DataError(
                self.path,
                line,
                "turn line has no TAB between the partner's utterance and the reply "
                "(expected 'N partner<TAB>reply' or a persona line)",
            )
        fields = text.split("\t")
        if len(fields) == 2:
            partner, reply = fields
            cands: tuple[str, ...] | None = None
        elif len(fields) == 4:
            partner, reply, _reward, cand_field = fields
            cands = tuple(cand_field.split("|"))
            if any(not c.strip() for c in cands):
                raise DataError(self.path, line, "empty candidate in the candidate list")
            if reply not in cands:
                raise DataError(self.path, line, "the reply is not among the line's candidates")
        else:
            raise DataError(
                self.path,
                line,
                f"turn line has {len(fields)} TAB-separated fields; expected 2 "
                "(partner, reply) or 4 (partner, reply, reward, candidates)",
            )
        if not partner.strip():
            raise DataError(self.path, line, "empty partner utterance")
        if not reply.strip():
            raise DataError(self.path, line, "empty reply")
        has = cands is not None
        if self.has_candidates is None:
            self.has_candidates = has
        elif self.has_candidates != has:
            raise DataError(
                self.path, line, "some turns of this episode have candidates and others do not"
            )
        self.turns.extend((partner, reply))
        if cands is not None:
            self.candidates.append(cands)

    def _persona_text(self, text: str, prefix: str, line: int) -> str:
        sentence = text[len(prefix) :].strip()
        if not sentence:
            raise DataError(self.path, line, f"empty persona sentence after '{prefix}'")
        return sentence

    def finish(self) -> Dialogue:
        if not self.turns:
            raise DataError(
                self.path, self.start, "episode has no dialogue turns (only persona lines)"
            )
        return Dialogue(
            turns=tuple(self.turns),
            targets=tuple(range(1, len(self.turns), 2)),
            candidates=tuple(self.candidates) if self.has_candidates else None,
            persona=tuple(self.persona),
            partner_persona=tuple(self.partner_persona),
            origin=f"{self.path}:{self.start}",
        )


def read_fbdialog(path: str | os.PathLike) -> list[Dialogue]:
    """Read every episode of a ParlAI fbdialog file, the last one included.

    Parameters
    ----------
    path : str or path-like
        A ConvAI2 / Persona-Chat text file, with or without candidates (for example
        ``valid_self_original_no_cands.txt``).

    Returns
    -------
    list of Dialogue
        One per episode, in file order. ``turns`` alternates partner and self; ``targets`` are
        the indices of self's replies; ``candidates`` is None for ``*_no_cands`` files.

    Raises
    ------
    DataError
        With ``path:line`` for: bytes that are not UTF-8, a line without a number (``N text``),
        a number that is neither 1 (new episode) nor the previous number + 1, a turn line without
        a TAB or with a wrong number of fields, empty utterances, persona lines after turns,
        an episode without turns, a mix of turns with and without candidates, a reply missing
        from its candidates, or an empty file.
    FileNotFoundError
        If ``path`` does not exist.
    """
    name = str(path)
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline
    dialogues: list[Dialogue] = []
    episode: _EpisodeBuilder | None = None
    previous = 0
    for lineno, blob in enumerate(lines, start=1):
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(
                name,
                lineno,
                f"not UTF-8 (byte {blob[err.start]:#04x} at byte offset {err.start} of the line)",
            ) from None
        text = text.removesuffix("\r")
        number, space, rest = text.partition(" ")
        if not (number.isascii() and number.isdigit()) or not space:
            raise DataError(name, lineno, f"expected 'N text' with a line number N, got {text!r}")
        n = int(number)
        if n == 1:
            if episode is not None:
                dialogues.append(episode.finish())
            episode = _EpisodeBuilder(name, lineno)
        elif episode is None or n != previous + 1:
            expected = "1" if episode is None else f"{previous + 1} or 1 (a new episode)"
            raise DataError(name, lineno, f"line number {n} out of sequence; expected {expected}")
        assert episode is not None
        episode.add(rest, lineno)
        previous = n
    if episode is None:
        raise DataError(name, None, "file holds no episodes")
    dialogues.append(episode.finish())
    return dialogues
