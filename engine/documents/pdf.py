"""HTML (as a document's template writes it) to PDF with fpdf2, embedding a font with CJK glyphs.

fpdf2 is pure Python (no system libraries, unlike WeasyPrint's pango/cairo), draws the HTML subset a
business document needs (headings, paragraphs, tables, bold, line breaks) with ``write_html``, and
embeds TrueType and OpenType fonts, subset to the glyphs used: Chinese renders as glyphs, not boxes.

The font: ``CRM_PDF_FONT`` (a .ttf, .otf or .ttc file), else the first of ``FONT_SEARCH`` found
(Debian's fonts-noto-cjk, fonts-wqy-microhei, fonts-arphic-uming...). Without one, the PDF is drawn
in a Latin font, every character it lacks becomes "?", and a warning is logged (docs/operations.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

#: Fonts with CJK glyphs, looked for in this order: (file, face number in a .ttc collection).
FONT_SEARCH: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),         # fonts-noto-cjk (face 2: SC)
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),                  # fonts-wqy-microhei
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),                    # fonts-wqy-zenhei
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0),                      # fonts-arphic-uming
    ("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc", 2),              # Fedora, Arch
    ("/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc", 2),
    ("/System/Library/Fonts/PingFang.ttc", 0),                              # macOS
    ("C:/Windows/Fonts/msyh.ttc", 0),                                       # Windows
)
FAMILY = "doc"
_warned: set[str] = set()


class FontMissing(RuntimeError):
    pass


def find_font(configured: str = "") -> tuple[Path, int] | None:
    """The font PDFs embed: ``configured`` (CRM_PDF_FONT; an error when it is no file), else the first
    of ``FONT_SEARCH`` present, else None."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FontMissing(f"CRM_PDF_FONT={configured!r} is no font file (a .ttf, .otf or .ttc with CJK glyphs)")
        return path, 0
    for file, index in FONT_SEARCH:
        if Path(file).is_file():
            return Path(file), index
    return None


def html_to_pdf(html: str, *, font: tuple[Path, int] | None, page: str = "A4", orientation: str = "portrait",
                title: str = "", author: str = "") -> bytes:
    from fpdf import FPDF

    pdf = FPDF(orientation="L" if orientation == "landscape" else "P", unit="mm", format=page)
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title(title)
    pdf.set_author(author)
    pdf.set_creator("crm-engine")
    if font is not None:
        path, index = font
        extra = {"collection_font_number": index} if path.suffix.lower() == ".ttc" else {}
        for style in ("", "B", "I", "BI"):   # one face for all: write_html asks for bold table headings
            pdf.add_font(FAMILY, style=style, fname=str(path), **extra)
        family = FAMILY
    else:
        family = "helvetica"
        if "latin" not in _warned:
            _warned.add("latin")
            log.warning("no CJK font found (set CRM_PDF_FONT or install fonts-noto-cjk): PDF documents are "
                        "drawn in a Latin font and characters it lacks become '?'")
        html = html.encode("latin-1", "replace").decode("latin-1")
    pdf.add_page()
    pdf.set_font(family, size=10)
    pdf.write_html(html, font_family=family, table_line_separators=True, image_map=_no_images, tag_styles=_styles())
    return bytes(pdf.output())


def _styles() -> dict:
    """Headings in near-black (fpdf2's default is dark red), a little smaller than its defaults."""
    from fpdf.fonts import TextStyle

    return {"h1": TextStyle(color="#1f2937", font_size_pt=20),
            "h2": TextStyle(color="#1f2937", font_size_pt=15),
            "h3": TextStyle(color="#374151", font_size_pt=12)}


def _no_images(src: str) -> str:
    """A template draws no images: an ``<img>`` could read any file of the server."""
    raise ValueError(f"documents draw no images (<img src={src!r}>)")
