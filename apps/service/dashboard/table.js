// The jobs table: one page of rows (at most PAGE_SIZE), keyed by job id. A row's element is kept
// while its job stays on the page and its cells are updated in place, so streaming events never
// rebuild the table; rows that leave the page go back to a small pool for reuse.

import { STATE_LABEL, duration, localShort, ms, setAttr, setText, show } from './format.js';

export const PAGE_SIZE = 20;

export class JobTable {
  /**
   * @param {HTMLTableSectionElement} tbody
   * @param {(id: number) => void} onSelect called on click, Enter or Space on a row
   */
  constructor(tbody, onSelect) {
    this.tbody = tbody;
    this.rows = new Map(); // job id -> row record
    this.free = [];
    tbody.addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-job-id]');
      if (tr) onSelect(Number(tr.dataset.jobId));
    });
    tbody.addEventListener('keydown', (e) => {
      const tr = e.target.closest('tr[data-job-id]');
      if (!tr) return;
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        onSelect(Number(tr.dataset.jobId));
      } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        const next = e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
        if (next) next.focus();
      }
    });
  }

  /**
   * @param {object[]} jobs the page's jobs, newest first
   * @param {number|null} selectedId
   * @param {(job: object) => object|null} progressOf the progress view of a running job
   * @param {number} now the server's clock, in ms
   */
  render(jobs, selectedId, progressOf, now) {
    const wanted = new Set(jobs.map((j) => j.id));
    for (const [id, row] of this.rows) {
      if (!wanted.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
        this.free.push(row);
      }
    }
    let cursor = this.tbody.firstElementChild;
    for (const job of jobs) {
      let row = this.rows.get(job.id);
      if (!row) {
        row = this.free.pop() ?? createRow();
        row.key = '';
        this.rows.set(job.id, row);
      }
      updateRow(row, job, selectedId === job.id, progressOf(job), now);
      if (row.tr !== cursor) this.tbody.insertBefore(row.tr, cursor);
      else cursor = cursor.nextElementSibling;
    }
  }

  focusRow(id) {
    this.rows.get(id)?.tr.focus();
  }
}

function createRow() {
  const tr = document.createElement('tr');
  tr.tabIndex = 0;
  const cell = (cls) => {
    const td = document.createElement('td');
    td.className = cls;
    tr.append(td);
    return td;
  };
  const id = cell('id');
  const task = cell('task');
  const state = cell('state');
  const badge = document.createElement('span');
  badge.className = 'badge';
  state.append(badge);
  const progressTd = cell('progress-td');
  const wrap = document.createElement('div');
  wrap.className = 'progress-cell';
  const bar = document.createElement('div');
  bar.className = 'progress';
  bar.setAttribute('role', 'progressbar');
  bar.setAttribute('aria-valuemin', '0');
  bar.setAttribute('aria-valuemax', '100');
  const fill = document.createElement('div');
  fill.className = 'progress-fill';
  bar.append(fill);
  const label = document.createElement('span');
  label.className = 'progress-label';
  const pct = document.createElement('span');
  const etaEl = document.createElement('span');
  etaEl.className = 'eta';
  label.append(pct, etaEl);
  wrap.append(bar, label);
  progressTd.append(wrap);
  const created = cell('created');
  const dur = cell('duration');
  return { tr, id, task, state, badge, bar, fill, label, pct, eta: etaEl, created, dur, key: '' };
}

function updateRow(row, job, selected, progress, now) {
  const { tr } = row;
  setAttr(tr, 'data-job-id', job.id);
  setAttr(tr, 'data-state', job.state);
  setAttr(tr, 'aria-current', selected ? 'true' : null);
  // Fixed fields: written once per job shown in this row.
  const key = `${job.id}`;
  if (row.key !== key) {
    row.key = key;
    setText(row.id, job.id);
    setText(row.task, job.task);
    row.task.title = job.task;
    setAttr(row.bar, 'data-job-id', job.id);
    setAttr(row.bar, 'aria-label', `Progress of job ${job.id}`);
    setText(row.created, localShort(job.created_at));
    row.created.title = job.created_at ? new Date(ms(job.created_at)).toLocaleString() : '';
  }
  setText(row.badge, STATE_LABEL[job.state] ?? job.state);
  setAttr(row.badge, 'data-state', job.state);
  setAttr(row.state, 'data-state', job.state);

  const started = ms(job.started_at);
  const finished = ms(job.finished_at);
  let d = null;
  if (started !== null && finished !== null) d = finished - started;
  else if (started !== null && job.state === 'running') d = now - started;
  setText(row.dur, duration(d));

  // Progress: a bar while running (indeterminate when the total is unknown), full once succeeded.
  setAttr(row.bar, 'data-state', job.state);
  if (job.state === 'running') {
    show(row.bar, true);
    if (progress && progress.percent !== null) {
      setAttr(row.bar, 'data-indeterminate', null);
      setAttr(row.bar, 'aria-valuenow', Math.floor(progress.percent));
      row.fill.style.width = `${progress.percent}%`;
      setText(row.pct, `${Math.floor(progress.percent)}%`);
      setText(row.eta, progress.etaText ? ` · ${progress.etaText}` : '');
    } else {
      setAttr(row.bar, 'data-indeterminate', 'true');
      setAttr(row.bar, 'aria-valuenow', null);
      row.fill.style.width = '';
      setText(row.pct, progress?.rateText ?? '');
      setText(row.eta, '');
    }
    row.label.title = progress?.summary ?? '';
  } else if (job.state === 'succeeded') {
    show(row.bar, true);
    setAttr(row.bar, 'data-indeterminate', null);
    setAttr(row.bar, 'aria-valuenow', 100);
    row.fill.style.width = '100%';
    setText(row.pct, '');
    setText(row.eta, '');
    row.label.title = '';
  } else {
    show(row.bar, false);
    setAttr(row.bar, 'aria-valuenow', null);
    row.fill.style.width = '0%';
    setText(row.pct, '');
    setText(row.eta, '');
    row.label.title = '';
  }
}
