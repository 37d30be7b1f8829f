"""The built student website in a real browser: Debian's Chromium, driven by Selenium, opening
the pages from disk (``file://``, as a reader with the site on a USB stick does) with every
non-local host unresolvable. A failing page leaves a screenshot in ``_build/browser/``.
"""

import json
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "browser"
PAGES = ["intro", *(f"chapters/{p.stem}" for p in sorted((ROOT / "chapters").glob("*.md"))),
         *(p.stem for p in ROOT.glob("ch*_preview.md")), "references"]
DESKTOP, PHONE = (1400, 1000), (400, 850)

# Per page, in the browser: what MathJax left untypeset, raw Markdown tables in outputs, broken images.
PAGE_STATE = r"""
const math = [...document.querySelectorAll('.math')];
const outputs = [...document.querySelectorAll('.cell_output, .output')];
const images = [...document.querySelectorAll('.bd-article img')];
return {
  math: math.length,
  untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60)),
  raw_tables: outputs.filter(e => /^\s*\|.*\|.*\|\s*$/m.test(e.innerText)).map(e => e.innerText.slice(0, 60)),
  broken_images: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
  // alt text that says what the figure shows (not its file name), and a caption under it
  no_alt: images.filter(i => !i.alt.trim() || /[0-9a-f]{32,}\.(png|svg|jpe?g)$/.test(i.alt)).map(i => i.getAttribute('src')),
  no_caption: images.filter(i => !(i.closest('figure') && i.closest('figure').querySelector('figcaption')
                                   && i.closest('figure').querySelector('figcaption').innerText.trim()))
                    .map(i => i.getAttribute('src')),
  // display equations wider than their column: scrolled on a phone, not at all on a desktop
  wide_equations: [...document.querySelectorAll('mjx-container[display="true"]')]
    .filter(m => m.scrollWidth > m.clientWidth + 1).map(m => m.textContent.slice(0, 60)),
  unscrollable_equations: [...document.querySelectorAll('mjx-container[display="true"]')]
    .filter(m => m.scrollWidth > m.clientWidth + 1 && !['auto', 'scroll'].includes(getComputedStyle(m).overflowX))
    .map(m => m.textContent.slice(0, 60)),
  // code cells whose lines run past the column (the reader would have to scroll sideways)
  wide_code: [...document.querySelectorAll('.cell_input pre, .cell_output pre')]
    .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.slice(0, 60)),
};
"""
SIDEBAR = r"""
const bar = document.querySelector('.bd-sidebar-primary');
const box = bar.getBoundingClientRect();
return {shown: getComputedStyle(bar).visibility !== 'hidden' && box.right > 0 && box.width > 0};
"""


def _chromium():
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def _browser(size):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium(), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("the browser tests need Chromium and its driver: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={size[0]},{size[1]}",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def browser():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built website in {SITE}: run `make book` (or `make test`, which builds it)")
    driver = _browser(DESKTOP)
    yield driver
    driver.quit()


def open_page(driver, page: str) -> dict:
    """Load ``page``, wait for MathJax, return the page state with its console errors and
    the requests that left the machine."""
    driver.get((SITE / f"{page}.html").as_uri())
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "(window.MathJax && MathJax.startup && MathJax.startup.promise ? MathJax.startup.promise : Promise.resolve())"
        ".then(() => done(true), () => done(false));")
    state = driver.execute_script(PAGE_STATE)
    state["errors"] = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    state["off_machine"] = [m["params"]["request"]["url"] for m in requests
                            if m["method"] == "Network.requestWillBeSent"
                            and not m["params"]["request"]["url"].startswith(("file:", "data:", "blob:"))]
    return state


def screenshot_on_failure(driver, name: str, problems: list) -> None:
    if problems:
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"{name.replace('/', '_')}.png"))


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_offline_without_errors(browser, page):
    state = open_page(browser, page)
    problems = [f"console error: {e}" for e in state["errors"]]
    problems += [f"request off the machine: {u}" for u in state["off_machine"]]
    problems += [f"math not typeset: {t!r}" for t in state["untypeset"]]
    problems += [f"raw Markdown table: {t!r}" for t in state["raw_tables"]]
    problems += [f"broken image: {s}" for s in state["broken_images"]]
    problems += [f"image without alt text: {s}" for s in state["no_alt"]]
    problems += [f"figure without a caption: {s}" for s in state["no_caption"]]
    problems += [f"display equation wider than the column at {DESKTOP[0]} px: {t!r}" for t in state["wide_equations"]]
    problems += [f"code that scrolls sideways at {DESKTOP[0]} px: {t!r}" for t in state["wide_code"]]
    screenshot_on_failure(browser, page, problems)
    assert not problems, f"{page}: " + "; ".join(problems[:10])


