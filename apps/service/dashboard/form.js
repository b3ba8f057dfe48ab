// The submit form, built from GET /tasks: one input per field of the task (type, minimum,
// maximum, default), an optional timeout; a JSON box for a service that does not list fields.

import { api } from './api.js';
import { setAttr, setText } from './format.js';

const $ = (id) => document.getElementById(id);
let onSubmitted = () => {};

/** Loads the tasks (also into the table's task filter) and wires the form. */
export function initSubmitForm(submitted) {
  onSubmitted = submitted;
  $('submit-form').addEventListener('submit', submit);
  $('task-select').addEventListener('change', () => { renderTaskFields(); formMessage('', ''); });
  loadTasks();
}

let tasks = [];

function renderTaskFields() {
  const name = $('task-select').value;
  const task = tasks.find((t) => t.name === name);
  const box = $('task-fields');
  box.replaceChildren();
  setText($('task-summary'), task?.summary ?? '');
  if (!task) return;
  if (!Array.isArray(task.fields)) {
    // An older service without `fields`: the input as JSON.
    box.append(field('input-json', 'Input (JSON)', () => {
      const t = document.createElement('textarea');
      t.name = '__json';
      t.value = '{}';
      t.spellcheck = false;
      return t;
    }, 'wide'));
    return;
  }
  for (const f of task.fields) {
    box.append(field(`field-${f.name}`, f.name, () => {
      const input = document.createElement('input');
      input.name = f.name;
      input.dataset.type = f.type;
      if (f.type === 'integer' || f.type === 'number') {
        input.type = 'number';
        input.inputMode = f.type === 'integer' ? 'numeric' : 'decimal';
        input.step = f.type === 'integer' ? '1' : 'any';
        if (f.minimum !== undefined) input.min = f.minimum;
        if (f.maximum !== undefined) input.max = f.maximum;
      } else {
        input.type = 'text';
      }
      if (f.default !== undefined) input.value = f.default;
      return input;
    }, '', f.description));
  }
}

function field(id, label, make, cls, description) {
  const div = document.createElement('div');
  div.className = `field ${cls}`.trim();
  const l = document.createElement('label');
  l.htmlFor = id;
  l.textContent = label;
  const input = make();
  input.id = id;
  div.append(l, input);
  if (description) {
    const p = document.createElement('p');
    p.className = 'hint';
    p.id = `${id}-hint`;
    p.textContent = description;
    input.setAttribute('aria-describedby', p.id);
    div.append(p);
  }
  return div;
}

let formMessageTimer = 0;
function formMessage(text, kind) {
  const el = $('submit-message');
  setText(el, text);
  setAttr(el, 'data-kind', kind || null);
  clearTimeout(formMessageTimer);
  if (kind === 'ok') formMessageTimer = setTimeout(() => formMessage('', ''), 10_000);
}

/** The request body from the form, or throws a message naming the bad field. */
function readForm() {
  const task = $('task-select').value;
  if (!task) throw new Error('choose a task');
  const body = { task, input: {} };
  for (const input of $('task-fields').querySelectorAll('input, textarea')) {
    input.removeAttribute('aria-invalid');
    const v = input.value.trim();
    if (input.name === '__json') {
      try { body.input = v ? JSON.parse(v) : {}; } catch { input.setAttribute('aria-invalid', 'true'); throw new Error('input is not valid JSON'); }
      continue;
    }
    if (v === '') continue; // the task's default
    const type = input.dataset.type;
    if (type === 'integer' || type === 'number') {
      const n = Number(v);
      const bad = !Number.isFinite(n) || (type === 'integer' && !Number.isInteger(n)) ||
        (input.min !== '' && n < Number(input.min)) || (input.max !== '' && n > Number(input.max));
      if (bad) {
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        const range = input.min !== '' && input.max !== '' ? ` between ${input.min} and ${input.max}` : '';
        throw new Error(`${input.name} must be ${type === 'integer' ? 'an integer' : 'a number'}${range}`);
      }
      body.input[input.name] = n;
    } else {
      body.input[input.name] = v;
    }
  }
  const timeout = $('timeout-input').value.trim();
  if (timeout !== '') {
    const n = Number(timeout);
    if (!Number.isInteger(n) || n < 1) throw new Error('timeout must be a positive whole number of ms');
    body.timeout_ms = n;
  }
  return body;
}

async function submit(e) {
  e.preventDefault();
  let body;
  try {
    body = readForm();
  } catch (err) {
    formMessage(err.message, 'error');
    return;
  }
  const button = $('submit-button');
  button.disabled = true;
  formMessage('Submitting…', '');
  try {
    const r = await api('POST', '/jobs', body);
    formMessage(`Job #${r.id} queued.`, 'ok');
    onSubmitted(r.id);
  } catch (err) {
    formMessage(err.message, 'error');
  } finally {
    button.disabled = false;
  }
}

async function loadTasks() {
  try {
    const data = await api('GET', '/tasks');
    tasks = data.tasks ?? [];
  } catch (e) {
    setTimeout(loadTasks, 3000);
    formMessage(`Could not read the tasks: ${e.message}`, 'error');
    return;
  }
  const taskSelect = $('task-select');
  const filter = $('filter-task');
  taskSelect.replaceChildren();
  for (const t of tasks) {
    const o = document.createElement('option');
    o.value = t.name;
    o.textContent = t.name;
    taskSelect.append(o);
    const f = document.createElement('option');
    f.value = t.name;
    f.textContent = t.name;
    filter.append(f);
  }
  taskSelect.value = tasks.some((t) => t.name === 'count_primes') ? 'count_primes' : tasks[0]?.name ?? '';
  formMessage('', '');
  renderTaskFields();
}
