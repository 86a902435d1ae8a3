// contact-sync operator console: hash-routed views over /api, refreshed
// every 2 s. Text from the api is only ever set as text, never as markup.

const TOKEN_KEY = 'contact-sync.token';
const REFRESH_MS = 2000;
const PER_PAGE = 25;
const CRMS = { hubspot: 'HubSpot', pipedrive: 'Pipedrive' };

const $ = (id) => document.getElementById(id);
const crm = (p) => CRMS[p] ?? p;
const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(method, path) {
  const res = await fetch(`/api${path}`, {
    method,
    cache: 'no-store',
    // a hung request must not stop the polling, which waits for it
    signal: AbortSignal.timeout(10000),
    headers: { Authorization: `Bearer ${token()}`, Accept: 'application/json' },
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw Object.assign(new Error(body?.message ?? res.statusText), { status: res.status });
  return body;
}

function explain(err) {
  if (err.status === 401) return 'The api refused this token (401). Sign in with a valid token.';
  if (err.status === 403) {
    return 'This token may only read (403): retrying and discarding need an operator token.';
  }
  if (err.status) return `${err.message} (${err.status})`;
  return `cannot reach the api (${err.message})`;
}

// ---- DOM helpers ----

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...kids.flat(Infinity).filter((k) => k != null && k !== false));
  return el;
}

const link = (href, text) => h('a', { href }, text);
const dash = (v) => (v == null || v === '' ? '—' : v);

