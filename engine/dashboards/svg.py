"""Charts drawn on the server as SVG: no JavaScript library, no CDN, every text escaped."""

from __future__ import annotations

from decimal import Decimal
from xml.sax.saxutils import escape

from . import Result

WIDTH, BAR_H, GAP, LABEL_W = 560, 22, 6, 170
COLOURS = ("#2f6fde", "#3c9d5d", "#d9822b", "#8e5bd1", "#d14b6f", "#2aa1a8", "#8c8c3a", "#6b7a8f")


def render(result: Result, money: tuple[str, str] | None = None) -> str:
    """The widget as a standalone SVG document; ``money=(ISO code, lang)``: its figures are amounts
    in that currency (``money_of``)."""
    fmt = _fmt if money is None else (lambda value: _money(value, money))
    if result.groups is None:
        return _number(result, fmt)
    if result.widget.type == "line":
        return _line(result, fmt)
    return _bars(result, fmt, funnel=result.widget.type == "funnel")


def money_of(model, widget, currency: str, lang: str) -> tuple[str, str] | None:
    """``(currency, lang)`` when the widget's figures are amounts in one currency: a sum, average,
    minimum or maximum of an amount field of an entity whose records name no currency of their own
    (the site's ``currency``); None otherwise (counts, or amounts in several currencies)."""
    from engine.fields.numeric import is_amount

    ent = model.entities.get(widget.entity)
    field = ent.fields.get(widget.field or "") if ent is not None else None
    if field is None or widget.aggregate == "count" or ent.props.get("currency") or not is_amount(field):
        return None
    return currency, lang


def _money(value, money: tuple[str, str]) -> str:
    from engine.fields.numeric import format_money

    return format_money(value, *money) if isinstance(value, (Decimal, float, int)) else _fmt(value)


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (Decimal, float)):
        return f"{value:,.2f}"
    return f"{value:,}"


def _svg(width: int, height: int, body: str, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title, {chr(34): "&quot;"})}" '
            f'font-family="Noto Sans CJK SC, Noto Sans, sans-serif" font-size="13">'
            f"<title>{escape(title)}</title>{body}</svg>")


def _number(result: Result, fmt) -> str:
    title = result.widget.label.get()
    body = (f'<text x="10" y="26" fill="#555">{escape(title)}</text>'
            f'<text x="10" y="70" font-size="36" font-weight="bold" fill="#222">{escape(fmt(result.value))}</text>')
    return _svg(WIDTH, 90, body, title)


def _bars(result: Result, fmt, *, funnel: bool) -> str:
    groups = result.groups or []
    top = max((float(v or 0) for _, _, v in groups), default=0) or 1
    span = WIDTH - LABEL_W - 90
    parts = []
    for i, (_, label, value) in enumerate(groups):
        y = 10 + i * (BAR_H + GAP)
        length = max(1.0, span * float(value or 0) / top) if value else 0
        x = LABEL_W + ((span - length) / 2 if funnel else 0)
        parts.append(f'<text x="{LABEL_W - 8}" y="{y + 15}" text-anchor="end" fill="#333">{escape(str(label))}</text>'
                     f'<rect x="{x:.1f}" y="{y}" width="{length:.1f}" height="{BAR_H}" rx="3" '
                     f'fill="{COLOURS[i % len(COLOURS)]}"/>'
                     f'<text x="{LABEL_W + span + 8}" y="{y + 15}" fill="#333">{escape(fmt(value))}</text>')
    height = 20 + len(groups) * (BAR_H + GAP)
    return _svg(WIDTH, max(height, 40), "".join(parts) or '<text x="10" y="25" fill="#888">–</text>',
                result.widget.label.get())


def _line(result: Result, fmt) -> str:
    groups = result.groups or []
    height, left, bottom = 220, 50, 190
    top = max((float(v or 0) for _, _, v in groups), default=0) or 1
    step = (WIDTH - left - 20) / max(1, len(groups) - 1)
    points = [(left + i * step, bottom - 160 * float(v or 0) / top) for i, (_, _, v) in enumerate(groups)]
    parts = [f'<line x1="{left}" y1="{bottom}" x2="{WIDTH - 10}" y2="{bottom}" stroke="#999"/>']
    if points:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS[0]}" stroke-width="2"/>')
    for (x, y), (_, label, value) in zip(points, groups):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLOURS[0]}"/>'
                     f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11" fill="#333">'
                     f'{escape(str(label))}</text>'
                     f'<text x="{x:.1f}" y="{y - 6:.1f}" text-anchor="middle" font-size="11" fill="#333">'
                     f'{escape(fmt(value))}</text>')
    return _svg(WIDTH, height, "".join(parts), result.widget.label.get())
