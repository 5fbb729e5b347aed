// The operator's dashboard. Every figure comes from the node's /v1/ user API (the session cookie logs in);
// this file only fetches, lays out and draws. Pages: #overview #files #peers #market #ledger #compute.
'use strict';

const S = {csrf: null, node: null, session: null, page: null, timer: null, gen: 0, state: {}};

// --- small helpers -------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel, root) => (root || document).querySelector(sel);
// el's children replaced, leaving out what h() leaves out (replaceChildren would write null as the text "null").
const put = (el, ...children) => el.replaceChildren(...children.filter(c => c !== null && c !== undefined && c !== false));
// An id, whole: a user copies it into the next command. It wraps anywhere inside its cell (app.css, code.id);
// a click selects all of it, ready to copy.
const idOf = id => id ? h('code', {class: 'id', onclick: selectAll}, id) : '';
function selectAll(e) { getSelection().selectAllChildren(e.currentTarget); }
function fmtSize(n) {
  let v = Number(n || 0);
  for (const u of ['B', 'KiB', 'MiB', 'GiB', 'TiB']) {
    if (Math.abs(v) < 1024 || u === 'TiB') return u === 'B' ? `${Math.trunc(v)} B` : `${v.toFixed(1)} ${u}`;
    v /= 1024;
  }
}
function fmtCredits(micro) {  // exact, as the CLI prints them: no float touches money
  const m = BigInt(micro || 0), neg = m < 0n, a = neg ? -m : m;
  return `${neg ? '-' : ''}${a / 1000000n}.${String(a % 1000000n).padStart(6, '0')}`;
}
function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
function duration(secs) {
  const d = Math.floor(secs / 86400), hh = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60);
  return d ? (hh ? `${d} d ${hh} h` : `${d} d`) : hh ? (m ? `${hh} h ${m} min` : `${hh} h`) : m ? `${m} min` : `${Math.round(secs)} s`;
}
const usedPct = (n, of) => !of ? '–' : n && n / of < 0.001 ? 'under 0.1%' : `${(n / of * 100).toFixed(1)}%`;
const pct = r => r === null || r === undefined ? '–' : `${(r * 100).toFixed(1)}%`;
const dateOf = secs => new Date(secs * 1000).toISOString().replace('T', ' ').slice(0, 16);
const timeOf = ms => new Date(ms).toISOString().slice(11, 19);
const whenOf = (ms, span) => span > 86400000 ? dateOf(ms / 1000) : timeOf(ms);  // with the date past a day
function pill(status, textValue) { return h('span', {class: `pill ${status}`}, textValue || status); }
function dot(up) { return h('span', {class: `dot ${up === true ? 'up' : up === false ? 'down' : 'unknown'}`,
                                     title: up === true ? 'up' : up === false ? 'down' : 'not probed yet'}); }