// `cols` are header texts, a leading '#' marking a numeric column; a row
// is an array of cells, or `{ attrs, cells }`; a cell may be a ready <th>.
function table(labelledby, cols, rows, empty) {
  const num = (i) => (cols[i].startsWith('#') ? 'num' : null);
  const cell = (c, i) => (c instanceof HTMLTableCellElement ? c : h('td', { class: num(i) }, c));
  const body = rows.length
    ? rows.map((r) => (Array.isArray(r) ? h('tr', {}, r.map(cell)) : h('tr', r.attrs, r.cells.map(cell))))
    : h('tr', {}, h('td', { colspan: cols.length, class: 'empty' }, empty));
  const head = cols.map((c, i) => h('th', { scope: 'col', class: num(i) }, c.replace(/^#/, '')));
  return h(
    'div',
    { class: 'scroll' },
    h('table', { 'aria-labelledby': labelledby }, h('thead', {}, h('tr', {}, head)), h('tbody', {}, body)),
  );
}

function section(id, title, ...content) {
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), content);
}

const tableSection = (id, title, ...rest) => section(id, title, table(id, ...rest));

function page(title, ...content) {
  return h('div', {}, h('h1', { tabindex: -1 }, title), content);
}

function time(v) {
  if (v == null || v === 0) return '—';
  const d = new Date(v);
  return h('time', { datetime: d.toISOString() }, d.toLocaleString());
}

function duration(ms) {
  if (ms == null) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${Math.floor(ms / 3600000)} h ${Math.floor((ms % 3600000) / 60000)} min`;
}

const percent = (r) => `${(r * 100).toFixed(1)} %`;

function badge(provider, status) {
  return h(
    'span',
    { class: `badge ${status}`, 'data-provider': provider, 'data-status': status },
    `${crm(provider)}: ${status}`,
  );
}

// ---- status messages ----

const setStatus = (text) => ($('status').textContent = text);
// An unchanged alert is not set again, so it is not announced again. A
// refresh clears only an alert of its own: a failed action's stays until
// the next action or view.
let alertOfRefresh = false;
function setAlert(text, ofRefresh = false) {
  if ($('alert').textContent !== text) $('alert').textContent = text;
  alertOfRefresh = ofRefresh;
}

// ---- actions ----

async function act(button, what, method, path, done) {
  if (button.dataset.busy) return;
  button.dataset.busy = '1';
  button.setAttribute('aria-busy', 'true');
  try {
    const body = await api(method, path);
    setAlert('');
    setStatus(done(body));
  } catch (err) {
    if (err.status === 401) return showLogin(explain(err));
    setAlert(`${what} failed: ${explain(err)}`);
  } finally {
    delete button.dataset.busy;
    button.removeAttribute('aria-busy');
  }
  await refresh();
}

function button(label, attrs, onclick) {
  return h('button', { type: 'button', ...attrs, onclick: (e) => onclick(e.currentTarget) }, label);
}

function retryContact(c, provider) {
  return button(
    'Retry',
    {
      'data-action': 'retry',
      'data-provider': provider,
      'data-key': `retry:${c.id}:${provider}`,
      'aria-label': `Retry sync of ${c.email} (${crm(provider)} failed)`,
    },
    (b) =>
      act(
        b,
        'Retry',
        'POST',
        `/contacts/${c.id}/resync`,
        (r) => `Retry queued for ${c.email}: ${r.count} push${r.count === 1 ? '' : 'es'}.`,
      ),
  );
}

function retryJob(job) {
  return button(
    'Retry',
    { 'data-action': 'retry', 'data-key': `retry:${job.id}`, 'aria-label': `Retry job ${job.id}` },
    (b) => act(b, 'Retry', 'POST', `/jobs/${job.id}/retry`, () => `Job ${job.id} sent back to its queue.`),
  );
}

function discardJob(job, after) {
  return button(
    'Discard',
    {
      class: 'danger',
      'data-action': 'discard',
      'data-key': `discard:${job.id}`,
      'aria-label': `Discard job ${job.id}`,
    },
    (b) => {
      if (!window.confirm(`Discard job ${job.id}? It cannot be retried afterwards.`)) return;
      act(b, 'Discard', 'DELETE', `/jobs/${job.id}`, () => {
        if (after) location.hash = after;
        return `Job ${job.id} discarded.`;
      });
    },
  );
}

// ---- views ----

async function loadOverview() {
  const paths = ['/queues', '/workers', '/connections', '/links?status=error&limit=20'];
  const [queues, workers, connections, links] = await Promise.all(paths.map((p) => api('GET', p)));
  return { queues, workers, connections, links };
}

function renderOverview({ queues, workers, connections, links }) {
  const now = Date.now();
  return page(
    'Overview',
    tableSection(
      'h-queues',
      'Queues',
      [
        'Queue',
        '#Pending',
        '#Scheduled',
        '#Running',
        '#Done',
        '#Dead',
        '#Completed (5 min)',
        '#Failed (5 min)',
        '#Failure rate (5 min)',
        '#Oldest pending',
      ],
      queues.map((q) => [
        q.queue,
        q.pending,
        q.scheduled,
        q.running,
        q.done,
        q.dead ? link(`#/dead/${encodeURIComponent(q.queue)}`, String(q.dead)) : '0',
        q.completed5m,
        q.failed5m,
        h('span', { class: q.failureRate5m > 0 ? 'warn' : null }, percent(q.failureRate5m)),
        duration(q.oldestPendingMs),
      ]),
      'No queues.',
    ),
    tableSection(
      'h-workers',
      `Workers (${workers.length})`,
      ['Name', 'Queue', 'Host', '#PID', '#Concurrency', '#In flight', '#Last heartbeat'],
      workers.map((w) => [
        w.name,
        w.queue,
        dash(w.host),
        dash(w.pid),
        dash(w.concurrency),
        w.inFlight,
        `${duration(Math.max(0, now - w.lastHeartbeatMs))} ago`,
      ]),
      'No live workers.',
    ),
    tableSection(
      'h-connections',
      'Connections',
      ['CRM', 'Last success', 'Last poll', '#Error rate (1 h)', '#Pending', '#Synced', '#Error', '#Rate limit used'],
      connections.map((c) => [
        crm(c.provider),
        time(c.lastSuccessAt),
        time(c.lastPollAt),
        h('span', { class: c.errorRate1h > 0 ? 'warn' : null }, percent(c.errorRate1h)),
        c.linksPending,
        c.linksSynced,
        c.linksError,
        `${c.rateLimitUsed} / ${c.rateLimit} per s`,
      ]),
      'No connections.',
    ),
    tableSection(
      'h-links',
      `Links in error (${links.total})`,
      ['Contact', 'CRM', 'Error', '#Attempts', 'Last job'],
      links.items.map((l) => [
        link(`#/contact/${l.contactId}`, l.contactId),
        badge(l.provider, l.syncStatus),
        h('span', { class: 'error-text' }, dash(l.lastError)),
        l.attempts,
        l.lastJobId ? link(`#/job/${encodeURIComponent(l.lastJobId)}`, l.lastJobId) : '—',
      ]),
      'No link is in error.',
    ),
  );
}

