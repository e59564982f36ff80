"""DIR/index.html: a static gallery of a batch (one file, opens from disk, no server, no network).

A summary table per preset (jobs, failures, mean figures, median seconds), then one card per job: its turntable
(an animated GIF), its preview, the figures against the reference prior, the runner and the time, links to the
asset and result.json; a failed job's card says why. Select boxes filter the cards by preset, prompt and status.

The page checks itself when opened as `index.html#selftest`: it loads every image, drives each filter and writes
what it saw as JSON into <pre id="selftest-result"> (the batch test reads it from headless Chromium).
"""

from __future__ import annotations

import html
import os
import statistics
from pathlib import Path
from typing import Any

FILENAME = "index.html"


def _fmt(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean(rows: list[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.fmean(values) if values else None


def _summary(rows: list[dict[str, Any]]) -> str:
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    lines = []
    for p in presets:
        rs = [r for r in rows if r["preset"] == p]
        ok = [r for r in rs if r["status"] == "ok"]
        secs = [r["seconds"] for r in ok if r.get("seconds") is not None]
        lines.append(
            f"<tr><td>{html.escape(p)}</td><td>{len(rs)}</td><td>{len(ok)}</td><td>{len(rs) - len(ok)}</td>"
            f"<td>{_fmt(_mean(ok, 'psnr'), 2)}</td><td>{_fmt(_mean(ok, 'mask_iou'), 3)}</td>"
            f"<td>{_fmt(_mean(ok, 'view_accuracy'), 3)}</td>"
            f"<td>{_fmt(statistics.median(secs) if secs else None, 1)}</td></tr>")
    return ("<table class=summary><tr><th>preset</th><th>jobs</th><th>ok</th><th>failed</th><th>mean PSNR (dB)</th>"
            "<th>mean mask IoU</th><th>mean view acc.</th><th>median s/job</th></tr>" + "".join(lines) + "</table>")


def _card(row: dict[str, Any]) -> str:
    e = html.escape
    attrs = (f'data-preset="{e(row["preset"])}" data-prompt="{e(row["prompt"])}" data-status="{e(row["status"])}"')
    head = (f'<div class=title>{e(row["prompt"])}</div><div class=sub>{e(row["preset"])} · seed {row["seed"]} · '
            f'<span class="st {e(row["status"])}">{e(row["status"])}</span></div>')
    if row["status"] != "ok":
        body = f'<div class=error>{e(row.get("error") or "unknown error")}</div>'
    else:
        images = []
        for role, alt in (("turntable", "turntable"), ("preview", "preview")):
            if row.get(role):
                images.append(f'<img class={role} loading=lazy src="{e(row[role])}" alt="{alt} of {e(row["prompt"])}">')
        figures = ""
        if row.get("mask_iou") is not None:
            figures = (f'<div class=fig>PSNR {_fmt(row.get("psnr"), 2)} dB · IoU {_fmt(row["mask_iou"], 3)} · '
                       f'views {_fmt(row.get("view_accuracy"), 3)}</div>')
        links = [f'<a href="{e(row["asset"])}">asset</a>'] if row.get("asset") else []
        links.append(f'<a href="{e(row["folder"])}/result.json">result.json</a>')
        body = f'<div class=imgs>{"".join(images)}</div>{figures}<div class=links>{" · ".join(links)}</div>'
    foot = f'<div class=meta>{_fmt(row.get("seconds"), 1)} s on {e(str(row.get("runner")))}</div>'
    return f"<div class=card {attrs}>{head}{body}{foot}</div>"


def _options(name: str, values: list[str]) -> str:
    opts = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return f'<label>{name} <select id="f-{name}"><option value="">all</option>{opts}</select></label>'


STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;background:#f4f4f4;color:#222}
h1{font-size:20px;margin:0 0 8px}
.summary{border-collapse:collapse;margin:8px 0 12px;background:#fff}
.summary td,.summary th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}
.summary td:first-child,.summary th:first-child{text-align:left}
.filters{margin:8px 0 12px}.filters label{margin-right:16px;font-size:14px}
.grid{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.card{background:#fff;border:1px solid #ccc;border-radius:6px;padding:8px;width:300px}
.title{font-weight:600}.sub,.meta,.fig,.links{font-size:12px;color:#555;margin-top:3px}
.imgs{display:flex;flex-direction:column;align-items:center;gap:4px;margin-top:6px}
.imgs img{height:auto;background:#fff;border:1px solid #eee}.imgs img.turntable{width:200px}
.imgs img.preview{width:284px}
.st.ok{color:#17791b}.st.failed{color:#b00020;font-weight:600}
.error{color:#b00020;font-size:13px;margin-top:6px;word-break:break-word;max-height:9em;overflow:auto}
#selftest-result{white-space:pre-wrap;font-size:11px}
"""

SCRIPT = """
const sel = {preset: document.getElementById('f-preset'), prompt: document.getElementById('f-prompt'),
             status: document.getElementById('f-status')};
const cards = Array.from(document.querySelectorAll('.card'));
function applyFilters() {
  let shown = 0;
  for (const c of cards) {
    const ok = Object.entries(sel).every(([k, s]) => !s.value || c.dataset[k] === s.value);
    c.style.display = ok ? '' : 'none';
    shown += ok ? 1 : 0;
  }
  document.getElementById('shown').textContent = shown;
}
for (const s of Object.values(sel)) s.addEventListener('change', applyFilters);
applyFilters();

if (location.hash === '#selftest') {
  // Load every image now (lazy ones included), then check what a reader sees and write it into the page.
  for (const img of document.images) img.loading = 'eager';
  window.addEventListener('load', () => {
    const visible = () => cards.filter(c => c.offsetParent !== null);
    const report = {rows: Number(document.body.dataset.rows), cards: cards.length, visible: visible().length,
                    filters: [], images: document.images.length,
                    images_loaded: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length};
    for (const [key, s] of Object.entries(sel)) {
      for (const opt of Array.from(s.options).slice(1)) {
        s.value = opt.value; s.dispatchEvent(new Event('change'));
        const vis = visible();
        report.filters.push({filter: key, value: opt.value, visible: vis.length,
                             expected: cards.filter(c => c.dataset[key] === opt.value).length,
                             all_match: vis.every(c => c.dataset[key] === opt.value),
                             counter: Number(document.getElementById('shown').textContent)});
      }
      s.value = ''; s.dispatchEvent(new Event('change'));
    }
    report.visible_after_reset = visible().length;
    const pre = document.createElement('pre');
    pre.id = 'selftest-result';
    pre.textContent = JSON.stringify(report);
    document.body.appendChild(pre);
  });
}
"""


def write_gallery(root: Path, rows: list[dict[str, Any]], title: str = "") -> Path:
    """Write DIR/index.html for `rows` (results.jsonl's rows, in its order); returns its path."""
    root = Path(root)
    ok = sum(r["status"] == "ok" for r in rows)
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    statuses = list(dict.fromkeys(r["status"] for r in rows))
    heading = html.escape(title or f"distillery batch: {root.resolve().name}")
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{heading}</title><style>{STYLE}</style></head>"
        f'<body data-rows="{len(rows)}"><h1>{heading}</h1>'
        f"<div>{len(rows)} jobs: {ok} ok, {len(rows) - ok} failed · figures against the reference prior "
        "(PSNR, mask IoU, view accuracy) where it knows the prompt · data: "
        '<a href="results.jsonl">results.jsonl</a></div>'
        f"{_summary(rows)}<div class=filters>{_options('preset', presets)}{_options('prompt', prompts)}"
        f"{_options('status', statuses)}<span><b id=shown>{len(rows)}</b> shown</span></div>"
        f'<div class=grid>{"".join(_card(r) for r in rows)}</div><script>{SCRIPT}</script></body></html>')
    path = root / FILENAME
    tmp = root / f".{FILENAME}.tmp-{os.getpid()}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


