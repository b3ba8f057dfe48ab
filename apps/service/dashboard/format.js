// Formatting helpers shared by the dashboard's modules. Every time is shown in the viewer's local
// time zone (toLocaleString / toLocaleTimeString).

export const STATES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'];
export const ENDED = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);
export const STATE_LABEL = {
  queued: 'queued', running: 'running', succeeded: 'succeeded', failed: 'failed',
  timed_out: 'timed out', cancelled: 'cancelled',
};

const SIGNALS = {
  1: 'SIGHUP', 2: 'SIGINT', 3: 'SIGQUIT', 4: 'SIGILL', 5: 'SIGTRAP', 6: 'SIGABRT', 7: 'SIGBUS',
  8: 'SIGFPE', 9: 'SIGKILL', 10: 'SIGUSR1', 11: 'SIGSEGV', 12: 'SIGUSR2', 13: 'SIGPIPE',
  14: 'SIGALRM', 15: 'SIGTERM', 24: 'SIGXCPU', 25: 'SIGXFSZ', 31: 'SIGSYS',
};

export function signalName(n) {
  return SIGNALS[n] ?? `signal ${n}`;
}

/** Milliseconds since the epoch of an RFC 3339 timestamp, or null. */
export function ms(ts) {
  if (!ts) return null;
  const t = Date.parse(ts);
  return Number.isNaN(t) ? null : t;
}

export function localDateTime(ts) {
  const t = ms(ts);
  return t === null ? '—' : new Date(t).toLocaleString();
}

/** A compact local time for the table: the time of day today, the date and time otherwise. */
export function localShort(ts) {
  const t = ms(ts);
  if (t === null) return '—';
  const d = new Date(t);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString();
  return d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export function duration(msValue) {
  if (msValue === null || msValue === undefined || !Number.isFinite(msValue)) return '—';
  const v = Math.max(0, msValue);
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60_000) return `${(v / 1000).toFixed(v < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(v / 60_000);
  const s = Math.round((v % 60_000) / 1000);
  if (m < 60) return s === 0 ? `${m} min` : `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function eta(seconds) {
  if (seconds === null || !Number.isFinite(seconds)) return '';
  if (seconds < 1) return '<1s';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${Math.round(seconds % 60)}s`;
  return `${Math.floor(seconds / 3600)}h ${Math.round((seconds % 3600) / 60)}m`;
}

const numberFormat = new Intl.NumberFormat();
export function count(n) {
  return n === null || n === undefined ? '–' : numberFormat.format(n);
}

/** A rate in units per second, compact: 950/s, 12.3k/s, 4.1M/s. */
export function rate(perSecond) {
  if (perSecond === null || !Number.isFinite(perSecond)) return '';
  const a = Math.abs(perSecond);
  if (a >= 1e9) return `${(perSecond / 1e9).toFixed(1)}G/s`;
  if (a >= 1e6) return `${(perSecond / 1e6).toFixed(1)}M/s`;
  if (a >= 1e4) return `${(perSecond / 1e3).toFixed(1)}k/s`;
  if (a >= 10) return `${Math.round(perSecond)}/s`;
  return `${perSecond.toFixed(1)}/s`;
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** Sets an element's text only when it changed (no needless layout or repaint). */
export function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

export function setAttr(el, name, value) {
  if (value === null || value === undefined) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
  } else {
    const s = String(value);
    if (el.getAttribute(name) !== s) el.setAttribute(name, s);
  }
}

export function show(el, visible) {
  if (el.hidden === visible) el.hidden = !visible;
}