const loadContacts = (route) => {
  const page = Math.max(1, Number.parseInt(route.params.get('page'), 10) || 1);
  return api('GET', `/contacts?page=${page}&perPage=${PER_PAGE}`);
};

function syncCell(c) {
  return h(
    'ul',
    { class: 'sync' },
    c.links.map((l) =>
      h('li', {}, badge(l.provider, l.syncStatus), l.syncStatus === 'error' ? retryContact(c, l.provider) : null),
    ),
  );
}

function renderContacts(data) {
  const pages = Math.max(1, Math.ceil(data.total / data.perPage));
  const name = (c) => [c.firstName, c.lastName].filter(Boolean).join(' ') || '(no name)';
  const rows = data.items.map((c) => {
    const errors = c.links.filter((l) => l.lastError).map((l) => `${crm(l.provider)}: ${l.lastError}`);
    return {
      attrs: { 'data-contact-id': c.id },
      cells: [
        h('th', { scope: 'row' }, link(`#/contact/${c.id}`, name(c))),
        c.email,
        syncCell(c),
        h('span', { class: 'error-text' }, errors.length ? errors.join('\n') : '—'),
      ],
    };
  });
  return page(
    'Contacts',
    h(
      'p',
      { id: 'h-contacts', class: 'muted' },
      `${data.total} contact${data.total === 1 ? '' : 's'}; a name opens the contact's sync log.`,
    ),
    table('h-contacts', ['Name', 'Email', 'Sync', 'Last error'], rows, 'No contacts yet.'),
    h(
      'nav',
      { 'aria-label': 'Pages', class: 'pager' },
      data.page > 1 ? link(`#/contacts?page=${data.page - 1}`, '← Previous') : null,
      h('span', {}, `Page ${data.page} of ${pages}`),
      data.page < pages ? link(`#/contacts?page=${data.page + 1}`, 'Next →') : null,
    ),
  );
}

async function loadContact(route) {
  const id = encodeURIComponent(route.arg ?? '');
  const [contact, logs] = await Promise.all([api('GET', `/contacts/${id}`), api('GET', `/contacts/${id}/sync-logs`)]);
  return { contact, logs };
}

function renderContact({ contact: c, logs }) {
  const jobLink = (id) => (id ? link(`#/job/${encodeURIComponent(id)}`, id) : '—');
  return page(
    [c.firstName, c.lastName].filter(Boolean).join(' ') || c.email,
    h('p', {}, link('#/contacts', '← Contacts'), ` · ${c.email} · version ${c.version}`),
    tableSection(
      'h-contact-links',
      'Links',
      ['CRM', 'Status', 'External id', 'Last synced', '#Attempts', 'Last error', 'Last job'],
      c.links.map((l) => [
        crm(l.provider),
        h(
          'span',
          { class: 'sync' },
          badge(l.provider, l.syncStatus),
          l.syncStatus === 'error' ? retryContact(c, l.provider) : null,
        ),
        dash(l.externalId),
        time(l.lastSyncedAt),
        l.attempts,
        h('span', { class: 'error-text' }, dash(l.lastError)),
        jobLink(l.lastJobId),
      ]),
      'No links.',
    ),
    tableSection(
      'h-logs',
      `Sync log (${logs.length})`,
      ['When', 'CRM', 'Direction', 'Outcome', '#Attempts', '#Version', 'Job', 'Error or conflict'],
      logs.map((l) => [
        time(l.at),
        crm(l.provider),
        l.direction,
        h('span', { class: l.outcome === 'failed' ? 'warn' : null }, l.outcome),
        l.attempts,
        l.version,
        jobLink(l.jobId),
        h('span', { class: 'error-text' }, dash(l.error ?? l.conflict)),
      ]),
      'Nothing synced yet.',
    ),
  );
}

