// contact-sync operator console: hash-routed views over /api, refreshed
// every 2 s. Text from the api is only ever set as text, never as markup.

const TOKEN_KEY = 'contact-sync.token';
const CUSTOMER_KEY = 'contact-sync.customer';
const REFRESH_MS = 2000;
const PER_PAGE = 25;
const CRMS = { hubspot: 'HubSpot', pipedrive: 'Pipedrive' };

const $ = (id) => document.getElementById(id);
const crm = (p) => CRMS[p] ?? p;
const token = () => sessionStorage.getItem(TOKEN_KEY);
// the customer picked in the header; '' is every customer
const picked = () => sessionStorage.getItem(CUSTOMER_KEY) ?? '';

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`/api${path}`, {
    method,
    cache: 'no-store',
    // a hung request must not stop the polling, which waits for it
    signal: AbortSignal.timeout(10000),
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    throw Object.assign(new Error(data?.message ?? res.statusText), { status: res.status, code: data?.error });
  }
  return data;
}

function explain(err) {
  if (err.status === 401) return 'The api refused this token (401). Sign in with a valid token.';
  if (err.status === 403) {
    return `This token may not do this (403): ${err.message}. Changes need an operator token.`;
  }
  if (err.status) return `${err.message} (${err.status})`;
  return `cannot reach the api (${err.message})`;
}

// ---- DOM helpers ----

// A connection's first sync: its step; while it writes, a bar of the
// writes made and the time left at the rate in effect.
function firstSync(f) {
  if (!f) return '—';
  const counts = `${f.listed} listed, ${f.matched} matched, ${f.written} of ${f.toWrite} written, ${f.errors} errors`;
  switch (f.phase) {
    case 'done':
      return h('span', { class: 'muted', title: counts }, 'done ', time(f.finishedAt));
    case 'failed':
      return h('span', { class: 'error-text', title: f.error || counts }, 'failed');
    case 'writing':
      return h(
        'span',
        { class: 'first-sync', title: counts },
        h('progress', {
          max: Math.max(f.toWrite, 1),
          value: f.written,
          'aria-label': `First sync: ${f.written} of ${f.toWrite} written`,
        }),
        ` ${f.written} / ${f.toWrite}`,
        f.secondsLeft == null ? '' : ` · ${duration(f.secondsLeft * 1000)} left`,
      );
    default:
      return h('span', { title: counts }, `${f.phase}: ${f.listed} listed, ${f.matched} matched`);
  }
}

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
// is an array of cells, or `{ attrs, cells, skip }` (`skip`: leading
// columns a cell above spans); a cell may be a ready <th>.
function table(labelledby, cols, rows, empty) {
  const num = (i) => (cols[i]?.startsWith('#') ? 'num' : null);
  const cell = (skip) => (c, i) => (c instanceof HTMLTableCellElement ? c : h('td', { class: num(i + skip) }, c));
  const body = rows.length
    ? rows.map((r) =>
        Array.isArray(r) ? h('tr', {}, r.map(cell(0))) : h('tr', r.attrs, r.cells.map(cell(r.skip ?? 0))),
      )
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
    async (b) => {
      const sure = await confirmDialog(`Discard job ${job.id}?`, 'It cannot be retried afterwards.', 'Discard');
      if (!sure) return;
      act(b, 'Discard', 'DELETE', `/jobs/${job.id}`, () => {
        if (after) location.hash = after;
        return `Job ${job.id} discarded.`;
      });
    },
  );
}

// ---- dialogs ----
// Modal <dialog>s live outside #view, so a refresh never wipes what is
// being typed; the page behind them keeps refreshing.

function dialog(labelledby, ...content) {
  const d = h('dialog', { 'aria-labelledby': labelledby, class: 'panel' }, content);
  d.addEventListener('close', () => d.remove());
  document.body.append(d);
  d.showModal();
  return d;
}

