// The vouchmail web console (SPEC 12): plain JavaScript the server embeds, no build step.
// Every value from the server reaches the page as text (textContent, setAttribute on
// attributes that run nothing), never as markup; the page's Content-Security-Policy
// refuses inline script besides.
'use strict';

(() => {
  // The token lives in this tab only: closing the tab signs out, and other sites' pages
  // cannot read it.
  const TOKEN_KEY = 'vouchmail.admin-token';
  const LIVE_EVERY_MS = 5000;
  const SPARK_POINTS = 24;
  const ACTIONS = ['accept', 'junk', 'reject', 'reject-notify-sender', 'reject-notify-recipient', 'reject-notify-both'];
  const VIEWS = ['live', 'queue', 'domains', 'users', 'authkeys', 'tracking'];

  const $ = (id) => document.getElementById(id);

  /// An answer of 401 or 403: the console went back to the login screen; the action that
  /// asked stops without a message of its own.
  class SignedOut extends Error {}

  /// The server refused: its `{"error": ...}` text and the HTTP status.
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  /// The loads of one view, numbered: a listing that comes back after a newer one was
  /// asked for is dropped, so a slow answer never overwrites what the operator asked last.
  /// The view's `data-state` tells whether its latest load is done (the browser test waits
  /// for it, and a person sees nothing of it).
  function loads(view) {
    let latest = 0;
    return () => {
      const mine = ++latest;
      $('view-' + view).dataset.state = 'loading';
      return {
        current: () => mine === latest,
        done: () => {
          if (mine === latest) $('view-' + view).dataset.state = 'ready';
        },
      };
    };
  }
  const queueLoads = loads('queue');
  const domainLoads = loads('domains');
  const userLoads = loads('users');

  // ---------------------------------------------------------------- DOM helpers

  /// An element with attributes (strings through setAttribute, `text` as textContent,
  /// `on*` as listeners, other values as properties) and children (nodes or text).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key === 'class') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (typeof value === 'string') node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  function setStatus(text, isError) {
    const status = $('status');
    status.textContent = text || '';
    status.classList.toggle('error', Boolean(isError));
  }

  function fmtBytes(n) {
    if (typeof n !== 'number') return n === null || n === undefined ? '–' : String(n);
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + ' ' + units[unit];
  }

  function text(value) {
    if (value === null || value === undefined || value === '') return '–';
    if (Array.isArray(value)) return value.length ? value.map(text).join(', ') : '–';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  /// The list in an answer: the API answers with arrays as the CLI's `--json` does, but an
  /// object holding one (`{"entries": [...]}`) is read too.
  function listOf(data) {
    if (Array.isArray(data)) return data;
    if (data && typeof data === 'object') {
      for (const value of Object.values(data)) if (Array.isArray(value)) return value;
    }
    return [];
  }

  /// Any JSON as page elements: objects as a list of fields, arrays of objects as a table.
  function render(value) {
    if (Array.isArray(value)) {
      if (value.length === 0) return el('p', { class: 'empty', text: 'None.' });
      if (!value.every((v) => v && typeof v === 'object' && !Array.isArray(v))) return el('span', { text: text(value) });
      const columns = [];
      for (const row of value) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
      return el('table', { class: 'grid' },
        el('thead', {}, el('tr', {}, columns.map((c) => el('th', { text: c.replaceAll('_', ' ') })))),
        el('tbody', {}, value.map((row) => el('tr', {}, columns.map((c) => el('td', {}, cell(row[c])))))));
    }
    if (value && typeof value === 'object') {
      return el('dl', { class: 'fields' },
        Object.entries(value).map(([key, v]) => [el('dt', { text: key.replaceAll('_', ' ') }), el('dd', {}, cell(v))]));
    }
    return el('span', { text: text(value) });
  }

  function cell(value) {
    if (value && typeof value === 'object' && !(Array.isArray(value) && value.every((v) => typeof v !== 'object'))) {
      return render(value);
    }
    return text(value);
  }

  // ---------------------------------------------------------------- the server

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /// The error text of an answer: the API's `{"error": "..."}`, or its status.
  function errorOf(response, data) {
    if (data && typeof data === 'object' && typeof data.error === 'string') return data.error;
    if (typeof data === 'string' && data.trim()) return data.trim().slice(0, 300);
    return response.status + ' ' + response.statusText;
  }

  /// One request with the token. 401 and 403 sign out with the server's reason.
  async function request(method, path, body, accept) {
    const current = token();
    if (!current) {
      signOut('');
      throw new SignedOut();
    }
    const headers = { Authorization: 'Bearer ' + current, Accept: accept };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new Error('The server did not answer (' + e.message + ').');
    }
    const raw = await response.text();
    let data = raw;
    if ((response.headers.get('Content-Type') || '').includes('json') && raw) {
      try {
        data = JSON.parse(raw);
      } catch (e) {
        throw new Error('The server answered with JSON that does not parse: ' + e.message);
      }
    }
    if (response.status === 401 || response.status === 403) {
      signOut(errorOf(response, data));
      throw new SignedOut();
    }
    if (!response.ok) throw new ApiError(errorOf(response, data), response.status);
    return data;
  }

  const api = (method, path, body) => request(method, '/api/v1/' + path, body, 'application/json');
  const seg = encodeURIComponent;

  /// An event handler whose failures show in the status line.
  function action(task) {
    return async (event) => {
      if (event && event.type === 'submit') event.preventDefault();
      try {
        await task(event);
      } catch (e) {
        if (!(e instanceof SignedOut)) setStatus(e.message, true);
      }
    };
  }

  /// Asks before a change that cannot be undone; resolves to true on OK.
  function confirmAction(question, okLabel) {
    const dialog = $('confirm');
    $('confirm-text').textContent = question;
    $('confirm-ok').textContent = okLabel;
    return new Promise((resolve) => {
      const finish = (answer) => {
        $('confirm-ok').onclick = null;
        $('confirm-cancel').onclick = null;
        dialog.oncancel = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      $('confirm-ok').onclick = () => finish(true);
      $('confirm-cancel').onclick = () => finish(false);
      dialog.oncancel = (event) => {
        event.preventDefault();
        finish(false);
      };
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ---------------------------------------------------------------- signing in

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopLive();
    // Nothing the token showed stays in the page.
    for (const body of document.querySelectorAll('#app tbody')) clear(body);
    for (const id of ['authkeys-result', 'tracking-result', 'dns-zone', 'user-added', 'status', 'known-addresses']) {
      clear($(id));
    }
    $('dns').hidden = true;
    $('app').hidden = true;
    $('who').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-message').textContent = message || '';
    $('token').value = '';
    $('token').focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const value = $('token').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('login-message').textContent = '';
    await enter();
  }

  /// Checks the token with the server, then shows the console.
  async function enter() {
    let who;
    try {
      who = await api('GET', 'whoami');
    } catch (e) {
      if (!(e instanceof SignedOut)) {
        sessionStorage.removeItem(TOKEN_KEY);
        $('login').hidden = false;
        $('login-message').textContent = e.message;
      }
      return;
    }
    $('login').hidden = true;
    $('app').hidden = false;
    $('who').textContent = 'token ' + (who && who.token ? who.token : '?');
    $('who').hidden = false;
    $('logout').hidden = false;
    showView();
  }

  // ---------------------------------------------------------------- views

  function currentView() {
    const name = location.hash.replace(/^#/, '');
    return VIEWS.includes(name) ? name : 'queue';
  }

  function showView() {
    if (!token() || $('app').hidden) return;
    const name = currentView();
    for (const view of VIEWS) $('view-' + view).hidden = view !== name;
    for (const link of document.querySelectorAll('.tabs a')) {
      if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    setStatus('');
    if (name !== 'live') stopLive();
    const load = {
      live: startLive, queue: loadQueue, domains: loadDomains, users: loadUsers, authkeys: loadAuthKeys, tracking: loadTracking,
    };
    if (load[name]) action(load[name])();
  }

  // Queue: one row per recipient; retry and delete act on the whole message.
  async function loadQueue() {
    const load = queueLoads();
    const query = new URLSearchParams();
    const state = $('queue-state').value;
    const domain = $('queue-domain').value.trim();
    if (state) query.set('state', state);
    if (domain) query.set('domain', domain);
    const search = query.toString();
    const entries = listOf(await api('GET', 'queue' + (search ? '?' + search : '')));
    if (!load.current()) return;
    const body = clear(document.querySelector('#queue-table tbody'));
    for (const e of entries) {
      const id = String(e.queue_id);
      body.append(el('tr', { dataset: { queueId: id } },
        el('td', { class: 'mono', text: id }),
        el('td', {}, el('span', { class: 'state state-' + String(e.state), text: text(e.state) })),
        el('td', { class: 'num', text: text(e.attempts) }),
        el('td', { text: text(e.next_attempt) }),
        el('td', { class: 'num', text: fmtBytes(e.size) }),
        el('td', { text: e.sender === '' ? '<>' : text(e.sender) }),
        el('td', { text: text(e.recipient) }),
        el('td', { class: 'reply', text: text(e.last_reply) }),
        el('td', { class: 'buttons' },
          el('button', { type: 'button', class: 'retry', text: 'Retry', onclick: action(() => retryMessage(id)) }),
          el('button', { type: 'button', class: 'delete danger', text: 'Delete', onclick: action(() => deleteMessage(id)) }))));
    }
    $('queue-empty').hidden = entries.length > 0;
    $('queue-table').dataset.query = search;
    load.done();
  }

  async function retryMessage(id) {
    if (!(await confirmAction('Retry message ' + id + ' now (every recipient still waiting)?', 'Retry'))) return;
    await api('POST', 'queue/' + seg(id) + '/retry');
    await loadQueue();
    setStatus('Message ' + id + ' is due now.');
  }

  async function deleteMessage(id) {
    if (!(await confirmAction('Delete message ' + id + ' from the queue? Its recipients will not get it.', 'Delete'))) {
      return;
    }
    await api('DELETE', 'queue/' + seg(id));
    await loadQueue();
    setStatus('Message ' + id + ' deleted.');
  }

  // Domains: the sender policy per domain, editable, and the DNS records to publish.
  function actionSelect(name, current) {
    const select = el('select', { name, 'aria-label': name });
    const known = ACTIONS.includes(current) ? ACTIONS : ACTIONS.concat([current]);
    for (const a of known) select.append(el('option', { value: a, text: a, selected: a === current }));
    return select;
  }

  async function loadDomains() {
    const load = domainLoads();
    const domains = listOf(await api('GET', 'domains'));
    if (!load.current()) return;
    const body = clear(document.querySelector('#domains-table tbody'));
    for (const d of domains) {
      const name = String(d.domain);
      const unauthenticated = actionSelect('unauthenticated', String(d.unauthenticated));
      const forged = actionSelect('forged', String(d.forged));
      const dmarc = el('input', { type: 'checkbox', name: 'dmarc_counts', checked: Boolean(d.dmarc_counts) });
      const shown = d.unicode && d.unicode !== name ? [name, el('small', { text: ' (' + d.unicode + ')' })] : [name];
      body.append(el('tr', { dataset: { domain: name } },
        el('td', { class: 'mono' }, shown),
        el('td', {}, unauthenticated),
        el('td', {}, forged),
        el('td', {}, el('label', { class: 'check' }, dmarc, ' counts')),
        el('td', { text: text(d.catch_all) }),
        el('td', { class: 'buttons' },
          el('button', {
            type: 'button', class: 'save', text: 'Save',
            onclick: action(() => savePolicy(name, unauthenticated.value, forged.value, dmarc.checked)),
          }),
          el('button', { type: 'button', class: 'dns-button quiet', text: 'DNS records', onclick: action(() => showDns(name)) }))));
    }
    load.done();
  }

  async function savePolicy(domain, unauthenticated, forged, dmarcCounts) {
    await api('PUT', 'domains/' + seg(domain) + '/policy', { unauthenticated, forged, dmarc_counts: dmarcCounts });
    await loadDomains();
    setStatus('Policy of ' + domain + ' saved: unauthenticated ' + unauthenticated + ', forged ' + forged +
      (dmarcCounts ? ', a DMARC pass counts.' : ', a DMARC pass does not count.'));
  }

  /// A TXT value as zone-file character strings of at most 255 octets (RFC 1035 3.3).
  function zoneStrings(value) {
    const bytes = new TextEncoder().encode(value);
    const parts = [];
    for (let i = 0; i < bytes.length; i += 255) {
      parts.push('"' + new TextDecoder().decode(bytes.slice(i, i + 255)).replace(/["\\]/g, '\\$&') + '"');
    }
    return parts.length ? parts.join(' ') : '""';
  }

  async function showDns(domain) {
    const data = await api('GET', 'domains/' + seg(domain) + '/dns');
    const records = listOf(data);
    const body = clear(document.querySelector('#dns-table tbody'));
    const zone = [];
    for (const r of records) {
      if (typeof r === 'string') {
        zone.push(r);
        continue;
      }
      const type = r.type ? String(r.type) : 'TXT';
      body.append(el('tr', {},
        el('td', { class: 'mono', text: text(r.name) }),
        el('td', { text: type }),
        el('td', { class: 'mono value', text: text(r.value) }),
        el('td', { text: text(r.purpose) })));
      // The server's own zone-file lines (what `vouchmail domain dns` prints) when given.
      if (typeof r.zone === 'string') {
        zone.push(r.zone);
        continue;
      }
      if (r.purpose) zone.push('; ' + r.purpose);
      zone.push(String(r.name) + '. 3600 IN ' + type + ' ' + (type === 'TXT' ? zoneStrings(String(r.value)) : String(r.value)));
    }
    $('dns-domain').textContent = domain;
    $('dns-zone').textContent = zone.join('\n');
    $('dns').hidden = false;
  }

  // Users.
  async function loadUsers() {
    const load = userLoads();
    const users = listOf(await api('GET', 'users'));
    if (!load.current()) return;
    const body = clear(document.querySelector('#users-table tbody'));
    for (const u of users) {
      const address = String(u.address);
      body.append(el('tr', { dataset: { address } },
        el('td', { class: 'mono', text: address }),
        el('td', { class: 'num', text: text(u.messages) }),
        el('td', { class: 'num', text: fmtBytes(u.used_bytes) }),
        el('td', { class: 'num', text: u.quota_bytes ? fmtBytes(u.quota_bytes) : 'none' }),
        el('td', { class: 'buttons' },
          el('button', { type: 'button', class: 'delete danger', text: 'Remove', onclick: action(() => removeUser(address)) }))));
    }
    load.done();
  }

  async function addUser(event) {
    const address = $('user-address').value.trim();
    const password = $('user-password').value;
    const quota = $('user-quota').value.trim();
    const body = { address };
    if (password) body.password = password;
    if (quota) body.quota_bytes = Math.round(Number(quota) * 1024 * 1024);
    const answer = await api('POST', 'users', body);
    event.target.reset();
    const added = $('user-added');
    // A generated password is shown once, here, as the CLI prints it once.
    added.textContent = answer && answer.password
      ? 'Added ' + address + '. Its password (shown only now): ' + answer.password
      : 'Added ' + address + '.';
    added.hidden = false;
    await loadUsers();
  }

  async function removeUser(address) {
    if (!(await confirmAction('Remove ' + address + ' and every message in its mailbox?', 'Remove'))) return;
    try {
      await api('DELETE', 'users/' + seg(address));
    } catch (e) {
      // 409: aliases, catch-alls or held domains point at the address; the server names
      // them, and removing goes on only when the operator says so again.
      if (!(e instanceof ApiError) || e.status !== 409) throw e;
      if (!(await confirmAction(e.message + ' Remove ' + address + ' and those uses too?', 'Remove all'))) return;
      await api('DELETE', 'users/' + seg(address) + '?force=true');
    }
    $('user-added').hidden = true;
    await loadUsers();
    setStatus('Removed ' + address + '.');
  }

  // AuthKeys and tracking: one address (or domain) at a time, picked from the known ones.
  async function fillAddresses() {
    const [users, domains] = await Promise.all([api('GET', 'users'), api('GET', 'domains')]);
    const list = clear($('known-addresses'));
    for (const u of listOf(users)) list.append(el('option', { value: String(u.address) }));
    for (const d of listOf(domains)) list.append(el('option', { value: String(d.domain) }));
  }

  async function loadAuthKeys() {
    await fillAddresses();
  }

  async function showAuthKeys() {
    const target = $('authkeys-target').value.trim();
    const data = await api('GET', 'authkeys/' + seg(target));
    $('authkeys-result').replaceChildren(el('h2', { text: target }), render(data));
  }

  /// One user's tracking records, or every user's when no address is given.
  async function showTracking() {
    const address = $('tracking-address').value.trim();
    const records = listOf(await api('GET', address ? 'tracking/' + seg(address) : 'tracking'));
    $('tracking-result').replaceChildren(
      el('h2', { text: (address || 'Every user') + ' · ' + records.length + ' record(s)' }),
      render(records));
  }

  async function loadTracking() {
    await fillAddresses();
    await showTracking();
  }

  // ---------------------------------------------------------------- the live view

  const live = { timer: null, running: false, previous: null, history: {} };

  /// The samples of a Prometheus text exposition: name, labels, value.
  function parseMetrics(exposition) {
    const samples = [];
    for (const line of exposition.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      samples.push({ name: match[1], labels: parseLabels(match[3] || ''), value: Number(match[4]) });
    }
    return samples;
  }

  function parseLabels(source) {
    const labels = {};
    const pattern = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let match;
    while ((match = pattern.exec(source)) !== null) {
      labels[match[1]] = match[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    return labels;
  }

  function sum(samples, name, wanted) {
    let total = 0;
    for (const s of samples) {
      if (s.name !== name || !Number.isFinite(s.value)) continue;
      if (wanted && Object.entries(wanted).some(([k, v]) => s.labels[k] !== v)) continue;
      total += s.value;
    }
    return total;
  }

  function byLabel(samples, name, label, wanted) {
    const out = {};
    for (const s of samples) {
      if (s.name !== name || !Number.isFinite(s.value)) continue;
      if (wanted && Object.entries(wanted).some(([k, v]) => s.labels[k] !== v)) continue;
      const key = s.labels[label] || '?';
      out[key] = (out[key] || 0) + s.value;
    }
    return out;
  }

  /// What the live view shows, from one scrape.
  function reading(samples) {
    return {
      at: Date.now(),
      accepted: sum(samples, 'vouchmail_messages_accepted_total'),
      refused: sum(samples, 'vouchmail_messages_refused_total'),
      queue: sum(samples, 'vouchmail_queue_messages'),
      queueStates: byLabel(samples, 'vouchmail_queue_messages', 'state'),
      authFailures: sum(samples, 'vouchmail_auth_attempts_total', { result: 'failure' }),
      dmarc: byLabel(samples, 'vouchmail_sender_auth_results_total', 'result', { mechanism: 'dmarc' }),
    };
  }

  /// Per minute between two counter readings; a counter that went down (a restart) counts
  /// from zero.
  function perMinute(now, before, minutes) {
    const delta = now >= before ? now - before : now;
    return delta / minutes;
  }

  function rateText(value) {
    return value === null ? '–' : value < 10 ? value.toFixed(1) : Math.round(value).toString();
  }

  function spark(id, value) {
    const points = (live.history[id] = (live.history[id] || []).concat([value]).slice(-SPARK_POINTS));
    const svg = $('spark-' + id);
    const max = Math.max(1, ...points);
    const step = 120 / (SPARK_POINTS - 1);
    // The newest point at the right edge, older ones leftwards.
    const x = (i) => 120 - (points.length - 1 - i) * step;
    const coords = points.map((v, i) => x(i).toFixed(1) + ',' + (28 - (v / max) * 26).toFixed(1)).join(' ');
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', coords);
    svg.replaceChildren(line);
  }

  function showReading(now, before) {
    const minutes = before ? (now.at - before.at) / 60000 : 0;
    const rate = (key) => (before && minutes > 0 ? perMinute(now[key], before[key], minutes) : null);
    const accepted = rate('accepted');
    const refused = rate('refused');
    const authFailures = rate('authFailures');
    $('live-accepted').textContent = rateText(accepted);
    $('live-refused').textContent = rateText(refused);
    $('live-authfail').textContent = rateText(authFailures);
    $('live-authfail-total').textContent = now.authFailures + ' since start';
    $('live-queue').textContent = String(now.queue);
    $('live-queue-states').textContent = Object.entries(now.queueStates).map(([s, n]) => s + ' ' + n).join(' · ');
    if (accepted !== null) spark('accepted', accepted);
    if (refused !== null) spark('refused', refused);
    if (authFailures !== null) spark('authfail', authFailures);
    spark('queue', now.queue);
    const body = clear(document.querySelector('#live-dmarc tbody'));
    const results = Object.keys(now.dmarc).sort();
    if (results.length === 0) {
      body.append(el('tr', {}, el('td', { colspan: '3', class: 'empty', text: 'No DMARC results yet.' })));
    }
    for (const result of results) {
      const perMin = before && minutes > 0 ? perMinute(now.dmarc[result], before.dmarc[result] || 0, minutes) : null;
      body.append(el('tr', {},
        el('td', { text: result }),
        el('td', { class: 'num', text: rateText(perMin) }),
        el('td', { class: 'num', text: String(now.dmarc[result]) })));
    }
    $('live-updated').textContent = 'updated ' + new Date(now.at).toLocaleTimeString();
  }

  async function scrape() {
    // A hidden tab does not poll; the view catches up when it shows again.
    if (!document.hidden) {
      const exposition = await request('GET', '/metrics', undefined, 'text/plain');
      const now = reading(parseMetrics(String(exposition)));
      showReading(now, live.previous);
      live.previous = now;
    }
  }

  function startLive() {
    if (live.running) return;
    live.running = true;
    const tick = async () => {
      try {
        await scrape();
      } catch (e) {
        if (e instanceof SignedOut) return;
        setStatus('Cannot read /metrics: ' + e.message, true);
      }
      if (live.running) live.timer = setTimeout(tick, LIVE_EVERY_MS);
    };
    tick();
  }

  function stopLive() {
    live.running = false;
    clearTimeout(live.timer);
    live.timer = null;
    live.previous = null;
    live.history = {};
  }

  // ---------------------------------------------------------------- wiring

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', action(signIn));
    $('logout').addEventListener('click', () => signOut('Signed out.'));
    $('queue-filter').addEventListener('submit', action(loadQueue));
    $('user-add').addEventListener('submit', action(addUser));
    $('authkeys-form').addEventListener('submit', action(showAuthKeys));
    $('tracking-form').addEventListener('submit', action(showTracking));
    window.addEventListener('hashchange', showView);
    if (token()) action(enter)();
    else signOut('');
  });
})();
