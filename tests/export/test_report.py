"""The HTML report: self-contained, well-formed, complete; rendered in headless Chromium (slow)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pavi_parcel.export.maps import export_maps
from pavi_parcel.export.report import build_report, mean_dice
from pavi_parcel.spaces import FsaverageSpace, VolumeSpace
from pavi_parcel.stores.posterior import Posterior, write_posterior
from pavi_parcel.stores.timeseries import write_run_timeseries

N_HEMI = 10242
VOID = {"meta", "link", "img", "br", "hr", "input", "source", "col", "area", "base", "wbr"}


def coherent_posterior(n_subjects: int, k: int = 7, seed: int = 0) -> Posterior:
    """fsaverage5 posterior with networks in bands along the anterior-posterior axis."""
    from nilearn.datasets import load_fsaverage
    rng = np.random.default_rng(seed)
    sphere = load_fsaverage("fsaverage5")["sphere"]
    xyz = np.vstack([sphere.parts["left"].coordinates, sphere.parts["right"].coordinates])
    medial = np.r_[xyz[:N_HEMI, 0] > 60, xyz[N_HEMI:, 0] < -60]
    index = np.flatnonzero(~medial)
    y = xyz[index, 1]
    edges = np.quantile(y, np.linspace(0, 1, k + 1)[1:-1])

    def probs(shift: float, sharpness: float) -> np.ndarray:
        logits = rng.normal(0, 0.5, (index.size, k))
        logits[np.arange(index.size), np.digitize(y + shift, edges)] += sharpness
        p = np.exp(logits - logits.max(1, keepdims=True))
        return (p / p.sum(1, keepdims=True)).astype(np.float32)

    subjects = np.stack([probs(rng.normal(0, 5), 2.0) for _ in range(n_subjects)])
    return Posterior(subjects, probs(0.0, 3.0), rng.normal(size=(k, 20)).astype(np.float32),
                     [f"{i + 1:02d}" for i in range(n_subjects)], ["1", "2"], index,
                     FsaverageSpace("fsaverage5"), {"method": "pavi_e", "settings": {"seed": seed}})


def make_run(out: Path, post: Posterior, logs: bool = True) -> Path:
    write_posterior(out / "model" / "posterior.h5", post)
    if logs:
        steps = np.arange(100)
        rows = "".join(f"{s}\t{0.5 * s:.1f}\t{-1e5 * np.exp(-s / 20) - 3e4:.3f}\n" for s in steps)
        (out / "model" / "elbo.tsv").write_text("step\tseconds\telbo\n" + rows)
        (out / "model" / "metrics.tsv").write_text("metric\tvalue\nari_vs_truth\t0.91\n")
        for i, s in enumerate(post.subjects):
            write_run_timeseries(out / "work" / "timeseries" / f"sub-{s}_task-rest.h5", np.zeros((4, 2), np.float32),
                                 np.arange(2), {"subject": s, "session": "", "task": "rest", "run": "1",
                                                "n_frames_total": 200, "n_frames_kept": 150 - 60 * (i % 2),
                                                "mean_fd": 0.12 + 0.1 * (i % 2),
                                                "strategy": {"motion": "full", "scrub": 5}})
        qc = ["run\tsubject\tsession\ttask\trun_label\tstatus\treason\tframes_total\tframes_kept\tmean_fd\ttsnr\t"
              "valid_L\tvalid_R\tfraction_L\tfraction_R"]
        qc += [f"sub-{s}_task-rest\t{s}\tn/a\trest\tn/a\t" + ("included\tn/a" if i % 2 == 0 else
               "excluded\tmean FD 0.22 mm above qc.max_mean_fd=0.2") + f"\t200\t{150 - 60 * (i % 2)}\t"
               f"{0.12 + 0.1 * (i % 2):.3f}\t61.5\t9000\t9001\t1.000\t1.000" for i, s in enumerate(post.subjects)]
        (out / "qc").mkdir()
        (out / "qc" / "runs.tsv").write_text("\n".join(qc) + "\n")
    return out


class Structure(HTMLParser):
    """Collects tags, attributes and nesting errors of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Structure:
    parser = Structure()
    parser.feed(page)
    parser.close()
    return parser


