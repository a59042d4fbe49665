"""The HTML report in a real browser: headless Chromium opens the file from disk, every chart
draws, the log/linear switch and the legend work, and no request leaves the file.

Skipped when no Chromium/Chrome is installed (CI installs one from the system packages,
see .ci/run). The browser is driven over the DevTools pipe (tests/cdp.py), with a fresh
profile and background networking off, so the only requests are the page's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cdp import Browser, find_browser
from test_report import synthetic_rows, write_run

from harness.report import write_report

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium/chrome on PATH")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser")
    small = {"layers": ("lstm", "attention", "lightconv"), "ds": (64,), "ns": (64, 128, 256)}
    rows = synthetic_rows(**small)
    rows[2].update(time_unreliable=True, time_note="contended: synthetic")
    a = write_run(root / "a", rows)
    b = write_run(root / "b", synthetic_rows(device_name="Other CPU", slow=0.5, **small))
    one = write_report([a], root / "one", formats=("html",))[0]
    two = write_report([a, b], root / "two", formats=("html",))[0]
    return {"one": one, "two": two}


@pytest.fixture(scope="module")
def browser() -> Browser:
    assert BROWSER is not None
    b = Browser(BROWSER)
    yield b
    b.close()


_CHARTS = "document.querySelectorAll('div.vl').length"
_DRAWN = ("Array.from(document.querySelectorAll('div.vl')).filter(d => "
          "d.querySelector('svg .mark-line path') && d.querySelector('svg .mark-symbol path'))"
          ".length")


@pytest.mark.parametrize("which, least", [("one", 2), ("two", 3)])
def test_every_chart_renders_and_no_request_leaves_the_file(browser, reports, which, least):
    page = reports[which]
    session = browser.open(page)
    total = browser.wait_for(session, _CHARTS)
    assert total >= least
    drawn = browser.wait_for(session, f"document.body.dataset.charts === '{total}/{total}'")
    assert drawn, browser.evaluate(session, "document.body.dataset.charts")
    assert browser.evaluate(session, "document.body.dataset.chartErrors || ''") == ""
    assert browser.evaluate(session, _DRAWN) == total  # lines and points in every chart
    hollow = browser.evaluate(
        session, "document.querySelectorAll('.mark-symbol path[fill=\"white\"]').length")
    assert hollow >= 1  # the unreliable timing is a hollow point
    wide = browser.evaluate(session, "Array.from(document.querySelectorAll('.tw, figure'))"
                                     ".filter(t => t.scrollWidth > t.clientWidth + 1).length")
    assert wide == 0  # nothing overflows at 1280 px
    assert browser.evaluate(session, "document.documentElement.scrollWidth") <= 1280
    requests = browser.requests(session)
    assert requests and all(u == page.resolve().as_uri() or u.startswith("data:")
                            for u in requests), requests
    assert browser.errors(session) == []


def test_log_linear_switch_and_legend_pick(browser, reports):
    session = browser.open(reports["one"])
    total = browser.wait_for(session, _CHARTS)
    assert browser.wait_for(session, f"document.body.dataset.charts === '{total}/{total}'")
    first = "document.querySelector('div.vl')"
    labels = f"Array.from({first}.querySelectorAll('.role-axis-label text')).map(t => " \
             "t.textContent).join(',')"
    before = browser.evaluate(session, labels)
    browser.evaluate(session, f"document.querySelector('input[name=\"' + {first}.id + "
                              "'-scale\"][value=\"linear\"]').click()")
    after = browser.wait_for(session, f"(() => {{ const l = {labels}; "
                                      f"return l && l !== {before!r} ? l : ''; }})()")
    assert after and after != before  # redrawn with a linear y axis
    # a click on a legend entry dims the other series
    dimmed = ("Array.from(document.querySelectorAll('div.vl')[1].querySelectorAll("
              "'.mark-line path')).filter(p => p.getAttribute('stroke-opacity') === '0.12' "
              "|| p.getAttribute('opacity') === '0.12').length")
    assert browser.evaluate(session, dimmed) == 0
    browser.evaluate(session, """(() => {
        const label = document.querySelectorAll('div.vl')[1]
            .querySelector('.role-legend-symbol path');
        const box = label.getBoundingClientRect();
        for (const type of ['pointerdown', 'mousedown', 'pointerup', 'mouseup', 'click']) {
          label.dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: box.x + 2,
                                                    clientY: box.y + 2}));
        }
    })()""")
    assert browser.wait_for(session, dimmed, timeout=10)
    assert browser.errors(session) == []
