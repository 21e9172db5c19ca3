"""qqconn.ops.page: the statechart the page inlines, from each of its sources."""

from __future__ import annotations

import re

from qqconn.machine import State
from qqconn.ops.page import _inline, _plain_chart, page_html, statechart_svg


def test_every_state_has_a_titled_node_in_the_inlined_chart() -> None:
    """The chart the page uses has one <title>NAME</title> group per state (how JS finds them)."""
    svg, source = statechart_svg()
    assert svg.startswith("<svg")
    assert source
    for state in State:
        assert re.search(rf"<g\b[^>]*>\s*<title>{state.name}</title>", svg)


def test_the_plain_chart_needs_no_graphviz_and_has_every_state_and_edge() -> None:
    """The fallback drawing has a titled node per state and an edge for ALIVE -> BACKOFF."""
    svg = _plain_chart()
    for state in State:
        assert f'<g class="node"><title>{state.name}</title>' in svg
    assert "<title>ALIVE&#45;&gt;BACKOFF</title>" in svg
    assert "<title>BACKOFF&#45;&gt;CONNECTING</title>" in svg


def test_inlining_drops_the_prolog_and_the_fixed_size_but_keeps_the_viewbox() -> None:
    """An SVG file becomes an element that scales: no XML prolog, width or height; viewBox kept."""
    doc = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd">\n'
        '<svg width="2343pt" height="646pt" viewBox="0 0 2343 646" xmlns="http://www.w3.org/2000/svg">'
        '<rect width="5" height="5"/></svg>'
    )
    out = _inline(doc)
    assert out.startswith('<svg viewBox="0 0 2343 646"')
    assert '<rect width="5" height="5"/>' in out


def test_the_page_embeds_the_refresh_period_and_escapes_the_title() -> None:
    """The page polls at the given period (ms, at least 100) and shows the title as text."""
    page = page_html(title="<bot & co>", refresh_s=0.25)
    assert "const REFRESH_MS = 250;" in page
    assert "<title>&lt;bot &amp; co&gt;</title>" in page
    assert "<bot & co>" not in page
    assert "const REFRESH_MS = 100;" in page_html(title="x", refresh_s=0.001)