async function loadDead(route) {
  const queues = (await api('GET', '/queues')).map((q) => ({ queue: q.queue, dead: q.dead }));
  const queue = route.arg ?? queues[0]?.queue;
  const jobs = queue ? await api('GET', `/queues/${encodeURIComponent(queue)}/jobs?state=dead&limit=100`) : [];
  return { queues, queue, jobs };
}

// `contactId: 6b0a…, provider: hubspot, version: 1`
function summary(payload) {
  const value = (v) => v?.$oid ?? (typeof v === 'object' ? JSON.stringify(v) : v);
  const text = Object.entries(payload ?? {})
    .map(([k, v]) => `${k}: ${value(v)}`)
    .join(', ');
  return text.length > 90 ? `${text.slice(0, 89)}…` : text;
}

function renderDead({ queues, queue, jobs }) {
  const q = encodeURIComponent(queue);
  return page(
    'Dead jobs',
    h(
      'nav',
      { 'aria-label': 'Queues', class: 'tabs' },
      queues.map((x) =>
        h(
          'a',
          { href: `#/dead/${encodeURIComponent(x.queue)}`, 'aria-current': x.queue === queue ? 'page' : null },
          `${x.queue} (${x.dead})`,
        ),
      ),
    ),
    h(
      'p',
      {},
      button(
        jobs.length ? `Retry all (${jobs.length})` : 'Retry all',
        {
          'data-action': 'retry-all',
          'data-key': `retry-all:${queue}`,
          'aria-label': `Retry all dead jobs of ${queue}`,
          disabled: !jobs.length,
        },
        (b) =>
          act(
            b,
            'Retry all',
            'POST',
            `/queues/${q}/dead/retry`,
            (r) => `${r.retried} dead job${r.retried === 1 ? '' : 's'} of ${queue} sent back.`,
          ),
      ),
    ),
    h('p', { id: 'h-dead', class: 'visually-hidden' }, `Dead jobs of ${queue}`),
    table(
      'h-dead',
      ['Job', 'Payload', '#Attempts', 'Last error', 'Died', 'Actions'],
      jobs.map((j) => ({
        attrs: { 'data-job-id': j.id },
        cells: [
          link(`#/job/${encodeURIComponent(j.id)}`, j.id),
          h('code', {}, summary(j.payload)),
          `${j.attempts} / ${j.maxAttempts}`,
          h('span', { class: 'error-text' }, dash(j.error)),
          time(j.updatedMs),
          h('span', { class: 'actions' }, retryJob(j), discardJob(j)),
        ],
      })),
      `No dead jobs in ${queue}.`,
    ),
  );
}

const loadJob = (route) => api('GET', `/jobs/${encodeURIComponent(route.arg ?? '')}`);

function renderJob(j) {
  const row = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
  // ids in payloads may be extended JSON: {"$oid": "…"}
  const contactId = String(j.payload?.contactId?.$oid ?? j.payload?.contactId ?? '');
  return page(
    `Job ${j.id}`,
    h('p', {}, link(`#/dead/${encodeURIComponent(j.queue)}`, `← Dead jobs of ${j.queue}`)),
    h(
      'dl',
      { class: 'facts' },
      row('Queue', j.queue),
      row('State', h('span', { class: `badge ${{ dead: 'error', done: 'synced' }[j.state] ?? 'pending'}` }, j.state)),
      row('Attempts', `${j.attempts} of ${j.maxAttempts}`),
      row('Worker', dash(j.worker)),
      row('Created', time(j.createdMs)),
      row('Updated', time(j.updatedMs)),
      row('Last error', h('span', { class: 'error-text' }, dash(j.error))),
      contactId ? row('Contact', link(`#/contact/${contactId}`, contactId)) : null,
    ),
    j.state === 'dead'
      ? h('p', { class: 'actions' }, retryJob(j), discardJob(j, `#/dead/${encodeURIComponent(j.queue)}`))
      : null,
    section('h-payload', 'Payload', h('pre', {}, h('code', {}, JSON.stringify(j.payload, null, 2)))),
    tableSection(
      'h-attempts',
      `Failed attempts (${j.failedAttempts.length})`,
      ['#Attempt', 'Worker', 'Started', '#Duration', 'Error'],
      j.failedAttempts.map((a) => [
        a.attempt,
        a.worker,
        time(a.startedMs),
        duration(a.durationMs),
        h('span', { class: 'error-text' }, a.error),
      ]),
      'No failed attempt.',
    ),
  );
}

