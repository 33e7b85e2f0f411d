"""The HTML report opened in a real browser: headless Chromium renders it (a screenshot
that is not blank, with the drift colour in it), and the DOM it builds has one row per
feature whose ``data-drifted`` matches ``report.table``. CI installs Chromium
(``.ci/run``); the test fails, not skips, without it."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa

from pitstop.monitoring import drift


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "the HTML report test needs Chromium: apt-get install chromium (.ci/run does)"
    return exe


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--proxy-server=127.0.0.1:9",  # nothing may come from the network
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def png_pixels(data: bytes) -> np.ndarray:
    """A tiny PNG decoder (8-bit RGB/RGBA, no interlace): height x width x channels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), np.int32)
    prev = np.zeros(width * bpp, np.int32)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 1:  # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif f == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average, Paeth: byte by byte
            cur = np.zeros_like(line)
            for i in range(len(line)):
                a = cur[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                if f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa_, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa_ <= pb and pa_ <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) % 256
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)[:, :, :3].astype(np.uint8)


class Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[tuple[str, str]] = []
        self.svgs = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "feature" in (a.get("class") or "").split():
            self.rows.append((a["data-feature"], a["data-drifted"]))
        if tag == "svg":
            self.svgs += 1


def report_of(n_features: int):
    rng = np.random.default_rng(0)
    ref, cur = {}, {}
    for j in range(n_features - 4):
        ref[f"num_{j:03d}"] = rng.normal(j, 1 + j % 5, 5000)
        cur[f"num_{j:03d}"] = rng.normal(j + (1 + j % 5) * (j % 7 == 0), 1 + j % 5, 3000)
    for j in range(4):
        ref[f"cat_{j}"] = rng.choice(["red", "green", "blue", "<b>&amp;"], 5000).tolist()
        cur[f"cat_{j}"] = rng.choice(["red", "green", "blue", "<b>&amp;"] if j else ["red", "x"], 3000).tolist()
    return drift(pa.table(ref), pa.table(cur))


def test_report_renders_in_chromium(tmp_path):
    report = report_of(24)
    path = tmp_path / "drift.html"
    report.to_html(path)
    text = path.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    shot = tmp_path / "shot.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", path.as_uri())
    pixels = png_pixels(shot.read_bytes())
    assert pixels.shape[:2] == (900, 1200)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50, "the screenshot is (nearly) one colour"
    red = np.all(np.abs(pixels.astype(int) - [229, 57, 53]) <= 3, axis=-1)
    assert red.sum() > 500, "no drift status cell is painted"
    dom = run_chromium(tmp_path, "--dump-dom", path.as_uri()).stdout
    parser = Rows()
    parser.feed(dom)
    want = [(r["feature"], "true" if r["drifted"] else "false") for r in report.table.to_pylist()]
    assert parser.rows == want
    assert parser.svgs == report.table.num_rows
    assert sum(d == "true" for _, d in parser.rows) == len(report.drifted) > 0


def test_report_size_for_100_features(tmp_path):
    report = report_of(100)
    text = report.to_html(tmp_path / "r.html")
    assert len(text.encode()) < 300_000
    parser = Rows()
    parser.feed(text)
    assert len(parser.rows) == 100
