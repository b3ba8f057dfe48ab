// procpool-service dashboard: live state from GET /events (EventSource), no polling of state.
// Modules: api.js (fetch, errors), form.js (the submit form), table.js (the jobs table),
// detail.js (the job panel), chart.js (throughput and latency), format.js (formatting), login.js
// (signing in with a token). Plain ES2020 modules, no third-party code.
//
// Stable selectors (used by test/browser/dashboard_test.py; keep them):
//   html[data-ready="true"]              set once the first page of jobs is rendered;
//                                        html[data-ready-ms] = performance.now() at that moment
//   #conn-status[data-status]            connecting | live | reconnecting
//   #count-<state>                       job counts (queued running succeeded failed timed_out cancelled)
//   #pool-workers #pool-busy #pool-idle #pool-queued #pool-completed #pool-crashed
//   #pool-timed_out #pool-respawned      the pool (from `stats`)
//   #submit-form, #task-select, #task-fields input[name=<field>], #timeout-input,
//   #submit-button, #submit-message[data-kind=ok|error]
//   #filter-state, #filter-task          table filters; #page-older #page-newer #page-newest pager
//   #job-table tbody tr[data-job-id="N"][data-state]   one row per job on the page (at most 20);
//                                        the selected one has aria-current="true"; Enter selects
//   #job-table tbody tr td.state[data-state]           the state cell
//   .progress[data-job-id="N"][aria-valuenow]          progress bar (running: 0-100, succeeded: 100;
//                                        no aria-valuenow while the total is unknown). The detail
//                                        panel has one too: use #job-table .progress[...] for the row
//   #empty-state                          "No jobs yet — submit one" (visible when there are none)
//   #job-detail[data-job-id][data-state]  the detail panel of the selected job
//   #detail-error[data-error-type], #detail-error-signal, #detail-error-pid, #detail-stderr (<pre>)
//   #detail-retry-of-link                 the retry_of link (a button)
//   button[data-action="cancel"], button[data-action="retry"]   in the detail panel
//   #detail-message[data-kind]            the outcome of cancel / retry; #toast for other API errors
//   body[data-job-events]                 job events received so far (diagnostics)
//   #login (shown on a 401), #login-form, #login-token, #login-button, #login-message[data-kind]

import { ENDED, STATES, count, eta, ms, rate, setAttr, setText, show } from './format.js';
import { JobTable, PAGE_SIZE } from './table.js';
import { JobDetail } from './detail.js';
import { ActivityChart } from './chart.js';
import { api, toast } from './api.js';
import { initSubmitForm } from './form.js';

const $ = (id) => document.getElementById(id);
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, timed_out: 2, cancelled: 2 };
const CHART_LIST_LIMIT = 5000; // jobs read at start-up for the chart, at most

// ---------------------------------------------------------------- state

const jobs = new Map();      // id -> job, every job we have seen (pruned)
const progress = new Map();  // id -> {done, total, message, updatedAt, samples: [{t, done}]}
const counts = Object.fromEntries(STATES.map((s) => [s, null]));
let statsAvailable = null;   // null: unknown yet; false: GET /stats is missing (older service)
let clockOffset = 0;         // server clock - local clock, ms (from stats.at)
let selectedId = null;
let jobEvents = 0;
let ready = false;

const view = {
  state: '', task: '',
  cursor: null,       // null: the newest page (live); otherwise the `before` of this page
  history: [],        // cursors of the newer pages, to go back
  ids: [],            // ids on this page, newest first
  hasMore: false,
  loaded: false,
  clientTaskFilter: false, // the service does not know `task=`: filter a larger list here
};

const narrow = window.matchMedia('(max-width: 860px)');
const table = new JobTable(document.querySelector('#job-table tbody'), (id) => {
  select(id);
  // One column: the panel is below the table, bring it into view.
  if (narrow.matches) $('job-detail').scrollIntoView({ block: 'start' });
});
const detail = new JobDetail({
  onCancel: cancelJob, onRetry: retryJob, onOpen: (id) => select(id), onClose: closeDetail,
});
const chart = new ActivityChart($('throughput-chart'), $('latency-chart'), $('chart-summary'));

const serverNow = () => Date.now() + clockOffset;

// ---------------------------------------------------------------- jobs and progress