def test_report_is_self_contained_well_formed_and_complete(tmp_path: Path):
    post = coherent_posterior(2)
    out = make_run(tmp_path / "out", post)
    export_maps(out)
    path = build_report(out)
    assert path == out / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    doc = parse(page)
    assert doc.errors == [] and doc.stack == []
    names = [t for t, _ in doc.tags]
    assert names.count("html") == names.count("head") == names.count("body") == names.count("title") == 1
    assert "script" not in names
    imgs = [a for t, a in doc.tags if t == "img"]
    assert len(imgs) == 1 + 1 + 2 + 1 + 1 + 1      # group, colour bar, 2 subjects, ELBO, Dice, QC
    for attrs in imgs:
        assert attrs["alt"]
        assert attrs["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(attrs["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    for _, attrs in doc.tags:
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith(("data:", "#")), attrs[key]
    text = " ".join(doc.text)
    for section in ("Group atlas", "Subjects", "ELBO", "Subject versus group", "Quality control", "Metrics"):
        assert section in text
    assert "150/200" in text and "90/200" in text and "0.220" in text and "motion=full" in text
    assert "1 excluded" in text and "mean FD 0.22 mm above qc.max_mean_fd=0.2" in text
    assert page.count('class="warn"') == 1       # the excluded run, listed first
    assert "Network07" in text and "ari_vs_truth" in text
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_report_without_logs_and_on_a_volume_space(tmp_path: Path):
    shape, k = (20, 24, 20), 3
    affine = np.array([[-8.0, 0, 0, 78], [0, 8.0, 0, -112], [0, 0, 8.0, -70], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    index = np.flatnonzero((((grid - np.array(shape) / 2) / (np.array(shape) / 2.2)) ** 2).sum(1) < 1)
    probs = rng.dirichlet(np.ones(k), size=index.size).astype(np.float32)
    post = Posterior(probs[None], probs, np.zeros((k, 4), np.float32), ["01"], ["1"], index,
                     VolumeSpace("MNI152NLin2009cAsym", shape, affine), {"method": "vbem"})
    out = make_run(tmp_path / "out", post, logs=False)
    page = build_report(out).read_text()
    doc = parse(page)
    assert doc.errors == [] and doc.stack == []
    text = " ".join(doc.text)
    assert "No ELBO log" in text and "No QC table" in text and "axial slices" in text
    assert sum(t == "img" for t, _ in doc.tags) == 4


def test_mean_dice_planted():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert mean_dice(a, a, 3) == 1.0
    assert mean_dice(a, (a + 1) % 3, 3) == 0.0
    assert mean_dice(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2) == pytest.approx((2 / 3 + 4 / 5) / 2)


# --------------------------------------------------------------------------- browser
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900"]


class Browser:
    """Headless Chromium driven through chromedriver's W3C WebDriver HTTP API (no client library)."""

    def __init__(self, profile: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise
                time.sleep(0.1)
        options = {"binary": CHROMIUM, "args": CHROMIUM_ARGS + [f"--user-data-dir={profile}"]}
        caps = {"browserName": "chrome", "goog:chromeOptions": options, "goog:loggingPrefs": {"browser": "ALL"}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def open(self, path: Path) -> list[dict]:
        """Load a page; return the console and network log entries it produced."""
        self._call("POST", f"/session/{self.session}/url", {"url": path.resolve().as_uri()})
        return self._call("POST", f"/session/{self.session}/se/log", {"type": "browser"})

    def script(self, source: str):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []})

    def screenshot(self, target: Path) -> Path:
        height = int(self.script("return document.documentElement.scrollHeight"))
        self._call("POST", f"/session/{self.session}/window/rect", {"width": 1200, "height": min(height, 16000)})
        target.write_bytes(base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot")))
        return target

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.mark.slow
@pytest.mark.skipif(not (Path(CHROMIUM).exists() and CHROMEDRIVER),
                    reason="needs chromium and chromedriver: run scripts/install_chromium.sh")
def test_report_of_ten_subjects_renders_fast_without_console_errors(tmp_path: Path):
    post = coherent_posterior(10)
    out = make_run(tmp_path / "out", post)
    export_maps(out)
    start = time.perf_counter()
    report = build_report(out)
    seconds = time.perf_counter() - start
    assert seconds < 60, f"report of 10 subjects took {seconds:.1f} s"

    planted = tmp_path / "planted.html"
    planted.write_text('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>x</title></head>'
                       '<body><img src="missing.png" alt="x"><script>console.error("planted")</script></body></html>')
    browser = Browser(tmp_path / "profile")
    try:
        caught = browser.open(planted)          # the log capture must see planted problems
        assert any("planted" in e["message"] for e in caught)
        assert any("missing.png" in e["message"] for e in caught)
        entries = browser.open(report)
        assert entries == [], entries
        assert browser.script("return document.images.length") == 15   # with the QC scatter
        assert browser.script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        shot = browser.screenshot(tmp_path / "report.png")
    finally:
        browser.close()
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert re.search(r"Dice with group \d\.\d{3}", report.read_text())