// Resolves to whether the operator confirmed.
function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    let answer = false;
    const d = dialog(
      'confirm-title',
      h('h2', { id: 'confirm-title' }, title),
      h('p', {}, text),
      h(
        'p',
        { class: 'actions' },
        h(
          'button',
          { type: 'button', class: 'danger', 'data-action': 'confirm', onclick: () => ((answer = true), d.close()) },
          action,
        ),
        h('button', { type: 'button', 'data-action': 'cancel', onclick: () => d.close() }, 'Cancel'),
      ),
    );
    d.addEventListener('close', () => resolve(answer));
    d.querySelector('[data-action=cancel]').focus();
  });
}

// ---- contacts: create, edit, delete ----

// Checked by the api, whose errors are shown beside the field they name.
const FIELDS = [
  { name: 'firstName', label: 'First name' },
  { name: 'lastName', label: 'Last name' },
  { name: 'email', label: 'Email', type: 'email', required: true },
  { name: 'phone', label: 'Phone', type: 'tel' },
  { name: 'companyName', label: 'Company' },
  { name: 'jobTitle', label: 'Job title' },
];

// The field an api error names (`email: …`, "field `firstName` …"), if any.
function fieldOf(err) {
  const text = err.message ?? '';
  const named = FIELDS.find((f) => new RegExp(`(^|[^A-Za-z])${f.name}([^A-Za-z]|$)`).test(text));
  if (named) return named.name;
  if (/customer/i.test(text)) return 'customerId';
  return /e-?mail/i.test(text) ? 'email' : null;
}

const contactName = (c) => [c.firstName, c.lastName].filter(Boolean).join(' ') || c.email;

// Opens the form for a new contact (`contact` absent) or for editing one.
function contactForm(contact) {
  const editing = Boolean(contact);
  const input = (f) => {
    const attrs = {
      id: `f-${f.name}`,
      name: f.name,
      type: f.type ?? 'text',
      autocomplete: 'off',
      'aria-describedby': `e-${f.name}`,
    };
    const el = h('input', attrs);
    el.value = contact?.[f.name] ?? '';
    return h(
      'div',
      { class: 'field' },
      h('label', { for: `f-${f.name}` }, f.label, f.required ? ' (required)' : ''),
      el,
      h('p', { id: `e-${f.name}`, class: 'field-error' }),
    );
  };
  const customerField = editing
    ? h('p', { class: 'muted' }, `Customer: ${customerName(contact.customerId)}`)
    : h(
        'div',
        { class: 'field' },
        h('label', { for: 'f-customerId' }, 'Customer'),
        h(
          'select',
          { id: 'f-customerId', name: 'customerId', 'aria-describedby': 'e-customerId' },
          customers.map((c) =>
            h('option', { value: c.id, selected: c.id === (picked() || defaultCustomer()) }, c.name),
          ),
        ),
        h('p', { id: 'e-customerId', class: 'field-error' }),
      );
  const title = editing ? `Edit ${contactName(contact)}` : 'New contact';
  const form = h(
    'form',
    { id: 'contact-form', novalidate: true },
    h('h2', { id: 'form-title' }, title),
    customerField,
    FIELDS.map(input),
    h('p', { id: 'form-error', class: 'form-error', role: 'alert' }),
    h(
      'p',
      { class: 'actions' },
      h('button', { type: 'submit', class: 'primary', 'data-action': 'save' }, editing ? 'Save' : 'Create'),
      h('button', { type: 'button', 'data-action': 'cancel', onclick: () => d.close() }, 'Cancel'),
    ),
  );
  const d = dialog('form-title', form);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    saveContact(d, form, contact);
  });
  form.querySelector('input').focus();
}

function clearErrors(form) {
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-error, .form-error')) el.textContent = '';
}

function showError(form, err) {
  const field = err.status === 400 || err.status === 409 ? fieldOf(err) : null;
  const el = field && form.querySelector(`#f-${field}`);
  if (el) {
    el.setAttribute('aria-invalid', 'true');
    form.querySelector(`#e-${field}`).textContent = err.message;
    el.focus();
  } else {
    form.querySelector('#form-error').textContent = explain(err);
  }
}