/** Is a newer than b? (the list can be older than an event that arrived while it was read) */
function isNewer(a, b) {
  if ((a.attempts ?? 0) !== (b.attempts ?? 0)) return (a.attempts ?? 0) > (b.attempts ?? 0);
  return RANK[a.state] > RANK[b.state];
}

/** Merges a job read from the API; events are authoritative and go through onJobEvent. */
function mergeJob(j) {
  const old = jobs.get(j.id);
  if (old && isNewer(old, j)) return old;
  jobs.set(j.id, j);
  if (j.progress && j.state === 'running') onProgress({ id: j.id, ...j.progress });
  if (ENDED.has(j.state)) {
    progress.delete(j.id);
    chart.add(j);
  }
  return j;
}

function onJobEvent(j) {
  jobEvents += 1;
  const old = jobs.get(j.id);
  jobs.set(j.id, j);
  if (statsAvailable === false) {
    if (old && counts[old.state] !== null) counts[old.state] = Math.max(0, counts[old.state] - 1);
    if (counts[j.state] !== null) counts[j.state] += 1;
  }
  if (ENDED.has(j.state)) {
    progress.delete(j.id);
    chart.add(j);
  } else if (j.state === 'queued') {
    progress.delete(j.id); // re-queued after a restart: its next run starts from zero
  }
  if (pendingFetch) pendingFetch.seen.add(j.id);
  placeInView(j);
  scheduleRender();
}

function onProgress(p) {
  let e = progress.get(p.id);
  if (!e) {
    e = { samples: [] };
    progress.set(p.id, e);
  }
  const t = ms(p.updated_at) ?? serverNow();
  e.done = Number(p.done) || 0;
  e.total = Number(p.total) || 0;
  e.message = p.message ?? '';
  e.updatedAt = t;
  const last = e.samples[e.samples.length - 1];
  if (last && (t < last.t || e.done < last.done)) e.samples = []; // restarted
  if (!last || t > last.t) e.samples.push({ t, done: e.done });
  while (e.samples.length > 2 && t - e.samples[0].t > 10_000) e.samples.shift();
  if (view.ids.includes(p.id) || p.id === selectedId) scheduleRender();
}

/** What the table and the panel show of a running job's progress. */
function progressOf(job) {
  if (job.state !== 'running') return null;
  const e = progress.get(job.id);
  if (!e) return null;
  const { done, total } = e;
  // Rate from successive reports (over the last ~10 s), else done / time since started_at.
  let perSecond = null;
  const s = e.samples;
  if (s.length >= 2 && s[s.length - 1].t - s[0].t >= 200) {
    perSecond = ((s[s.length - 1].done - s[0].done) * 1000) / (s[s.length - 1].t - s[0].t);
  } else {
    const started = ms(job.started_at);
    if (started !== null && e.updatedAt > started) perSecond = (done * 1000) / (e.updatedAt - started);
  }
  const percent = total > 0 ? Math.min(100, (done / total) * 100) : null;
  let etaSeconds = null;
  if (total > 0 && perSecond && perSecond > 0) {
    // From the last report, less the time since it.
    etaSeconds = Math.max(0, (total - done) / perSecond - (serverNow() - e.updatedAt) / 1000);
  }
  const etaText = etaSeconds === null ? '' : `${eta(etaSeconds)} left`;
  const rateText = perSecond === null ? '' : rate(perSecond);
  const parts = [total > 0 ? `${count(done)} of ${count(total)}` : `${count(done)} done`];
  if (rateText) parts.push(rateText);
  if (etaText) parts.push(`ETA ${eta(etaSeconds)}`);
  return { percent, done, total, message: e.message, rateText, etaText, summary: parts.join(' · ') };
}

function pruneJobs() {
  if (jobs.size <= 6000) return;
  const keep = new Set(view.ids);
  if (selectedId !== null) keep.add(selectedId);
  const ids = [...jobs.keys()].sort((a, b) => a - b);
  for (const id of ids) {
    if (jobs.size <= 4000) break;
    const j = jobs.get(id);
    if (!keep.has(id) && ENDED.has(j.state)) jobs.delete(id);
  }
}

// ---------------------------------------------------------------- the table's page

const matches = (j) => (!view.state || j.state === view.state) && (!view.task || j.task === view.task);

