"""Domain corpora (novels, manuals) as passages that ground generated tasks in real text.

Algorithm, per .txt file:
1. Decode: UTF-8 (with or without BOM), else GB18030 (a superset of GBK and GB2312). Bytes that
   fit neither raise a SigenError naming the file, byte offset and line: nothing is replaced.
   A file is UTF-8 with bad bytes in it, reported at the first of them rather than decoded as
   GB18030 into nonsense, when the text before them is plainly UTF-8 (two characters of three
   bytes or more: a GBK sentence pasted into a UTF-8 file), when most of it is valid UTF-8 (a
   few damaged bytes), or when it reads further as UTF-8 than as GB18030. Latin-1 text that
   happens to decode as GB18030 (its accented letters become ideographs wedged inside Latin
   words) is reported too.
2. Split into chapters at heading lines: 第一回 / 第二十三回 / 第一一七回 / 第1章 /
   第十章 (also 卷 and 节), and English "Chapter 1" / "CHAPTER XII" / "Chapter One".
   Text before the first heading is chapter 0 with an empty title; when the file has headings
   and that text is shorter than `min_chars` (a title and author line), it is dropped.
3. Split each chapter into paragraphs: a blank line or an indented line starts one; in CJK text
   so does a line after a sentence end, since Chinese files often put each paragraph on one
   unindented line. Other line breaks are hard wraps and are joined.
4. Pack paragraphs greedily into passages of at most `max_chars`. A paragraph that does not fit
   starts the next passage, unless the current one is still under `min_chars`: then the
   paragraph is cut at sentence ends to fill it. A paragraph longer than `max_chars` is cut at
   sentence ends (。！？．… and . ! ?, with closing quotes), then at commas, then hard. A last
   passage under `min_chars` shares text with the one before it.

`PassageSampler` hands passages out in a seeded shuffle that uses each once before any repeats.
`select_chapters` narrows the passages to the chapters a user asks for (`--chapters 81-120`)
before they go to the sampler, so the draw covers every passage of those chapters first.
"""

from __future__ import annotations

import codecs
import hashlib
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from selfinstruct_local.errors import SigenError
from selfinstruct_local.text import is_cjk_char
from selfinstruct_local.tokenizer import local_tokenizer

# Defaults by script: 600 Chinese characters is a long paragraph or two, about as much text as
# 1,500 characters of English; both leave room for the rest of a prompt on a 2k-token model.
CJK_MAX_CHARS, LATIN_MAX_CHARS = 600, 1500
# A passage is at most this fraction of the model's context (1/6), in tokens: it appears in a
# task prompt and again in the answer prompt, with the answer (the plan sizes passages with it).
PASSAGE_SHARE = 6
CJK_SHARE = 0.3  # a file whose non-space characters are at least this share CJK is CJK-heavy

_ZH_NUM = "[0-9０-９一二三四五六七八九十百千零〇两壹贰叁肆伍陆柒捌玖拾佰]+"
_ZH_HEADING = re.compile(rf"第{_ZH_NUM}[回章卷节](?P<next>.?)")
_EN_NUM_WORD = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    "hundred"
)
_EN_HEADING = re.compile(
    rf"chapter\s+(?:\d+|[ivxlcdm]+|(?:{_EN_NUM_WORD})(?:[- ](?:{_EN_NUM_WORD}))*)(?![\w])",
    re.IGNORECASE,
)
_MAX_HEADING_CHARS = 80
_HEADING_SEPARATORS = ":：.．、—-"
_SENTENCE_END = re.compile(r"(?:[。！？．…!?]+|\.+(?=[\s\"'”’」』）)]|$))[\"'”’」』）)\]]*")
_ENDS_SENTENCE = re.compile(r"[。！？．…!?.][\"'”’」』）)\]]*$")
_CLAUSE_END = re.compile(r"[，,；;：:、]")
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WEDGED = re.compile(r"(?<=[A-Za-z])[^\x00-\x7f](?=[A-Za-z])")