async function saveContact(d, form, contact) {
  const save = form.querySelector('[data-action=save]');
  if (save.dataset.busy) return;
  clearErrors(form);
  const value = (name) => form.elements[name].value.trim();
  let body = {};
  if (contact) {
    // only what changed; an emptied field is cleared (null)
    for (const f of FIELDS) {
      const v = value(f.name);
      if (v !== (contact[f.name] ?? '')) body[f.name] = v === '' && !f.required ? null : v;
    }
    if (!Object.keys(body).length) {
      d.close();
      setStatus(`Nothing changed in ${contactName(contact)}.`);
      return;
    }
  } else {
    // a customer token's form has no choice: the api takes its customer
    if (form.elements.customerId?.value) body.customerId = value('customerId');
    for (const f of FIELDS) if (value(f.name) !== '' || f.required) body[f.name] = value(f.name);
  }
  save.dataset.busy = '1';
  save.setAttribute('aria-busy', 'true');
  try {
    const r = contact
      ? await api('PATCH', `/contacts/${encodeURIComponent(contact.id)}`, body)
      : await api('POST', '/contacts', body);
    d.close();
    setAlert('');
    setStatus(`${contact ? 'Saved' : 'Created'} ${r.contact.email}; ${syncing(r)}`);
    await refresh();
  } catch (err) {
    if (err.status === 401) {
      d.close();
      return showLogin(explain(err));
    }
    showError(form, err);
  } finally {
    delete save.dataset.busy;
    save.removeAttribute('aria-busy');
  }
}

function syncing(r) {
  if (!r.jobs.length) return 'it syncs with no CRM (its customer has none enabled).';
  const to = r.jobs.map((j) => crm(j.provider)).join(' and ');
  return r.queued ? `syncing to ${to}.` : `queued for ${to} once Redis answers.`;
}

function editContact(c) {
  return button(
    'Edit',
    { 'data-action': 'edit', 'data-key': `edit:${c.id}`, 'aria-label': `Edit ${c.email}` },
    () => contactForm(c),
  );
}

function deleteContact(c, after) {
  return button(
    'Delete',
    { class: 'danger', 'data-action': 'delete', 'data-key': `delete:${c.id}`, 'aria-label': `Delete ${c.email}` },
    async (b) => {
      const where = c.links.length ? ` It is deleted from ${c.links.map((l) => crm(l.provider)).join(' and ')} too.` : '';
      if (!(await confirmDialog(`Delete ${c.email}?`, `This cannot be undone.${where}`, 'Delete'))) return;
      act(b, 'Delete', 'DELETE', `/contacts/${encodeURIComponent(c.id)}`, (r) => {
        if (after) location.hash = after;
        return `Deleted ${c.email}; ${syncing(r)}`;
      });
    },
  );
}

// ---- customers ----

let customers = [];
const defaultCustomer = () => customers.find((c) => c.default)?.id ?? '';
const customerName = (id) => customers.find((c) => c.id === id)?.name ?? id;

// Fills the header's picker; an unknown pick (a deleted customer, say)
// falls back to every customer.
function fillPicker(list) {
  customers = list;
  const sel = $('customer');
  const now = picked();
  if (now && !list.some((c) => c.id === now)) sessionStorage.removeItem(CUSTOMER_KEY);
  const options = [h('option', { value: '' }, 'All customers')].concat(
    list.map((c) => h('option', { value: c.id }, c.default ? `${c.name} (default)` : c.name)),
  );
  const same =
    sel.options.length === options.length && options.every((o, i) => sel.options[i].value === o.value && sel.options[i].text === o.text);
  if (!same) sel.replaceChildren(...options);
  sel.value = picked();
}

async function loadCustomerList() {
  fillPicker(await api('GET', '/customers?limit=500'));
}

// A connection Integration.app cannot use shows why, and since when, on
// its badge: the customer has to reconnect it.
function healthBadge(health, reconnect) {
  const cls = { ok: 'synced', degraded: 'pending', failing: 'error', needs_reconnect: 'error' }[health] ?? 'off';
  const text = health === 'needs_reconnect' ? 'needs reconnect' : health;
  const title = reconnect ? `since ${reconnect.since}: ${reconnect.error}` : null;
  return h('span', { class: `badge ${cls}`, 'data-health': health, title }, text);
}

// A page at a time: each customer's health costs the api a few reads,
// and this view is refreshed every 2 s.
const CUSTOMERS_PER_PAGE = 25;