/** Keeps the newest page live: a job entering it is inserted by id, one leaving it refetches. */
function placeInView(j) {
  if (!view.loaded) return;
  const i = view.ids.indexOf(j.id);
  if (i >= 0) {
    if (view.cursor === null && !matches(j)) {
      view.ids.splice(i, 1);
      if (view.hasMore) refetchSoon();
    }
    return;
  }
  if (view.cursor !== null || !matches(j)) return;
  const last = view.ids[view.ids.length - 1];
  if (view.ids.length >= PAGE_SIZE && j.id < last) return;
  let at = view.ids.findIndex((id) => id < j.id);
  if (at < 0) at = view.ids.length;
  view.ids.splice(at, 0, j.id);
  if (view.ids.length > PAGE_SIZE) {
    view.ids.length = PAGE_SIZE;
    view.hasMore = true;
  }
}

let pendingFetch = null;
let refetchTimer = 0;
function refetchSoon(delay = 300) {
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(() => loadPage(view.cursor), delay);
}

/** Reads one page of the table (cursor null: the newest) and shows it. */
async function loadPage(cursor) {
  const fetchState = { seen: new Set() };
  pendingFetch = fetchState;
  const params = new URLSearchParams();
  if (view.state) params.set('state', view.state);
  if (view.task && !view.clientTaskFilter) params.set('task', view.task);
  if (cursor !== null) params.set('before', cursor);
  params.set('limit', view.clientTaskFilter && view.task ? 1000 : PAGE_SIZE);
  const wanted = { state: view.state, task: view.task };
  let data;
  try {
    data = await api('GET', `/jobs?${params}`);
  } catch (e) {
    if (pendingFetch === fetchState) pendingFetch = null;
    if (e.status === 400 && view.task && !view.clientTaskFilter && /task/.test(e.message)) {
      view.clientTaskFilter = true; // an older service: no `task=` filter
      return loadPage(cursor);
    }
    toast(`Could not read the jobs: ${e.message}`);
    return;
  }
  if (pendingFetch !== fetchState || wanted.state !== view.state || wanted.task !== view.task) return;
  pendingFetch = null;
  let list = data.jobs.map(mergeJob);
  let more = data.next_before !== null && data.next_before !== undefined;
  if (view.clientTaskFilter && view.task) {
    list = list.filter(matches);
    more = list.length > PAGE_SIZE || more;
    list = list.slice(0, PAGE_SIZE);
  }
  view.cursor = cursor;
  view.ids = list.map((j) => j.id);
  view.hasMore = more;
  view.loaded = true;
  // Jobs that changed while the page was read.
  for (const id of fetchState.seen) {
    const j = jobs.get(id);
    if (j && !view.ids.includes(id)) placeInView(j);
  }
  scheduleRender();
}

function setFilter(state, task) {
  view.state = state;
  view.task = task;
  view.history = [];
  view.cursor = null;
  $('filter-state').value = state;
  $('filter-task').value = task;
  for (const b of document.querySelectorAll('.count-card')) {
    b.setAttribute('aria-pressed', String(b.dataset.filterState === state));
  }
  loadPage(null);
}

// ---------------------------------------------------------------- start-up, stats

async function loadInitial() {
  // One list serves the first page, the chart's recent history and the cache.
  let data;
  try {
    data = await api('GET', '/jobs?limit=1000');
  } catch (e) {
    toast(`Could not read the jobs: ${e.message}`);
    setTimeout(loadInitial, 2000);
    return;
  }
  const list = data.jobs.map(mergeJob);
  const page = view.state || view.task ? null : list.filter(matches);
  if (page) {
    view.ids = page.slice(0, PAGE_SIZE).map((j) => j.id);
    view.hasMore = page.length > PAGE_SIZE || data.next_before != null;
    view.loaded = true;
    for (const j of jobs.values()) if (!view.ids.includes(j.id)) placeInView(j);
    renderNow();
  } else {
    await loadPage(null);
  }
  // Older jobs that ended within the chart's window.
  const horizon = serverNow() - 5 * 60_000;
  const last = list[list.length - 1];
  let before = last && (ms(last.created_at) ?? 0) >= horizon ? data.next_before : null;
  let read = list.length;
  while (before != null && read < CHART_LIST_LIMIT) {
    let more;
    try {
      more = await api('GET', `/jobs?limit=1000&before=${before}`);
    } catch {
      break;
    }
    for (const j of more.jobs) if (ENDED.has(j.state) && !jobs.has(j.id)) chart.add(j);
    read += more.jobs.length;
    before = more.next_before;
    const oldest = more.jobs[more.jobs.length - 1];
    if (!oldest || (ms(oldest.created_at) ?? 0) < horizon) break;
  }
  scheduleRender();
}

