// The service's JSON API: fetch with errors as exceptions carrying the service's {"error": ...}
// message, and a toast for errors that belong to no form.

import { showLogin } from './login.js';

const $ = (id) => document.getElementById(id);

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(method, path, body) {
  // X-Procpool-Request: what the service asks of requests signed in by its session cookie that
  // change something (a form or link on another site cannot set it).
  const init = { method, headers: { Accept: 'application/json', 'X-Procpool-Request': '1' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'the service cannot be reached');
  }
  let data = null;
  const text = await res.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const msg = data && typeof data.error === 'string' ? data.error : `${res.status} ${res.statusText}`;
    if (res.status === 401) showLogin(msg);
    const err = new ApiError(res.status, msg);
    err.data = data;
    throw err;
  }
  return data;
}

let toastTimer = 0;
export function toast(text, kind = 'error') {
  const el = $('toast');
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 7000);
}