async function loadCustomers(route) {
  const after = route.params.get('after');
  const from = after ? `&after=${encodeURIComponent(after)}` : '';
  const list = await api('GET', `/customers?limit=${CUSTOMERS_PER_PAGE + 1}${from}`);
  // one created since the picker was filled: fill it again
  if (!after && list.some((c) => !customers.some((k) => k.id === c.id))) await loadCustomerList();
  return { list: list.slice(0, CUSTOMERS_PER_PAGE), more: list.length > CUSTOMERS_PER_PAGE, after };
}

function renderCustomers({ list, more, after }) {
  const rows = list.flatMap((c) => {
    const head = (span) =>
      h(
        'th',
        { scope: 'row', rowspan: span },
        h('span', {}, c.name),
        h('br'),
        h('code', { class: 'muted' }, c.id),
        c.default ? h('span', { class: 'muted' }, ' (default)') : null,
        h('br'),
        button('Contacts', { 'data-action': 'pick', 'data-key': `pick:${c.id}`, 'aria-label': `Contacts of ${c.name}` }, () =>
          pick(c.id, '#/contacts'),
        ),
      );
    if (!c.connections.length) {
      return [{ attrs: { 'data-customer-id': c.id }, cells: [head(1), h('td', { colspan: 11, class: 'empty' }, 'No CRM connected.')] }];
    }
    return c.connections.map((x, i) => ({
      attrs: { 'data-customer-id': c.id, 'data-provider': x.provider },
      skip: i === 0 ? 0 : 1,
      cells: [
        i === 0 ? head(c.connections.length) : null,
        crm(x.provider),
        dash(x.accountId),
        healthBadge(x.health, x.needsReconnect),
        h('span', { class: x.errorRate1h > 0 ? 'warn' : null }, `${percent(x.errorRate1h)} of ${x.syncs1h}`),
        time(x.lastSuccessAt),
        time(x.lastPollAt),
        x.linksPending,
        x.linksSynced,
        x.linksError,
        `${x.rateLimitUsed} / ${x.rateLimitInEffect} per s`,
        firstSync(x.firstSync),
      ].filter((cell) => cell !== null),
    }));
  });
  const last = list[list.length - 1]?.id;
  return page(
    'Customers',
    h('p', { id: 'h-customers', class: 'muted' }, 'Customers and their CRM connections, by id.'),
    table(
      'h-customers',
      ['Customer', 'CRM', 'Account', 'Health', '#Errors (1 h)', 'Last success', 'Last poll', '#Pending', '#Synced', '#Error', '#Budget used', 'First sync'],
      rows,
      'No customers.',
    ),
    h(
      'nav',
      { 'aria-label': 'Pages', class: 'pager' },
      after ? link('#/customers', '← First page') : null,
      more ? link(`#/customers?after=${encodeURIComponent(last)}`, 'Next →') : null,
    ),
  );
}

// Picks a customer in the header and, optionally, goes to a view.
function pick(id, hash) {
  if (id) sessionStorage.setItem(CUSTOMER_KEY, id);
  else sessionStorage.removeItem(CUSTOMER_KEY);
  $('customer').value = id;
  setStatus(id ? `Showing ${customerName(id)}.` : 'Showing every customer.');
  if (hash && location.hash !== hash) location.hash = hash;
  else refresh({ moved: true });
}

// ---- throughput graph ----

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...kids);
  return el;
}