async function loadStats() {
  try {
    applyStats(await api('GET', '/stats'));
  } catch (e) {
    if (e.status === 404 || e.status === 405) {
      statsAvailable = false; // an older service: counts from the jobs we see
      setText($('pool-note'), 'Pool statistics need GET /stats (not served by this service).');
      show($('pool-note'), true);
      countFromCache();
    }
  }
}

function countFromCache() {
  for (const s of STATES) counts[s] = 0;
  for (const j of jobs.values()) counts[j.state] += 1;
  scheduleRender();
}

function applyStats(s) {
  if (!s || !s.jobs) return;
  statsAvailable = true;
  show($('pool-note'), false);
  if (s.at) {
    const at = ms(s.at);
    if (at !== null) clockOffset = at - Date.now();
  }
  if (s.instance) setText($('instance'), `instance ${s.instance}`);
  for (const st of STATES) counts[st] = s.jobs[st] ?? 0;
  const p = s.pool ?? {};
  for (const k of ['workers', 'busy', 'idle', 'queued', 'completed', 'crashed', 'timed_out', 'respawned']) {
    setText($(`pool-${k}`), p[k] === undefined ? '–' : count(p[k]));
  }
  const workers = p.workers ?? 0;
  $('pool-meter-fill').style.width = workers > 0 ? `${Math.min(100, ((p.busy ?? 0) / workers) * 100)}%` : '0';
  setText($('pool-summary'), workers > 0 ? `${count(p.busy ?? 0)} of ${count(workers)} busy` : '');
  scheduleRender();
}

// ---------------------------------------------------------------- live events

let source = null;
let everLive = false;
let lost = false;
let retryDelay = 1000;
let reconnectTimer = 0;

function setConn(status) {
  const el = $('conn-status');
  setAttr(el, 'data-status', status);
  setText($('conn-text'), { live: 'Live', reconnecting: 'Reconnecting…', connecting: 'Connecting…' }[status]);
}

function connect() {
  source = new EventSource('/events');
  source.addEventListener('open', () => {
    setConn('live');
    retryDelay = 1000;
    if (lost) {
      // Back after a drop: the stream replays what was missed (Last-Event-ID); the counts and
      // the page are read again too, as a replay can be truncated and EventSource hides comments.
      lost = false;
      loadStats();
      refetchSoon(200);
    }
    everLive = true;
  });
  source.addEventListener('error', () => {
    if (everLive) lost = true;
    setConn('reconnecting');
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. a 503 while the service stopped): a new EventSource has no
      // Last-Event-ID, so everything is read again once it is open.
      source.close();
      lost = true;
      clearTimeout(reconnectTimer);
      reconnectTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15_000);
    }
  });
  source.addEventListener('job', (e) => {
    try { onJobEvent(JSON.parse(e.data)); } catch (err) { console.warn('bad job event', err); }
  });
  source.addEventListener('progress', (e) => {
    try { onProgress(JSON.parse(e.data)); } catch (err) { console.warn('bad progress event', err); }
  });
  source.addEventListener('stats', (e) => {
    try { applyStats(JSON.parse(e.data)); } catch (err) { console.warn('bad stats event', err); }
  });
}

// ---------------------------------------------------------------- rendering

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(renderNow);
}

function renderNow() {
  renderQueued = false;
  const now = serverNow();
  for (const s of STATES) setText($(`count-${s}`), count(counts[s]));
  const pageJobs = view.ids.map((id) => jobs.get(id)).filter(Boolean);
  table.render(pageJobs, selectedId, progressOf, now);
  $('table-loading').hidden = view.loaded;
  const empty = view.loaded && pageJobs.length === 0;
  show($('empty-state'), empty);
  if (empty) {
    const filtered = view.state || view.task || view.cursor !== null;
    setText($('empty-state'), filtered ? 'No jobs match these filters.' : 'No jobs yet — submit one');
  }
  renderPager();
  if (selectedId !== null) {
    const j = jobs.get(selectedId);
    if (j) detail.update(j, progressOf(j), now);
  }
  document.body.dataset.jobEvents = String(jobEvents);
  if (!ready && view.loaded) {
    ready = true;
    chart.draw(now, true);
    document.documentElement.dataset.readyMs = String(Math.round(performance.now()));
    document.documentElement.dataset.ready = 'true';
  }
}