@pytest.fixture(scope="module")
def phone():
    driver = _browser(PHONE)
    yield driver
    driver.quit()


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("chapters/")])
def test_on_a_phone_wide_equations_scroll_instead_of_being_cut(phone, page):
    state = open_page(phone, page)
    screenshot_on_failure(phone, f"phone-{page}", state["unscrollable_equations"])
    assert not state["unscrollable_equations"], state["unscrollable_equations"][:5]


def test_the_math_menu_is_off(browser):
    """MathJax's menu offers accessibility tools that load speech rules the offline site does
    not hold (and hide all math over http): a right click on an equation opens no menu."""
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, "chapters/ch02_bn_forward")
    equation = next(e for e in browser.find_elements("css selector", 'mjx-container[display="true"]') if e.is_displayed())
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", equation)
    ActionChains(browser).context_click(equation).perform()
    time.sleep(0.3)
    assert not browser.find_elements("css selector", ".CtxtMenu_Menu, .CtxtMenu_MenuFrame")


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_sidebar_toggle_opens_and_closes_the_chapter_list(size):
    """On a desktop the chapter list is shown and the toggle hides it; on a phone it is hidden
    and the toggle opens it."""
    driver = _browser(size)
    try:
        driver.get((SITE / "chapters" / "ch02_bn_forward.html").as_uri())
        before = driver.execute_script(SIDEBAR)["shown"]
        toggles = [b for b in driver.find_elements("css selector", ".primary-toggle") if b.is_displayed()]
        assert toggles, "no visible sidebar toggle"
        toggles[0].click()
        time.sleep(0.5)  # the sidebar slides
        after = driver.execute_script(SIDEBAR)["shown"]
        screenshot_on_failure(driver, f"sidebar-{size[0]}", [] if before != after else ["no change"])
        assert before == (size == DESKTOP) and after == (size != DESKTOP), (before, after)
    finally:
        driver.quit()


def poll(driver, script: str, timeout: float = 20):
    """The value of ``script`` once it is non-empty (a loaded page can still be parsing on a busy
    machine), or its last value after ``timeout`` seconds."""
    deadline = time.time() + timeout
    value = driver.execute_script(script)
    while not value and time.time() < deadline:
        time.sleep(0.2)
        value = driver.execute_script(script)
    return value


def test_search_finds_the_pages_that_contain_a_term(browser):
    browser.get((SITE / "search.html").as_uri() + "?q=momentum")
    found = poll(browser,                # the results appear one by one; the summary comes after the last
        "const summary = document.querySelector('#search-results .search-summary');"
        "if (!summary || !summary.innerText.startsWith('Search finished')) return null;"
        "return [...document.querySelectorAll('#search-results li a')].map(a => a.getAttribute('href'));") or []
    pages = {href.split("#")[0].split("?")[0] for href in found}
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    screenshot_on_failure(browser, "search", [] if found and not errors else ["no results or errors"])
    assert any("ch02_bn_forward" in p for p in pages), pages
    assert errors == [], errors        # no page fetches for snippets, which fail over file://


def test_bibliography_labels_are_the_citations_of_the_text(browser):
    """A reader looks up "Ioffe and Szegedy, 2015" in the list and finds that label."""
    browser.get((SITE / "chapters" / "ch01_normalization.html").as_uri())
    cited = set(poll(browser,
        "return [...document.querySelectorAll('a[href*=\"references.html#id\"]')].map(a => a.innerText.trim());"))
    browser.get((SITE / "references.html").as_uri())
    labels = poll(browser,
        "return [...document.querySelectorAll('.citation .label')].map(l => l.innerText.replace(/[\\[\\]]/g, '').trim());")
    assert "Ioffe and Szegedy, 2015" in labels, labels
    assert not any(len(label) < 8 for label in labels), labels        # no alpha-style [IS15]
    years = {c.split(", ")[-1] for c in cited if ", " in c}
    assert years and all(any(label.endswith(year) for label in labels) for year in years), (cited, labels)
