"""The demo's HTML report: one page a person wants to open, with plots beside the numbers."""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.demo.summary import DemoSummary

Array = npt.NDArray[Any]


@dataclass
class SeriesPlot:
    """One device's measured series, the edge's predictions, and where alerts fired."""

    device: str
    t_s: Array
    measured: Array
    predicted_t_s: Array = field(default_factory=lambda: np.empty(0))
    predicted: Array = field(default_factory=lambda: np.empty(0))
    alert_t_s: Sequence[float] = ()
    fault_start_s: float | None = None
    unit: str = "°C"
    #: A second, zoomed panel (start, end) in seconds, e.g. around the fire.
    zoom: tuple[float, float] | None = None


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax: Any, s: SeriesPlot, lo: float | None = None, hi: float | None = None) -> None:
    def cut(t: Array, y: Array) -> tuple[Array, Array]:
        if lo is None or hi is None or not len(t):
            return t, y
        keep = (t >= lo) & (t <= hi)
        return t[keep], y[keep]

    ax.plot(*cut(s.t_s, s.measured), lw=1.0, color="#1f77b4", label="measured")
    if len(s.predicted):
        ax.plot(*cut(s.predicted_t_s, s.predicted), lw=1.0, color="#ff7f0e", alpha=0.85,
                label="edge prediction")
    if s.fault_start_s is not None:
        ax.axvline(s.fault_start_s, color="#888", ls="--", lw=1, label="fire injected")
    for i, t in enumerate(s.alert_t_s):
        if lo is None or hi is None or lo <= t <= hi:
            ax.axvline(t, color="#d62728", lw=1.5, label="alert raised" if i == 0 else None)
    ax.set_ylabel(s.unit)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def plot_series(series: Sequence[SeriesPlot], out: Path) -> Path:
    plt = _plt()
    zoomed = any(s.zoom for s in series)
    fig, axes = plt.subplots(len(series), 2 if zoomed else 1,
                             figsize=(13 if zoomed else 10, 3.2 * len(series)), squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1]} if zoomed else None)
    for row, s in enumerate(series):
        _draw(axes[row, 0], s)
        axes[row, 0].set_title(f"{s.device}: the whole replay")
        if zoomed:
            ax = axes[row, 1]
            if s.zoom:
                _draw(ax, s, *s.zoom)
                ax.set_title(f"{s.device}: around the fire")
            else:
                ax.axis("off")
    axes[-1, 0].set_xlabel("seconds of recording")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_accel(t_s: Array, magnitude: Array, events: Sequence[tuple[float, str]],
               truth_spans: Sequence[tuple[float, float, str]], out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(t_s, magnitude, lw=0.8, color="#2ca02c", label="|acceleration|")
    for i, (start, end, label) in enumerate(truth_spans):
        if label == "freefall":
            ax.axvspan(start, end, color="#ffbb78", alpha=0.4,
                       label="recorded free fall" if i == 0 else None)
    shown = False
    for t, label in events:
        if label == "freefall":
            ax.axvline(t, color="#d62728", lw=1.2, label=None if shown else "freefall event")
            shown = True
    ax.set_xlabel("seconds of replay")
    ax.set_ylabel("m/s²")
    ax.set_title("accelerometer device: free-fall events from the edge classifier")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_latency(mqtt_s: Sequence[float], http_s: Sequence[float], out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for data, label, color in ((mqtt_s, "MQTT request/response", "#9467bd"),
                               (http_s, "HTTP predict", "#8c564b")):
        if len(data):
            ms = np.asarray(data) * 1e3
            ax.hist(ms, bins=40, alpha=0.6, color=color,
                    label=f"{label} (p50 {np.percentile(ms, 50):.1f} ms, "
                          f"p99 {np.percentile(ms, 99):.1f} ms)")
    ax.set_xlabel("round-trip latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title("prediction latency seen by a client")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _pct(values: Sequence[float], q: float) -> str:
    return f"{np.percentile(np.asarray(values) * 1e3, q):.1f} ms" if len(values) else "-"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_html(summary: DemoSummary, out_dir: Path, model_images: dict[str, list[Path]]) -> Path:
    """Write index.html; copy the trainer's plots beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    checks = "".join(
        f"<li class={'ok' if ok else 'bad'}>{'✓' if ok else '✗'} {esc(name)}</li>"
        for name, ok in summary.checks().items()
    )
    dev_rows = "".join(
        f"<tr><td>{esc(d.device)}</td><td>{esc(d.kind)}</td><td>{d.published:,}</td>"
        f"<td>{d.stored:,}</td><td>{d.duplicates:,}</td><td>{d.lost:,}</td></tr>"
        for d in summary.devices
    )
    model_rows = ""
    model_imgs = ""
    for m in summary.models:
        metrics = ", ".join(f"{esc(k)} = {_fmt(v)}" for k, v in m.metrics.items())
        load = f"{m.load_delay_s:.1f} s" if m.load_delay_s is not None else "-"
        model_rows += (
            f"<tr><td>{esc(m.name)}</td><td>{esc(m.task)}</td><td>{m.version or '-'}</td>"
            f"<td>{'yes' if m.published else 'no'}</td><td>{'yes' if m.loaded else 'no'}</td>"
            f"<td>{load}</td><td>{metrics}</td><td>{esc(m.detail)}</td></tr>"
        )
        for img in model_images.get(m.name, []):
            dest = out_dir / f"{m.name}-{img.name}"
            shutil.copyfile(img, dest)
            model_imgs += (f"<figure><img src='{esc(dest.name)}' alt='{esc(img.stem)}'>"
                           f"<figcaption>{esc(m.name)}: {esc(img.stem.replace('_', ' '))}"
                           "</figcaption></figure>")
    fire = [a for a in summary.alerts if a.kind == "forecast_deviation"]
    alert_rows = "".join(
        f"<tr><td>{esc(a.device)}</td><td>{esc(a.kind)}</td><td>{_fmt(a.value)}</td>"
        f"<td>{_fmt(a.expected)}</td><td>{_fmt(a.delay_s)}</td><td>{_fmt(a.delay_readings)}</td>"
        f"<td>{esc(a.message)}</td></tr>"
        for a in fire
    ) or "<tr><td colspan=7>none</td></tr>"
    by_kind: dict[tuple[str, str], list[str]] = {}
    for a in summary.alerts:
        if a.kind != "forecast_deviation":
            by_kind.setdefault((a.device, a.kind), []).append(a.message)
    quality_rows = "".join(
        f"<tr><td>{esc(dev)}</td><td>{esc(kind)}</td><td>{len(msgs)}</td>"
        f"<td>{esc(msgs[0])}</td></tr>"
        for (dev, kind), msgs in sorted(by_kind.items())
    ) or "<tr><td colspan=4>none</td></tr>"
    event_rows = "".join(
        f"<tr><td>{esc(e.device)}</td><td>{esc(e.label)}</td><td>{e.confidence:.2f}</td>"
        f"<td>{esc(e.truth or '-')}</td></tr>"
        for e in summary.events
    ) or "<tr><td colspan=4>none</td></tr>"
    images = "".join(
        f"<figure><img src='{esc(Path(p).name)}' alt='{esc(k)}'><figcaption>{esc(k)}"
        "</figcaption></figure>"
        for k, p in summary.images.items()
    )
    stages = "".join(f"<tr><td>{esc(n)}</td><td>{s:.1f} s</td></tr>" for n, s in summary.stages)
    try_it = "".join(f"<pre>{esc(c)}</pre>" for c in summary.try_it)
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeloop demo report</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
h1{{margin-bottom:0}} .sub{{color:#666;margin-top:.2em}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ddd;padding:.3em .6em;
text-align:left;font-size:.92em}}
th{{background:#f4f4f4}}
ul.checks{{list-style:none;padding:0;font-size:1.1em}} .ok{{color:#1a7f37}} .bad{{color:#cf222e}}
figure{{margin:1em 0}} img{{max-width:100%;border:1px solid #eee}}
pre{{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}}
figcaption{{color:#666;font-size:.85em}}
</style></head><body>
<h1>edgeloop demo</h1>
<p class="sub">broker {esc(summary.broker)} · storage {esc(summary.storage)} ·
registry {esc(summary.registry_url)} · {summary.duration_s:.0f} s ·
firmware: {esc(summary.firmware)}</p>
<ul class="checks">{checks}</ul>
<h2>Readings</h2>
<table><tr><th>device</th><th>source</th><th>published</th><th>stored</th>
<th>duplicates dropped</th><th>lost</th></tr>{dev_rows}</table>
<h2>Models</h2>
<table><tr><th>model</th><th>task</th><th>version</th><th>published</th><th>loaded at edge</th>
<th>announce → serving</th><th>held-out metrics</th><th>note</th></tr>{model_rows}</table>
<h2>Alerts</h2>
<p>Forecast deviation: the reading is off the edge model's prediction by more than the
threshold for several readings in a row.</p>
<table><tr><th>device</th><th>kind</th><th>value</th><th>expected</th>
<th>delay (s of readings)</th><th>delay (readings)</th><th>message</th></tr>{alert_rows}</table>
<p>Data-quality alerts, checked against the training statistics in the model card
(raised count, first message):</p>
<table><tr><th>device</th><th>kind</th><th>raised</th><th>first message</th></tr>
{quality_rows}</table>
<h2>Events</h2>
<table><tr><th>device</th><th>label</th><th>confidence</th><th>recorded as</th></tr>
{event_rows}</table>
<h2>Requests</h2>
<p>Round trips seen by a client while every device streams and every service shares one
Python process on this machine; <code>bench/</code> measures the inference service on its
own against an echo responder.</p>
<p>MQTT: {len(summary.latencies_mqtt_s)} requests, p50 {_pct(summary.latencies_mqtt_s, 50)},
p99 {_pct(summary.latencies_mqtt_s, 99)} · HTTP: {len(summary.latencies_http_s)} requests,
p50 {_pct(summary.latencies_http_s, 50)}, p99 {_pct(summary.latencies_http_s, 99)}</p>
{images}
<h2>Training</h2>
{model_imgs or "<p>no training plots</p>"}
<h2>Try it yourself</h2>
{try_it}
<h2>Stages</h2>
<table>{stages}</table>
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(doc)
    return path
