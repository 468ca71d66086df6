"""Font discovery for the synthetic OCR data generator.

Only the families of a fixed table are used, so that the output depends on which Debian font packages are installed
and not on whatever else happens to be in ``/usr/share/fonts``. Sans, serif, monospace and brush (Kai) styles:

=================================  ======================  =====================================================
family (regular expression)        scripts                 Debian package
=================================  ======================  =====================================================
DejaVu Sans / Serif / Sans Mono    Latin                   fonts-dejavu (also Condensed)
Liberation Sans / Serif / Mono     Latin                   fonts-liberation2
FreeSans / FreeSerif / FreeMono    Latin                   fonts-freefont-ttf
Noto Sans / Serif / Sans Mono CJK  SC: Hans + Latin,       fonts-noto-cjk (the JP / KR / HK faces are skipped)
                                   TC: Hant + Latin
WenQuanYi Zen Hei / Micro Hei      Hans + Hant + Latin     fonts-wqy-zenhei, fonts-wqy-microhei
AR PL UKai / UMing CN              Hans                    fonts-arphic-ukai (brush Kai), fonts-arphic-uming (Ming)
AR PL UKai / UMing TW              Hant                    (idem)
LXGW WenKai                        Hans                    fonts-lxgw-wenkai (brush Kai)
=================================  ======================  =====================================================

Glyph coverage is read from each face's ``cmap`` table with fontTools, so text is only ever rendered with a face that
has every character (no "tofu" boxes). ``OCR_MLLM_FONT_DIRS`` adds directories to search (before the system ones).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from PIL import ImageFont


# Script tags used below.
LATIN = "latin"
HANS = "hans"
HANT = "hant"

LANGUAGE_SCRIPTS = {"en": LATIN, "zh-Hans": HANS, "zh-Hant": HANT}

DEFAULT_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    os.path.expanduser("~/.local/share/fonts"),
    os.path.expanduser("~/.fonts"),
)

# Debian package that provides the faces for each script (used in error messages).
SCRIPT_PACKAGES = {
    LATIN: "fonts-dejavu (or fonts-noto-cjk)",
    HANS: "fonts-noto-cjk (or fonts-wqy-zenhei)",
    HANT: "fonts-noto-cjk (or fonts-wqy-zenhei)",
}

_FONT_FILE = re.compile(r"\.(ttf|ttc|otf)$", re.IGNORECASE)
# (family name pattern, scripts); the first match wins, unknown families are not used
FAMILY_SCRIPTS: Tuple[Tuple["re.Pattern[str]", FrozenSet[str]], ...] = tuple(
    (re.compile(pattern), frozenset(scripts))
    for pattern, scripts in (
        (r"^DejaVu (Sans|Serif|Sans Mono)( Condensed)?$", {LATIN}),
        (r"^Liberation (Sans|Serif|Mono)$", {LATIN}),
        (r"^Free(Sans|Serif|Mono)$", {LATIN}),
        (r"^Noto (Sans|Serif|Sans Mono) CJK SC$", {HANS, LATIN}),
        (r"^Noto (Sans|Serif|Sans Mono) CJK TC$", {HANT, LATIN}),
        (r"^WenQuanYi (Zen Hei|Zen Hei Mono|Micro Hei)$", {HANS, HANT, LATIN}),
        (r"^AR PL (UKai|UMing) CN$", {HANS}),
        (r"^AR PL (UKai|UMing) TW$", {HANT}),
        (r"^LXGW WenKai$", {HANS}),
    )
)


class FontNotFoundError(RuntimeError):
    """Raised when no usable font is installed for a requested language."""


@dataclass(frozen=True)
class FontFace:
    """One face of a font file (``index`` selects the face inside a ``.ttc`` collection)."""

    path: str
    index: int
    family: str
    style: str
    scripts: FrozenSet[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}".strip()

    @property
    def bold(self) -> bool:
        return "bold" in self.style.lower()

    @property
    def monospace(self) -> bool:
        return "mono" in self.family.lower()

    def supports(self, text: str) -> bool:
        cmap = face_codepoints(self)
        return all(ord(ch) in cmap for ch in text if not ch.isspace())


def _font_dirs() -> List[str]:
    extra = os.environ.get("OCR_MLLM_FONT_DIRS", "")
    dirs = [d for d in extra.split(os.pathsep) if d]
    return dirs + list(DEFAULT_FONT_DIRS)


def family_scripts(family: str) -> Optional[FrozenSet[str]]:
    """Scripts a family is used for (FAMILY_SCRIPTS), None for families outside the table."""
    for pattern, scripts in FAMILY_SCRIPTS:
        if pattern.match(family):
            return scripts
    return None


@functools.lru_cache(maxsize=None)
def _scan(dirs: Tuple[str, ...]) -> Tuple[FontFace, ...]:
    faces: List[FontFace] = []
    seen_names = set()
    for root_dir in dirs:
        if not os.path.isdir(root_dir):
            continue
        for dirpath, dirnames, filenames in os.walk(root_dir):
            dirnames.sort()
            for fname in sorted(filenames):
                if not _FONT_FILE.search(fname):
                    continue
                path = os.path.join(dirpath, fname)
                index = 0
                while True:
                    try:
                        font = ImageFont.truetype(path, 12, index=index)
                    except OSError:
                        break
                    family, style = font.getname()
                    scripts = family_scripts(family)
                    key = (family, style)
                    if scripts and key not in seen_names:
                        seen_names.add(key)
                        faces.append(FontFace(path, index, family, style or "", scripts))
                    index += 1
                    if not fname.lower().endswith(".ttc"):
                        break
    faces.sort(key=lambda f: (f.family, f.style, f.path, f.index))
    return tuple(faces)


def discover_faces() -> Tuple[FontFace, ...]:
    """All usable faces found in the font directories (sorted, deterministic)."""
    return _scan(tuple(_font_dirs()))


def faces_for_language(language: str) -> Tuple[FontFace, ...]:
    """Faces usable for ``language`` ("en", "zh-Hans", "zh-Hant"); raises FontNotFoundError if there are none."""
    script = LANGUAGE_SCRIPTS[language]
    faces = tuple(f for f in discover_faces() if script in f.scripts)
    if not faces:
        what = {LATIN: "Latin", HANS: "Simplified Chinese (a 'SC' face)", HANT: "Traditional Chinese (a 'TC' face)"}[
            script
        ]
        raise FontNotFoundError(
            f"No {what} font found for language {language!r} in {', '.join(_font_dirs())}. "
            f"Install the Debian package {SCRIPT_PACKAGES[script]}, e.g. "
            f"`apt-get install -y --no-install-recommends fonts-noto-cjk fonts-wqy-zenhei fonts-dejavu`, "
            f"or point OCR_MLLM_FONT_DIRS at a directory holding those fonts."
        )
    return faces


def check_fonts(languages: Iterable[str]) -> Dict[str, Tuple[FontFace, ...]]:
    """Faces per language, failing early with a message naming the missing Debian package."""
    return {lang: faces_for_language(lang) for lang in languages}


@functools.lru_cache(maxsize=None)
def face_codepoints(face: FontFace) -> FrozenSet[int]:
    """Code points that have a glyph in ``face`` (from its cmap table)."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError as e:  # pragma: no cover - dependency error path
        raise ImportError(
            "The synthetic data generator needs fontTools to check glyph coverage: pip install fonttools"
        ) from e
    font = TTFont(face.path, fontNumber=face.index, lazy=True)
    try:
        cmap = font.getBestCmap() or {}
        return frozenset(cmap.keys())
    finally:
        font.close()


def common_codepoints(faces: Sequence[FontFace]) -> FrozenSet[int]:
    """Code points covered by every face in ``faces``."""
    sets = [face_codepoints(f) for f in faces]
    if not sets:
        return frozenset()
    out = set(sets[0])
    for s in sets[1:]:
        out &= s
    return frozenset(out)


@functools.lru_cache(maxsize=1024)
def get_font(face: FontFace, size: int) -> ImageFont.FreeTypeFont:
    """A cached PIL font (basic layout engine, so rendering does not depend on libraqm being installed)."""
    return ImageFont.truetype(face.path, int(size), index=face.index, layout_engine=ImageFont.Layout.BASIC)
