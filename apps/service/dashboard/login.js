// Signing in with an API token, for a service started with --require-tokens. The page's requests
// and its EventSource (which cannot send an Authorization header) then carry the session cookie
// POST /session sets (HttpOnly: this script never sees it again). Shown when a request gets 401.

const $ = (id) => document.getElementById(id);

let shown = false;

// Shows the login form (once; the page reloads after signing in). `message`: the service's
// reason, kept as the field's title (it is long and written for API clients).
export function showLogin(message) {
  if (shown) return;
  shown = true;
  $('login').hidden = false;
  $('login-reason').textContent =
    'This service requires an API token. An operator makes one with: procpool-service token create --scope read (or submit, or admin).';
  if (message) $('login-reason').title = message;
  $('login-token').focus();
}

function init() {
  const form = $('login-form');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = $('login-token').value.trim();
    const msg = $('login-message');
    if (!token) {
      msg.dataset.kind = 'error';
      msg.textContent = 'Paste a token (procpool-service token create --scope read|submit|admin).';
      return;
    }
    msg.dataset.kind = '';
    msg.textContent = 'Signing in…';
    let res;
    try {
      res = await fetch('/session', {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'X-Procpool-Request': '1', Accept: 'application/json' },
      });
    } catch {
      msg.dataset.kind = 'error';
      msg.textContent = 'The service cannot be reached.';
      return;
    }
    if (res.ok) {
      $('login-token').value = '';
      // Everything (the event stream included) starts again with the cookie.
      window.location.reload();
      return;
    }
    let text = `${res.status} ${res.statusText}`;
    try {
      const data = await res.json();
      if (data && typeof data.error === 'string') text = data.error;
    } catch { /* not JSON: the status says enough */ }
    msg.dataset.kind = 'error';
    msg.textContent = text;
  });
}

init();
