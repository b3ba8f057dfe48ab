// Throughput and latency over the last five minutes, drawn on two canvases: jobs ended per 10 s
// bucket (stacked: succeeded, other ends) and the p50/p95 of finished_at - started_at of the jobs
// that ended in each bucket. Fed by job events and the initial list; ended jobs are keyed by id,
// so a job seen twice (list and event) counts once.

import { duration, ms } from './format.js';

const BUCKET_MS = 10_000;
const BUCKETS = 30;
const WINDOW_MS = BUCKET_MS * BUCKETS;

export class ActivityChart {
  constructor(throughputCanvas, latencyCanvas, summaryEl) {
    this.tc = throughputCanvas;
    this.lc = latencyCanvas;
    this.summary = summaryEl;
    this.ended = new Map(); // job id -> {t, lat, ok}
    this.dirty = true;
    this.colors = null;
    const redraw = () => { this.colors = null; this.dirty = true; };
    if ('ResizeObserver' in window) new ResizeObserver(redraw).observe(throughputCanvas);
    window.matchMedia?.('(prefers-color-scheme: dark)').addEventListener?.('change', redraw);
  }

  /** Records a job if it ended (any of the four final states). Returns true if it was new. */
  add(job) {
    const t = ms(job.finished_at);
    if (t === null || this.ended.has(job.id)) return false;
    const s = ms(job.started_at);
    this.ended.set(job.id, { t, lat: s === null ? null : Math.max(0, t - s), ok: job.state === 'succeeded' });
    this.dirty = true;
    return true;
  }

  prune(now) {
    const cutoff = now - WINDOW_MS - BUCKET_MS;
    for (const [id, e] of this.ended) if (e.t < cutoff) this.ended.delete(id);
  }

  draw(now, force = false) {
    if (!this.dirty && !force) return;
    this.dirty = false;
    this.prune(now);
    const end = Math.ceil(now / BUCKET_MS) * BUCKET_MS;
    const start = end - WINDOW_MS;
    const buckets = Array.from({ length: BUCKETS }, () => ({ ok: 0, bad: 0, lats: [] }));
    for (const e of this.ended.values()) {
      if (e.t < start || e.t >= end) continue;
      const b = buckets[Math.floor((e.t - start) / BUCKET_MS)];
      if (e.ok) b.ok += 1;
      else b.bad += 1;
      if (e.lat !== null) b.lats.push(e.lat);
    }
    let total = 0;
    const all = [];
    for (const b of buckets) {
      total += b.ok + b.bad;
      b.lats.sort((x, y) => x - y);
      b.p50 = quantile(b.lats, 0.5);
      b.p95 = quantile(b.lats, 0.95);
      for (const l of b.lats) all.push(l);
    }
    all.sort((x, y) => x - y);
    const c = this.palette();
    this.drawThroughput(buckets, c, end);
    this.drawLatency(buckets, c, end);
    const text = total === 0
      ? 'No job ended in the last 5 minutes.'
      : `${total.toLocaleString()} jobs ended in the last 5 minutes (${(total / 300).toFixed(2)}/s); ` +
        `latency p50 ${duration(quantile(all, 0.5))}, p95 ${duration(quantile(all, 0.95))}.`;
    if (this.summary.textContent !== text) this.summary.textContent = text;
  }

  palette() {
    if (!this.colors) {
      const s = getComputedStyle(document.documentElement);
      const v = (name) => s.getPropertyValue(name).trim();
      this.colors = {
        ok: v('--succeeded'), bad: v('--failed'), p50: v('--running'), p95: v('--queued'),
        grid: v('--grid'), text: v('--muted'),
        font: `11px ${s.fontFamily}`,
      };
    }
    return this.colors;
  }

  drawThroughput(buckets, c, end) {
    const g = setup(this.tc);
    if (!g) return;
    const max = niceCount(Math.max(1, ...buckets.map((b) => b.ok + b.bad)));
    const area = axes(g, c, max, (v) => String(v), end);
    const bw = area.w / BUCKETS;
    buckets.forEach((b, i) => {
      const x = area.x + i * bw + 1.5;
      const w = Math.max(1, bw - 3);
      const hOk = (b.ok / max) * area.h;
      const hBad = (b.bad / max) * area.h;
      g.fillStyle = c.ok;
      g.fillRect(x, area.y + area.h - hOk, w, hOk);
      g.fillStyle = c.bad;
      g.fillRect(x, area.y + area.h - hOk - hBad, w, hBad);
    });
  }

  drawLatency(buckets, c, end) {
    const g = setup(this.lc);
    if (!g) return;
    const max = niceMax(Math.max(10, ...buckets.map((b) => b.p95 ?? 0)));
    const area = axes(g, c, max, shortMs, end);
    const bw = area.w / BUCKETS;
    for (const [key, color] of [['p95', c.p95], ['p50', c.p50]]) {
      g.strokeStyle = color;
      g.fillStyle = color;
      g.lineWidth = 2;
      g.lineJoin = 'round';
      g.beginPath();
      let drawing = false;
      buckets.forEach((b, i) => {
        const v = b[key];
        if (v === null) { drawing = false; return; }
        const x = area.x + (i + 0.5) * bw;
        const y = area.y + area.h - (v / max) * area.h;
        if (drawing) g.lineTo(x, y);
        else g.moveTo(x, y);
        drawing = true;
      });
      g.stroke();
      buckets.forEach((b, i) => {
        const v = b[key];
        if (v === null) return;
        g.beginPath();
        g.arc(area.x + (i + 0.5) * bw, area.y + area.h - (v / max) * area.h, 2.2, 0, Math.PI * 2);
        g.fill();
      });
    }
  }
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** A maximum whose half is a whole number of jobs: 2, 4, 10, 20, 40, 100, ... */
function niceCount(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [2, 4, 10]) if (m * p >= v) return m * p;
  return 20 * p;
}

function shortMs(v) {
  if (v === 0) return '0';
  if (v >= 60_000) return `${+(v / 60_000).toFixed(1)}m`;
  if (v >= 1000) return `${+(v / 1000).toFixed(1)}s`;
  return `${Math.round(v)}ms`;
}

/** Sizes the canvas for the device pixel ratio and returns a context in CSS pixels. */
function setup(canvas) {
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (w === 0 || h === 0) return null;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.cssWidth = w;
  g.cssHeight = h;
  return g;
}

/** Grid lines, y labels and the time axis; returns the plot area. */
function axes(g, c, max, label, end) {
  const left = 48;
  const bottom = 18;
  const area = { x: left, y: 6, w: g.cssWidth - left - 4, h: g.cssHeight - bottom - 6 };
  g.font = c.font;
  g.fillStyle = c.text;
  g.strokeStyle = c.grid;
  g.lineWidth = 1;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (let i = 0; i <= 4; i += 1) {
    const v = (max * i) / 4;
    const y = Math.round(area.y + area.h - (i / 4) * area.h) + 0.5;
    g.beginPath();
    g.moveTo(area.x, y);
    g.lineTo(area.x + area.w, y);
    g.stroke();
    if (i % 2 === 0) g.fillText(label(v), area.x - 6, y);
  }
  g.textBaseline = 'top';
  const ticks = [[0, '−5 min'], [0.4, '−3 min'], [0.8, '−1 min'], [1, 'now']];
  for (const [f, text] of ticks) {
    g.textAlign = f === 0 ? 'left' : f === 1 ? 'right' : 'center';
    g.fillText(text, area.x + f * area.w, area.y + area.h + 5);
  }
  return area;
}