@dataclass(frozen=True)
class Passage:
    id: str  # "<file stem>-0001" ("sub-dir-file-0001" in a folder), numbered from 1 per file
    source: str  # the file relative to the corpus: "hlm.txt", "sub/dir/file.txt"; never absolute
    chapter: str  # the heading line, spaces folded; "" before the first heading
    chapter_index: int  # 1, 2, ... for chapters with text; 0 for text before any heading
    text: str


@dataclass(frozen=True)
class _Piece:
    sep: str  # what joins it to the piece before it in the same passage
    text: str


def load_corpus(
    path: str | Path, max_chars: int | None = None, min_chars: int | None = None
) -> list[Passage]:
    """Passages of a .txt file, or of every .txt file under a folder (recursively, sorted).

    `max_chars` defaults per file to 600 for CJK-heavy text and 1,500 otherwise; `min_chars`
    defaults to a third of `max_chars`.
    """
    if max_chars is not None and max_chars < 1:
        raise SigenError(f"max_chars must be at least 1, not {max_chars}")
    passages = []
    for file, name in corpus_files(path):
        passages += file_passages(file, name, max_chars, min_chars)
    if not passages:
        raise SigenError(f"corpus {path} holds no text")
    return passages


def corpus_files(path: str | Path) -> list[tuple[Path, str]]:
    """The .txt files of a corpus (one file, or every .txt under a folder, sorted), each with
    its name relative to the corpus: the file name for a one-file corpus, "sub/dir/file.txt"
    for a folder. Rows, passage ids and the manifest name files this way, never by their
    absolute path: those files are shared, and a path such as /home/<user>/... is private."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".txt" and p.is_file())
        if not files:
            raise SigenError(f"no .txt files under {root}; a corpus is UTF-8 or GBK text files")
        return [(f, f.relative_to(root).as_posix()) for f in files]
    if root.is_file():
        return [(root, root.name)]
    raise SigenError(f"corpus {root} does not exist; pass a .txt file or a folder of them")


def passage_chars_for(path: str | Path, tokenizer_dir: str | Path | None, token_budget: int
                      ) -> int:
    """The longest passage, in characters, that stays within `token_budget` tokens of the
    model's tokenizer, measured on the corpus's own opening text; at most the script's default
    (600 CJK, 1,500 otherwise), at least 100.

    Tokenizers differ most on Chinese: SmolLM2's spends about 1.8 tokens per character, Qwen's
    about 0.7, so a fixed character count would overflow one model's context or starve another.
    Without a tokenizer on this machine (a model known only to a server), a cautious estimate:
    2 tokens per CJK character, 1 per 3 other characters.
    """
    text = read_text(corpus_files(path)[0][0])
    sample = " ".join(text[:20_000].split())
    cap = CJK_MAX_CHARS if is_cjk_heavy(text) else LATIN_MAX_CHARS
    if not sample:
        return cap
    if tokenizer_dir is None:
        per_char = 2.0 if is_cjk_heavy(text) else 1 / 3
    else:
        tokenizer = local_tokenizer(tokenizer_dir)
        per_char = len(tokenizer(sample, add_special_tokens=False)["input_ids"]) / len(sample)
    return max(100, min(cap, int(token_budget / max(per_char, 1e-3))))


def file_passages(
    file: Path, name: str, max_chars: int | None = None, min_chars: int | None = None
) -> list[Passage]:
    """The passages of one file; `name` is its path relative to the corpus (corpus_files)."""
    prefix = PurePosixPath(name).with_suffix("").as_posix().replace("/", "-")
    text = read_text(file)
    cjk = is_cjk_heavy(text)
    max_chars = max_chars or (CJK_MAX_CHARS if cjk else LATIN_MAX_CHARS)
    min_chars = min(max_chars, max_chars // 3 if min_chars is None else min_chars)
    chapters = split_chapters(text)
    if len(chapters) > 1 and chapters[0][0] == "":
        front = "".join(chapters[0][1]).strip()
        if len(front) < min_chars:
            chapters = chapters[1:]
    passages: list[Passage] = []
    index = 0
    for title, lines in chapters:
        paragraphs = split_paragraphs(lines, cjk)
        if not paragraphs:
            continue  # a table of contents: headings with no text
        index += 1 if title else 0
        for pieces in _pack(paragraphs, max_chars, min_chars):
            body = pieces[0].text + "".join(p.sep + p.text for p in pieces[1:])
            passages.append(Passage(id=f"{prefix}-{len(passages) + 1:04d}", source=name,
                                    chapter=title, chapter_index=index, text=body))
    return passages


def read_text(file: Path) -> str:
    """The file decoded (see step 1 of the module docstring), line ends normalized to LF."""
    data = file.read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        bad_utf8 = bom + utf8_error.start
        if bom or _starts_as_utf8(data, bad_utf8) or _mostly_utf8(data):
            raise _not_utf8(file, data, bad_utf8) from None
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError as gb_error:
            if gb_error.start < bad_utf8:  # it reads further as UTF-8: the encoding chosen
                raise _not_utf8(file, data, bad_utf8) from None
            raise _decode_error(file, data, gb_error.start,
                                "is neither valid UTF-8 nor valid GB18030/GBK") from None
        if (at := _latin_mojibake(text)) is not None:
            offset = len(text[:at].encode("gb18030"))
            if offset < bad_utf8:
                raise _not_utf8(file, data, bad_utf8) from None
            raise _decode_error(file, data, offset, "is not valid UTF-8, and read as GB18030 "
                                "it turns Latin letters into ideographs (is the file Latin-1 "
                                "or Windows-1252?)") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Valid UTF-8 characters of three bytes or more (Chinese, curly quotes, dashes) before a bad
# byte that make the file UTF-8. GBK text rarely reads as one: measured on 《红楼梦》 saved as GBK,
# 3 of 3,093 stretches read at random points held one before their first bad byte, none two.
# (Two-byte ones are no evidence: 一 in GBK, D2 BB, is valid UTF-8.)
UTF8_EVIDENCE = 2


def _starts_as_utf8(data: bytes, bad: int) -> bool:
    """Whether the text before the first bad UTF-8 byte is plainly UTF-8, so that the bad
    bytes are a stretch in another encoding (a GBK sentence pasted into a UTF-8 file) or
    damage, not a sign that the whole file is GBK."""
    before = data[:bad].decode("utf-8", errors="replace")
    return sum(1 for ch in before if ch > "\u07ff") >= UTF8_EVIDENCE


def _mostly_utf8(data: bytes) -> bool:
    # Decoded as UTF-8, GBK text yields about one valid character per four bad bytes; damaged
    # UTF-8 yields many valid non-ASCII characters per bad byte.
    lenient = data.decode("utf-8", errors="replace")
    bad = lenient.count("\ufffd")
    good = sum(1 for ch in lenient if ch > "\x7f") - bad
    return good >= 2 * bad


def _latin_mojibake(text: str) -> int | None:
    """Where GB18030 turned accented Latin letters into ideographs, or None if it did not.

    In "café"-style text read as GB18030, each accented letter and the byte after it become one
    ideograph wedged between ASCII letters ("na\u4e00e"); real Chinese text almost never has that.
    """
    wedged = [m.start() for m in _WEDGED.finditer(text)]
    non_ascii = sum(1 for ch in text if ch > "\x7f")
    return wedged[0] if wedged and 4 * len(wedged) >= non_ascii else None


def _not_utf8(file: Path, data: bytes, offset: int) -> SigenError:
    """The error for a UTF-8 file with bytes that are not UTF-8 at `offset`."""
    gbk = _gbk_reading(data, offset)
    cause = (f"; read as GBK, the text from there says “{gbk}”: that part was saved as GBK"
             if gbk else ": the file is damaged there, or that part is in another encoding")
    return _decode_error(
        file, data, offset, f"is not valid UTF-8, the encoding of the rest of the file{cause}",
        "Fix that line in an editor (type it again, or paste it from a good copy of the text) "
        "and save the file as UTF-8")


# What `_not_utf8` quotes of a stretch that reads as GBK, in characters.
GBK_QUOTE_CHARS = 24


def _gbk_reading(data: bytes, offset: int) -> str | None:
    """The bad stretch at `offset`, to the end of its line, as GBK reads it, when that is
    Chinese text: the usual cause is a sentence saved as GBK pasted into a UTF-8 file. None
    when it does not read as Chinese (damage, or another encoding)."""
    start = offset
    # A GBK character whose two bytes happen to form a two-byte UTF-8 one (一 is D2 BB) ends
    # the valid text early: step back over those, so the quote starts where the stretch does.
    while start >= 2 and 0xC2 <= data[start - 2] <= 0xDF and 0x80 <= data[start - 1] <= 0xBF:
        start -= 2
    end = data.find(b"\n", offset)
    stretch = data[start:end if end >= 0 else len(data)]
    try:
        text = stretch.decode("gb18030")
    except UnicodeDecodeError as error:
        text = stretch[:error.start].decode("gb18030")
    text = " ".join(text.split())
    cjk = sum(1 for ch in text if is_cjk_char(ch))
    if cjk < 2 or 2 * cjk < len(text):
        return None
    return text if len(text) <= GBK_QUOTE_CHARS else text[:GBK_QUOTE_CHARS] + "…"


def _decode_error(file: Path, data: bytes, offset: int, problem: str,
                  fix: str = "Re-save the file as UTF-8 (in an editor: save with encoding "
                             "UTF-8; or `iconv -f <its encoding> -t UTF-8`), or repair the "
                             "damaged bytes") -> SigenError:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return SigenError(
        f"{file}: byte 0x{data[offset]:02X} at offset {offset} (line {line}, byte {column} of "
        f"the line) {problem}. {fix}."
    )


def is_cjk_heavy(text: str) -> bool:
    sample = "".join(text[:200_000].split())  # the opening is representative; keeps it fast
    return bool(sample) and len(_CJK_CHAR.findall(sample)) >= CJK_SHARE * len(sample)


def heading(line: str, after_blank: bool = True) -> str | None:
    """The line as a chapter title (spaces folded) if it is a chapter heading, else None.

    `after_blank` says whether the line before it was blank (or absent); an English heading
    needs one, so a wrapped line that happens to begin "Chapter 3 shows ..." stays prose.
    """
    stripped = line.strip()
    if not stripped or len(stripped) > _MAX_HEADING_CHARS:
        return None
    if match := _ZH_HEADING.match(stripped):
        after = match.group("next")
        # "第四回中既将..." inside an indented paragraph is prose, not a heading: a heading has
        # a space or a separator after the number, or stands unindented without ending a sentence.
        separated = not after or after.isspace() or after in _HEADING_SEPARATORS
        bare_title = not line[:1].isspace() and not _ENDS_SENTENCE.search(stripped)
        return " ".join(stripped.split()) if separated or bare_title else None
    if after_blank and _EN_HEADING.match(stripped):
        return " ".join(stripped.split())
    return None


def split_chapters(text: str) -> list[tuple[str, list[str]]]:
    """(title, body lines) per chapter; the first has title "" and holds any text before one."""
    chapters: list[tuple[str, list[str]]] = [("", [])]
    after_blank = True
    for line in text.split("\n"):
        title = heading(line, after_blank)
        if title is not None:
            chapters.append((title, []))
        else:
            chapters[-1][1].append(line)
        after_blank = title is not None or not line.strip()  # a table of contents: one a line
    return chapters if chapters[0][1] or len(chapters) == 1 else chapters[1:]


def split_paragraphs(lines: list[str], cjk: bool) -> list[str]:
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        stripped = line.strip()
        if current and (not stripped or line[:1].isspace()
                        or (cjk and _ENDS_SENTENCE.search(current[-1]))):
            paragraphs.append(_join(current))
            current = []
        if stripped:
            current.append(stripped)
    if current:
        paragraphs.append(_join(current))
    return paragraphs


def _wide(ch: str) -> bool:
    return is_cjk_char(ch) or unicodedata.east_asian_width(ch) in "WF"


def _join(lines: list[str]) -> str:
    # A hard wrap inside Chinese text is not a space; inside English it is.
    out = lines[0]
    for line in lines[1:]:
        out += ("" if _wide(out[-1]) and _wide(line[0]) else " ") + line
    return out


def _sentences(paragraph: str, max_chars: int) -> list[_Piece]:
    """The paragraph cut at sentence ends into pieces of at most `max_chars` characters."""
    pieces: list[_Piece] = []
    for piece in _cut(paragraph, _SENTENCE_END):
        if len(piece.text) <= max_chars:
            pieces.append(piece)
            continue
        # One sentence over the limit: cut after commas, pack the clauses, hard-cut the rest.
        clauses = _cut(piece.text, _CLAUSE_END)
        clauses[0] = _Piece(piece.sep, clauses[0].text)
        for packed in _pack_flat(clauses, max_chars):
            text = packed[0].text + "".join(c.sep + c.text for c in packed[1:])
            for start in range(0, len(text), max_chars):
                pieces.append(_Piece(packed[0].sep if start == 0 else "",
                                     text[start:start + max_chars]))
    return pieces


def _cut(text: str, ends: re.Pattern[str]) -> list[_Piece]:
    pieces, start, sep = [], 0, ""
    for match in ends.finditer(text):
        chunk = text[start:match.end()]
        if chunk.strip():
            pieces.append(_Piece(sep, chunk.strip()))
        start = match.end()
        sep = " " if text[start:start + 1].isspace() else ""
    if text[start:].strip():
        pieces.append(_Piece(sep, text[start:].strip()))
    return pieces


def _size(pieces: list[_Piece]) -> int:
    return sum(len(p.sep) + len(p.text) for p in pieces) - len(pieces[0].sep) if pieces else 0


def _pack_flat(pieces: list[_Piece], max_chars: int) -> list[list[_Piece]]:
    groups: list[list[_Piece]] = [[]]
    for piece in pieces:
        if groups[-1] and _size(groups[-1] + [piece]) > max_chars:
            groups.append([])
        groups[-1].append(piece)
    return [g for g in groups if g]


def _pack(paragraphs: list[str], max_chars: int, min_chars: int) -> list[list[_Piece]]:
    """Paragraphs packed into passages (step 4 of the module docstring), as lists of pieces."""
    passages: list[list[_Piece]] = []
    current: list[_Piece] = []
    for paragraph in paragraphs:
        whole = _Piece("\n", paragraph)
        if current and _size(current + [whole]) > max_chars and _size(current) >= min_chars:
            passages.append(current)
            current = []
        if _size(current + [whole]) <= max_chars:
            current.append(whole)
            continue
        for k, piece in enumerate(_sentences(paragraph, max_chars)):
            piece = _Piece("\n", piece.text) if k == 0 else piece
            if current and _size(current + [piece]) > max_chars:
                passages.append(current)
                current = []
            current.append(piece)
    if current:
        passages.append(current)
    if len(passages) >= 2 and _size(passages[-1]) < min_chars:
        passages[-2:] = _rebalance(passages[-2] + passages[-1], max_chars)
    return passages


def _rebalance(pieces: list[_Piece], max_chars: int) -> list[list[_Piece]]:
    """One passage if the pieces fit, else two of sizes as even as piece boundaries allow."""
    if _size(pieces) <= max_chars:
        return [pieces]
    splits = [(pieces[:k], pieces[k:]) for k in range(1, len(pieces))]
    valid = [(a, b) for a, b in splits if _size(a) <= max_chars and _size(b) <= max_chars]
    left, right = min(valid, key=lambda ab: abs(_size(ab[0]) - _size(ab[1])))
    return [left, right]


class PassageSampler:
    """Draws passages in a shuffled order without repeats until all are used, then reshuffles.

    The draw sequence is epoch 0's shuffle, then epoch 1's, ..., each fixed by (seed, epoch), so
    it depends only on the seed and on how many passages were drawn before: `used` is the whole
    state to save for a resume. Within an epoch every passage comes once, so a long run covers
    every chapter. A draw that crosses into a new epoch may repeat a passage from the old one.
    """

    def __init__(self, passages: list[Passage], seed: int, used: int = 0) -> None:
        if not passages:
            raise SigenError("the corpus has no passages to draw from")
        self.passages = passages
        self.seed = seed
        self.used = used
        self._epoch = -1
        self._order: list[int] = []

    @property
    def epoch(self) -> int:
        return self.used // len(self.passages)

    def draw(self, k: int) -> list[Passage]:
        drawn = []
        for _ in range(k):
            epoch, position = divmod(self.used, len(self.passages))
            if epoch != self._epoch:
                self._order = list(range(len(self.passages)))
                random.Random(f"passages:{self.seed}:{epoch}").shuffle(self._order)
                self._epoch = epoch
            drawn.append(self.passages[self._order[position]])
            self.used += 1
        return drawn

    def state(self) -> dict[str, int | str]:
        """JSON-ready state; the fingerprint detects a corpus that changed before a resume."""
        return {"seed": self.seed, "used": self.used, "fingerprint": fingerprint(self.passages)}

    @classmethod
    def from_state(cls, passages: list[Passage], state: dict) -> PassageSampler:
        if state.get("fingerprint") != fingerprint(passages):
            raise SigenError(
                "the corpus changed since this run started (its passages differ), so the run "
                "cannot continue where it stopped; resume with the same corpus and passage size, "
                "or start a new run"
            )
        return cls(passages, int(state["seed"]), int(state["used"]))


def fingerprint(passages: list[Passage]) -> str:
    digest = hashlib.sha256()
    for p in passages:
        digest.update(f"{p.id}\0{p.text}\0".encode())
    return digest.hexdigest()[:16]


_CHAPTER_RANGE = re.compile(r"^\s*(?P<first>[0-9]+)\s*(?:[-~–—]\s*(?P<last>[0-9]+)\s*)?$")
_CHAPTERS_FORM = ("write a chapter (7), a range (81-120) or a comma-separated list "
                  "(1-5,81-120)")


def parse_chapters(spec: str) -> list[tuple[int, int]]:
    """A `--chapters` value ("81-120", "1-5,81-120", "7") as sorted (first, last) ranges,
    inclusive, with overlapping and adjacent ranges merged: "81-100,101-120" is [(81, 120)].

    Full-width digits and marks (８１－１２０，１) read as their ASCII forms (NFKC), and "~"
    or an en dash may join a range, since Chinese input methods type those by default.
    """
    text = unicodedata.normalize("NFKC", spec).replace("、", ",")
    if not text.strip():
        raise SigenError(f"--chapters is empty; {_CHAPTERS_FORM}")
    ranges = []
    for part in text.split(","):
        match = _CHAPTER_RANGE.match(part)
        if not match:
            raise SigenError(
                f"--chapters {spec!r}: {part.strip()!r} is not a chapter number or range; "
                f"{_CHAPTERS_FORM}")
        first, last = int(match["first"]), int(match["last"] or match["first"])
        if first < 1:
            raise SigenError(f"--chapters {spec!r}: chapters are numbered from 1 (第一回 is 1)")
        if first > last:
            raise SigenError(f"--chapters {spec!r}: the range {first}-{last} is backwards; "
                             f"write {last}-{first}")
        ranges.append((first, last))
    return _merged(ranges)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges sorted, with overlapping and adjacent ones joined: one spelling per selection."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def format_chapters(ranges: list[tuple[int, int]]) -> str:
    """The canonical spelling of chapter ranges ("1-5,81-120"): what a run records and compares."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def select_chapters(passages: list[Passage], ranges: list[tuple[int, int]]) -> list[Passage]:
    """The passages of the chapters in `ranges` (by `chapter_index`, 1 for the first chapter
    with text), in reading order. In a folder corpus each file numbers its chapters from 1, so
    a range selects those chapters of every file.

    A corpus without chapter headings, or a range that holds no passage, is an error that says
    which chapters there are: a typo in a range would otherwise draw from fewer chapters than
    asked for, unnoticed.
    """
    found = sorted({(p.source, p.chapter_index) for p in passages if p.chapter_index > 0})
    numbers = sorted({index for _, index in found})
    wanted = format_chapters(ranges)
    if not numbers:
        raise SigenError(
            f"--chapters {wanted}: the corpus has no chapter headings (lines such as 第一回, "
            "第1章 or Chapter 1): 0 chapters found, so there is nothing to choose from; leave "
            "out --chapters to draw from the whole text")
    files = len({source for source, _ in found})
    where = f" in {files} files, numbered within each file" if files > 1 else ""
    spans = format_chapters(_merged([(n, n) for n in numbers]))
    have = f"it has {len(found)} chapter{'' if len(found) == 1 else 's'}{where} ({spans})"
    for first, last in ranges:
        if not any(first <= n <= last for n in numbers):
            span = str(first) if first == last else f"{first}-{last}"
            raise SigenError(f"--chapters {wanted}: the corpus has no passage in chapter "
                             f"{span}; {have}")
    return [p for p in passages if any(a <= p.chapter_index <= b for a, b in ranges)]