function renderPager() {
  const page = view.history.length + 1;
  $('page-newer').disabled = view.cursor === null;
  $('page-newest').disabled = view.cursor === null;
  $('page-older').disabled = !view.hasMore || view.ids.length === 0;
  let total = null;
  if (!view.task && STATES.every((s) => counts[s] !== null)) {
    total = view.state ? counts[view.state] : STATES.reduce((a, s) => a + counts[s], 0);
  }
  let text = view.ids.length ? `Page ${page}` : '';
  if (view.ids.length) text += ` · #${view.ids[0]}–#${view.ids[view.ids.length - 1]}`;
  if (total !== null && view.ids.length) text += ` of ${count(total)} jobs`;
  setText($('page-info'), text);
}

// A tick for the clocks that move by themselves (durations, ETAs, the chart's window).
setInterval(() => {
  const running = view.ids.some((id) => jobs.get(id)?.state === 'running') ||
    (selectedId !== null && jobs.get(selectedId)?.state === 'running');
  if (running) scheduleRender();
  chart.draw(serverNow(), true); // at most once a second, however fast jobs end
  pruneJobs();
}, 1000);

// ---------------------------------------------------------------- selection, actions

async function select(id) {
  selectedId = id;
  detail.select(id);
  history.replaceState(null, '', id === null ? location.pathname : `#job-${id}`);
  scheduleRender();
  if (id === null) return;
  try {
    const j = await api('GET', `/jobs/${id}`);
    mergeJob(j);
    scheduleRender();
  } catch (e) {
    if (selectedId === id) detail.message(`Could not read job #${id}: ${e.message}`, 'error');
  }
}

/** Closes the panel and puts the focus back on the job's row, if it is on the page. */
function closeDetail() {
  const id = selectedId;
  select(null);
  if (id !== null) table.focusRow(id);
}

async function cancelJob(id) {
  detail.setBusy(true);
  detail.message(`Cancelling job #${id}…`, '');
  try {
    const j = await api('DELETE', `/jobs/${id}`);
    if (j && j.id) mergeJob(j);
    detail.message(j && j.state === 'cancelled' ? `Job #${id} cancelled.` : `Cancellation of job #${id} requested.`, 'ok');
  } catch (e) {
    if (e.data && e.data.job) mergeJob(e.data.job);
    detail.message(`Cancel failed: ${e.message}`, 'error');
  } finally {
    detail.setBusy(false);
    scheduleRender();
  }
}

async function retryJob(id) {
  detail.setBusy(true);
  try {
    const r = await api('POST', `/jobs/${id}/retry`);
    await select(r.id);
    detail.message(`Job #${r.id} retries job #${id}.`, 'ok');
  } catch (e) {
    detail.message(`Retry failed: ${e.message}`, 'error');
  } finally {
    detail.setBusy(false);
  }
}

// ---------------------------------------------------------------- wiring

$('filter-state').addEventListener('change', (e) => setFilter(e.target.value, view.task));
$('filter-task').addEventListener('change', (e) => setFilter(view.state, e.target.value));
for (const b of document.querySelectorAll('.count-card')) {
  b.setAttribute('aria-pressed', 'false');
  b.addEventListener('click', () => setFilter(view.state === b.dataset.filterState ? '' : b.dataset.filterState, view.task));
}
$('page-older').addEventListener('click', () => {
  if (!view.hasMore || !view.ids.length) return;
  view.history.push(view.cursor);
  loadPage(view.ids[view.ids.length - 1]);
});
$('page-newer').addEventListener('click', () => {
  if (view.cursor === null) return;
  loadPage(view.history.pop() ?? null);
});
$('page-newest').addEventListener('click', () => {
  view.history = [];
  loadPage(null);
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && selectedId !== null && !e.target.closest?.('input, select, textarea')) closeDetail();
});

setConn('connecting');
connect();
initSubmitForm((id) => select(id));
loadStats();
loadInitial();
const fromHash = /^#job-(\d+)$/.exec(location.hash);
if (fromHash) select(Number(fromHash[1]));
