// The job detail panel: built once in index.html, its fields updated in place when the selected
// job changes (so focus stays on its buttons while events stream).

import { STATE_LABEL, duration, json, localDateTime, ms, setAttr, setText, show, signalName } from './format.js';

const $ = (id) => document.getElementById(id);

export class JobDetail {
  /**
   * @param {{onCancel: (id) => void, onRetry: (id) => void, onOpen: (id) => void, onClose: () => void}} actions
   */
  constructor(actions) {
    this.root = $('job-detail');
    this.el = {
      placeholder: $('detail-placeholder'), body: $('detail-body'), close: $('detail-close'),
      title: $('detail-title'), state: $('detail-state'), task: $('detail-task'),
      cancel: $('detail-cancel'), retry: $('detail-retry'), message: $('detail-message'),
      progress: $('detail-progress'), progressText: $('detail-progress-text'),
      progressMessage: $('detail-progress-message'),
      created: $('detail-created'), started: $('detail-started'), finished: $('detail-finished'),
      duration: $('detail-duration'), attempts: $('detail-attempts'), priority: $('detail-priority'),
      timeout: $('detail-timeout'), owner: $('detail-owner'), notification: $('detail-notification'),
      retryOf: $('detail-retry-of'), input: $('detail-input'),
      resultSection: $('detail-result-section'), result: $('detail-result'),
      error: $('detail-error'), errorType: $('detail-error-type'), errorMessage: $('detail-error-message'),
      errorFacts: $('detail-error-facts'), stderrSection: $('detail-stderr-section'), stderr: $('detail-stderr'),
    };
    this.bar = this.el.progress.querySelector('.progress');
    this.fill = this.el.progress.querySelector('.progress-fill');
    this.jobId = null;
    this.cache = {};
    this.el.cancel.addEventListener('click', () => this.jobId && actions.onCancel(this.jobId));
    this.el.retry.addEventListener('click', () => this.jobId && actions.onRetry(this.jobId));
    this.el.close.addEventListener('click', () => actions.onClose());
    this.el.retryOf.addEventListener('click', (e) => {
      const b = e.target.closest('button[data-open-job]');
      if (b) actions.onOpen(Number(b.dataset.openJob));
    });
  }

  /** Shows the placeholder (no job) or a job being loaded. */
  select(id) {
    if (this.jobId !== id) {
      this.cache = {};
      this.message('', '');
    }
    this.jobId = id;
    setAttr(this.root, 'data-job-id', id ?? '');
    show(this.el.placeholder, id === null);
    show(this.el.close, id !== null);
    if (id === null) {
      show(this.el.body, false);
      setText(this.el.title, 'Job details');
    } else {
      setText(this.el.title, `Job #${id}`);
    }
  }

  message(text, kind) {
    setText(this.el.message, text);
    setAttr(this.el.message, 'data-kind', kind || null);
  }

  setBusy(busy) {
    this.el.cancel.disabled = busy;
    this.el.retry.disabled = busy;
  }