def corpus_record(path: str | Path, passages: list[Passage],
                  chapters: list[tuple[int, int]] | None = None) -> dict:
    """What a run saves about its corpus, to tell on resume whether it is still the same: each
    file's content hash, the fingerprint of all the passages cut from them, and the chapters
    the run draws from (`--chapters`; absent: all of them)."""
    record = {
        "fingerprint": fingerprint(passages),
        "passages": len(passages),
        "files": {name: hashlib.sha256(file.read_bytes()).hexdigest()[:16]
                  for file, name in corpus_files(path)},
    }
    if chapters:
        record["chapters"] = format_chapters(chapters)
    return record


def corpus_changes(saved: dict, now: dict) -> list[str]:
    """How the corpus differs from the one a run was started on (empty: the same)."""
    changes = []
    if saved.get("chapters") != now.get("chapters"):
        # Another choice of chapters draws other passages: the sampler's position means
        # nothing in the new list, and the data would mix two parts of the book.
        changes.append(f"--chapters {now.get('chapters') or 'not given (all chapters)'} "
                       f"instead of {saved.get('chapters') or 'all chapters'}")
    if saved.get("fingerprint") == now["fingerprint"]:
        return changes
    old, new = saved.get("files") or {}, now["files"]
    files = [f"{name} changed" for name in sorted(old.keys() & new.keys())
             if old[name] != new[name]]
    files += [f"{name} is new" for name in sorted(new.keys() - old.keys())]
    files += [f"{name} is gone" for name in sorted(old.keys() - new.keys())]
    if not files:  # the same files cut differently (another splitter or passage length)
        count = now["passages"]
        files.append(f"the same files now make {count} passage{'' if count == 1 else 's'}, "
                     f"not {saved.get('passages', '?')}")
    return changes + files