const VIEWS = {
  overview: { nav: 'overview', load: loadOverview, render: renderOverview },
  contacts: { nav: 'contacts', load: loadContacts, render: renderContacts },
  contact: { nav: 'contacts', load: loadContact, render: renderContact },
  dead: { nav: 'dead', load: loadDead, render: renderDead },
  job: { nav: 'dead', load: loadJob, render: renderJob },
};

// ---- routing and refresh ----

function route() {
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const name = VIEWS[parts[0]] ? parts[0] : 'overview';
  return { name, arg: parts[1], params: new URLSearchParams(query) };
}

let timer = null;
let generation = 0;
let shown = null;

// Replaces the view only when its data changed, and puts the focus back on
// the same control, so polling neither flickers nor steals the keyboard.
function show(node, moved) {
  const view = $('view');
  const active = document.activeElement;
  const key = view.contains(active) ? (active.dataset.key ?? active.getAttribute('href')) : null;
  view.replaceChildren(node);
  if (moved) {
    node.querySelector('h1')?.focus();
  } else if (key) {
    const again = [...view.querySelectorAll('[data-key], [href]')].find(
      (e) => (e.dataset.key ?? e.getAttribute('href')) === key,
    );
    again?.focus();
  }
}

async function refresh({ moved = false } = {}) {
  clearTimeout(timer);
  if (!token()) return;
  const mine = ++generation;
  const r = route();
  const view = VIEWS[r.name];
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.setAttribute('aria-current', a.dataset.nav === view.nav ? 'page' : 'false');
  }
  try {
    const data = await view.load(r);
    if (mine !== generation) return;
    const snapshot = `${location.hash}\n${JSON.stringify(data)}`;
    if (moved || snapshot !== shown) {
      show(view.render(data, r), moved);
      shown = snapshot;
    }
    if (moved || alertOfRefresh) setAlert('');
    $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (mine !== generation) return;
    if (err.status === 401) return showLogin(explain(err));
    setAlert(`Could not load this view: ${explain(err)}`, true);
    if (moved) {
      show(page('Not available', h('p', {}, explain(err))), true);
      shown = null;
    }
  }
  schedule();
}

function schedule() {
  clearTimeout(timer);
  if ($('auto').checked && token()) {
    timer = setTimeout(() => (document.hidden ? schedule() : refresh()), REFRESH_MS);
  }
}

// ---- sign in and out ----

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  generation++;
  shown = null;
  $('view').replaceChildren();
  $('nav').hidden = true;
  $('tools').hidden = true;
  $('login').hidden = false;
  setAlert(message ?? '');
  $('token').focus();
}

function showApp() {
  $('login').hidden = true;
  $('nav').hidden = false;
  $('tools').hidden = false;
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/overview');
  refresh({ moved: true });
}

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const value = $('token').value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await api('GET', '/queues');
  } catch (err) {
    // only a refusal says the token is wrong; an outage is shown in the view
    if (err.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      setAlert(`Sign-in failed: ${explain(err)}`);
      $('token').focus();
      return;
    }
  }
  $('token').value = '';
  setAlert('');
  setStatus('Signed in.');
  showApp();
});

$('sign-out').addEventListener('click', () => {
  showLogin();
  setStatus('Signed out.');
});

$('auto').addEventListener('change', () => {
  setStatus($('auto').checked ? 'Automatic refresh on.' : 'Automatic refresh paused.');
  if ($('auto').checked) refresh();
  else clearTimeout(timer);
});

window.addEventListener('hashchange', () => {
  if (location.hash.startsWith('#/')) refresh({ moved: true });
});
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) refresh();
});

if (token()) showApp();
else showLogin();
