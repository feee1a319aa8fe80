"""The HTML report is self-contained and its images load in a browser (headless Chromium)."""

import base64
import io as pyio
import re
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from msagent.evaluation import evaluate, finish
from msagent.testing import make_phantom
from msagent.types import Case

CHECK_IMAGES = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', loaded + '/' + images.length);
});</script>"""


class Sources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.links, self.anchors = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs.get("src", ""))
        if tag in ("link", "script"):
            self.links.append(tag)
        if tag == "a" and "href" in attrs:
            self.anchors.append(attrs["href"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cases = []
    for i in range(7):
        image, gt = make_phantom(80, 100, center=(40, 45 + i), radii=(18, 22 + i), seed=i)
        cases.append(Case(f"case {i}/x", image, "ellipse", gt,
                          meta={"label": "a" if i < 4 else "b", "dataset": "phantoms"}))
    evaluate(cases, out, backbones=["mybackbone"], policies=["expert", "oracle-box"],
             protocols=["noc", "cvpr"], progress=False)
    return out / "report.html"


def test_report_is_self_contained_with_valid_images(report):
    page = report.read_text()
    parser = Sources()
    parser.feed(page)
    assert parser.links == []                                  # no scripts or styles to fetch
    # each case thumbnail links to its full-size picture beside the report (issue 19)
    assert len(parser.anchors) == 2 * 4 * 3
    assert all(h.startswith("overlays/") and (report.parent / h).is_file() for h in parser.anchors)
    assert len(parser.sources) == 4 + 2 * 4 * 3               # 4 plots + 3 best, 3 worst of 4 methods
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        with Image.open(pyio.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            assert image.width > 10 and image.height > 10
    for plot in ("dice_by_turn", "per_class", "noc_curve", "cvpr_curve"):
        assert (report.parent / "plots" / f"{plot}.png").is_file()
    assert "NoC" in page and "case 6/x" in page


def test_report_regenerates_from_records(report):
    before = report.read_text()
    finish(report.parent)
    assert report.read_text() == before


@pytest.mark.slow
def test_report_images_load_in_headless_chromium(report, tmp_path, chromium):
    page = report.read_text().replace("</body>", CHECK_IMAGES + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    match = re.search(r'data-images="(\d+)/(\d+)"', result.stdout)
    assert match, result.stderr[-2000:]
    loaded, total = map(int, match.groups())
    assert total >= 16 and loaded == total
