"""`shortcut serve`: the playground's API (bad requests are 400s, concurrent clicks queue) and
the page itself in a real browser (Debian's chromium driven by Playwright)."""

import json
import shutil
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import tiny_config, tiny_digit_run, tiny_trainer

from shortcut_models.serve import Playground, make_server


def serving(run):
    httpd = make_server(Playground(run), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    httpd, url = serving(tiny_digit_run(tmp_path_factory.mktemp("digits") / "run"))
    yield url
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def trained_2d(tmp_path_factory):
    """A 2-D model trained enough that 1 and 4 steps give visibly different samples."""
    run = tmp_path_factory.mktemp("serve2d") / "run"
    tiny_trainer(run, tiny_config(steps=300, backbone_options={})).run()
    httpd, url = serving(run)
    yield url
    httpd.shutdown()
    httpd.server_close()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_api_answers_and_refuses_bad_requests_with_one_line(server):
    status, info = get(server + "/api/info")
    assert status == 200 and info["steps"] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert info["classes"] == [str(c) for c in range(10)]
    status, body = get(server + "/api/generate?steps=4&class=3&cfg=1.5&seed=7&count=4")
    assert status == 200 and body["image"].startswith("data:image/png;base64,")
    assert body["ms"] > 0
    for query, expect in [
        ("steps=3", "steps must be one of"),
        ("steps=1&class=10", "class must be in 0..9"),
        ("steps=1&count=100000", "count must be in 1..64"),
        ("steps=abc", "bad parameter value"),
        ("steps=1&color=red", "unknown parameter"),
    ]:
        status, body = get(server + "/api/generate?" + query)
        assert status == 400 and expect in body["error"] and "\n" not in body["error"], query
    assert get(server + "/nowhere")[0] == 404


def test_concurrent_clicks_queue_instead_of_failing(server):
    urls = [server + f"/api/generate?steps={2**k}&seed={k}&count=2" for k in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(get, urls))
    assert all(status == 200 for status, _ in answers)


def test_same_seed_same_image(server):
    query = "/api/generate?steps=2&class=1&seed=5&count=3"
    assert get(server + query)[1]["image"] == get(server + query)[1]["image"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium)")
def test_the_page_in_a_browser(trained_2d, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(trained_2d + "/")
        page.wait_for_function("document.getElementById('ms-b').textContent.endsWith('ms')")
        assert page.text_content("#steps-a") == "1 step"
        assert page.text_content("#steps-b") == "128 steps"
        image, timing = page.get_attribute("#img-a", "src"), page.text_content("#ms-a")
        page.eval_on_selector(
            "#slider-a", "s => { s.value = 2; s.dispatchEvent(new Event('input')); }"
        )
        page.wait_for_function("document.getElementById('steps-a').textContent === '4 steps'")
        page.wait_for_function(
            f"document.getElementById('img-a').src !== {json.dumps(image)}", timeout=60_000
        )
        assert page.get_attribute("#img-a", "src") != image
        assert page.text_content("#ms-a").endswith(" ms") and timing.endswith(" ms")
        page.fill("#count", "100000")
        page.dispatch_event("#count", "change")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "count must be in 1..64" in page.text_content("#error")
        browser.close()
