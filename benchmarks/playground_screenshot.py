"""docs/export_and_serve.md's screenshot of `shortcut serve`: the demo's MNIST model, 1 step beside
on the same noise, CFG 1.5, in Debian's chromium driven by Playwright.

    python benchmarks/playground_screenshot.py --ckpt demo/run --out docs/playground.png
"""

from __future__ import annotations

import argparse
import shutil
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from shortcut_models.serve import Playground, make_server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("docs/playground.png"))
    args = p.parse_args()
    server = make_server(Playground(args.ckpt), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 860, "height": 270})
        page.goto(url)
        page.wait_for_function("document.getElementById('ms-b').textContent.endsWith('ms')")
        page.fill("#cfg", "1.5")
        page.dispatch_event("#cfg", "change")
        page.wait_for_timeout(500)
        page.wait_for_function("document.getElementById('ms-b').textContent.endsWith('ms')")
        page.wait_for_timeout(6000)  # both panels re-sampled at the new scale
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    server.shutdown()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