// One queue's last hour: a bar per minute, completed jobs below failed
// attempts (red), scaled to the busiest minute.
function graph(q) {
  const W = 240;
  const H = 56;
  const bar = W / q.minutes.length;
  const top = Math.max(1, ...q.minutes.map((m) => m.completed + m.failed));
  const y = (n) => (n / top) * (H - 2);
  const bars = q.minutes.flatMap((m, i) => {
    const x = (i * bar).toFixed(1);
    const when = new Date(m.start).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const tip = svg('title', {}, `${when}: ${m.completed} completed, ${m.failed} failed`);
    const ok = y(m.completed);
    const bad = y(m.failed);
    const g = svg('g', {}, tip);
    if (ok) g.append(svg('rect', { x, y: H - ok, width: Math.max(1, bar - 1), height: ok, class: 'ok' }));
    if (bad) g.append(svg('rect', { x, y: H - ok - bad, width: Math.max(1, bar - 1), height: bad, class: 'bad' }));
    return [g];
  });
  const completed = q.minutes.reduce((n, m) => n + m.completed, 0);
  const failed = q.minutes.reduce((n, m) => n + m.failed, 0);
  const label = `${q.queue}: ${completed} completed, ${failed} failed in the last hour`;
  return h(
    'figure',
    { class: 'graph', 'data-queue': q.queue, 'data-completed': completed, 'data-failed': failed },
    svg(
      'svg',
      { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': label },
      svg('line', { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: 'axis' }),
      ...bars,
    ),
    h('div', { class: 'ticks', 'aria-hidden': 'true' }, h('span', {}, '60 min ago'), h('span', {}, `peak ${top}/min`), h('span', {}, 'now')),
    h('figcaption', {}, h('strong', {}, q.queue), ` ${completed} done · `, h('span', { class: failed ? 'warn' : null }, `${failed} failed`)),
  );
}

// ---- views ----

// ---- views ----

async function loadOverview() {
  const who = picked() || defaultCustomer();
  const paths = ['/queues', '/queues/history', '/workers', '/links?status=error&limit=20'];
  const customer = who ? api('GET', `/customers/${encodeURIComponent(who)}`) : null;
  const [queues, history, workers, links, customerView] = await Promise.all([...paths.map((p) => api('GET', p)), customer]);
  return { queues, history, workers, links, customer: customerView };
}

function renderOverview({ queues, history, workers, links, customer }) {
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
    section('h-history', 'Last hour', h('div', { class: 'graphs' }, history.map(graph))),
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
    customer
      ? tableSection(
          'h-connections',
          `Connections of ${customer.name}`,
          ['CRM', 'Account', 'Health', 'Last success', 'Last poll', '#Errors (1 h)', '#Pending', '#Synced', '#Error', '#Budget used', 'First sync'],
          customer.connections.map((c) => ({
            attrs: { 'data-provider': c.provider },
            cells: [
              crm(c.provider),
              dash(c.accountId),
              healthBadge(c.health, c.needsReconnect),
              time(c.lastSuccessAt),
              time(c.lastPollAt),
              h('span', { class: c.errorRate1h > 0 ? 'warn' : null }, percent(c.errorRate1h)),
              c.linksPending,
              c.linksSynced,
              c.linksError,
              `${c.rateLimitUsed} / ${c.rateLimitInEffect} per s`,
              firstSync(c.firstSync),
            ],
          })),
          'No CRM connected.',
        )
      : null,
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
  const who = picked() ? `&customerId=${encodeURIComponent(picked())}` : '';
  return api('GET', `/contacts?page=${page}&perPage=${PER_PAGE}${who}`);
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
  const all = !picked();
  const rows = data.items.map((c) => {
    const errors = c.links.filter((l) => l.lastError).map((l) => `${crm(l.provider)}: ${l.lastError}`);
    return {
      attrs: { 'data-contact-id': c.id, 'data-email': c.email },
      cells: [
        h('th', { scope: 'row' }, link(`#/contact/${c.id}`, name(c))),
        c.email,
        all ? customerName(c.customerId) : null,
        c.deleted ? h('span', { class: 'muted' }, 'deleted') : syncCell(c),
        h('span', { class: 'error-text' }, errors.length ? errors.join('\n') : '—'),
        c.deleted ? '' : h('span', { class: 'actions' }, editContact(c), deleteContact(c)),
      ].filter((cell) => cell !== null),
    };
  });
  const cols = ['Name', 'Email', ...(all ? ['Customer'] : []), 'Sync', 'Last error', 'Actions'];
  const whose = all ? 'every customer' : customerName(picked());
  return page(
    all ? 'Contacts' : `Contacts of ${whose}`,
    h(
      'p',
      { class: 'actions' },
      button('New contact', { class: 'primary', 'data-action': 'new', 'data-key': 'new' }, () => contactForm()),
    ),
    h(
      'p',
      { id: 'h-contacts', class: 'muted' },
      `${data.total} contact${data.total === 1 ? '' : 's'} of ${whose}; a name opens the contact's sync log.`,
    ),
    table('h-contacts', cols, rows, 'No contacts yet.'),
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
    contactName(c),
    h(
      'p',
      {},
      link('#/contacts', '← Contacts'),
      ` · ${c.email} · ${customerName(c.customerId)} · version ${c.version}`,
      c.deleted ? ' · deleted' : '',
    ),
    c.deleted ? null : h('p', { class: 'actions' }, editContact(c), deleteContact(c, '#/contacts')),
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

// ---- self-check ----

// The last check's findings: the check asks Integration.app about every
// connection, so it runs only when asked, never on the 2 s refresh.
let lastCheck = null;

async function loadCheck() {
  return { last: lastCheck, customer: picked() };
}

async function runCheck(b) {
  if (b.dataset.busy) return;
  b.dataset.busy = '1';
  b.setAttribute('aria-busy', 'true');
  const customer = picked();
  const query = customer ? `?customerId=${encodeURIComponent(customer)}` : '';
  setStatus('Checking…');
  try {
    const report = await api('GET', `/check${query}`);
    lastCheck = { report, customer, at: Date.now() };
    setAlert('');
    setStatus(
      !report.workspaceOk
        ? 'The workspace needs fixing.'
        : report.problems
          ? `${report.problems} of ${report.connections.length} connections need fixing.`
          : `All ${report.connections.length} connections are ready.`,
    );
  } catch (err) {
    if (err.status === 401) return showLogin(explain(err));
    setAlert(`The check failed: ${explain(err)}`);
  } finally {
    delete b.dataset.busy;
    b.removeAttribute('aria-busy');
  }
  await refresh();
}

function renderCheck({ last, customer }) {
  const whom = customer ? `${customerName(customer)}'s connections` : 'every enabled connection';
  const run = button('Run the check', { 'data-action': 'check', 'data-key': 'check' }, runCheck);
  if (!last) {
    return page(
      'Self-check',
      h('p', {}, `Asks Integration.app whether the workspace token mints and whether ${whom} exists, can be used and has the actions the app runs (as contact-sync check does).`),
      run,
    );
  }
  const r = last.report;
  return page(
    'Self-check',
    h('p', {}, `Checked ${last.customer ? `${customerName(last.customer)}'s connections` : 'every enabled connection'} at `, time(last.at), '.'),
    run,
    section(
      'h-workspace',
      'Workspace',
      h(
        'p',
        { 'data-check': 'workspace', class: r.workspaceOk ? null : 'error-text' },
        r.workspaceOk ? 'ok: the workspace credentials mint a customer token.' : `needs fixing: ${r.workspaceProblem}`,
      ),
    ),
    tableSection(
      'h-check',
      'Connections',
      ['Customer', 'CRM', 'Result'],
      r.connections.map((c) => ({
        attrs: { 'data-customer-id': c.customerId, 'data-provider': c.provider, 'data-ok': String(c.ok) },
        cells: [
          h('code', {}, c.customerId),
          crm(c.provider),
          c.ok ? 'ok: connected, every action there' : h('span', { class: 'error-text' }, c.problem),
        ],
      })),
      'No enabled connection.',
    ),
  );
}

const VIEWS = {
  overview: { nav: 'overview', load: loadOverview, render: renderOverview },
  customers: { nav: 'customers', load: loadCustomers, render: renderCustomers },
  contacts: { nav: 'contacts', load: loadContacts, render: renderContacts },
  contact: { nav: 'contacts', load: loadContact, render: renderContact },
  dead: { nav: 'dead', load: loadDead, render: renderDead },
  job: { nav: 'dead', load: loadJob, render: renderJob },
  check: { nav: 'check', load: loadCheck, render: renderCheck },
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

async function showApp() {
  $('login').hidden = true;
  $('nav').hidden = false;
  $('tools').hidden = false;
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/overview');
  try {
    await loadCustomerList();
  } catch (err) {
    // the view's own load says what is wrong
    if (err.status === 401) return showLogin(explain(err));
  }
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

$('customer').addEventListener('change', (e) => pick(e.currentTarget.value));

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