// A /health check's observed value in its unit, as a person reads it.
function observed(c) {
  if (c.observedValue === undefined || c.observedValue === null) return '';
  if (c.observedUnit === 'bytes') return `${fmtSize(c.observedValue)} free`;
  if (c.observedUnit === 'micro-credits') return `${fmtCredits(c.observedValue)} credits available`;
  return `${fmtInt(c.observedValue)} ${c.observedUnit || ''}`;
}
function card(title, ...body) { return h('section', {class: 'card'}, h('h2', {}, title), ...body); }
function wide(el) { el.classList.add('wide'); return el; }
function kv(pairs) {
  return h('dl', {class: 'kv'}, pairs.map(([k, v, key]) => [h('dt', {}, k), h('dd', key ? {'data-k': key} : {}, v)]));
}
function table(columns, rows, attrs) {
  // A column named '~name' is left out on a phone's width.  A table of class 'stack' lays each row out as a small
  // card on a phone's width (each cell under its column's name, from its data-label), instead of scrolling sideways.
  const names = columns.map(c => typeof c === 'string' ? c.replace(/^~/, '') : c.textContent);
  const stack = attrs && /\bstack\b/.test(attrs.class || '');
  if (stack) for (const row of rows) {
    if (row.cells.length !== names.length) continue;  // a detail row (one cell across the table)
    names.forEach((name, i) => { if (name) row.cells[i].dataset.label = name; });
  }
  // A column of numbers (its first row's cell is 'num') has its heading over the numbers: on the right.
  const first = rows.find(r => r.cells.length === names.length);
  const num = i => first && first.cells[i].classList.contains('num') ? 'num' : '';
  return h('div', {class: 'scroll'}, h('table', attrs || {},
    h('thead', {}, h('tr', {}, columns.map((c, i) => typeof c === 'string' && c[0] === '~' ? h('th', {class: `hide-narrow ${num(i)}`}, c.slice(1)) : h('th', {class: num(i) || null}, c)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', {colspan: columns.length, class: 'muted'}, 'none')))));
}
const fmtInt = n => n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');  // 10,000,000,000

// --- the API ---------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? body.detail + (body.hint ? ` (${body.hint})` : '') : `HTTP ${status}`);
    this.status = status; this.body = body;
  }
}
async function api(path, method) {
  const init = {method: method || 'GET', credentials: 'same-origin', headers: {Accept: 'application/json'}};
  init.headers['X-XSC-CSRF'] = S.csrf || '';  // every request: the cookie alone opens nothing
  const response = await fetch(path, init);
  const body = await response.json().catch(() => null);
  if (response.status === 401) { loggedOut(body); throw new ApiError(401, body); }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}
// A long operation's answer as it goes (a verify's or repair's, docs/storage.md "Their progress"): each line
// {"progress": {...}} is handed to `told`, the last is {"result": ...} (returned) or {"problem": ...} (thrown, as api()
// throws a failed answer). A failure before the first line is an ordinary answer, as is a node that answers in JSON.
async function apiLines(path, method, told) {
  const headers = {Accept: 'application/x-ndjson', 'X-XSC-CSRF': S.csrf || ''};
  const response = await fetch(path, {method: method || 'POST', credentials: 'same-origin', headers});
  if (!(response.headers.get('Content-Type') || '').startsWith('application/x-ndjson')) {
    const body = await response.json().catch(() => null);
    if (response.status === 401) { loggedOut(body); throw new ApiError(401, body); }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = '', last = null;
  for (;;) {
    const {value, done} = await reader.read();
    const lines = (rest + (value || '')).split('\n');
    rest = done ? '' : lines.pop();
    for (const line of lines.filter(l => l.trim())) {
      const one = JSON.parse(line);
      if (one.progress) told(one.progress); else last = one;
    }
    if (done) break;
  }
  if (last && 'result' in last) return last.result;
  const problem = last && last.problem;
  throw new ApiError(problem && problem.status || 502, problem || {detail: 'the answer ended before its result'});
}
// A progress line as a person reads it: "rebuild: 12 of 40 segments", "share 3 ok".
function progressText(p) {
  const unit = p.stage === 'rebuild' ? 'segments' : 'blocks';
  return `${p.stage}: ${fmtInt(p.done)} of ${fmtInt(p.total)} ${unit}` + (p.share !== undefined ? `; share ${p.share} ${p.status}` : '');
}

function loggedOut(body) {
  stop();
  document.body.dataset.state = 'logged-out';
  $('#main').replaceChildren(h('section', {class: 'card message'}, h('h2', {}, 'Not logged in'),
    h('p', {}, body && body.detail ? body.detail + '.' : 'This page needs a session.'),
    h('p', {}, 'Run ', h('code', {}, 'xsc ui'), ' on the node (or ', h('code', {}, 'xsc ui --print-url'),
      ') for a one-time login link.')));
}

// --- pages -----------------------------------------------------------------------------------------
// A page: load() fetches what it shows (every poll), render(data, main) draws it; mount(main) builds
// controls that must survive polls (filters, inputs), once.
const PAGES = {};

PAGES.overview = {
  title: 'Overview', poll: 5000,
  async load() {
    const [status, health, client] = await Promise.all([api('/v1/node/status'), api('/health'),
                                                        api('/v1/ledger/accounts/client')]);
    return {status, health, client};
  },
  render({status, health, client}, main) {
    const st = status.storage || {}, peers = status.peers || {}, audits = status.audits || {};
    const alerts = [];
    if (client.low) alerts.push(['warn', `low balance: ${fmtCredits(client.available)} credits available of the ${fmtCredits(client.credit_limit)} credit limit`]);
    if (audits.audits_failed) alerts.push(['fail', `${audits.audits_failed} failed audit(s) of shares placed on peers`]);
    if ((peers.known || 0) > (peers.up || 0)) alerts.push(['warn', `${peers.known - peers.up} of ${peers.known} peer(s) down`]);
    const disk = (health.checks['disk:free'] || [{}])[0];
    if (disk.status && disk.status !== 'pass') alerts.push([disk.status, `disk almost full: ${fmtSize(disk.observedValue)} free`]);
    if (st.capacity && st.free / st.capacity < 0.1) alerts.push(['warn', `storage almost full: ${fmtSize(st.free)} of ${fmtSize(st.capacity)} free`]);
    const used = st.capacity ? st.used / st.capacity : 0, reserved = st.capacity ? st.reserved / st.capacity : 0;
    const bar = h('div', {class: 'bar', title: `${fmtSize(st.used)} used of ${fmtSize(st.capacity)}`},
      h('span', {class: 'used'}), h('span', {class: 'reserved'}));
    bar.children[0].style.width = `${Math.min(100, st.used ? Math.max(used * 100, 0.6) : 0).toFixed(2)}%`;  // a sliver, when anything is used
    bar.children[1].style.width = `${Math.min(100, reserved * 100).toFixed(2)}%`;
    main.replaceChildren(h('div', {class: 'grid'},
      card('Alerts', alerts.length ? h('ul', {class: 'alerts', 'data-k': 'alerts'}, alerts.map(([s, t]) => h('li', {class: s}, pill(s), ' ', t)))
                                   : h('p', {class: 'ok', 'data-k': 'alerts'}, 'No alerts: all is well.')),
      card('Node', kv([['id', idOf(status.id), 'id'], ['version', status.version, 'version'],
                       ['uptime', status.uptime < 60 ? `${Math.round(status.uptime)} s` : `${Math.round(status.uptime)} s (${duration(status.uptime)})`, 'uptime'], ['listen', status.listen],
                       ['data dir', status.data_dir]])),
      card('Storage', bar, kv([['capacity', fmtSize(st.capacity), 'capacity'], ['used', `${fmtSize(st.used)} (${usedPct(st.used, st.capacity)})`, 'used'],
                               ['reserved', fmtSize(st.reserved)], ['free', fmtSize(st.free) + (st.disk_free != null && st.disk_free < st.free ? ` (but the data dir's disk has ${fmtSize(st.disk_free)} free)` : ''), 'free'],
                               ['shares held', String(st.shares), 'shares']])),
      card('Balance', kv([['balance', `${client.balance_credits} credits`, 'balance'],
                          ...(client.promised === undefined ? [] : [['promised', `${fmtCredits(client.promised)} credits`, 'promised']]),
                          ['available', `${fmtCredits(client.available)} credits`],
                          ['credit limit', `${fmtCredits(client.credit_limit)} credits`, 'credit_limit'],
                          ['node earned', `${fmtCredits((status.ledger || {}).node_balance)} credits`, 'node_balance'],
                          ['account', idOf(client.account)]])),
      wide(card('Health', h('p', {}, 'overall ', h('span', {class: `pill ${health.status}`, 'data-k': 'health'}, health.status)),
        table(['check', 'status', 'value'], Object.entries(health.checks).map(([name, [c]]) =>
          h('tr', {}, h('td', {}, name), h('td', {}, pill(c.status)),
            h('td', {class: 'text'}, c.output || observed(c))))))),
      card('Peers and audits', kv([['peers', `${peers.up || 0} up of ${peers.known || 0}`, 'peers'],
        ['audits', `${audits.audits_ok || 0} ok, ${audits.audits_failed || 0} failed, ${audits.audits_unanswered || 0} unanswered`, 'audits'],
        ['shares unanswered', `${audits.shares_unanswered || 0} rebuilt elsewhere (their holders answered probes, not audits)`, 'shares_unanswered'],
        ['repairs', `${audits.repairs || 0} done, ${audits.repairs_failed || 0} failed, ${audits.repair_queue || 0} queued`],
        ['market', (status.market || {}).converged ? 'converged' : 'converging'],
        ['payments pending', String((status.payments || {}).pending || 0)]]))));
  },
};

PAGES.files = {
  title: 'Files', poll: 10000,
  async load() {
    // The newest `shown` files only (the answer counts them all); every file only while a filter is typed.
    const st = S.state.files;
    const [files, peers] = await Promise.all([api(st.filter ? '/v1/store/files' : `/v1/store/files?limit=${st.shown}`),
                                              api('/v1/health/peers')]);
    return {files: files.files, count: files.count, peers: peers.peers};
  },
  mount(main) {
    const st = S.state.files = S.state.files || {open: {}, filter: '', shown: 50, results: {}, health: {}, batch: null};
    main.replaceChildren(
      h('div', {class: 'toolbar'}, h('input', {type: 'search', placeholder: 'filter by name or capability',
        value: st.filter, 'aria-label': 'filter files', oninput: e => {
          st.filter = e.target.value; clearTimeout(st.typing); st.typing = setTimeout(refresh, 150); }}),
        h('button', {id: 'check-all', onclick: () => batchFiles('check')}, 'Check all'),
        h('button', {id: 'repair-damaged', onclick: () => batchFiles('repair')}, 'Repair damaged')),
      h('div', {id: 'batch'}), h('div', {id: 'files-body'}));
    renderBatch();
  },
  render({files, count, peers}, main) {
    const st = S.state.files, me = S.node;
    const up = Object.fromEntries(peers.map(p => [p.id, p.up]));
    const wanted = files.filter(f => !st.filter || (f.name || '').includes(st.filter) || f.capability.includes(st.filter));
    const matching = st.filter ? wanted.length : count;  // without a filter, only the newest `shown` were fetched
    const rows = [];
    for (const f of wanted.slice(-st.shown).reverse()) {
      const cap = f.capability;
      rows.push(h('tr', {'data-cap': cap},
        h('td', {class: 'text'}, h('button', {class: 'link', onclick: () => toggleFile(cap)}, st.open[cap] ? '▾ ' : '▸ ', f.name || '(unnamed)'),
          st.health[cap] ? [' ', pill(st.health[cap] === 'healthy' ? 'pass' : st.health[cap] === 'lost' ? 'fail' : 'warn', st.health[cap])] : null),
        h('td', {class: 'num'}, fmtSize(f.size)),
        h('td', {class: 'hide-narrow'}, f.created.replace('T', ' ').slice(0, 16)),
        h('td', {}, dateOf(f.lease_expiry)),
        h('td', {}, h('span', {class: 'chips'}, (f.placement || []).map((node, i) =>
          h('span', {class: `chip ${node === me || node === 'this node' ? 'me' : up[node] === false ? 'down' : up[node] ? 'up' : 'unknown'}`,
                     title: `share ${i} on ${node === me ? 'this node' : node}`}, String(i))))),
        h('td', {class: 'actions'},
          h('button', {onclick: () => runFile(cap, 'verify'), disabled: st.results[cap] && st.results[cap].running}, 'Verify'),
          h('button', {onclick: () => runFile(cap, 'repair'), disabled: st.results[cap] && st.results[cap].running}, 'Repair'))));
      if (st.open[cap] || st.results[cap]) rows.push(h('tr', {class: 'detail'}, h('td', {colspan: 6}, fileDetail(cap))));
    }
    put($('#files-body', main),
      h('p', {class: 'muted'}, h('span', {'data-k': 'file-count'}, String(count)), ` file(s) uploaded by this node`,
        matching > st.shown ? `; the newest ${st.shown} of ${matching} shown` : ''),
      table(['name', 'size', '~created', 'lease expires', 'shares (node)', ''], rows, {class: 'files stack'}),
      h('p', {class: 'muted small legend'}, 'share numbers by where they are: ', h('span', {class: 'chip me'}, '\u00a0'), ' this node ',
        h('span', {class: 'chip up'}, '\u00a0'), ' a peer that is up ', h('span', {class: 'chip down'}, '\u00a0'), ' a peer that is down ',
        h('span', {class: 'chip unknown'}, '\u00a0'), ' a peer not probed yet'),
      matching > st.shown ? h('button', {onclick: () => { st.shown += 200; refresh(); }}, 'show more') : null);
  },
};

// Verify every file (Check all), or verify every file and repair the damaged ones (Repair damaged): one run of the
// node's, POST /v1/store/verify or /repair (docs/storage.md "Every file at once"), drawn from its lines as they come:
// the files and bytes done of all, and the file a line is about with how far its verify or repair is.
const HEALTH = {healthy: 'healthy', repaired: 'healthy', damaged: 'damaged', failed: 'damaged', 'not recoverable': 'lost'};
// A whole file whose every share is on one node (`at_risk`: why) is at risk, as `xsc store check` says: no repair
// spreads it (a put from a file does), so it is not counted with the damaged ones.
const health = (state, atRisk) => HEALTH[state] === 'healthy' && atRisk ? 'at risk' : HEALTH[state];
async function batchFiles(action) {
  const st = S.state.files;
  if (st.batch && st.batch.running) return;
  const b = st.batch = {action, running: true, line: null, states: {}, error: null};
  const ended = (cap, state, atRisk) => {
    const counted = atRisk ? 'at risk' : state;  // as `xsc store verify --all` counts it, not with the healthy
    b.states[counted] = (b.states[counted] || 0) + 1;
    if (HEALTH[state]) st.health[cap] = health(state, atRisk); else delete st.health[cap];  // removed while the run went
  };
  renderBatch();
  try {
    await apiLines(`/v1/store/${action === 'check' ? 'verify' : 'repair'}`, 'POST', p => {
      b.line = p;
      if (p.state) ended(p.file, p.state, p.at_risk);
      renderBatch();
    });
  } catch (err) {
    if (err.status === 401) return;
    if (err.body && err.body.code === 'deep-check-running') b.busy = err.message; else b.error = err.message;
  }
  b.running = false;
  renderBatch();
  redrawFiles();
}

// A run goes on when the user opens another page: that page is left alone (its form, its focus), and the files
// page is drawn from S.state.files when they come back.
function redrawFiles() { if (S.page === 'files') rerender(); }

function renderBatch() {
  const el = $('#batch'), st = S.state.files;
  if (!el || !st) return;
  const b = st.batch, damaged = Object.values(st.health).filter(x => x !== 'healthy' && x !== 'at risk').length;
  const button = $('#repair-damaged');
  if (button) { button.disabled = !damaged || (b && b.running); button.textContent = `Repair damaged (${damaged})`; }
  if ($('#check-all')) $('#check-all').disabled = !!(b && b.running);
  if (!b) return el.replaceChildren();
  // Another run (the CLI's, another page's) goes on: this one never began, so there is nothing to count.
  if (b.busy) return el.replaceChildren(h('div', {class: 'card batch'}, h('p', {class: 'warn', 'data-k': 'batch-busy'},
    `${b.action === 'check' ? 'check all' : 'repair damaged'} not started: ${b.busy}`)));
  const p = b.line || {files_done: 0, files_total: 0, bytes_done: 0, bytes_total: 0}, n = b.states;
  const bar = h('progress', {max: Math.max(1, p.files_total), value: p.files_done});
  const counts = [`${n.healthy || 0} healthy`, b.action === 'repair' ? `${n.repaired || 0} repaired` : null,
    n['at risk'] ? `${n['at risk']} at risk` : null, `${n.damaged || 0} damaged`,
    `${n['not recoverable'] || 0} not recoverable`, n.removed ? `${n.removed} removed` : null,
    n.failed ? `${n.failed} failed` : null].filter(x => x).join(', ');
  // The file the latest line is about, with how far its verify or repair is (gone once the run is over).
  const now = b.running && p.stage && p.file;
  el.replaceChildren(h('div', {class: 'card batch'}, bar, h('p', {'data-k': 'batch', class: b.running ? 'running'
      : b.error || n['not recoverable'] || n.failed ? 'error' : n.damaged || n['at risk'] ? 'warn' : 'ok'},
    `${b.action === 'check' ? 'checked' : 'checked and repaired'} ${p.files_done} of ${p.files_total}`,
    ` (${fmtSize(p.bytes_done)} of ${fmtSize(p.bytes_total)})${b.running ? '…' : ''}: ${counts}`),
    now ? h('p', {class: 'running small', 'data-k': 'batch-progress'},
      `${p.stage === 'verify' ? 'verifying' : 'repairing'} ${p.name || '(unnamed)'}: `, progressText(p)) : null,
    b.error ? h('p', {class: 'error', 'data-k': 'batch-error'}, `${b.action === 'check' ? 'check all' : 'repair'} failed: ${b.error}`) : null));
}

function fileDetail(cap) {
  const r = S.state.files.results[cap];
  if (!r) return h('p', {class: 'muted'}, 'checking…');
  const parts = [];
  if (r.running) {
    const p = r.progress;  // a verify's or repair's latest line; a check tells none
    const bar = p ? h('progress', {max: Math.max(1, p.total), value: p.done})
      : h('div', {class: 'progress indeterminate', role: 'progressbar'}, h('span'));
    parts.push(h('p', {class: 'running', 'data-k': 'progress'}, `${r.action} running… ${((Date.now() - r.started) / 1000).toFixed(1)} s`,
      p ? ['; ', progressText(p)] : ''), bar);
  }
  if (r.error) parts.push(h('p', {class: 'error', 'data-k': 'action-error'}, `${r.action} failed: ${r.error}`));
  const report = r.report;
  if (report) {
    const headline = report.repaired !== undefined
      ? `${r.action}: repaired shares ${(report.repaired || []).join(', ')}; `
      : r.action && !r.running ? `${r.action}: ` : '';
    const atRisk = report.healthy && report.at_risk;  // whole, but on one node
    parts.push(h('p', {'data-k': 'result', class: atRisk ? 'warn' : report.healthy ? 'ok' : report.recoverable ? 'warn' : 'error'},
      `${headline}${report.intact} of ${report.shares.length} shares intact: ${atRisk ? 'at risk' : report.healthy ? 'healthy' : report.recoverable ? 'recoverable' : 'NOT recoverable'}`));
    if (atRisk) parts.push(h('p', {'data-k': 'at-risk', class: 'warn'},
      `${report.at_risk}; put it again from a file to spread its shares (then remove this capability)`));
    parts.push(table(['share', 'status', 'node', 'detail'], report.shares.map(s =>
      h('tr', {}, h('td', {}, String(s.share)), h('td', {}, pill(s.status === 'ok' ? 'pass' : 'fail', s.status)),
        h('td', {}, !s.node || s.node === S.node ? 'this node'
          : [idOf(s.node), ' ', s.node_up === false ? pill('fail', 'DOWN') : s.node_up ? 'up' : 'not probed']),
        h('td', {class: 'detail-text'}, s.detail || ''))), {class: 'stack'}));
  }
  return h('div', {class: 'file-detail'}, parts);
}

async function toggleFile(cap) {
  const st = S.state.files;
  st.open[cap] = !st.open[cap];
  if (!st.open[cap]) { delete st.results[cap]; return refresh(); }
  await runFile(cap, 'check');
}

async function runFile(cap, action) {
  const st = S.state.files;
  st.open[cap] = true;
  const r = st.results[cap] = {action, running: true, started: Date.now(), report: (st.results[cap] || {}).report};
  const tick = setInterval(redrawFiles, 250);
  redrawFiles();
  try {
    const path = `/v1/store/files/${encodeURIComponent(cap)}/${action}`;
    r.report = action === 'check' ? await api(path)
      : await apiLines(path, 'POST', p => { r.progress = p; redrawFiles(); });
    st.health[cap] = r.report.healthy ? health('healthy', r.report.at_risk) : r.report.recoverable ? 'damaged' : 'lost';
    renderBatch();
  } catch (err) {
    r.error = err.message;
  } finally {
    r.running = false;
    clearInterval(tick);
    redrawFiles();
  }
}

PAGES.peers = {
  title: 'Peers', poll: 2000,
  async load() {
    const [health, recog, files] = await Promise.all([api('/v1/health/peers'), api('/v1/market/recognition'),
      api('/v1/store/files?limit=12')]);
    // Poll at half the probe interval, so that a peer that stops answering turns red within one interval.
    PAGES.peers.poll = Math.max(250, Math.min(5000, health.probe_interval * 500));
    return {health, recog: recog.recognition, files: files.files, count: files.count, held: files.shares_per_node};
  },
  render({health, recog, files, count, held}, main) {
    const weight = Object.fromEntries(recog.map(r => [r.peer, r]));
    const rows = health.peers.map(p => {
      const r = weight[p.id] || {};
      const audit = p.last_audit;
      return h('tr', {'data-peer': p.id, class: p.up === false ? 'down' : ''},
        h('td', {}, dot(p.up), ' ', h('span', {'data-k': 'state'}, p.up === true ? 'up' : p.up === false ? `DOWN (${p.consecutive_failures} failed)` : 'not probed')),
        h('td', {class: 'text'}, idOf(p.id), h('div', {class: 'muted small'}, p.url)),
        h('td', {}, Charts.sparkline(p.sparkline_1h || [], '1 h availability'), h('div', {class: 'small'}, `${pct(p.ratio_1h)} of ${fmtInt(p.probes_1h)} probes`)),
        h('td', {}, Charts.sparkline(p.sparkline_24h || [], '24 h availability'), h('div', {class: 'small'}, `${pct(p.ratio_24h)} of ${fmtInt(p.probes_24h)} probes`)),
        h('td', {class: 'num'}, p.latency_ms === null ? '–' : `${p.latency_ms.toFixed(1)} ms`),
        h('td', {}, audit ? [pill(audit.ok ? 'pass' : 'fail', audit.ok ? 'ok' : 'failed'), ' ', ago(audit.time)] : 'none'),
        h('td', {class: 'num', 'data-k': 'weight'}, r.weight || '–', r.set_by_user ? ' (set)' : ''));
    });
    // Which node holds which shares of this node's files (the nodes that hold none are counted, not drawn).
    const nodes = [S.node, ...health.peers.map(p => p.id).filter(n => held[n])];
    const idle = health.peers.length - (nodes.length - 1);
    const shown = files.slice(-12).reverse();
    const up = Object.fromEntries(health.peers.map(p => [p.id, p.up]));
    const map = table(['node', 'shares held', ...shown.map((f, i) => h('span', {title: f.name || f.capability}, String(i + 1)))],
      nodes.map(n => h('tr', {}, h('td', {}, n === S.node ? dot(true) : dot(up[n]), ' ', n === S.node ? 'this node' : idOf(n)),
        h('td', {class: 'num'}, String(held[n] || 0)),
        shown.map(f => { const c = (f.placement || []).filter(x => x === n || (n === S.node && x === 'this node')).length;
                         return h('td', {class: `cell ${c ? (n === S.node ? 'me' : up[n] === false ? 'down' : 'up') : ''}`, title: `${c} share(s) of ${f.name || 'file'}`}, c ? String(c) : ''); }))),
      {class: 'map'});
    const lr = health.last_round;
    main.replaceChildren(
      card('Peers', h('p', {class: 'muted'}, `${health.peers.filter(p => p.up).length} of ${health.peers.length} up; probed every ${duration(health.probe_interval)}`,
          lr ? `; last round ${ago(lr.time)}: ${lr.peers} of ${health.peers.length} probed${lr.peers < health.peers.length ? ' (those due)' : ''}, ${lr.ok} answered` : ''),
        table(['state', 'node', '1 h', '24 h', 'latency', 'last audit', 'recognition'], rows, {class: 'peers stack'})),
      card('Who holds which shares', h('p', {class: 'muted'}, `shares of this node's ${count} file(s) per node` + (count > 12 ? '; the newest 12 files as columns' : '')
          + (idle ? `; ${idle} peer(s) hold none` : '')), map));
  },
};

PAGES.market = {
  title: 'Market', poll: 10000,
  async load() {
    const [book, prices, offer, status] = await Promise.all([api('/v1/market/book'), api('/v1/market/prices?limit=200'),
      api('/v1/market/offer'), api('/v1/market/status?deals=50')]);
    return {book, prices: prices.prices, offer, status};
  },
  mount(main) {
    const st = S.state.market = S.state.market || {kind: 'storage', explained: null, need: ''};
    main.replaceChildren(h('div', {id: 'market-body'}),
      card('Explain a need', h('form', {class: 'toolbar', onsubmit: e => { e.preventDefault(); explain(); }},
        h('input', {id: 'need', list: 'needs', placeholder: 'need id, e.g. put-3f9c0e1a2b4d-0', value: st.need, 'aria-label': 'need id',
                    oninput: e => { st.need = e.target.value; }}),
        h('datalist', {id: 'needs'}), h('button', {type: 'submit'}, 'Explain')), h('div', {id: 'explain-out'})));
  },
  render({book, prices, offer, status}, main) {
    const st = S.state.market;
    const books = book.books.filter(b => b.kind === st.kind);
    const current = books[0];
    const kinds = h('div', {class: 'tabs'}, ['storage', 'compute'].map(k =>
      h('button', {class: k === st.kind ? 'on' : '', onclick: () => { st.kind = k; rerender(); }}, k)));
    const unit = st.kind === 'storage' ? 'micro-credits per GiB-hour' : 'micro-credits per million fuel';
    const qfmt = q => st.kind === 'storage' ? fmtSize(q) : `${(q / 1e6).toExponential(1)} Mfuel`;
    const cleared = prices.filter(p => p.kind === st.kind && p.price !== null).sort((a, b) => a.time_ms - b.time_ms);
    const series = [{name: `${st.kind} price`, cls: st.kind === 'storage' ? 'c0' : 'c1', ...clearingLine(cleared)}];
    const so = offer.storage, co = offer.compute;
    const dealRow = d => h('tr', {}, h('td', {class: 'id'}, idOf(d.si)), h('td', {}, String(d.share)),
      h('td', {class: 'id'}, d.node === S.node ? 'this node' : idOf(d.node)), h('td', {class: 'num'}, fmtSize(d.bytes)),
      h('td', {class: 'num'}, String(d.price)), h('td', {class: 'num'}, fmtCredits(d.paid)), h('td', {class: 'num'}, fmtCredits(d.total)),
      h('td', {}, d.ended ? 'ended' : 'live'), h('td', {}, dateOf(d.end)));
    const needs = $('#needs', main);
    if (needs) needs.replaceChildren(...(status.recent_needs || []).map(n => h('option', {value: n})));
    $('#market-body', main).replaceChildren(h('div', {class: 'grid'},
      card('Book', kinds, current
        ? [h('p', {class: 'muted'}, `${st.kind}, bucket from ${dateOf(current.bucket_start)}: ${current.asks.length} ask(s), ${current.bids.length} bid(s); `,
             current.clearing.price !== null ? `clears at ${current.clearing.price} ${unit}` : 'no trade in the open book'),
           Charts.depthChart(current.asks, current.bids, current.clearing.price, {label: 'depth', qfmt})]
        : h('p', {class: 'muted'}, 'no book yet'),
        h('p', {class: 'muted small'}, `${book.participants} participant(s); digest `, idOf(book.digest))),
      card('Clearing prices', Charts.lineChart(series, {label: 'clearing prices', step: !series[0].band,
        xfmt: t => whenOf(t, cleared.length ? cleared[cleared.length - 1].time_ms - cleared[0].time_ms : 0), yfmt: v => fmtInt(Math.round(v))}),
        h('p', {class: 'muted small'}, `${cleared.length} ${st.kind} clearing(s) seen, in ${unit}`,
          series[0].band ? `; the line is their mean (by quantity traded) per ${duration(series[0].binSeconds)}, the band their range` : '')),
      card('This node\'s offer', kv([
        ['storage ask (µcredits)', `${so.ask} per GiB-hour (${so.floor}–${so.ceiling} as it fills)`, 'storage-ask'],
        ['storage used', `${fmtSize(so.used)} of ${fmtSize(so.capacity)}`],
        ['compute ask (µcredits)', `${co.ask} per million fuel (${co.floor}–${co.ceiling} as it fills)`, 'compute-ask'],
        ['fuel per bucket', fmtInt(co.fuel_per_bucket)], ['buckets', duration(offer.bucket_seconds)],
        ['market', status.converged ? `converged (${status.peers_agreeing} of ${status.peers} peers agree)` : 'converging']]))),
      card('Deals', h('p', {class: 'muted'}, h('span', {'data-k': 'live-deals'}, String(status.deals_live)), ' live, ',
          String(status.deals_settled), ' settled; ', paymentRun(status.payments),
          status.deals_live + (status.ended_deals || []).length > 50 ? '; the first 50 shown' : ''),
        table(['file (storage index)', 'share', 'holder', 'size', 'price (µcredits / GiB-h)', 'paid (credits)', 'total (credits)', 'state', 'ends'],
          [...status.deals, ...(status.ended_deals || [])].slice(0, 50).map(dealRow), {class: 'deals stack'})));
  },
};

// The clearings of one kind as a line: each clearing while they are few; with many, their mean (weighted by the
// quantity traded) per interval, with the band from the lowest to the highest (a line through hundreds of
// clearings that swing between two prices is a solid block).
function clearingLine(cleared) {
  if (cleared.length <= 60) return {points: cleared.map(p => [p.time_ms, p.price])};
  const t0 = cleared[0].time_ms, span = Math.max(1, cleared[cleared.length - 1].time_ms - t0);
  const STEPS = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 86400];
  const binSeconds = STEPS.find(s => span / (s * 1000) <= 40) || 86400, width = binSeconds * 1000;
  const bins = new Map();
  for (const p of cleared) {
    const key = Math.floor(p.time_ms / width), b = bins.get(key) || {sum: 0, weight: 0, lo: Infinity, hi: -Infinity};
    const weight = Math.max(1, p.traded || 0);
    b.sum += p.price * weight; b.weight += weight; b.lo = Math.min(b.lo, p.price); b.hi = Math.max(b.hi, p.price);
    bins.set(key, b);
  }
  const keys = [...bins.keys()].sort((a, b) => a - b), mid = k => k * width + width / 2;
  return {binSeconds, points: keys.map(k => [mid(k), bins.get(k).sum / bins.get(k).weight]),
          band: keys.map(k => [mid(k), bins.get(k).lo, bins.get(k).hi])};
}

function paymentRun(run) {
  if (!run) return 'no storage payment run yet';
  return `last storage payment run ${ago(run.at * 1000)}: ${run.payments} payment(s), ${fmtCredits(run.paid)} credits paid` +
    (run.waiting ? `, ${run.waiting} waiting for an audit` : '') + (run.forfeited ? `, ${run.forfeited} forfeited` : '') +
    (run.failed ? `, ${run.failed} failed` : '');
}

async function explain() {
  const st = S.state.market, out = $('#explain-out');
  if (!st.need) return;
  out.replaceChildren(h('p', {class: 'muted'}, 'asking…'));
  try {
    const e = await api(`/v1/market/explain/${encodeURIComponent(st.need)}`);
    const a = e.assignment;
    const pairs = [['need', h('code', {}, e.need), 'need'], ['outcome', e.code, 'explain-code'], ['why', e.message],
      ['clearing price', e.clearing_price === null || e.clearing_price === undefined ? '–' : String(e.clearing_price)],
      ['assigned', a ? [`${a.quantity} from `, idOf(a.provider), ` at ${a.price} (tier ${a.tier})`] : 'nothing']];
    if (e.kind) pairs.push(['bid', `${e.bid} for ${e.quantity} (${e.kind})`]);
    if (e.best_ask !== undefined && e.best_ask !== null) pairs.push(['lowest ask', String(e.best_ask)]);
    if (e.would_match) pairs.push(['would match', e.would_match, 'would-match']);
    out.replaceChildren(kv(pairs));
  } catch (err) {
    out.replaceChildren(h('p', {class: 'error'}, err.message));
  }
}

PAGES.ledger = {
  title: 'Ledger', poll: 10000,
  async load() {
    // Two answers at once: the chart's (three small fields of each of the newest `chart` entries) and the table's
    // (the newest `rows` entries; while a filter is set, the newest `filtering` ones, filtered here).
    const st = S.state.ledger, base = `/v1/ledger/accounts/${st.account}/history?encoded=false`;
    const filtering = !!(st.kind || st.dir || st.q);
    const [chart, hist] = await Promise.all([api(`${base}&limit=${st.chart}&fields=settled_at,kind`),
      api(`${base}&limit=${filtering ? st.filtering : st.rows}&fields=id,kind,delta,payer,payee,job,usage,settled_at`)]);
    return {chart, hist, filtering};
  },
  mount(main) {
    const st = S.state.ledger = S.state.ledger || {account: 'client', kind: '', dir: '', q: '', chart: 500, filtering: 5000, rows: 50};
    const sel = (name, options) => h('select', {'aria-label': name, onchange: e => { st[name] = e.target.value; refresh(); }},
      options.map(([v, t]) => h('option', {value: v, selected: st[name] === v}, t)));
    main.replaceChildren(h('div', {id: 'ledger-top'}),
      card('History',
        h('div', {class: 'toolbar'}, sel('account', [['client', 'the user (pays)'], ['node', 'this node (earns)']]),
          sel('dir', [['', 'in and out'], ['in', 'in'], ['out', 'out']]), h('select', {id: 'kind', 'aria-label': 'kind',
            onchange: e => { st.kind = e.target.value; refresh(); }}),
          h('input', {type: 'search', placeholder: 'counterparty or job', value: st.q, 'aria-label': 'search history',
                      oninput: e => { st.q = e.target.value; clearTimeout(st.typing); st.typing = setTimeout(refresh, 150); }})),
        h('div', {id: 'ledger-history'})),
      card('Verify', h('p', {}, 'Check every signature, chain, balance and limit of the ledger this node holds. ',
        h('button', {id: 'verify', onclick: verifyLedger}, 'Verify')), h('div', {id: 'verify-out'})));
  },
  render({chart, hist, filtering}, main) {
    const st = S.state.ledger, acct = hist.account, entries = hist.entries;
    const kinds = [...new Set(chart.entries.map(e => e.kind).concat(st.kind ? [st.kind] : []))].sort();
    const kindSel = $('#kind', main);
    if (kindSel.options.length !== kinds.length + 1)
      kindSel.replaceChildren(h('option', {value: ''}, 'every kind'), ...kinds.map(k => h('option', {value: k, selected: st.kind === k}, k)));
    const points = chart.entries.filter(e => e.settled_at).map(e => [e.settled_at * 1000, e.balance_after / 1e6]).reverse();
    const drawn = points.length;
    // The balance holds until now; drawn to now unless that flat stretch would squeeze the entries into a sliver.
    let unchanged = '';
    if (points.length) {
      const first = points[0][0], last = points[points.length - 1][0], now = Date.now();
      if (now - last > Math.max(last - first, 60000)) unchanged = `; unchanged since ${whenOf(last, now - last)}`;
      else points.push([Math.max(now, last), chart.account.balance / 1e6]);
    }
    const span = points.length ? points[points.length - 1][0] - points[0][0] : 0;
    const wanted = entries.filter(e => (!st.kind || e.kind === st.kind) && (!st.dir || (st.dir === 'in' ? e.delta > 0 : e.delta < 0))
      && (!st.q || [e.payer, e.payee, e.job, e.id].some(x => (x || '').includes(st.q))));
    const matching = filtering ? wanted.length : acct.seq;  // without a filter, only the newest `rows` were fetched
    $('#ledger-top', main).replaceChildren(h('div', {class: 'grid'},
      card('Account', kv([['account', h('code', {}, acct.account), 'account'], ['role', acct.role || ''],
        ['balance', `${acct.balance_credits} credits`, 'balance'],
        ...(acct.promised === undefined ? [] : [['promised', `${fmtCredits(acct.promised)} credits`]]),
        ['available', `${fmtCredits(acct.available)} credits`],
        ['held', `${fmtCredits(acct.held)} credits`], ['credit limit', `${fmtCredits(acct.credit_limit)} credits`],
        ['entries', String(acct.seq), 'entries'], ['low', acct.low ? pill('warn', 'low') : 'no']])),
      card('Balance over time', Charts.lineChart([{name: 'balance (credits)', cls: 'c0', points}],
        {label: 'balance', step: true, xfmt: t => whenOf(t, span), yfmt: v => v.toFixed(Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 1 ? 2 : 6), empty: 'no entries yet'}),
        h('p', {class: 'muted small'}, 'the balance after each of the ', h('span', {'data-k': 'chart-points'}, String(drawn)),
          chart.entries.length < chart.account.seq ? ` newest entries (of ${chart.account.seq})` : ' entries', ', in credits', unchanged))));
    put($('#ledger-history', main),
      h('p', {class: 'muted'}, `${Math.min(st.rows, wanted.length)} of ${matching} ${filtering ? 'matching ' : ''}shown`,
        filtering ? ['; ', h('span', {'data-k': 'history-read'}, String(entries.length)), ' newest entries searched'] : ['; ', h('span', {'data-k': 'history-read'}, String(acct.seq)), ' in the history']),
      table(['seq', 'time', 'kind', 'amount', 'balance after', 'counterparty', 'job', 'usage'], wanted.slice(0, st.rows).map(e => {
        const other = e.payer === acct.account ? e.payee : e.payer;
        return h('tr', {}, h('td', {class: 'num'}, String(e.seq)), h('td', {}, e.settled_at ? dateOf(e.settled_at) : ''),
          h('td', {}, e.kind), h('td', {class: `num ${e.delta < 0 ? 'neg' : 'pos'}`}, fmtCredits(e.delta)),
          h('td', {class: 'num'}, fmtCredits(e.balance_after)), h('td', {class: 'id'}, idOf(other)),
          h('td', {class: 'id'}, idOf(e.job)),
          h('td', {class: 'text'}, e.usage ? Object.entries(e.usage).map(([k, v]) => `${k.replace('_', ' ')} ${fmtInt(v)}`).join(', ') : ''));
      }), {class: 'history stack'}),
      matching > st.rows ? h('button', {onclick: () => { st.rows += 200; refresh(); }}, 'show more') : null);
  },
};

async function verifyLedger() {
  const out = $('#verify-out'), button = $('#verify');
  button.disabled = true;
  out.replaceChildren(h('p', {class: 'running'}, 'verifying…'));
  try {
    const v = await api('/v1/ledger/verify');
    put(out, h('p', {class: v.ok ? 'ok' : 'error', 'data-k': 'verify'}, v.ok ? 'ok: the ledger verifies' : 'FAILED'),
      kv([['accounts', String(v.accounts)], ['entries', String(v.entries), 'verify-entries'], ['signatures', String(v.signatures)],
          ['open transfers', String(v.open_transfers)], ['balance sum', fmtCredits(v.balance_sum)], ['took', `${v.seconds} s`]]),
      v.violations.length ? h('ul', {class: 'alerts'}, v.violations.map(x => h('li', {class: 'fail'}, typeof x === 'string' ? x : JSON.stringify(x)))) : null);
  } catch (err) {
    out.replaceChildren(h('p', {class: 'error'}, err.message));
  } finally {
    button.disabled = false;
  }
}

PAGES.compute = {
  title: 'Compute', poll: 5000,
  async load() {
    // The newest 50 records (the table) and the count of every run in each of the last 30 minutes (the chart).
    const [modules, prov, status, watches, functions] = await Promise.all([api('/v1/modules'),
      api('/v1/compute/provenance?limit=50&minutes=30'), api('/v1/node/status'), api('/v1/compute/watches'),
      api('/v1/compute/functions')]);
    return {modules: modules.modules, records: prov.records, perMinute: prov.per_minute, compute: status.compute || {},
      watches: watches.watches, functions: functions.functions};
  },
  render({modules, records, perMinute: pm, compute, watches, functions}, main) {
    const MIN = 60000;
    const perMinute = pm.counts.map((value, i) => ({label: timeOf(pm.since_ms + i * MIN).slice(0, 5), value}));
    const runs = pm.counts.reduce((a, b) => a + b, 0);
    const fuel = records.reduce((a, r) => a + (r.record.fuel_consumed || 0), 0);
    const limits = compute.limits || {};
    main.replaceChildren(h('div', {class: 'grid'},
      card('Engine', kv([['wasmtime', compute.wasmtime || ''], ['threads', String(compute.threads), 'threads'],
        ['running', String(compute.running), 'running'], ['queued', `${compute.admitted || 0} of ${compute.max_queued}`],
        ['limits', `fuel ${fmtInt(limits.fuel)}, memory ${fmtSize(limits.memory)}, ${limits.timeout} s`],
        ['compiled', String(compute.compiled || 0)]])),
      card('Invocations per minute', Charts.barChart(perMinute, {label: 'invocations per minute', empty: 'no runs in the last 30 minutes'}),
        h('p', {class: 'muted small'}, h('span', {'data-k': 'runs'}, fmtInt(runs)), pm.complete ? '' : ' or more',
          ` runs on this node in the last 30 minutes; fuel used by the ${records.length} newest: `, h('span', {'data-k': 'fuel'}, fmtInt(fuel))))),
      card('Modules', h('p', {class: 'muted'}, h('span', {'data-k': 'module-count'}, String(modules.length)), ' deployed'),
        table(['id', 'size', 'exports', 'first deployed', 'invocations'], modules.map(m => h('tr', {'data-module': m.id},
          h('td', {class: 'id'}, idOf(m.id)), h('td', {class: 'num'}, fmtSize(m.size)),
          h('td', {class: 'text'}, m.exports.map(e => e.signature || e.name).join(', '), m.wasi ? ' [wasi]' : ''),
          h('td', {}, (m.first_deployed || '').replace('T', ' ').slice(0, 19)), h('td', {class: 'num', 'data-k': 'invocations'}, String(m.invocations)))), {class: 'stack'})),
      card('Web functions', h('p', {class: 'muted'}, h('span', {'data-k': 'function-count'}, String(functions.length)),
          ' served on node.web_listen (xsc compute serve)'),
        table(['name', 'requests', 'errors', 'p50 (ms)', 'spend (µcredits)', 'this hour', 'cap'], functions.map(f => h('tr', {'data-function': f.name},
          h('td', {class: 'text'}, f.on_market ? (f.url || (f.not_placed ? `not placed: ${f.not_placed}` : `${f.name}: being placed on a provider`)) : `/fn/${f.name}/`),
          h('td', {class: 'num', 'data-k': 'requests'}, fmtInt(f.requests)),
          h('td', {class: 'num'}, f.errors ? pill('fail', fmtInt(f.errors)) : '0'),
          h('td', {class: 'num'}, f.p50_ms === null ? '–' : String(f.p50_ms)), h('td', {class: 'num', 'data-k': 'spend'}, fmtInt(f.spend)),
          h('td', {class: 'num', 'data-k': 'spent-this-hour'}, fmtInt(f.spent_this_hour)), h('td', {class: 'num'}, f.spend_cap === null ? '–' : fmtInt(f.spend_cap)))), {class: 'stack'})),
      card('Watches', h('p', {class: 'muted'}, h('span', {'data-k': 'watch-count'}, String(watches.length)),
          ' jobs kept run over S3 prefixes (xsc compute watch)'),
        table(['name', 'on', 'to', 'runs', 'skips', 'failures', 'spend (µcredits)', 'backlog'], watches.map(w => h('tr', {'data-watch': w.name},
          h('td', {class: 'text'}, w.name), h('td', {class: 'text'}, `s3://${w.on.join('/')}`),
          h('td', {class: 'text'}, `s3://${w.to.join('/')}`),
          h('td', {class: 'num', 'data-k': 'runs'}, fmtInt(w.runs)), h('td', {class: 'num'}, fmtInt(w.skips)),
          h('td', {class: 'num'}, w.failures ? pill('fail', fmtInt(w.failures)) : '0'),
          h('td', {class: 'num'}, fmtInt(w.spend)), h('td', {class: 'num', 'data-k': 'backlog'}, fmtInt(w.backlog)))), {class: 'stack'})),
      card('Recent provenance', table(['time', 'module', 'function', 'outcome', 'fuel', 'wall time', 'requester', 'signature'],
        records.slice(0, 50).map(r => { const x = r.record; return h('tr', {'data-record': x.id},
          h('td', {}, x.timestamp.replace('T', ' ').slice(0, 19)), h('td', {class: 'id'}, idOf(x.module)),
          h('td', {class: 'text'}, x.function), h('td', {}, pill(x.outcome === 'ok' ? 'pass' : 'fail', x.outcome)),
          h('td', {class: 'num'}, fmtInt(x.fuel_consumed)), h('td', {class: 'num'}, `${(x.wall_time_us / 1000).toFixed(2)} ms`),
          h('td', {class: 'id'}, idOf(x.requester)),
          h('td', {'data-k': 'signature'}, r.signature_valid ? pill('pass', r.signature_rule === 'batch/1' ? 'valid (first batch rule)' : 'valid') : pill('fail', 'INVALID'))); }), {class: 'stack'})));
  },
};

// --- routing, polling ------------------------------------------------------------------------------
function stop() { if (S.timer) clearTimeout(S.timer); S.timer = null; S.gen++; }

let lastData = null;
async function refresh() {
  const name = S.page, page = PAGES[name], gen = S.gen;
  if (S.timer) clearTimeout(S.timer);
  try {
    const [data] = await Promise.all([page.load(), S.session]);
    if (gen !== S.gen || name !== S.page) return;
    lastData = data;
    page.render(data, $('#main'));
    $('#live').textContent = `updated ${new Date().toISOString().slice(11, 19)}`;
    $('#live').className = 'live ok';
    if (document.body.dataset.ready !== name) {
      document.body.dataset.ready = name;
      performance.mark(`xsc-ready-${name}`);
    }
  } catch (err) {
    if (gen !== S.gen) return;
    if (err.status === 401) return;
    $('#live').textContent = `update failed: ${err.message}`;
    $('#live').className = 'live error';
  }
  if (gen === S.gen && name === S.page) S.timer = setTimeout(refresh, page.poll);
}
function rerender() { if (lastData && S.page) PAGES[S.page].render(lastData, $('#main')); }

function route() {
  const name = (location.hash || '#overview').slice(1);
  if (!Object.hasOwn(PAGES, name)) { location.hash = '#overview'; return; }  // not 'constructor', '__proto__'
  stop();
  S.page = name; lastData = null;
  delete document.body.dataset.ready;
  document.title = `${PAGES[name].title} · XSC ${S.node || ''}`;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('on', a.getAttribute('href') === '#' + name);
  const main = $('#main');
  main.replaceChildren(h('p', {class: 'muted'}, 'loading…'));
  if (PAGES[name].mount) PAGES[name].mount(main);
  refresh();
}

const SESSION_KEY = 'xsc-session-key';

async function start() {
  // The login put the session's key in the address's fragment: kept in this origin's storage (no other port of
  // the host can read it, though it gets the cookie), taken out of the address.
  const given = /^#key=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  if (given) { localStorage.setItem(SESSION_KEY, given[1]); history.replaceState(null, '', location.pathname); }
  S.csrf = localStorage.getItem(SESSION_KEY);
  // The session (node id) and the first page's data are fetched at once: one round trip, not two.
  S.session = api('/v1/ui/session').then(session => {
    S.node = session.node;
    document.title = `${PAGES[S.page] ? PAGES[S.page].title : 'XSC'} · XSC ${S.node}`;
    $('#node-id').textContent = S.node;
  });
  S.session.catch(err => {
    if (err.status !== 401) $('#main').replaceChildren(h('p', {class: 'error'}, `cannot reach the node: ${err.message}`));
  });
  $('#logout').addEventListener('click', async () => {
    await api('/v1/ui/logout', 'POST'); localStorage.removeItem(SESSION_KEY); loggedOut({detail: 'Logged out'});
  });
  window.addEventListener('hashchange', route);
  route();
}

document.addEventListener('DOMContentLoaded', start);
