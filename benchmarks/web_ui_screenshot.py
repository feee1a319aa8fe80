"""Screenshot of the web page after an agent run on an MNI152 slice (docs/web-ui.png).

    python benchmarks/web_ui_screenshot.py --out docs/web-ui.png

Serves LiteMedSAM in this process (as ``msagent serve --backbone litemedsam``), opens
http://127.0.0.1:PORT/ui/ in headless Chromium (the system's, through Playwright: ``pip
install playwright``, no browser download), loads an axial MNI152 T1 slice (nilearn) with its
brain mask as the ground truth, runs the ``expert`` policy, and saves the page.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/web-ui.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--target", default="brain", choices=["brain", "gray matter", "white matter"])
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--view", type=int, default=None, help="turn to show (default: the last)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    import msagent
    from msagent.io import to_rgb_uint8
    from msagent.server.background import serve_in_thread
    from msagent.testing import mni152_slice
    from msagent.webapp import create_web_app

    image, truth = mni152_slice(args.target)
    segmenter = msagent.load_backbone("litemedsam", device="cpu")
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(create_web_app(segmenter)) as url, \
            sync_playwright() as pw:
        Image.fromarray(to_rgb_uint8(image)).save(Path(tmp) / "mni152-axial.png")
        Image.fromarray(truth.astype(np.uint8) * 255).save(Path(tmp) / "mni152-brain-mask.png")
        context = pw.chromium.launch_persistent_context(
            str(Path(tmp) / "profile"), executable_path=args.chromium, headless=True, args=FLAGS,
            viewport={"width": 1440, "height": 900}, device_scale_factor=1)
        page = context.new_page()
        page.set_default_timeout(300_000)
        page.goto(url + "/ui/")
        page.wait_for_selector("body[data-plugins='loaded']", state="attached")
        page.set_input_files("#image-file", str(Path(tmp) / "mni152-axial.png"))
        page.wait_for_selector("#image-status[data-state='ready']")
        page.fill("#target", f"{args.target} in T1 MRI")
        page.select_option("#policy", "expert")
        page.set_input_files("#gt-file", str(Path(tmp) / "mni152-brain-mask.png"))
        page.fill("#max-turns", str(args.max_turns))
        page.click("#run")
        page.wait_for_selector("#run-status[data-state='done']")
        if args.view is not None:
            page.fill("#turn-slider", str(args.view))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out)
        print(f"wrote {args.out}: {page.text_content('#run-status')}")
        context.close()


if __name__ == "__main__":
    main()