  /** Writes the job's fields; cheap when nothing changed. */
  update(job, progress, now) {
    if (!job || job.id !== this.jobId) return;
    const e = this.el;
    show(e.body, true);
    setText(e.state, STATE_LABEL[job.state] ?? job.state);
    setAttr(e.state, 'data-state', job.state);
    setAttr(this.root, 'data-state', job.state);
    setText(e.task, job.task);
    show(e.cancel, job.state === 'queued' || job.state === 'running');
    show(e.retry, job.state === 'failed' || job.state === 'timed_out' || job.state === 'cancelled');

    if (job.state === 'running') {
      show(e.progress, true);
      const pct = progress?.percent ?? null;
      setAttr(this.bar, 'data-job-id', job.id);
      setAttr(this.bar, 'data-indeterminate', pct === null ? 'true' : null);
      setAttr(this.bar, 'aria-valuenow', pct === null ? null : Math.floor(pct));
      this.fill.style.width = pct === null ? '' : `${pct}%`;
      setText(e.progressText, progress?.summary ?? 'No progress reported yet');
      setText(e.progressMessage, progress?.message ? `— ${progress.message}` : '');
    } else {
      show(e.progress, false);
    }

    const started = ms(job.started_at);
    const finished = ms(job.finished_at);
    setText(e.created, localDateTime(job.created_at));
    setText(e.started, localDateTime(job.started_at));
    setText(e.finished, localDateTime(job.finished_at));
    let d = null;
    if (started !== null && finished !== null) d = finished - started;
    else if (started !== null && job.state === 'running') d = now - started;
    setText(e.duration, d === null ? '—' : duration(d) + (job.state === 'running' ? ' so far' : ''));
    setText(e.attempts, job.attempts ?? '—');
    setText(e.priority, job.priority ?? 0);
    setText(e.timeout, job.timeout_ms ? duration(job.timeout_ms) : 'none');
    setText(e.owner, job.owner ?? '—');
    e.owner.title = job.owner ?? '';
    // The last failed attempt's reason, while retrying or once given up (textContent: no markup).
    const why = job.notification_error ? `: ${job.notification_error}` : '';
    setText(e.notification, job.notify_url ? `${job.notification ?? 'pending'}${why} (${job.notify_url})` : 'none');

    if (this.cache.retryOf !== job.retry_of) {
      this.cache.retryOf = job.retry_of;
      e.retryOf.replaceChildren();
      if (job.retry_of) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'link';
        b.dataset.openJob = job.retry_of;
        b.id = 'detail-retry-of-link';
        b.textContent = `job #${job.retry_of}`;
        e.retryOf.append(b);
      } else {
        e.retryOf.textContent = '—';
      }
    }

    const input = json(job.input ?? {});
    if (this.cache.input !== input) {
      this.cache.input = input;
      e.input.textContent = input;
    }
    const hasResult = job.result !== null && job.result !== undefined;
    show(e.resultSection, hasResult);
    const result = hasResult ? json(job.result) : '';
    if (this.cache.result !== result) {
      this.cache.result = result;
      e.result.textContent = result;
    }

    const err = job.error ?? null;
    const errKey = err ? JSON.stringify(err) : '';
    show(e.error, err !== null);
    if (this.cache.error !== errKey) {
      this.cache.error = errKey;
      this.renderError(err);
    }
  }

  renderError(err) {
    const e = this.el;
    e.errorFacts.replaceChildren();
    if (!err) return;
    setText(e.errorType, err.type ?? 'error');
    setAttr(e.error, 'data-error-type', err.type ?? null);
    setText(e.errorMessage, err.message ?? defaultMessage(err));
    const fact = (label, value, id) => {
      const div = document.createElement('div');
      const dt = document.createElement('dt');
      const dd = document.createElement('dd');
      dt.textContent = label;
      dd.textContent = value;
      if (id) dd.id = id;
      div.append(dt, dd);
      e.errorFacts.append(div);
    };
    if (err.pid !== undefined && err.pid !== null) fact('Worker pid', err.pid, 'detail-error-pid');
    if (err.signal !== undefined && err.signal !== null && err.signal !== 0) {
      fact('Signal', `${signalName(err.signal)} (${err.signal})`, 'detail-error-signal');
    }
    const bySignal = err.signal !== undefined && err.signal !== null && err.signal !== 0;
    if (err.exit_code !== undefined && err.exit_code !== null && err.type === 'worker_crashed' &&
        !(bySignal && err.exit_code < 0)) {
      fact('Exit code', err.exit_code, 'detail-error-exit');
    }
    if (err.out_of_memory) fact('Out of memory', 'yes');
    if (err.timeout_ms) fact('Timeout', duration(err.timeout_ms));
    const tail = typeof err.output_tail === 'string' ? err.output_tail : null;
    show(e.stderrSection, tail !== null);
    e.stderr.textContent = tail === null ? '' : (tail.trim() === '' ? '(the worker wrote nothing to stderr)' : tail);
  }
}

function defaultMessage(err) {
  switch (err.type) {
    case 'cancelled': return 'Cancelled by a DELETE request.';
    case 'interrupted': return 'Interrupted by service restarts too many times.';
    case 'timeout': return 'The job ran past its timeout.';
    default: return '';
  }
}
